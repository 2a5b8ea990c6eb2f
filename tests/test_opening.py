"""When a closed breaker opens: the threshold, the volume, the warm-up and the rolling window."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from fastapi_breaker import BreakerOptions, CircuitBreaker, CircuitOpenError, State
from fastapi_breaker.testing import FakeClock


class Boom(Exception):
    pass


def ok() -> str:
    return "ok"


def fail() -> None:
    raise Boom


async def succeed(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        assert await breaker.call(ok) == "ok"


async def failing(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(Boom):
            await breaker.call(fail)


Make = Callable[..., CircuitBreaker]


@pytest.fixture(params=["fast", "guarded"])
def make(request: pytest.FixtureRequest) -> Make:
    """A breaker factory, run twice: a closed breaker with no capacity and no `fire`/`success`
    listener takes a lock-free fast path; the others take the guarded path. Both must decide alike.
    """

    def factory(clock: FakeClock, **options: Any) -> CircuitBreaker:
        if request.param == "guarded":
            options.setdefault("capacity", 1000)
        options.setdefault("volume_threshold", 0)  # the default (10) is tested on its own
        # No call timeout: nothing in these tests may depend on the event loop's timer.
        breaker = CircuitBreaker(name="opening", clock=clock, timeout=None, **options)
        if request.param == "guarded":
            breaker.on("success", lambda event: None)
        return breaker

    return factory


# ------------------------------------------------------------------ the threshold


async def test_exactly_the_threshold_stays_closed(make: Make) -> None:
    breaker = make(FakeClock(), error_threshold_percentage=50)
    await succeed(breaker)
    await failing(breaker)  # 1 of 2 = 50%: not strictly above 50
    assert breaker.state is State.CLOSED
    assert breaker.stats.error_percentage == 50.0


async def test_fifty_of_a_hundred_stays_closed_fifty_one_opens(make: Make) -> None:
    # The volume keeps the breaker shut until the 100th call, so the 100th call decides.
    breaker = make(FakeClock(), error_threshold_percentage=50, volume_threshold=100)
    await succeed(breaker, 50)
    await failing(breaker, 50)
    assert breaker.stats.error_percentage == 50.0
    assert breaker.state is State.CLOSED

    other = make(FakeClock(), error_threshold_percentage=50, volume_threshold=100)
    await succeed(other, 49)
    await failing(other, 50)
    assert other.state is State.CLOSED  # 99 calls: under the volume
    await failing(other)  # 51 of 100 = 51%
    assert other.state is State.OPEN


async def test_one_more_failure_above_the_threshold_opens(make: Make) -> None:
    breaker = make(FakeClock(), error_threshold_percentage=50)
    await succeed(breaker)
    await failing(breaker)
    assert breaker.state is State.CLOSED
    await failing(breaker)  # 2 of 3
    assert breaker.state is State.OPEN


async def test_a_success_never_opens_even_above_the_threshold(make: Make) -> None:
    # The decision is taken on a counted failure only.
    breaker = make(FakeClock(), error_threshold_percentage=50, volume_threshold=3)
    await failing(breaker, 2)
    await succeed(breaker)  # 2 of 3 failed, volume reached, but a success does not judge
    assert breaker.state is State.CLOSED
    await failing(breaker)  # 3 of 4
    assert breaker.state is State.OPEN


# ------------------------------------------------------------------ the volume


async def test_volume_threshold_nine_failures_stay_closed_the_tenth_opens(make: Make) -> None:
    breaker = make(FakeClock(), volume_threshold=10)
    await failing(breaker, 9)
    assert breaker.state is State.CLOSED
    assert breaker.stats.failures == 9
    assert breaker.stats.error_percentage == 100.0
    await failing(breaker)
    assert breaker.state is State.OPEN
    assert breaker.stats.failures == 10


# ------------------------------------------------------------------ warm-up


async def test_warm_up_holds_the_breaker_shut_for_one_window_since_creation(make: Make) -> None:
    clock = FakeClock(100.0)  # the warm-up counts from creation, not from zero
    breaker = make(clock, allow_warm_up=True, rolling_count_timeout=10)
    await failing(breaker, 5)
    assert breaker.state is State.CLOSED
    clock.advance(9.5)
    await failing(breaker)  # still 0.5 s before the warm-up ends
    assert breaker.state is State.CLOSED
    assert breaker.stats.failures == 6
    clock.advance(0.5)
    await failing(breaker)
    assert breaker.state is State.OPEN


async def test_without_warm_up_the_first_failure_may_open(make: Make) -> None:
    breaker = make(FakeClock(), allow_warm_up=False)
    await failing(breaker)
    assert breaker.state is State.OPEN


# ------------------------------------------------------------------ rejections


async def test_rejections_do_not_dilute_the_error_percentage(make: Make) -> None:
    breaker = make(FakeClock())
    await succeed(breaker)
    await failing(breaker)
    await failing(breaker)  # 2 of 3: opens
    assert breaker.state is State.OPEN
    for _ in range(6):
        with pytest.raises(CircuitOpenError):
            await breaker.call(ok)
    stats = breaker.stats
    assert (stats.fires, stats.successes, stats.failures, stats.rejects) == (9, 1, 2, 6)
    # 2 / 3, not 2 / 9.
    assert stats.error_percentage == pytest.approx(200 / 3)


async def test_rejections_in_the_window_count_neither_toward_volume_nor_the_percentage() -> None:
    # Rejections only happen while open, and closing clears the window, so a closed breaker
    # with rejections in its window comes from a restored snapshot.
    options = BreakerOptions(timeout=None, volume_threshold=4).to_dict()
    bucket = {
        "age": 0,
        "succeeded": [],
        "failed": [0.0, 0.0],
        "rejects": 10,
        "timeouts": 0,
        "fallbacks": 0,
        "semaphore_rejections": 0,
        "cancelled": 0,
    }
    snapshot = {
        "name": "restored",
        "state": "closed",
        "enabled": True,
        "shutdown": False,
        "forced_open": False,
        "retry_after": None,
        "options": options,
        "window": [bucket],
    }
    breaker = CircuitBreaker.from_dict(snapshot, clock=FakeClock())
    assert breaker.stats.rejects == 10
    await failing(breaker)
    # 3 counted calls < 4: had the 10 rejections counted toward volume, 100% would open here.
    assert breaker.state is State.CLOSED
    await failing(breaker)
    # 4 of 4 = 100%: had the rejections diluted it, 4 of 14 = 29% would stay closed.
    assert breaker.state is State.OPEN


# ------------------------------------------------------------------ the rolling window


async def test_failures_still_in_the_window_count(make: Make) -> None:
    clock = FakeClock()
    breaker = make(clock, volume_threshold=3, rolling_count_timeout=10, rolling_count_buckets=10)
    await failing(breaker, 2)
    clock.advance(9.5)  # the t=0 bucket is the oldest of the ten still live
    assert breaker.stats.failures == 2
    await failing(breaker)
    assert breaker.state is State.OPEN


async def test_failures_that_aged_out_of_the_window_no_longer_count(make: Make) -> None:
    clock = FakeClock()
    breaker = make(clock, volume_threshold=3, rolling_count_timeout=10, rolling_count_buckets=10)
    await failing(breaker, 2)
    clock.advance(10.0)
    assert breaker.stats.failures == 0
    await failing(breaker)  # with the two old ones this would be 3 of 3 and open
    assert breaker.state is State.CLOSED
    await failing(breaker, 2)
    assert breaker.state is State.OPEN


# ------------------------------------------------------------------ late results


async def test_late_failure_from_an_earlier_closed_period_is_counted_but_does_not_open(
    make: Make,
) -> None:
    breaker = make(FakeClock())
    gate = asyncio.Event()

    async def slow_failure() -> None:
        await gate.wait()
        raise Boom

    task = asyncio.create_task(breaker.call(slow_failure))
    await asyncio.sleep(0)  # let the call be admitted and block on the gate
    breaker.open()
    breaker.close()
    gate.set()
    with pytest.raises(Boom):
        await task
    # One failure of one call is 100%: it would open, had the call been admitted this period.
    assert breaker.stats.failures == 1
    assert breaker.state is State.CLOSED


async def test_window_is_cleared_on_close_after_a_half_open_trial(make: Make) -> None:
    clock = FakeClock()
    # The window outlives the reset timeout, so only the clearing can forget the old failures.
    breaker = make(clock, volume_threshold=3, reset_timeout=5, rolling_count_timeout=60)
    await failing(breaker, 3)
    assert breaker.state is State.OPEN
    clock.advance(5)
    assert breaker.state is State.HALF_OPEN
    await succeed(breaker)
    assert breaker.state is State.CLOSED
    assert (breaker.stats.successes, breaker.stats.failures) == (0, 0)
    await failing(breaker)
    # Counted alone: 1 call < volume 3. With the old window: 4 failures of 5 = 80% would open.
    assert breaker.state is State.CLOSED
    assert breaker.stats.failures == 1
    await failing(breaker, 2)
    assert breaker.state is State.OPEN


async def test_close_clears_the_window(make: Make) -> None:
    breaker = make(FakeClock(), volume_threshold=3)
    await failing(breaker, 2)
    assert breaker.stats.failures == 2
    breaker.open()
    breaker.close()
    assert breaker.stats.failures == 0
    await failing(breaker, 2)
    assert breaker.state is State.CLOSED


def failing_calls_before_opening(
    rate: int, window: float, threshold: float, volume: int, *, quiet: bool = False
) -> int:
    """A breaker called `rate` times a second, every call succeeding for a whole window (none,
    if `quiet`), then every call failing: how many failing calls it lets through before it
    opens."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        clock=clock,
        timeout=None,
        rolling_count_timeout=window,
        rolling_count_buckets=10,
        error_threshold_percentage=threshold,
        volume_threshold=volume,
    )

    async def play() -> int:
        for _ in range(0 if quiet else round(rate * window)):
            await succeed(breaker)
            clock.advance(1 / rate)
        failed = 0
        while breaker.state is State.CLOSED:
            assert failed < 10 * rate * window  # bounded: it must open within the window
            await failing(breaker)
            failed += 1
            clock.advance(1 / rate)
        return failed

    return asyncio.run(play())


@pytest.mark.parametrize(
    ("rate", "window", "threshold", "failed"),
    [
        # About threshold x calls in the window, never the volume threshold. Within one
        # bucket's calls of it: the successes leave the window a bucket at a time.
        (20, 10.0, 50.0, 100),  # 200 calls in the window
        (200, 10.0, 50.0, 1000),  # 2,000: the docs' example
        (200, 2.0, 50.0, 201),  # a shorter window opens sooner
        (200, 10.0, 25.0, 467),  # 500 less part of the bucket that left first
    ],
)
def test_under_steady_traffic_the_percentage_over_the_window_decides_not_the_volume(
    rate: int, window: float, threshold: float, failed: int
) -> None:
    assert failing_calls_before_opening(rate, window, threshold, volume=10) == failed


def test_after_a_quiet_window_the_volume_threshold_decides() -> None:
    # No successes left in the window: the first volume_threshold failures open it.
    assert failing_calls_before_opening(200, 10.0, 50.0, volume=10, quiet=True) == 10
