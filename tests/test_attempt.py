"""`breaker.begin()` and `Attempt`: calls whose outcome the integration reports itself."""

from __future__ import annotations

import asyncio

import pytest

from fastapi_breaker import (
    BreakerShutdownError,
    CallTimeoutError,
    CapacityExceededError,
    CircuitBreaker,
    CircuitOpenError,
    State,
)
from fastapi_breaker.testing import FakeClock


class Boom(Exception):
    pass


def make(clock: FakeClock, **options: object) -> CircuitBreaker:
    # These tests open on the first failures; the default volume_threshold (10) has its own.
    options.setdefault("volume_threshold", 0)
    return CircuitBreaker(clock=clock, timeout=None, reset_timeout=10.0, **options)  # type: ignore[arg-type]


def test_success_and_failure_are_counted_with_their_latency() -> None:
    clock = FakeClock()
    breaker = make(clock, volume_threshold=100)
    attempt = breaker.begin()
    clock.advance(0.5)
    attempt.succeeded()
    failing = breaker.begin()
    clock.advance(1.5)
    assert failing.failed(Boom("down")).args == ("down",)
    stats = breaker.stats
    assert (stats.fires, stats.successes, stats.failures) == (2, 1, 1)
    assert stats.latency_mean == 1.0  # exact: (0.5 + 1.5) / 2
    assert stats.percentiles[0.0] == 0.46875  # 0.5, in the bin (0.4375, 0.5]
    assert stats.percentiles[1.0] == 1.375  # 1.5, in the bin (1.25, 1.5]


def test_a_second_settlement_is_ignored() -> None:
    clock = FakeClock()
    breaker = make(clock, volume_threshold=100)
    attempt = breaker.begin()
    attempt.succeeded()
    attempt.failed(Boom())
    attempt.succeeded()
    assert attempt.settled
    assert (breaker.stats.successes, breaker.stats.failures) == (1, 0)


def test_failure_opens_and_begin_then_refuses_with_the_breaker_error() -> None:
    clock = FakeClock()
    breaker = make(clock)
    breaker.begin().failed(Boom())
    assert breaker.state is State.OPEN
    with pytest.raises(CircuitOpenError) as refused:
        breaker.begin()
    assert refused.value.retry_after == 10.0
    assert breaker.stats.rejects == 1


def test_open_for_keeps_the_breaker_open_longer_than_reset_timeout() -> None:
    clock = FakeClock()
    breaker = make(clock)
    breaker.begin().failed(Boom(), open_for=45.0)
    assert breaker.retry_after == 45.0
    clock.advance(44.9)
    assert breaker.state is State.OPEN
    clock.advance(0.1)
    assert breaker.state is State.HALF_OPEN


def test_open_for_shorter_than_reset_timeout_changes_nothing() -> None:
    clock = FakeClock()
    breaker = make(clock)
    breaker.begin().failed(Boom(), open_for=2.0)
    assert breaker.retry_after == 10.0


def test_open_for_on_a_failure_that_does_not_open_is_forgotten() -> None:
    clock = FakeClock()
    breaker = make(clock, volume_threshold=3)
    breaker.begin().failed(Boom(), open_for=300.0)
    breaker.begin().failed(Boom())
    breaker.begin().failed(Boom())  # the third opens it, with no hint of its own
    assert breaker.retry_after == 10.0


def test_a_failed_trial_with_open_for_reopens_for_that_long() -> None:
    clock = FakeClock()
    breaker = make(clock)
    breaker.open()
    clock.advance(10.0)
    trial = breaker.begin()
    assert trial.trial
    trial.failed(Boom(), open_for=60.0)
    assert breaker.state is State.OPEN
    assert breaker.retry_after == 60.0


def test_a_successful_trial_closes_and_a_cancelled_one_gives_its_permit_back() -> None:
    clock = FakeClock()
    breaker = make(clock)
    breaker.open()
    clock.advance(10.0)
    first = breaker.begin()
    with pytest.raises(CircuitOpenError):
        breaker.begin()  # the only permit is taken
    first.cancelled()
    assert breaker.state is State.HALF_OPEN
    second = breaker.begin()
    assert second.trial
    second.succeeded()
    assert breaker.state is State.CLOSED


def test_a_late_outcome_counts_in_stats_but_does_not_move_the_state() -> None:
    clock = FakeClock()
    breaker = make(clock)
    early = breaker.begin()
    breaker.open()
    clock.advance(10.0)
    trial = breaker.begin()
    early.failed(Boom())
    assert breaker.state is State.HALF_OPEN
    trial.succeeded()
    assert breaker.state is State.CLOSED
    assert breaker.stats.successes == 0  # closing cleared the window


def test_filtered_error_counts_as_success() -> None:
    clock = FakeClock()
    breaker = make(clock, error_filter=lambda exc: isinstance(exc, KeyError))
    breaker.begin().failed(KeyError("not found"))
    assert (breaker.stats.successes, breaker.stats.failures) == (1, 0)
    assert breaker.state is State.CLOSED


def test_capacity_slot_is_held_until_settled() -> None:
    breaker = make(FakeClock(), capacity=1)
    attempt = breaker.begin()
    with pytest.raises(CapacityExceededError):
        breaker.begin()
    attempt.succeeded()
    breaker.begin().succeeded()
    assert breaker.stats.semaphore_rejections == 1


def test_disabled_breaker_admits_and_counts_nothing() -> None:
    breaker = make(FakeClock())
    breaker.disable()
    attempt = breaker.begin()
    attempt.failed(Boom())
    assert breaker.stats.fires == 0
    assert breaker.state is State.CLOSED


def test_shut_down_breaker_refuses() -> None:
    breaker = make(FakeClock())
    breaker.shutdown()
    with pytest.raises(BreakerShutdownError):
        breaker.begin()


def test_events_of_an_attempt_follow_the_call_order() -> None:
    clock = FakeClock()
    breaker = make(clock)
    seen: list[str] = []
    for name in ("fire", "success", "failure", "open", "reject"):
        breaker.on(name, lambda event: seen.append(event.name))  # type: ignore[arg-type]
    breaker.begin().failed(Boom())
    with pytest.raises(CircuitOpenError):
        breaker.begin()
    assert seen == ["fire", "failure", "open", "fire", "reject"]


async def test_time_limit_cancels_the_block_and_counts_a_timeout() -> None:
    breaker = CircuitBreaker(timeout=0.01, volume_threshold=100)
    attempt = breaker.begin()

    async def send() -> None:
        try:
            async with attempt.time_limit():
                await asyncio.Event().wait()
        except BaseException as exc:
            attempt.failed(exc)
            raise

    with pytest.raises(CallTimeoutError) as raised:
        await send()
    assert raised.value.timeout == 0.01
    stats = breaker.stats
    assert (stats.timeouts, stats.failures) == (1, 1)
    current = asyncio.current_task()
    assert current is not None
    assert current.cancelling() == 0


async def test_time_limit_that_is_not_reached_changes_nothing() -> None:
    breaker = CircuitBreaker(timeout=5.0)
    attempt = breaker.begin()
    async with attempt.time_limit():
        await asyncio.sleep(0)
    attempt.succeeded()
    assert (breaker.stats.successes, breaker.stats.timeouts) == (1, 0)


async def test_time_limit_applies_to_a_trial_even_without_a_timeout() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, timeout=None, half_open_timeout=0.01)
    breaker.open()
    clock.advance(30.0)
    trial = breaker.begin()
    with pytest.raises(CallTimeoutError):
        async with trial.time_limit():
            await asyncio.Event().wait()
    trial.failed(CallTimeoutError(breaker.name, 0.01))
    assert breaker.state is State.OPEN
    assert breaker.stats.timeouts == 1


async def test_callers_own_cancellation_passes_through_the_time_limit() -> None:
    breaker = CircuitBreaker(timeout=5.0)
    attempt = breaker.begin()

    async def run() -> None:
        try:
            async with attempt.time_limit():
                await asyncio.Event().wait()
        except BaseException as exc:
            attempt.failed(exc)
            raise

    task = asyncio.create_task(run())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = breaker.stats
    assert (stats.failures, stats.timeouts, stats.fires) == (0, 0, 1)


def test_a_trial_reported_successful_after_its_limit_has_failed() -> None:
    clock = FakeClock()
    breaker = make(clock, half_open_timeout=1.0)
    breaker.open()
    clock.advance(10.0)
    trial = breaker.begin()
    clock.advance(1.5)  # past the 1 s trial limit, with nobody looking
    trial.succeeded()
    assert breaker.state is State.OPEN
    assert breaker.stats.successes == 1  # the late success still counts in the stats


def test_check_passes_while_closed_and_refuses_while_open_without_admitting() -> None:
    clock = FakeClock()
    breaker = make(clock)
    breaker.check()
    assert breaker.stats.fires == 0
    breaker.open()
    with pytest.raises(CircuitOpenError) as refused:
        breaker.check()
    assert refused.value.retry_after == 10.0
    assert breaker.stats.rejects == 1
    clock.advance(10.0)
    breaker.check()  # half-open with its permit free: nothing taken
    trial = breaker.begin()
    assert trial.trial
    with pytest.raises(CircuitOpenError):
        breaker.check()  # the only permit is in use
    trial.succeeded()
    assert breaker.state is State.CLOSED


def test_check_on_a_shut_down_breaker_raises() -> None:
    breaker = make(FakeClock())
    breaker.shutdown()
    with pytest.raises(BreakerShutdownError):
        breaker.check()


def test_a_state_change_made_while_settling_a_cancelled_trial_is_announced() -> None:
    # Both trials run out their limit; settling one as cancelled is when the breaker notices,
    # and the `open` it moves to must be emitted like any other transition.
    clock = FakeClock()
    breaker = make(clock, half_open_max_calls=2, half_open_timeout=1.0)
    seen: list[str] = []
    for name in ("open", "half_open", "close"):
        breaker.on(name, lambda event: seen.append(event.name))
    breaker.open()
    clock.advance(10.0)
    first, second = breaker.begin(), breaker.begin()
    assert seen == ["open", "half_open"]
    clock.advance(1.5)
    first.cancelled()
    assert breaker.core.state is State.OPEN
    assert seen == ["open", "half_open", "open"]
    second.succeeded()
    assert seen == ["open", "half_open", "open"]
