"""Every value that passes construction works at run time: ranges, upper bounds, and quotients.

Each case below was once accepted and then failed at run time (stuck in half-open, a division by
zero on every call, a bare OverflowError naming no option, a health check on every loop turn).
"""

import asyncio
import math
import re
from typing import Any

import pytest

from fastapi_breaker import BreakerOptions, BreakerRegistry, CircuitBreaker, State
from fastapi_breaker.testing import FakeClock

YEAR = 31_536_000  # the longest any duration may be, in seconds

SECONDS_FIELDS = ["timeout", "reset_timeout", "rolling_count_timeout", "half_open_timeout"]
COUNT_FIELDS = [
    ("half_open_max_calls", 1),
    ("capacity", 1),
    ("volume_threshold", 0),
]


def exactly(message: str) -> str:
    """A `match` pattern for this whole message and nothing else."""
    return f"^{re.escape(message)}$"


def seconds_range(field: str) -> str:
    optional = " or None" if field in ("timeout", "half_open_timeout") else ""
    return f"{field} must be a number of seconds > 0 and <= 31536000 (365 days){optional}, got "


# ------------------------------------------------------------------ cases from the field


def test_half_open_max_calls_10_pow_400_is_refused_by_name() -> None:
    expected = "half_open_max_calls must be an integer >= 1 and <= 1000000, got 1" + "0" * 400
    with pytest.raises(ValueError, match=exactly(expected)):
        CircuitBreaker(half_open_max_calls=10**400)


def test_rolling_count_timeout_5e_324_is_refused_naming_both_fields() -> None:
    expected = (
        "rolling_count_timeout / rolling_count_buckets (the bucket width) must be at least "
        "0.001 seconds, got 5e-324 / 10"
    )
    with pytest.raises(ValueError, match=exactly(expected)):
        CircuitBreaker(rolling_count_timeout=5e-324)


def test_bucket_width_just_under_a_millisecond_is_refused() -> None:
    with pytest.raises(ValueError, match=r"got 0\.999 / 1000$"):
        BreakerOptions(rolling_count_timeout=0.999, rolling_count_buckets=1000)


def test_bucket_width_of_a_millisecond_is_accepted_and_works() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        rolling_count_timeout=1.0, rolling_count_buckets=1000, clock=clock, timeout=None
    )
    assert breaker.options.bucket_seconds == 0.001
    for _ in range(3):
        breaker.call_sync(lambda: None)
        clock.advance(0.0005)
    assert breaker.stats.successes == 3


def test_registry_defaults_with_a_huge_bucket_count_fail_at_construction() -> None:
    expected = "defaults: rolling_count_buckets must be an integer >= 1 and <= 1000, got 1000000000"
    with pytest.raises(ValueError, match=exactly(expected)):
        BreakerRegistry(defaults={"rolling_count_buckets": 10**9})


@pytest.mark.parametrize("interval", [math.nan, math.inf, -math.inf, 0, -1, 10**400, YEAR + 1])
async def test_health_check_interval_out_of_range_is_refused(interval: Any) -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    expected = (
        f"interval must be a number of seconds > 0 and <= 31536000 (365 days), got {interval!r}"
    )
    with pytest.raises(ValueError, match=exactly(expected)):
        breaker.health_check(lambda: None, interval=interval)
    assert breaker._health_tasks is None  # nothing was started


async def test_health_check_interval_of_a_year_is_accepted() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    task = breaker.health_check(lambda: None, interval=YEAR)
    breaker.shutdown()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("field", SECONDS_FIELDS)
@pytest.mark.parametrize("value", [10**309, 1e308, -(10**309), YEAR + 1, YEAR + 1e-6])
def test_seconds_past_the_upper_bound_name_the_option(field: str, value: Any) -> None:
    # 10**309 once raised a bare OverflowError from math.isnan().
    with pytest.raises(ValueError, match=exactly(seconds_range(field) + repr(value))):
        BreakerOptions(**{field: value})


@pytest.mark.parametrize("field", SECONDS_FIELDS)
def test_seconds_of_exactly_a_year_are_accepted(field: str) -> None:
    options = BreakerOptions(**{field: YEAR})
    assert getattr(options, field) == YEAR


@pytest.mark.parametrize(("field", "minimum"), COUNT_FIELDS)
@pytest.mark.parametrize("value", [10**400, 10**6 + 1])
def test_counts_past_the_upper_bound_name_the_option(field: str, minimum: int, value: int) -> None:
    optional = " or None" if field == "capacity" else ""
    expected = f"{field} must be an integer >= {minimum} and <= 1000000{optional}, got {value!r}"
    with pytest.raises(ValueError, match=exactly(expected)):
        CircuitBreaker(**{field: value})


@pytest.mark.parametrize(("field", "minimum"), COUNT_FIELDS)
def test_counts_of_a_million_are_accepted(field: str, minimum: int) -> None:
    assert getattr(BreakerOptions(**{field: 10**6}), field) == 10**6


def test_a_million_trials_are_judged_without_overflow() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        half_open_max_calls=10**6, clock=clock, reset_timeout=1.0, volume_threshold=0
    )
    breaker.open()
    clock.advance(1.0)
    assert breaker.state is State.HALF_OPEN
    breaker.call_sync(lambda: None)  # one success of a million planned: still undecided
    assert breaker.state is State.HALF_OPEN


def test_rolling_count_buckets_above_a_thousand_is_refused() -> None:
    expected = "rolling_count_buckets must be an integer >= 1 and <= 1000, got 1001"
    with pytest.raises(ValueError, match=exactly(expected)):
        BreakerOptions(rolling_count_buckets=1001, rolling_count_timeout=100.0)
    assert BreakerOptions(rolling_count_buckets=1000).rolling_count_buckets == 1000


def test_error_threshold_percentage_huge_int_names_the_option() -> None:
    expected = "error_threshold_percentage must be a number from 0 to 100, got 1" + "0" * 400
    with pytest.raises(ValueError, match=exactly(expected)):
        BreakerOptions(error_threshold_percentage=10**400)


# ------------------------------------------------------------------ the clock


@pytest.mark.parametrize("reading", [math.nan, math.inf, -math.inf, "12.5", True, None, 10**400])
def test_a_clock_that_returns_no_finite_number_is_refused(reading: Any) -> None:
    expected = (
        "clock must be a callable returning monotonic seconds as a finite number; "
        f"clock() returned {reading!r}"
    )
    with pytest.raises(ValueError, match=exactly(expected)):
        CircuitBreaker(clock=lambda: reading)


def test_the_clock_check_applies_to_from_options_too() -> None:
    with pytest.raises(ValueError, match=r"^clock must be .*; clock\(\) returned nan$"):
        CircuitBreaker.from_options(BreakerOptions(), clock=lambda: math.nan)


@pytest.mark.parametrize("reading", [0, 0.0, -5.0, 1e15, 7])
def test_a_clock_returning_any_finite_number_is_accepted(reading: float) -> None:
    breaker = CircuitBreaker(clock=lambda: reading)
    assert breaker.state is State.CLOSED


# ------------------------------------------------------------------ open_for from an upstream


@pytest.mark.parametrize("open_for", [math.inf, 1e300, YEAR * 2])
def test_open_for_is_capped_at_the_longest_duration(open_for: float) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, volume_threshold=0)
    breaker.begin().failed(RuntimeError("down"), open_for=open_for)
    assert breaker.state is State.OPEN
    assert breaker.retry_after == YEAR


def test_open_for_nan_falls_back_to_reset_timeout() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, reset_timeout=30.0, volume_threshold=0)
    breaker.begin().failed(RuntimeError("down"), open_for=math.nan)
    assert breaker.retry_after == 30.0


@pytest.mark.parametrize("field", ["timeout", "capacity", "error_threshold_percentage", "enabled"])
def test_an_int_too_long_to_print_still_gets_the_fields_error(field: str) -> None:
    # repr() of an int past 4300 digits raises ValueError itself; the message must not.
    value = 10**5000
    with pytest.raises((ValueError, TypeError)) as caught:
        BreakerOptions(**{field: value})
    message = str(caught.value)
    assert message.startswith(f"{field} must be "), message
    assert message.endswith(f", got an integer of {value.bit_length()} bits"), message
