"""Cancellation: a cancelled trial gives its permit back; a caller's cancel is not a failure."""

from __future__ import annotations

import asyncio

import pytest

from fastapi_breaker import CallTimeoutError, CircuitBreaker, CircuitOpenError, State
from fastapi_breaker.testing import FakeClock

RESET = 30.0


def half_open_breaker(timeout: float | None = None) -> CircuitBreaker:
    clock = FakeClock()
    breaker = CircuitBreaker(
        clock=clock, timeout=timeout, reset_timeout=RESET, half_open_max_calls=1
    )
    breaker.open()
    clock.advance(RESET)
    assert breaker.state is State.HALF_OPEN
    return breaker


class Blocked:
    """An action that signals it started, then waits for ever (until it is cancelled)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = 0

    async def __call__(self) -> str:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        raise AssertionError("unreachable")  # pragma: no cover


async def ok() -> str:
    return "ok"


async def start_and_cancel_trial(breaker: CircuitBreaker) -> None:
    """Run one trial until it blocks, check it holds the only permit, then cancel its task."""
    action = Blocked()
    task = asyncio.create_task(breaker.call(action))
    await action.started.wait()
    # The trial holds the permit: anyone else is turned away meanwhile.
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert action.cancelled == 1


@pytest.mark.parametrize("call_timeout", [None, 5.0])
async def test_cancelled_trial_gives_its_permit_back(call_timeout: float | None) -> None:
    breaker = half_open_breaker(call_timeout)
    await start_and_cancel_trial(breaker)

    assert breaker.state is State.HALF_OPEN
    assert breaker.retry_after == 0.0  # the permit is free again
    stats = breaker.stats
    # fires counts the cancelled trial and the rejection; neither is a failure.
    assert (stats.fires, stats.successes, stats.failures, stats.rejects) == (2, 0, 0, 1)

    assert await breaker.call(ok) == "ok"
    assert breaker.state is State.CLOSED


@pytest.mark.parametrize("call_timeout", [None, 5.0])
async def test_a_hundred_cancelled_trials_in_a_row_do_not_stick(call_timeout: float | None) -> None:
    breaker = half_open_breaker(call_timeout)
    for _ in range(100):
        await start_and_cancel_trial(breaker)
        assert breaker.state is State.HALF_OPEN

    stats = breaker.stats
    assert (stats.fires, stats.successes, stats.failures, stats.rejects) == (200, 0, 0, 100)
    assert await breaker.call(ok) == "ok"
    assert breaker.state is State.CLOSED


async def test_cancelled_trial_then_failed_trial_reopens() -> None:
    breaker = half_open_breaker()
    await start_and_cancel_trial(breaker)

    async def boom() -> None:
        raise RuntimeError("still down")

    with pytest.raises(RuntimeError):
        await breaker.call(boom)
    assert breaker.state is State.OPEN
    assert breaker.retry_after == RESET


async def test_caller_cancelling_a_timed_call_is_reraised_and_not_a_failure() -> None:
    breaker = CircuitBreaker(clock=FakeClock(), timeout=5.0)
    action = Blocked()
    task = asyncio.create_task(breaker.call(action))
    await action.started.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert action.cancelled == 1
    stats = breaker.stats
    assert (stats.fires, stats.successes, stats.failures, stats.timeouts) == (1, 0, 0, 0)
    assert breaker.state is State.CLOSED


async def test_cancelling_before_the_call_starts_counts_nothing() -> None:
    breaker = CircuitBreaker(clock=FakeClock(), timeout=5.0)
    action = Blocked()
    task = asyncio.create_task(breaker.call(action))
    task.cancel()  # at once: the coroutine never gets to run

    with pytest.raises(asyncio.CancelledError):
        await task
    assert not action.started.is_set()
    assert breaker.stats.fires == 0


async def test_timed_out_call_leaves_the_task_cancel_count_clean() -> None:
    breaker = CircuitBreaker(clock=FakeClock(), timeout=0.01)
    task = asyncio.current_task()
    assert task is not None

    with pytest.raises(CallTimeoutError):
        await breaker.call(Blocked())
    # The breaker's own cancel was taken back: the task is not left "being cancelled".
    assert task.cancelling() == 0
    stats = breaker.stats
    assert (stats.fires, stats.failures, stats.timeouts) == (1, 1, 1)

    # So the caller's own timeout scopes still work afterwards.
    with pytest.raises(TimeoutError) as caught:
        async with asyncio.timeout(0.01):
            await asyncio.Event().wait()
    assert not isinstance(caught.value, CallTimeoutError)
    assert task.cancelling() == 0


async def test_breaker_timeout_inside_a_longer_caller_timeout_is_the_breakers() -> None:
    breaker = CircuitBreaker(clock=FakeClock(), timeout=0.01)
    task = asyncio.current_task()
    assert task is not None

    with pytest.raises(CallTimeoutError):
        async with asyncio.timeout(5):
            await breaker.call(Blocked())
    assert task.cancelling() == 0
    assert breaker.stats.timeouts == 1


async def test_caller_timeout_shorter_than_the_breakers_is_not_a_failure() -> None:
    breaker = CircuitBreaker(clock=FakeClock(), timeout=5.0)
    task = asyncio.current_task()
    assert task is not None

    # The caller's asyncio.timeout fires first: the breaker sees the caller's cancellation,
    # re-raises it untouched, and asyncio.timeout turns it into its own TimeoutError.
    with pytest.raises(TimeoutError) as caught:
        async with asyncio.timeout(0.01):
            await breaker.call(Blocked())
    assert not isinstance(caught.value, CallTimeoutError)
    assert task.cancelling() == 0
    stats = breaker.stats
    assert (stats.fires, stats.failures, stats.timeouts) == (1, 0, 0)
    assert breaker.state is State.CLOSED


async def test_caller_cancel_arriving_with_the_timeout_wins() -> None:
    breaker = CircuitBreaker(clock=FakeClock(), timeout=0.01)

    async def cancelled_by_both() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            # The breaker's timer cancelled us; the caller's cancel lands at the same moment.
            current = asyncio.current_task()
            assert current is not None
            current.cancel()
            raise

    task = asyncio.create_task(breaker.call(cancelled_by_both))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    stats = breaker.stats
    assert (stats.fires, stats.failures, stats.timeouts) == (1, 0, 0)
    assert breaker.state is State.CLOSED
