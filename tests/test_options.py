"""Option checking: every bad value fails at construction, naming the option and its range."""

import math
from typing import Any

import pytest

from fastapi_breaker import BreakerOptions, CircuitBreaker, State
from fastapi_breaker.testing import FakeClock

SECONDS = "a number of seconds > 0 and <= 31536000 (365 days)"
PERCENT = "a number from 0 to 100"
COUNT = "an integer >="

# (field, bad value, the allowed range the message must state)
BAD_OPTIONS: list[tuple[str, Any, str]] = [
    *[
        (field, value, allowed)
        for field, allowed in [
            ("timeout", f"{SECONDS} or None"),
            ("reset_timeout", SECONDS),
            ("rolling_count_timeout", SECONDS),
            ("half_open_timeout", f"{SECONDS} or None"),
        ]
        for value in ["10", True, False, math.nan, math.inf, -math.inf, -1, -0.5, 0, 0.0]
    ],
    ("reset_timeout", None, SECONDS),
    ("rolling_count_timeout", None, SECONDS),
    *[
        ("error_threshold_percentage", value, PERCENT)
        for value in ["50", True, None, math.nan, math.inf, -math.inf, -0.1, -1, 100.01, 101]
    ],
    *[
        ("rolling_count_buckets", value, "an integer >= 1 and <= 1000")
        for value in [0, -1, 2.0, "10", True, None]
    ],
    *[("volume_threshold", value, f"{COUNT} 0 and <= 1000000") for value in [-1, 1.5, "3", True]],
    ("volume_threshold", None, f"{COUNT} 0 and <= 1000000"),
    *[("capacity", value, f"{COUNT} 1 and <= 1000000 or None") for value in [0, -3, 2.0, "5"]],
    ("capacity", True, f"{COUNT} 1 and <= 1000000 or None"),
    *[("half_open_max_calls", value, f"{COUNT} 1 and <= 1000000") for value in [0, -1, 1.0, "1"]],
    ("half_open_max_calls", True, f"{COUNT} 1 and <= 1000000"),
    *[("allow_warm_up", value, "True or False") for value in [1, 0, "yes", None]],
    *[("enabled", value, "True or False") for value in [1, 0, "no", None]],
    *[("error_filter", value, "a callable (exc) -> bool or None") for value in [42, "ValueError"]],
]

# Arguments of the breaker itself, not part of BreakerOptions.
BAD_BREAKER_ARGUMENTS: list[tuple[str, Any, str]] = [
    ("name", "", "a non-empty string or None"),
    ("name", 5, "a non-empty string or None"),
    ("clock", 42, "a callable returning monotonic seconds"),
    ("clock", "monotonic", "a callable returning monotonic seconds"),
    ("action", 42, "callable or None"),
]


def check_message(error: BaseException, field: str, allowed: str) -> None:
    message = str(error)
    assert message.startswith(f"{field} must be "), message
    assert allowed in message, message


@pytest.mark.parametrize(("field", "value", "allowed"), BAD_OPTIONS)
def test_bad_option_is_refused_by_the_breaker(field: str, value: Any, allowed: str) -> None:
    with pytest.raises((ValueError, TypeError)) as caught:
        CircuitBreaker(**{field: value})
    check_message(caught.value, field, allowed)


@pytest.mark.parametrize(("field", "value", "allowed"), BAD_OPTIONS)
def test_bad_option_is_refused_by_breaker_options(field: str, value: Any, allowed: str) -> None:
    # A registry builds BreakerOptions on its own: it must check as strictly as the breaker.
    with pytest.raises((ValueError, TypeError)) as caught:
        BreakerOptions(**{field: value})
    check_message(caught.value, field, allowed)


@pytest.mark.parametrize(("field", "value", "allowed"), BAD_BREAKER_ARGUMENTS)
def test_bad_breaker_argument_is_refused(field: str, value: Any, allowed: str) -> None:
    with pytest.raises((ValueError, TypeError)) as caught:
        CircuitBreaker(**{field: value})
    check_message(caught.value, field, allowed)


def test_non_bool_flags_and_non_callables_are_type_errors() -> None:
    with pytest.raises(TypeError):
        CircuitBreaker(allow_warm_up=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CircuitBreaker(enabled="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CircuitBreaker(error_filter=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CircuitBreaker(clock=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CircuitBreaker(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("error_threshold_percentage", 0),
        ("error_threshold_percentage", 0.0),
        ("error_threshold_percentage", 100),
        ("error_threshold_percentage", 100.0),
        ("volume_threshold", 0),
        ("timeout", None),
        ("timeout", 1),
        ("timeout", 1e-9),
        ("reset_timeout", 1e-9),
        ("rolling_count_timeout", 0.01),  # ten buckets of a millisecond, the narrowest
        ("rolling_count_buckets", 1),
        ("capacity", None),
        ("capacity", 1),
        ("half_open_max_calls", 1),
        ("half_open_timeout", None),
        ("half_open_timeout", 0.5),
        ("allow_warm_up", True),
        ("enabled", False),
        ("error_filter", None),
        ("error_filter", lambda exc: isinstance(exc, KeyError)),
    ],
)
def test_edge_values_are_accepted(field: str, value: Any) -> None:
    breaker = CircuitBreaker(**{field: value})
    assert getattr(breaker.options, field) == value
    assert getattr(BreakerOptions(**{field: value}), field) == value


async def boom() -> None:
    raise RuntimeError("down")


async def test_threshold_zero_opens_on_the_first_failure() -> None:
    breaker = CircuitBreaker(error_threshold_percentage=0, clock=FakeClock(), volume_threshold=0)
    with pytest.raises(RuntimeError):
        await breaker.call(boom)
    assert breaker.opened


async def test_threshold_hundred_never_opens() -> None:
    # The rule is "strictly above": 100% failures cannot exceed 100.
    breaker = CircuitBreaker(error_threshold_percentage=100, clock=FakeClock())
    for _ in range(20):
        with pytest.raises(RuntimeError):
            await breaker.call(boom)
    assert breaker.closed
    assert breaker.stats.failures == 20


def test_the_default_volume_threshold_needs_ten_calls_before_opening() -> None:
    # A new user's breaker must not open for 30 s on one failure: the design note's own
    # configuration asks for 10 calls in the window first (Opossum's default is 0).
    assert BreakerOptions().volume_threshold == 10
    breaker = CircuitBreaker(clock=FakeClock())

    def fail() -> None:
        raise ValueError("down")

    for _ in range(9):
        with pytest.raises(ValueError, match="down"):
            breaker.call_sync(fail)
    assert breaker.state is State.CLOSED
    assert breaker.stats.failures == 9
    with pytest.raises(ValueError, match="down"):
        breaker.call_sync(fail)
    assert breaker.state is State.OPEN
    assert breaker.stats.failures == 10
