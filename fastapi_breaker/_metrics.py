"""What an exporter reads from a breaker at scrape time: `CircuitBreaker.metrics()`.

Counts here never go down while the breaker lives: they are everything counted since it was
made, not the rolling window (which `window` gives). Reading them costs the same at any
traffic: the window's buckets are settled into bin counts (see `_histogram`), and buckets that
left the window were added up once, when they left.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._buckets import Totals
from ._histogram import LATENCY_BOUNDS
from ._options import BreakerOptions
from ._state import State
from ._stats import Stats
from ._window import stats_of

if TYPE_CHECKING:
    from ._base import BreakerBase

__all__ = [
    "CALL_OUTCOMES",
    "LATENCY_BOUNDS",
    "METRIC_STATES",
    "BreakerMetrics",
    "LatencyHistogram",
    "read_metrics",
]

METRIC_STATES: tuple[str, ...] = ("closed", "open", "half_open", "forced_open", "disabled")
"""The states an exporter shows: the three of `State`, and two set by hand."""

CALL_OUTCOMES: tuple[str, ...] = (
    "success",
    "failure",
    "timeout",
    "rejected",
    "capacity_rejected",
    "fallback",
)
"""How a call ended, for `BreakerMetrics.calls`. Each call is counted once in the first five
(a timeout is not also a failure there; a cancelled call is in none); "fallback" counts the
calls that the fallback then answered, on top."""

_INDEX_OF_BOUND = {bound: index for index, bound in enumerate(LATENCY_BOUNDS)}


@dataclasses.dataclass(frozen=True, slots=True)
class LatencyHistogram:
    """Latencies of successes and failures (timeouts included) in `LATENCY_BOUNDS` bins.

    `counts[i]` holds the latencies in `(LATENCY_BOUNDS[i-1], LATENCY_BOUNDS[i]]`: `counts[0]`
    those up to the first bound, and the last entry those above the last bound. `sum` is the
    exact sum of the latencies, in seconds.
    """

    counts: tuple[int, ...]
    sum: float

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self, bounds: Sequence[float]) -> list[int]:
        """For each of `bounds`, how many latencies were at most it (Prometheus's `le`).

        Each bound must be one of `LATENCY_BOUNDS`, in ascending order."""
        found: list[int] = []
        seen = 0
        start = 0
        for bound in bounds:
            index = _INDEX_OF_BOUND.get(bound)
            if index is None or index < start:
                raise ValueError(
                    f"bounds must be taken from LATENCY_BOUNDS in ascending order; "
                    f"{bound!r} is {'not one of them' if index is None else 'out of order'}"
                )
            seen += sum(self.counts[start : index + 1])
            start = index + 1
            found.append(seen)
        return found


@dataclasses.dataclass(frozen=True, slots=True)
class BreakerMetrics:
    """One breaker as an exporter reads it; see the module docstring.

    - `state`: one of `METRIC_STATES` ("disabled" wins, then "forced_open").
    - `calls`: calls by outcome since the breaker was made, one key per `CALL_OUTCOMES`.
    - `latency`: their latencies since the breaker was made.
    - `transitions`: (from_state, to_state) -> how many times, over the three `State` values.
    - `error_percentage`: the rolling window's, as `breaker.stats` gives it.
    - `retry_after`: seconds until a call would be admitted; None while closed.
    - `window`: the rolling window, as `breaker.stats` gives it: made when first read, since
      an exporter that reads only the rest (Prometheus's) should not pay for its percentiles.
    """

    name: str
    state: str
    calls: dict[str, int]
    latency: LatencyHistogram
    transitions: dict[tuple[str, str], int]
    error_percentage: float
    retry_after: float | None
    options: BreakerOptions
    # The window's counts, turned into `Stats` by `window` on demand.
    _window_counts: Totals = dataclasses.field(default_factory=Totals, repr=False, compare=False)

    @property
    def window(self) -> Stats:
        return stats_of(self._window_counts)


def read_metrics(breaker: BreakerBase) -> BreakerMetrics:
    core = breaker.core
    moves: list[str] = []
    state, retry_after, totals, window = core.read(breaker.clock(), moves)
    counted = window.successes + window.failures
    breaker.announce(moves)  # a transition the clock made due is announced like any other
    if not core.enabled:
        label = "disabled"
    elif state is State.OPEN and core.forced:
        label = "forced_open"
    else:
        label = state.value
    return BreakerMetrics(
        name=breaker.name,
        state=label,
        calls={
            "success": totals.successes,
            "failure": totals.failures - totals.timeouts,
            "timeout": totals.timeouts,
            "rejected": totals.rejects,
            "capacity_rejected": totals.semaphore_rejections,
            "fallback": totals.fallbacks,
        },
        latency=LatencyHistogram(tuple(totals.dense()), totals.latency.total),
        transitions=totals.transitions,
        error_percentage=100.0 * window.failures / counted if counted else 0.0,
        retry_after=retry_after,
        options=core.options,
        _window_counts=window,
    )
