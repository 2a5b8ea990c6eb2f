"""The errors a breaker raises, all under one base class.

    BreakerError
    ├── CircuitOpenError        the breaker is open (or half-open with no trial permit left)
    ├── CallTimeoutError        the call passed its time limit; also a builtin TimeoutError
    ├── CapacityExceededError   more concurrent calls than `capacity` allows
    └── BreakerShutdownError    the breaker was shut down

None of them is a failure of the downstream service except `CallTimeoutError`; the others are
the breaker refusing to make the call at all.
"""

from __future__ import annotations

__all__ = [
    "BreakerError",
    "BreakerShutdownError",
    "CallTimeoutError",
    "CapacityExceededError",
    "CircuitOpenError",
]


class BreakerError(Exception):
    """Base class of every error the breaker itself raises.

    Each error keeps its fields in `args`, the breaker's name first, and formats its message
    only when it is read: `CircuitOpenError` is raised on every rejected call, and building it
    must cost no more than the C-level exception constructor.
    """

    @property
    def name(self) -> str:
        """The name of the breaker that raised the error."""
        return str(self.args[0])


class CircuitOpenError(BreakerError):
    """The call was rejected without being made, because the circuit is open.

    `retry_after` is the number of seconds until the breaker would admit a call, as far as it
    knows when it rejects this one.
    """

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(name, retry_after)

    @property
    def retry_after(self) -> float:
        return float(self.args[1])

    def __str__(self) -> str:
        return f"circuit {self.name!r} is open; retry after {self.retry_after:.3f}s"


class CallTimeoutError(BreakerError, TimeoutError):
    """The call ran longer than its time limit and was cancelled."""

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(name, timeout)

    @property
    def timeout(self) -> float:
        return float(self.args[1])

    def __str__(self) -> str:
        return f"call through circuit {self.name!r} timed out after {self.timeout}s"


class CapacityExceededError(BreakerError):
    """The breaker already runs `capacity` calls at once."""

    def __init__(self, name: str, capacity: int) -> None:
        super().__init__(name, capacity)

    @property
    def capacity(self) -> int:
        return int(self.args[1])

    def __str__(self) -> str:
        return f"circuit {self.name!r} is at capacity ({self.capacity} concurrent calls)"


class BreakerShutdownError(BreakerError):
    """The breaker was shut down and takes no more calls."""

    def __init__(self, name: str) -> None:
        super().__init__(name)

    def __str__(self) -> str:
        return f"circuit {self.name!r} has been shut down"
