"""`capacity`: a limit on concurrent calls that refuses, without counting a failure."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastapi_breaker import CapacityExceededError, CircuitBreaker, Event, State
from fastapi_breaker.testing import FakeClock


class Boom(Exception):
    pass


class Held:
    """A call in flight until released, ending in a result or an error."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.fail = False

    async def __call__(self) -> str:
        await self.release.wait()
        if self.fail:
            raise Boom
        return "done"


def ok() -> str:
    return "ok"


async def fill(breaker: CircuitBreaker, count: int) -> tuple[list[Held], list[asyncio.Task[Any]]]:
    held = [Held() for _ in range(count)]
    tasks = [asyncio.create_task(breaker.call(h)) for h in held]
    await asyncio.sleep(0)  # every call is admitted and blocks on its gate
    return held, tasks


def make(**options: Any) -> CircuitBreaker:
    return CircuitBreaker(name="narrow", capacity=2, clock=FakeClock(), **options)


async def test_third_call_over_capacity_is_refused_and_is_not_a_failure() -> None:
    breaker = make(volume_threshold=0)
    events: list[Event] = []
    for name in ("fire", "semaphore_locked", "failure", "reject", "open"):
        breaker.on(name, events.append)
    held, tasks = await fill(breaker, 2)
    events.clear()  # the two admitted calls' fire events

    with pytest.raises(CapacityExceededError) as caught:
        await breaker.call(ok)
    assert caught.value.capacity == 2
    assert caught.value.name == "narrow"
    assert [event.name for event in events] == ["fire", "semaphore_locked"]
    assert events[1].error is caught.value
    stats = breaker.stats
    assert (stats.fires, stats.semaphore_rejections, stats.failures, stats.rejects) == (1, 1, 0, 0)
    assert breaker.state is State.CLOSED

    for h in held:
        h.release.set()
    assert await asyncio.gather(*tasks) == ["done", "done"]
    assert breaker.stats.successes == 2


async def test_many_refusals_never_open_the_breaker() -> None:
    breaker = make(volume_threshold=0)
    held, tasks = await fill(breaker, 2)
    for _ in range(10):
        with pytest.raises(CapacityExceededError):
            await breaker.call(ok)
    assert breaker.stats.semaphore_rejections == 10
    assert breaker.state is State.CLOSED
    for h in held:
        h.release.set()
    await asyncio.gather(*tasks)


@pytest.mark.parametrize("ending", ["success", "failure", "cancel"])
async def test_the_slot_frees_when_a_call_ends(ending: str) -> None:
    # A huge volume keeps one failure from opening the breaker: only the slot is under test.
    breaker = make(volume_threshold=10**6)
    held, tasks = await fill(breaker, 2)
    with pytest.raises(CapacityExceededError):
        await breaker.call(ok)

    if ending == "cancel":
        tasks[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await tasks[0]
    else:
        held[0].fail = ending == "failure"
        held[0].release.set()
        if ending == "failure":
            with pytest.raises(Boom):
                await tasks[0]
        else:
            assert await tasks[0] == "done"

    assert await breaker.call(ok) == "ok"  # the freed slot
    # ... and exactly one was freed: with the second call still running, a third is refused.
    third, third_tasks = await fill(breaker, 1)
    with pytest.raises(CapacityExceededError):
        await breaker.call(ok)
    assert breaker.stats.semaphore_rejections == 2

    for h in (held[1], *third):
        h.release.set()
    await asyncio.gather(tasks[1], *third_tasks)


async def test_slot_frees_after_a_timeout() -> None:
    breaker = CircuitBreaker(capacity=1, timeout=0.02, volume_threshold=10**6, clock=FakeClock())

    async def hang() -> None:
        await asyncio.Event().wait()

    with pytest.raises(TimeoutError):
        await breaker.call(hang)
    assert await breaker.call(ok) == "ok"
    assert breaker.stats.semaphore_rejections == 0


def test_call_sync_respects_capacity_and_frees_the_slot() -> None:
    breaker = CircuitBreaker(capacity=1, clock=FakeClock())
    inner: list[BaseException] = []

    def reentrant() -> str:
        # While this call holds the only slot, a nested one is refused.
        try:
            breaker.call_sync(ok)
        except CapacityExceededError as exc:
            inner.append(exc)
        return "outer"

    assert breaker.call_sync(reentrant) == "outer"
    assert len(inner) == 1
    assert breaker.call_sync(ok) == "ok"
    assert (breaker.stats.successes, breaker.stats.semaphore_rejections) == (2, 1)


# ------------------------------------------------------------------ errors before the call starts


class BreakingClock(FakeClock):
    """A fake clock that raises on its next reading once `broken` is set."""

    __slots__ = ("broken",)

    def __init__(self) -> None:
        super().__init__()
        self.broken = False

    def __call__(self) -> float:
        if self.broken:
            self.broken = False
            raise RuntimeError("clock")
        return self.now


class BreakableBreaker(CircuitBreaker):
    """A breaker whose clock can be broken right after admission, or whose deadline queue fails."""

    __slots__ = ("broken_queue", "clock_to_break")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock_to_break: BreakingClock | None = None
        self.broken_queue = False

    def _enter(self, args: Any, kwargs: Any) -> object:
        entered = super()._enter(args, kwargs)
        if self.clock_to_break is not None:
            self.clock_to_break.broken = True  # the very next reading, before the call, raises
        return entered

    def _queue_for(self, loop: Any) -> Any:
        if self.broken_queue:
            raise RuntimeError("queue")
        return super()._queue_for(loop)


def break_clock_after_admission(breaker: BreakableBreaker, clock: BreakingClock) -> None:
    breaker.clock_to_break = clock


def restore(breaker: BreakableBreaker) -> None:
    breaker.clock_to_break = None
    breaker.broken_queue = False


@pytest.mark.parametrize("limit", [5.0, None])
async def test_an_error_between_admission_and_the_call_gives_the_slot_back(
    limit: float | None,
) -> None:
    clock = BreakingClock()
    breaker = BreakableBreaker(capacity=1, timeout=limit, clock=clock)
    break_clock_after_admission(breaker, clock)
    with pytest.raises(RuntimeError, match=r"^clock$"):
        await breaker.call(ok)
    assert breaker.core.in_flight == 0
    restore(breaker)
    assert await breaker.call(ok) == "ok"
    assert breaker.core.in_flight == 0
    stats = breaker.stats
    # The call that never started is counted nowhere.
    assert (stats.fires, stats.successes, stats.failures, stats.semaphore_rejections) == (
        1,
        1,
        0,
        0,
    )


async def test_a_failing_deadline_queue_gives_the_slot_back() -> None:
    breaker = BreakableBreaker(capacity=1, timeout=5.0, clock=FakeClock())

    breaker.broken_queue = True
    with pytest.raises(RuntimeError, match=r"^queue$"):
        await breaker.call(ok)
    assert breaker.core.in_flight == 0
    restore(breaker)
    assert await breaker.call(ok) == "ok"


def test_call_sync_gives_the_slot_back_when_the_start_cannot_be_read() -> None:
    clock = BreakingClock()
    breaker = BreakableBreaker(capacity=1, clock=clock)
    break_clock_after_admission(breaker, clock)
    with pytest.raises(RuntimeError, match=r"^clock$"):
        breaker.call_sync(ok)
    assert breaker.core.in_flight == 0
    restore(breaker)
    assert breaker.call_sync(ok) == "ok"
    assert breaker.core.in_flight == 0


def test_begin_gives_the_slot_back_when_the_start_cannot_be_read() -> None:
    clock = BreakingClock()
    breaker = BreakableBreaker(capacity=1, clock=clock)
    break_clock_after_admission(breaker, clock)
    with pytest.raises(RuntimeError, match=r"^clock$"):
        breaker.begin()
    assert breaker.core.in_flight == 0
    restore(breaker)
    attempt = breaker.begin()
    attempt.succeeded()
    assert breaker.core.in_flight == 0


async def test_a_trial_that_never_started_gives_its_permit_back() -> None:
    clock = BreakingClock()
    breaker = BreakableBreaker(capacity=1, reset_timeout=10.0, volume_threshold=0, clock=clock)
    breaker.open()
    clock.advance(10.0)
    assert breaker.state is State.HALF_OPEN
    break_clock_after_admission(breaker, clock)
    with pytest.raises(RuntimeError, match=r"^clock$"):
        await breaker.call(ok)
    assert breaker.core.in_flight == 0
    assert breaker.state is State.HALF_OPEN
    assert breaker.retry_after == 0.0  # the permit is free again
    restore(breaker)
    assert await breaker.call(ok) == "ok"
    assert breaker.state is State.CLOSED
