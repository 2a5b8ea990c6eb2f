"""to_dict() / from_dict(): a breaker's picture is JSON, and rebuilds an equivalent breaker."""

import json
from typing import Any

import pytest

from fastapi_breaker import CircuitBreaker, CircuitOpenError, State
from fastapi_breaker.testing import FakeClock


async def ok() -> str:
    return "ok"


async def boom() -> None:
    raise RuntimeError("down")


def through_json(data: dict[str, Any]) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(json.dumps(data))
    return decoded


async def test_to_dict_is_json_serialisable() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, name="payments", timeout=None)
    await breaker.call(ok)
    data = breaker.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["name"] == "payments"
    assert data["state"] == "closed"
    assert data["retry_after"] is None
    assert data["options"]["timeout"] is None
    assert "error_filter" not in data["options"]  # code, not data


def test_name_and_options_are_restored() -> None:
    breaker = CircuitBreaker(
        clock=FakeClock(),
        name="payments",
        timeout=2.5,
        reset_timeout=12.0,
        error_threshold_percentage=25.0,
        rolling_count_timeout=20.0,
        rolling_count_buckets=4,
        volume_threshold=3,
        allow_warm_up=True,
        capacity=7,
        half_open_max_calls=2,
        half_open_timeout=1.5,
    )
    restored = CircuitBreaker.from_dict(through_json(breaker.to_dict()), clock=FakeClock())
    assert restored.name == "payments"
    assert restored.options == breaker.options


def test_error_filter_and_action_are_passed_again() -> None:
    def excuse(exc: BaseException) -> bool:
        return isinstance(exc, KeyError)

    breaker = CircuitBreaker(ok, clock=FakeClock(), error_filter=excuse)
    restored = CircuitBreaker.from_dict(
        through_json(breaker.to_dict()), ok, error_filter=excuse, clock=FakeClock()
    )
    assert restored.options.error_filter is excuse
    assert restored.options == breaker.options


async def test_closed_breaker_round_trip() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    restored = CircuitBreaker.from_dict(through_json(breaker.to_dict()), clock=FakeClock())
    assert restored.state is State.CLOSED
    assert restored.retry_after is None
    assert await restored.call(ok) == "ok"


async def test_open_breaker_keeps_its_remaining_time_on_the_new_clock() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, reset_timeout=30.0)
    breaker.open()
    clock.advance(10.0)
    data = through_json(breaker.to_dict())
    assert data["state"] == "open"
    assert data["retry_after"] == 20.0

    # Another process, whose monotonic clock reads something unrelated.
    new_clock = FakeClock(start=5000.0)
    restored = CircuitBreaker.from_dict(data, clock=new_clock)
    assert restored.state is State.OPEN
    assert not restored.forced_open
    assert restored.retry_after == 20.0
    with pytest.raises(CircuitOpenError) as rejected:
        await restored.call(ok)
    assert rejected.value.retry_after == 20.0

    new_clock.advance(19.5)
    assert restored.state is State.OPEN
    assert restored.retry_after == 0.5
    new_clock.advance(0.5)
    assert restored.state is State.HALF_OPEN
    assert await restored.call(ok) == "ok"
    assert restored.state is State.CLOSED


async def test_forced_open_breaker_stays_forced() -> None:
    breaker = CircuitBreaker(clock=FakeClock(), reset_timeout=30.0)
    breaker.force_open()
    new_clock = FakeClock(start=123.0)
    restored = CircuitBreaker.from_dict(through_json(breaker.to_dict()), clock=new_clock)
    assert restored.state is State.OPEN
    assert restored.forced_open
    new_clock.advance(1000.0)  # far past any reset timeout: forced open does not time out
    assert restored.state is State.OPEN
    with pytest.raises(CircuitOpenError):
        await restored.call(ok)
    restored.close()
    assert await restored.call(ok) == "ok"


async def test_half_open_breaker_round_trip() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, reset_timeout=30.0)
    breaker.open()
    clock.advance(30.0)
    data = through_json(breaker.to_dict())
    assert data["state"] == "half_open"
    assert data["retry_after"] == 0.0

    restored = CircuitBreaker.from_dict(data, clock=FakeClock(start=42.0))
    assert restored.state is State.HALF_OPEN
    assert restored.retry_after == 0.0
    # One trial, as half_open_max_calls says; its failure reopens the circuit.
    with pytest.raises(RuntimeError):
        await restored.call(boom)
    assert restored.state is State.OPEN
    assert restored.retry_after == 30.0


async def test_window_counts_are_restored() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        clock=clock,
        error_threshold_percentage=100,  # keep it closed while failures accumulate
        rolling_count_timeout=10.0,
        rolling_count_buckets=10,
    )

    async def take(seconds: float) -> None:
        clock.advance(seconds)

    # Calls spread over several buckets, with latencies to restore too.
    await breaker.call(take, 1.0)
    with pytest.raises(RuntimeError):
        await breaker.call(boom)
    await breaker.call(take, 2.0)
    with pytest.raises(RuntimeError):
        await breaker.call(boom)
    await breaker.call(take, 0.5)
    before = breaker.stats
    assert (before.successes, before.failures, before.fires) == (3, 2, 5)

    restored = CircuitBreaker.from_dict(
        through_json(breaker.to_dict()), clock=FakeClock(start=77.0)
    )
    assert restored.stats == before


async def test_restored_window_still_ages_out() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, error_threshold_percentage=100)
    with pytest.raises(RuntimeError):
        await breaker.call(boom)
    new_clock = FakeClock()
    restored = CircuitBreaker.from_dict(through_json(breaker.to_dict()), clock=new_clock)
    assert restored.stats.failures == 1
    new_clock.advance(restored.options.rolling_count_timeout)
    assert restored.stats.failures == 0


async def test_disabled_flag_is_restored() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    breaker.disable()
    restored = CircuitBreaker.from_dict(through_json(breaker.to_dict()), clock=FakeClock())
    assert not restored.enabled
    # Disabled: calls pass straight through, uncounted.
    with pytest.raises(RuntimeError):
        await restored.call(boom)
    assert restored.stats.fires == 0
    assert restored.closed


def test_enabled_flag_is_restored() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    restored = CircuitBreaker.from_dict(through_json(breaker.to_dict()), clock=FakeClock())
    assert restored.enabled


async def test_round_trip_is_stable() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, name="stable", reset_timeout=30.0)
    with pytest.raises(RuntimeError):
        await breaker.call(boom)  # opens
    clock.advance(5.0)
    first = through_json(breaker.to_dict())
    second = through_json(CircuitBreaker.from_dict(first, clock=FakeClock()).to_dict())
    # The bucket layout may differ by empty buckets; what it adds up to may not.
    first.pop("window")
    second.pop("window")
    assert second == first
