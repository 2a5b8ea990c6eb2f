"""The deadline queue holds memory for the calls in flight, not for every call since the oldest.

Calls that end while an older one still runs used to stay queued until the older one ended or
timed out: 200,000 short calls behind one hung call held about 20 MB.
"""

import asyncio
from typing import Any

import pytest

from fastapi_breaker import CallTimeoutError, CircuitBreaker
from fastapi_breaker._deadlines import Deadline, DeadlineQueue


class ManualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when the test says: timers fire exactly on time."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def time(self) -> float:
        return self.now


async def ok() -> str:
    return "ok"


async def hang() -> None:
    await asyncio.Event().wait()


def test_200_000_calls_behind_a_hung_one_keep_the_queue_small() -> None:
    loop = ManualTimeLoop()
    breaker = CircuitBreaker(timeout=5.0, volume_threshold=0)

    async def main() -> None:
        hung = asyncio.ensure_future(breaker.call(hang))
        await asyncio.sleep(0)  # the hung call starts first: every later deadline is behind it
        queue = breaker._queue
        assert queue is not None
        held: list[int] = []
        for i in range(200_000):
            assert await breaker.call(ok) == "ok"
            held.append(queue.held)
            if i % 10_000 == 0:
                await asyncio.sleep(0)
        # The hung call plus at most 32 finished ones, however many calls went by.
        assert max(held) == 33
        assert queue.held <= 33

        # The hung call still times out exactly at its deadline.
        loop.now = 4.999
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert not hung.done()
        loop.now = 5.0
        with pytest.raises(CallTimeoutError):
            await hung
        assert queue.held == 0
        assert breaker.stats.successes == 200_000
        assert breaker.stats.timeouts == 1

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


class StubLoop:
    """Just what a DeadlineQueue uses of a loop: its time and one timer."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[float] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any) -> Any:
        self.timers.append(when)
        return StubTimer()


class StubTimer:
    def cancel(self) -> None:
        pass


class StubTask:
    def __init__(self, number: int, cancelled: list[int]) -> None:
        self.number = number
        self.cancelled = cancelled

    def cancel(self) -> bool:
        self.cancelled.append(self.number)
        return True


def test_compaction_keeps_the_running_calls_in_deadline_order() -> None:
    loop = StubLoop()
    queue = DeadlineQueue(loop, 10.0)  # type: ignore[arg-type]
    cancelled: list[int] = []
    deadlines: list[Deadline] = []
    for number in range(200):
        loop.now = number * 0.01
        deadlines.append(queue.start(StubTask(number, cancelled)))  # type: ignore[arg-type]
    # Every call but those divisible by 10 ends early, out of order (the oldest still runs).
    for deadline in reversed(deadlines):
        if deadlines.index(deadline) % 10:
            queue.finish(deadline)
    # 20 running calls, and never more finished ones than running ones (or 32) in between.
    assert queue.held <= 20 + 32
    loop.now = 10.0 + 0.95  # past the deadlines of calls 0 to 95
    queue._expire()
    assert cancelled == list(range(0, 96, 10))
    assert [d.expired for d in deadlines[:100:10]] == [True] * 10
    # The timer is re-armed for the oldest call still running: call 100.
    assert loop.timers[-1] == pytest.approx(10.0 + 1.0)
    for deadline in deadlines[::10]:
        queue.finish(deadline)
    assert queue.held == 0
    assert queue.idle


def test_a_finished_call_is_counted_once_when_the_timer_drops_it() -> None:
    loop = StubLoop()
    queue = DeadlineQueue(loop, 1.0)  # type: ignore[arg-type]
    cancelled: list[int] = []
    first = queue.start(StubTask(0, cancelled))  # type: ignore[arg-type]
    loop.now = 0.5
    later = [queue.start(StubTask(n, cancelled)) for n in range(1, 41)]  # type: ignore[arg-type]
    for deadline in later[:20]:
        queue.finish(deadline)  # behind the first: kept for now
    loop.now = 1.0
    queue._expire()  # the first call times out; the finished ones behind it go with it
    assert cancelled == [0]
    assert queue.held == 20
    queue.finish(first)  # the expired call ends later: it is no longer queued
    for deadline in later[20:]:
        queue.finish(deadline)
    assert queue.held == 0
