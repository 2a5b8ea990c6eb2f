"""Call timeouts: the only thing the breaker leaves to the event loop's timer.

Each test uses a tiny `timeout=` and an action that awaits forever, so the timer, not a sleep,
ends the call.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastapi_breaker import CallTimeoutError, CircuitBreaker, State
from fastapi_breaker.testing import FakeClock


class Boom(Exception):
    pass


class Hang:
    """An action that never returns, and notes whether its coroutine was cancelled."""

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0

    async def __call__(self) -> None:
        self.started += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


def record(breaker: CircuitBreaker, *names: Any) -> list[str]:
    seen: list[str] = []
    for name in names:
        breaker.on(name, lambda event: seen.append(event.name))
    return seen


def counts(breaker: CircuitBreaker) -> tuple[int, int, int, int]:
    stats = breaker.stats
    return stats.fires, stats.successes, stats.failures, stats.timeouts


async def test_call_past_its_timeout_raises_and_its_coroutine_is_cancelled() -> None:
    breaker = CircuitBreaker(name="slow", timeout=0.02, clock=FakeClock())
    hang = Hang()
    with pytest.raises(CallTimeoutError) as caught:
        await breaker.call(hang)
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.name == "slow"
    assert caught.value.timeout == 0.02
    assert hang.cancelled == 1
    assert counts(breaker) == (1, 0, 1, 1)


async def test_timeout_events_in_order() -> None:
    breaker = CircuitBreaker(name="slow", timeout=0.02, clock=FakeClock(), volume_threshold=0)
    seen = record(breaker, "fire", "timeout", "failure", "open", "success")
    with pytest.raises(CallTimeoutError):
        await breaker.call(Hang())
    assert seen == ["fire", "timeout", "failure", "open"]
    assert breaker.state is State.OPEN


async def test_timeout_none_lets_a_call_run_past_any_limit() -> None:
    breaker = CircuitBreaker(timeout=None, clock=FakeClock())
    gate = asyncio.Event()

    async def slow() -> str:
        await gate.wait()
        return "done"

    task = asyncio.create_task(breaker.call(slow))
    # A breaker with timeout=0.02 would have cancelled it well within this wait.
    done, _ = await asyncio.wait({task}, timeout=0.1)
    assert not done
    gate.set()
    assert await task == "done"
    assert counts(breaker) == (1, 1, 0, 0)


@pytest.mark.parametrize(
    "options",
    [{"timeout": None}, {"timeout": 5.0}, {"timeout": 5.0, "capacity": 3}],
    ids=["no-timeout", "timeout", "guarded-path"],
)
async def test_callers_own_cancellation_propagates_and_is_no_failure(options: Any) -> None:
    breaker = CircuitBreaker(clock=FakeClock(), **options)
    seen = record(breaker, "failure", "timeout", "open")
    hang = Hang()
    task = asyncio.create_task(breaker.call(hang))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hang.cancelled == 1
    # The call ended, so `fires` counts it; it is neither a failure nor a timeout.
    assert counts(breaker) == (1, 0, 0, 0)
    assert seen == []
    assert breaker.state is State.CLOSED


async def test_outer_asyncio_timeout_wins_and_the_breaker_does_not_misreport() -> None:
    breaker = CircuitBreaker(timeout=5.0, clock=FakeClock())
    hang = Hang()
    with pytest.raises(TimeoutError) as caught:
        async with asyncio.timeout(0.02):
            await breaker.call(hang)
    assert not isinstance(caught.value, CallTimeoutError)
    assert hang.cancelled == 1
    assert counts(breaker) == (1, 0, 0, 0)
    assert breaker.state is State.CLOSED


async def test_breaker_timeout_inside_a_longer_outer_timeout_is_the_breakers() -> None:
    breaker = CircuitBreaker(name="inner", timeout=0.02, clock=FakeClock())
    with pytest.raises(CallTimeoutError) as caught:
        async with asyncio.timeout(5):
            await breaker.call(Hang())
    assert caught.value.name == "inner"
    assert counts(breaker) == (1, 0, 1, 1)
    # The outer scope was left intact: the task has no cancellation pending.
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0


async def test_nested_breakers_inner_timeout_shorter() -> None:
    outer = CircuitBreaker(name="outer", timeout=5.0, clock=FakeClock())
    inner = CircuitBreaker(name="inner", timeout=0.02, clock=FakeClock())
    hang = Hang()
    with pytest.raises(CallTimeoutError) as caught:
        await outer.call(inner.call, hang)
    assert caught.value.name == "inner"
    assert hang.cancelled == 1
    assert counts(inner) == (1, 0, 1, 1)
    # For the outer breaker, the inner timeout is an ordinary failure of its call.
    assert counts(outer) == (1, 0, 1, 0)


async def test_nested_breakers_outer_timeout_shorter() -> None:
    outer = CircuitBreaker(name="outer", timeout=0.02, clock=FakeClock())
    inner = CircuitBreaker(name="inner", timeout=5.0, clock=FakeClock())
    hang = Hang()
    with pytest.raises(CallTimeoutError) as caught:
        await outer.call(inner.call, hang)
    assert caught.value.name == "outer"
    assert hang.cancelled == 1
    assert counts(outer) == (1, 0, 1, 1)
    # The inner call was cancelled from outside: not its failure, not its timeout.
    assert counts(inner) == (1, 0, 0, 0)


async def test_many_concurrent_calls_with_the_same_timeout_all_time_out() -> None:
    breaker = CircuitBreaker(timeout=0.02, volume_threshold=10**6, clock=FakeClock())
    hang = Hang()
    results = await asyncio.gather(
        *(breaker.call(hang) for _ in range(200)), return_exceptions=True
    )
    assert all(isinstance(result, CallTimeoutError) for result in results)
    assert (hang.started, hang.cancelled) == (200, 200)
    assert counts(breaker) == (200, 0, 200, 200)
    assert breaker.state is State.CLOSED


async def test_a_call_that_returns_in_time_is_not_timed_out() -> None:
    breaker = CircuitBreaker(timeout=5.0, clock=FakeClock())

    async def quick() -> str:
        await asyncio.sleep(0)
        return "fast"

    assert await breaker.call(quick) == "fast"
    assert counts(breaker) == (1, 1, 0, 0)


# ------------------------------------------------------------------ call_sync, by the clock


def test_call_sync_over_its_timeout_by_the_clock_raises_and_drops_the_result() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(name="sync", timeout=1.0, clock=clock)

    def slow() -> str:
        clock.advance(1.5)
        return "too late"

    with pytest.raises(CallTimeoutError) as caught:
        breaker.call_sync(slow)
    assert caught.value.name == "sync"
    assert caught.value.timeout == 1.0
    assert counts(breaker) == (1, 0, 1, 1)


def test_call_sync_exactly_at_its_timeout_is_in_time() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(timeout=1.0, clock=clock)

    def on_the_dot() -> str:
        clock.advance(1.0)
        return "ok"

    assert breaker.call_sync(on_the_dot) == "ok"
    assert counts(breaker) == (1, 1, 0, 0)


def test_call_sync_raising_after_its_timeout_counts_a_timeout_caused_by_the_error() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(timeout=1.0, clock=clock)

    def slow_failure() -> None:
        clock.advance(2.0)
        raise Boom

    with pytest.raises(CallTimeoutError) as caught:
        breaker.call_sync(slow_failure)
    assert isinstance(caught.value.__cause__, Boom)
    assert counts(breaker) == (1, 0, 1, 1)


def test_call_sync_with_timeout_none_has_no_limit() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(timeout=None, clock=clock)

    def slow() -> str:
        clock.advance(3600)
        return "eventually"

    assert breaker.call_sync(slow) == "eventually"
    assert counts(breaker) == (1, 1, 0, 0)


# ------------------------------------------------------------------ awkward actions


async def test_action_that_swallows_the_cancellation_and_returns_late_still_times_out() -> None:
    breaker = CircuitBreaker(name="stubborn", timeout=0.02, clock=FakeClock())
    swallowed: list[bool] = []

    async def stubborn() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.append(True)
        return "late result"

    with pytest.raises(CallTimeoutError) as caught:
        await breaker.call(stubborn)
    assert caught.value.name == "stubborn"
    assert swallowed == [True]
    assert counts(breaker) == (1, 0, 1, 1)
    # The breaker took back its own cancellation: nothing is left pending on the task.
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0


async def test_caller_cancelling_after_the_breakers_timeout_fired_wins() -> None:
    breaker = CircuitBreaker(timeout=0.02, clock=FakeClock())
    timer_fired = asyncio.Event()

    async def slow_cleanup() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            timer_fired.set()
            await asyncio.Event().wait()  # cleanup that the caller interrupts

    task = asyncio.create_task(breaker.call(slow_cleanup))
    async with asyncio.timeout(2):
        await timer_fired.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The caller's cancellation is re-raised untouched and is not reported as a timeout.
    assert counts(breaker) == (1, 0, 0, 0)
