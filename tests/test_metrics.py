"""`breaker.metrics()`: counts since the breaker was made (never reset by the window), the
latency histogram, transitions and the state as exporters label it."""

from __future__ import annotations

import pytest

from fastapi_breaker import (
    CALL_OUTCOMES,
    LATENCY_BOUNDS,
    METRIC_STATES,
    BreakerMetrics,
    CircuitBreaker,
    CircuitOpenError,
)
from fastapi_breaker.testing import FakeClock


async def take(clock: FakeClock, seconds: float, fail: bool = False) -> None:
    clock.advance(seconds)
    if fail:
        raise RuntimeError("down")


def make(clock: FakeClock, **options: object) -> CircuitBreaker:
    options = {
        "volume_threshold": 0,
        "error_threshold_percentage": 40,
        "reset_timeout": 30.0,
        "timeout": 5.0,
        **options,
    }
    return CircuitBreaker(clock=clock, **options)  # type: ignore[arg-type]


def test_a_new_breaker_has_every_outcome_at_zero() -> None:
    metrics = CircuitBreaker(name="auth", clock=FakeClock()).metrics()
    assert isinstance(metrics, BreakerMetrics)
    assert metrics.name == "auth"
    assert metrics.state == "closed"
    assert metrics.calls == dict.fromkeys(CALL_OUTCOMES, 0)
    assert metrics.latency.count == 0
    assert metrics.latency.sum == 0.0
    assert metrics.transitions == {}
    assert metrics.retry_after is None
    assert METRIC_STATES == ("closed", "open", "half_open", "forced_open", "disabled")


async def test_closed_open_half_open_closed_counts_every_call_and_transition() -> None:
    clock = FakeClock()
    breaker = make(clock)
    breaker.fallback(lambda *args: "cached")
    await breaker.call(take, clock, 0.5)  # success
    await breaker.call(take, clock, 1.5, True)  # failure, answered by the fallback
    assert breaker.opened  # 50% errors, above 40%
    assert breaker.metrics().transitions == {("closed", "open"): 1}
    assert await breaker.call(take, clock, 0.1) == "cached"  # rejected, fallback
    clock.advance(30.0)
    assert breaker.metrics().state == "half_open"
    await breaker.call(take, clock, 0.25)  # the trial succeeds
    metrics = breaker.metrics()
    assert metrics.state == "closed"
    assert metrics.calls == {
        "success": 2,
        "failure": 1,
        "timeout": 0,
        "rejected": 1,
        "capacity_rejected": 0,
        "fallback": 2,
    }
    assert metrics.transitions == {
        ("closed", "open"): 1,
        ("open", "half_open"): 1,
        ("half_open", "closed"): 1,
    }
    # Closing cleared the window; the counts since the start are still there.
    assert metrics.window.fires == 0
    assert metrics.latency.count == 3
    assert metrics.latency.sum == 0.5 + 1.5 + 0.25
    assert metrics.latency.cumulative([0.25, 0.5, 1.0, 2.0]) == [1, 2, 2, 3]


async def test_a_timeout_is_counted_once_as_a_timeout() -> None:
    clock = FakeClock()
    breaker = make(clock, timeout=1.0, error_threshold_percentage=100)
    with pytest.raises(Exception, match="timed out"):
        breaker.call_sync(clock.advance, 2.0)
    with pytest.raises(RuntimeError):
        breaker.call_sync(_fail)
    assert breaker.metrics().calls["timeout"] == 1
    assert breaker.metrics().calls["failure"] == 1


def _fail() -> None:
    raise RuntimeError("down")


async def test_counts_survive_the_window_rolling_on() -> None:
    clock = FakeClock()
    breaker = make(clock, error_threshold_percentage=100)
    for _ in range(30):
        await breaker.call(take, clock, 0.001)
        clock.advance(1.0)  # a bucket per call: 30 calls through a 10-bucket window
    metrics = breaker.metrics()
    assert (
        metrics.window.successes == 9
    )  # the window's last ten seconds: its current bucket is empty
    assert metrics.calls["success"] == 30
    assert metrics.latency.count == 30


async def test_rejections_and_capacity_refusals_are_counted() -> None:
    clock = FakeClock()
    breaker = make(clock, capacity=1)
    breaker.force_open()
    for _ in range(3):
        with pytest.raises(CircuitOpenError):
            await breaker.call(take, clock, 0.0)
    assert breaker.metrics().state == "forced_open"
    assert breaker.metrics().calls["rejected"] == 3
    breaker.close()
    attempt = breaker.begin()
    with pytest.raises(Exception, match="capacity"):
        breaker.begin()
    attempt.succeeded()
    metrics = breaker.metrics()
    assert metrics.calls["capacity_rejected"] == 1
    assert metrics.transitions == {("closed", "open"): 1, ("open", "closed"): 1}


def test_a_disabled_breaker_reads_disabled() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    breaker.force_open()
    breaker.disable()
    assert breaker.metrics().state == "disabled"


async def test_a_restored_window_is_not_counted_as_calls_of_this_breaker() -> None:
    clock = FakeClock()
    breaker = make(clock, error_threshold_percentage=100)
    for _ in range(4):
        await breaker.call(take, clock, 0.5)
    restored = CircuitBreaker.from_dict(breaker.to_dict(), clock=FakeClock())
    assert restored.stats.successes == 4  # the window came back
    assert restored.metrics().calls["success"] == 0  # but this breaker made none of them
    assert restored.metrics().latency.count == 0
    restored.close()  # clearing the window retires its buckets: still no count goes down
    assert restored.metrics().calls["success"] == 0
    assert restored.metrics().latency.counts == (0,) * (len(LATENCY_BOUNDS) + 1)


def test_cumulative_names_a_bound_that_is_not_one_of_the_bins() -> None:
    histogram = CircuitBreaker(clock=FakeClock()).metrics().latency
    with pytest.raises(ValueError, match=r"0\.3 is not one of them"):
        histogram.cumulative([0.25, 0.3])
    with pytest.raises(ValueError, match=r"0\.25 is out of order"):
        histogram.cumulative([0.5, 0.25])
