"""fastapi_breaker: an asyncio circuit breaker for FastAPI and httpx.

The names below are the engine, and need only the standard library. The FastAPI, httpx and
other integrations live in their own submodules, each behind an extra.
"""

from ._attempt import Attempt
from ._breaker import CircuitBreaker
from ._clock import Clock
from ._errors import (
    BreakerError,
    BreakerShutdownError,
    CallTimeoutError,
    CapacityExceededError,
    CircuitOpenError,
)
from ._events import EVENT_NAMES, Event, EventHandler, EventName
from ._metrics import (
    CALL_OUTCOMES,
    LATENCY_BOUNDS,
    METRIC_STATES,
    BreakerMetrics,
    LatencyHistogram,
)
from ._options import BreakerOptions
from ._registry import BreakerRegistry, NameTooLongError, RegistryFullError, UnknownBreakerError
from ._state import State
from ._stats import PERCENTILES, Stats

__version__ = "0.1.0.dev0"

__all__ = [
    "CALL_OUTCOMES",
    "EVENT_NAMES",
    "LATENCY_BOUNDS",
    "METRIC_STATES",
    "PERCENTILES",
    "Attempt",
    "BreakerError",
    "BreakerMetrics",
    "BreakerOptions",
    "BreakerRegistry",
    "BreakerShutdownError",
    "CallTimeoutError",
    "CapacityExceededError",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "Event",
    "EventHandler",
    "EventName",
    "LatencyHistogram",
    "NameTooLongError",
    "RegistryFullError",
    "State",
    "Stats",
    "UnknownBreakerError",
    "__version__",
]
