"""The seam for sharing one breaker's state across processes: a coordinator and its links.

A `Coordinator` (the Redis one lives in `fastapi_breaker.redis`) is handed every breaker of a
registry. It never sits on a call's path: calls count locally as always, and in the background
the coordinator takes what each breaker counted since last time (`BreakerCore.drain()`), adds
it to the fleet's counts somewhere shared, and tells the core what the fleet decided
(`fleet_open()`, `fleet_wait()`, `fleet_trial()`, `fleet_close()`).

`FleetLink` is what a coordinated core keeps of the fleet, under the core's lock:

- `held`: the local OPEN is the fleet's. While the coordinator is `healthy`, a held breaker
  does not go half-open by its own clock: the fleet picks which process runs the trial. A
  breaker that opens on its own evidence is not held: a local open stays local.
- `wants_trial`: a call was refused after the fleet's open deadline; the next flush asks the
  fleet for the trial.
- `trial`: this process holds the fleet's trial; `outcome` ("ok" or "fail") is what the trial
  decided, for the coordinator to report.
- `healthy`: False while the coordinator cannot reach the fleet. The breaker then follows its
  own evidence and its own clock, and a known fleet open still holds until its deadline.
- `state`: the fleet's state as last heard ("closed", "open", "half_open"), or None.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ._buckets import Bucket

if TYPE_CHECKING:
    # For annotations only: a coordinator is handed breakers; this module builds none.
    from ._breaker import CircuitBreaker

__all__ = ["Coordinator", "Deltas", "FleetLink"]


class Coordinator(Protocol):
    """Shares the state of a registry's breakers with the other processes of a fleet."""

    def attach(self, breaker: CircuitBreaker) -> None:
        """Follow `breaker` (the registry calls this for every breaker it makes)."""

    def detach(self, breaker: CircuitBreaker) -> None:
        """Stop following `breaker` (removed from, or forgotten by, the registry)."""

    async def start(self) -> None:
        """Start the background work; called once, on the event loop that serves calls."""

    async def stop(self) -> None:
        """Stop it, and report what is left to report, within a short bound."""


class Deltas:
    """What a breaker counted since the last `drain()`."""

    __slots__ = ("failures", "rejections", "successes")

    def __init__(self, successes: int, failures: int, rejections: int) -> None:
        self.successes = successes
        self.failures = failures
        self.rejections = rejections

    def __bool__(self) -> bool:
        return bool(self.successes or self.failures or self.rejections)


class FleetLink:
    """A coordinated core's view of the fleet; see the module docstring."""

    __slots__ = ("healthy", "held", "outcome", "seen", "state", "trial", "wants_trial")

    def __init__(self) -> None:
        self.healthy = False  # until the coordinator first hears from the fleet
        self.held = False
        self.wants_trial = False
        self.trial = False
        self.outcome = ""
        self.state: str | None = None
        # How much of each live bucket has been drained: bucket -> (successes, failures,
        # rejections). Keyed by the bucket itself: a cleared window starts new buckets.
        self.seen: dict[Bucket, tuple[int, int, int]] = {}

    def drain(self, buckets: list[Bucket]) -> Deltas:
        """What `buckets` (the live ones) counted since the last drain."""
        successes = failures = rejections = 0
        seen: dict[Bucket, tuple[int, int, int]] = {}
        for bucket in buckets:
            now_counts = (bucket.successes, bucket.failures, bucket.rejects)
            before = self.seen.get(bucket, (0, 0, 0))
            successes += now_counts[0] - before[0]
            failures += now_counts[1] - before[1]
            rejections += now_counts[2] - before[2]
            seen[bucket] = now_counts
        self.seen = seen
        return Deltas(successes, failures, rejections)
