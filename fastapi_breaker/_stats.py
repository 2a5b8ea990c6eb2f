"""The frozen view of a breaker's rolling window that `breaker.stats` returns."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from ._histogram import estimates

__all__ = ["PERCENTILES", "Stats", "percentile"]

PERCENTILES: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 1.0)
_KEYS: dict[float, str] = {p: str(p) for p in PERCENTILES}  # to_dict()'s keys, made once


def percentile(ordered: Sequence[float], p: float) -> float:
    """Opossum's rule: the smallest sample for p=0, else `ordered[ceil(p*n) - 1]`; 0 when empty."""
    if not ordered:
        return 0.0
    if p == 0:
        return ordered[0]
    return ordered[math.ceil(p * len(ordered)) - 1]


@dataclasses.dataclass(frozen=True, slots=True)
class Stats:
    """Counts and latencies over the rolling window, taken when `breaker.stats` is read.

    - `fires`: calls that ended in the window, whatever the outcome (disabled calls excepted).
    - `successes`: calls that returned, plus those whose error `error_filter` excused.
    - `failures`: calls that raised a counted error; timeouts included.
    - `rejects`: calls refused because the circuit was open.
    - `timeouts`: calls that passed their time limit (each is also a failure).
    - `fallbacks`: calls answered by the fallback.
    - `semaphore_rejections`: calls refused because `capacity` calls were already running.
    - `error_percentage`: `100 * failures / (successes + failures)`, 0 with no calls.
    - `latency_mean`: mean seconds of the successes and failures, 0 with none (exact).
    - `percentiles`: latency in seconds at 0, .25, .5, .75, .9, .95, .99, .995 and 1, read
      from log-scale bins (four per power of two): within 1/9 (11.1%) of the exact value from
      1 us to 1,024 s; under 1 us reads as 0, and over 1,024 s as 1,024.
    """

    fires: int
    successes: int
    failures: int
    rejects: int
    timeouts: int
    fallbacks: int
    semaphore_rejections: int
    error_percentage: float
    latency_mean: float
    percentiles: dict[float, float]

    @classmethod
    def compute(
        cls,
        *,
        successes: int,
        failures: int,
        rejects: int,
        timeouts: int,
        fallbacks: int,
        semaphore_rejections: int,
        cancelled: int,
        latency_counts: Sequence[int],
        latency_sum: float,
    ) -> Stats:
        """From counts and latency bins (`_histogram`), as many as `BINS`, however many calls."""
        counted = successes + failures
        latencies = successes + failures
        return cls(
            fires=counted + rejects + semaphore_rejections + cancelled,
            successes=successes,
            failures=failures,
            rejects=rejects,
            timeouts=timeouts,
            fallbacks=fallbacks,
            semaphore_rejections=semaphore_rejections,
            error_percentage=100.0 * failures / counted if counted else 0.0,
            latency_mean=latency_sum / latencies if latencies else 0.0,
            percentiles=dict(zip(PERCENTILES, estimates(latency_counts, PERCENTILES), strict=True)),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: percentile keys become strings ("0.5")."""
        # Spelled out rather than `dataclasses.fields()`: /health builds this per breaker.
        return {
            "fires": self.fires,
            "successes": self.successes,
            "failures": self.failures,
            "rejects": self.rejects,
            "timeouts": self.timeouts,
            "fallbacks": self.fallbacks,
            "semaphore_rejections": self.semaphore_rejections,
            "error_percentage": self.error_percentage,
            "latency_mean": self.latency_mean,
            "percentiles": {
                _KEYS[p] if p in _KEYS else str(p): v for p, v in self.percentiles.items()
            },
        }
