"""The deadline queue holds memory for the calls in flight, not for every call since the oldest.

Calls that end while an older one still runs used to stay queued until the older one ended or
timed out: 200,000 short calls behind one hung call held about 20 MB. The queue is shared by
every breaker with the same limit on a loop, so it must also keep their calls apart.
"""

import asyncio
from typing import Any

import pytest

from fastapi_breaker import CallTimeoutError, CircuitBreaker
from fastapi_breaker._deadlines import DeadlineQueue, queue_for, queues_of


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
        # Only the hung call, however many calls went by.
        assert max(held) == 1

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


def test_calls_ending_out_of_order_leave_exactly_the_running_ones_in_deadline_order() -> None:
    loop = StubLoop()
    queue = DeadlineQueue(loop, 10.0)  # type: ignore[arg-type]
    cancelled: list[int] = []
    keys: list[Any] = []
    for number in range(200):
        loop.now = number * 0.01
        keys.append(queue.start(StubTask(number, cancelled), owner=None))  # type: ignore[arg-type]
    assert loop.timers == [10.0]  # one timer, at the oldest deadline
    # Every call but those divisible by 10 ends early, out of order (the oldest still runs).
    for number in reversed(range(200)):
        if number % 10:
            assert queue.finish(keys[number]) is False
    assert queue.held == 20
    loop.now = 10.0 + 0.95  # past the deadlines of calls 0 to 95
    queue._expire()
    assert cancelled == list(range(0, 96, 10))
    # The timer is re-armed for the oldest call still running: call 100.
    assert loop.timers[-1] == pytest.approx(10.0 + 1.0)
    assert [queue.finish(key) for key in keys[::10]] == [True] * 10 + [False] * 10
    assert queue.held == 0


def test_an_expired_call_is_told_so_once_and_the_others_are_not() -> None:
    loop = StubLoop()
    queue = DeadlineQueue(loop, 1.0)  # type: ignore[arg-type]
    cancelled: list[int] = []
    first = queue.start(StubTask(0, cancelled), owner=None)  # type: ignore[arg-type]
    loop.now = 0.5
    later = [queue.start(StubTask(n, cancelled), owner=None) for n in range(1, 41)]  # type: ignore[arg-type]
    for key in later[:20]:
        assert queue.finish(key) is False
    loop.now = 1.0
    queue._expire()  # the first call times out
    assert cancelled == [0]
    assert queue.held == 20
    assert queue.finish(first) is True  # the expired call ends later: it was expired
    assert [queue.finish(key) for key in later[20:]] == [False] * 20
    assert queue.held == 0


def test_breakers_with_the_same_limit_share_one_queue_and_keep_their_timeouts_apart() -> None:
    loop = ManualTimeLoop()
    slow = CircuitBreaker(name="slow", timeout=5.0, volume_threshold=0)
    quick = CircuitBreaker(name="quick", timeout=5.0, volume_threshold=0)
    other = CircuitBreaker(name="other", timeout=2.0, volume_threshold=0)

    async def main() -> None:
        hung = asyncio.ensure_future(slow.call(hang))
        hung_other = asyncio.ensure_future(other.call(hang))
        await asyncio.sleep(0)
        assert await quick.call(ok) == "ok"
        queues = queues_of(loop)
        assert sorted(q.seconds for q in queues) == [2.0, 5.0]  # one per limit, not per breaker
        assert queue_for(loop, 5.0).held == 1  # the hung call of `slow`
        loop.now = 2.0
        with pytest.raises(CallTimeoutError, match="'other'"):
            await hung_other
        assert not hung.done()
        loop.now = 5.0
        with pytest.raises(CallTimeoutError, match="'slow'"):
            await hung
        assert (slow.stats.timeouts, quick.stats.timeouts, other.stats.timeouts) == (1, 0, 1)
        assert quick.stats.successes == 1

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_a_timed_call_inside_another_of_the_same_task_gets_its_own_deadline() -> None:
    loop = ManualTimeLoop()
    outer = CircuitBreaker(name="outer", timeout=5.0, volume_threshold=0)
    inner = CircuitBreaker(name="inner", timeout=5.0, volume_threshold=0)
    order: list[str] = []

    async def nested() -> str:
        assert await inner.call(ok) == "ok"  # starts and ends inside the outer call
        order.append("inner done")
        loop.now = 1.0
        await inner.call(hang)  # its own deadline: 6.0, after the outer one
        return "unreachable"

    async def main() -> None:
        call = asyncio.ensure_future(outer.call(nested))
        await asyncio.sleep(0)
        loop.now = 5.0  # the outer deadline passes first: the task is cancelled once
        with pytest.raises(CallTimeoutError, match="'outer'"):
            await call
        assert order == ["inner done"]
        assert (outer.stats.timeouts, outer.stats.failures) == (1, 1)
        # The inner call was cancelled by the outer limit, not its own: neither a timeout nor
        # a failure of `inner`.
        assert (inner.stats.successes, inner.stats.failures, inner.stats.timeouts) == (1, 0, 0)
        assert queue_for(loop, 5.0).held == 0

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
