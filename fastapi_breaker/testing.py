"""Helpers for testing code that uses circuit breakers, without real waiting."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """A monotonic clock that only moves when told to.

    Pass it as `CircuitBreaker(clock=FakeClock())` and call `advance()` to make time pass:
    reset timeouts, window rotation and latencies all follow it.
    """

    __slots__ = ("now",)

    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back: advance({seconds})")
        self.now += seconds
