"""The package's public surface: exactly the names in `__all__`, nothing private, typed."""

import importlib.metadata
import types
from pathlib import Path

import fastapi_breaker

# Stated here on purpose: adding or removing a public name must be a visible decision.
EXPECTED_PUBLIC_NAMES = [
    "Attempt",
    "BreakerError",
    "BreakerMetrics",
    "BreakerOptions",
    "BreakerRegistry",
    "BreakerShutdownError",
    "CALL_OUTCOMES",
    "CallTimeoutError",
    "CapacityExceededError",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "EVENT_NAMES",
    "Event",
    "EventHandler",
    "EventName",
    "LATENCY_BOUNDS",
    "LatencyHistogram",
    "METRIC_STATES",
    "NameTooLongError",
    "PERCENTILES",
    "RegistryFullError",
    "State",
    "Stats",
    "UnknownBreakerError",
    "__version__",
]


def test_all_is_exactly_the_public_names() -> None:
    # sorted() on both sides also catches a name listed twice.
    assert sorted(fastapi_breaker.__all__) == EXPECTED_PUBLIC_NAMES


def test_every_name_in_all_is_importable() -> None:
    for name in fastapi_breaker.__all__:
        assert hasattr(fastapi_breaker, name), name
    namespace: dict[str, object] = {}
    exec("from fastapi_breaker import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == EXPECTED_PUBLIC_NAMES


def test_no_private_name_is_exported() -> None:
    private = [n for n in fastapi_breaker.__all__ if n.startswith("_") and n != "__version__"]
    assert private == []


def test_no_public_name_is_left_out_of_all() -> None:
    # A public-looking attribute missing from __all__ would be an accidental export.
    public = {
        name
        for name, value in vars(fastapi_breaker).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public <= set(fastapi_breaker.__all__)


def test_version_matches_the_installed_distribution() -> None:
    assert fastapi_breaker.__version__ == importlib.metadata.version("fastapi_breaker")


def test_py_typed_marker_ships_in_the_package() -> None:
    package_dir = Path(fastapi_breaker.__file__).parent
    assert (package_dir / "py.typed").is_file()
