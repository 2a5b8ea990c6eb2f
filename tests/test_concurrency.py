"""Thousands of concurrent callers: exactly half_open_max_calls trials get through half-open."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from fastapi_breaker import CircuitBreaker, CircuitOpenError, Event, State
from fastapi_breaker._deadlines import queue_count
from fastapi_breaker.testing import FakeClock

CALLERS = 10_000
RESET = 30.0


class Crowd:
    """CALLERS callers of one action that blocks until `release` is set.

    `settled` is set once every caller has either started the action or been rejected, so the
    test can look at the breaker while the admitted ones are still in flight.
    """

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self.release = asyncio.Event()
        self.settled = asyncio.Event()
        self.started = 0
        self.rejected = 0

    def _check_settled(self) -> None:
        if self.started + self.rejected == CALLERS:
            self.settled.set()

    async def action(self) -> str:
        self.started += 1
        self._check_settled()
        await self.release.wait()
        return "ok"

    async def caller(self) -> str:
        try:
            return await self.breaker.call(self.action)
        except CircuitOpenError:
            self.rejected += 1
            self._check_settled()
            return "rejected"

    def start(self) -> list[asyncio.Task[str]]:
        # All tasks exist before any runs: they really compete for the permits.
        return [asyncio.create_task(self.caller()) for _ in range(CALLERS)]


@pytest.mark.parametrize("trials", [1, 5])
async def test_half_open_admits_exactly_half_open_max_calls(trials: int) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        clock=clock, timeout=None, reset_timeout=RESET, half_open_max_calls=trials
    )
    seen: list[str] = []

    def record(event: Event) -> None:
        seen.append(event.name)

    breaker.on("open", record).on("half_open", record).on("close", record)
    breaker.open()
    clock.advance(RESET)

    crowd = Crowd(breaker)
    tasks = crowd.start()
    async with asyncio.timeout(30):  # a guard against a hang, not a wait for a state change
        await crowd.settled.wait()

    assert crowd.started == trials
    assert crowd.rejected == CALLERS - trials
    assert breaker.state is State.HALF_OPEN
    assert breaker.stats.rejects == CALLERS - trials
    assert breaker.stats.successes == 0

    crowd.release.set()
    results = await asyncio.gather(*tasks)

    assert results.count("ok") == trials
    assert results.count("rejected") == CALLERS - trials
    assert breaker.state is State.CLOSED
    assert seen == ["open", "half_open", "close"]
    # With the default 50 % threshold the breaker closes once more than half of the trials
    # succeeded (the failure % can then no longer exceed 50 %), clearing the window; the
    # trials that end after that are late and count in the stats only.
    closing_trial = trials // 2 + 1
    stats = breaker.stats
    assert stats.successes == trials - closing_trial
    assert stats.failures == 0
    assert stats.rejects == 0


@pytest.mark.parametrize("trials", [1, 5])
async def test_failing_trials_reopen_and_the_crowd_is_still_rejected(trials: int) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        clock=clock, timeout=None, reset_timeout=RESET, half_open_max_calls=trials
    )
    breaker.open()
    clock.advance(RESET)
    crowd = Crowd(breaker)

    async def failing_action() -> str:
        await crowd.action()
        raise RuntimeError("downstream down")

    async def caller() -> str:
        try:
            return await breaker.call(failing_action)
        except CircuitOpenError:
            crowd.rejected += 1
            crowd._check_settled()
            return "rejected"
        except RuntimeError:
            return "failed"

    tasks = [asyncio.create_task(caller()) for _ in range(CALLERS)]
    async with asyncio.timeout(30):
        await crowd.settled.wait()
    assert crowd.started == trials
    assert crowd.rejected == CALLERS - trials

    crowd.release.set()
    results = await asyncio.gather(*tasks)

    assert results.count("failed") == trials
    assert breaker.state is State.OPEN
    assert breaker.retry_after == RESET
    # Reopening does not clear the window: every trial and every rejection is still there.
    stats = breaker.stats
    assert stats.failures == trials
    assert stats.rejects == CALLERS - trials
    assert stats.fires == CALLERS


async def test_closed_breaker_lets_ten_thousand_concurrent_calls_through() -> None:
    clock = FakeClock()
    # timeout=5.0: every call is in flight at once on the breaker's deadline queue.
    breaker = CircuitBreaker(clock=clock, timeout=5.0)
    crowd = Crowd(breaker)
    tasks = crowd.start()
    async with asyncio.timeout(30):
        await crowd.settled.wait()
    assert crowd.started == CALLERS
    assert crowd.rejected == 0
    assert breaker.stats.fires == 0  # none has ended yet

    crowd.release.set()
    results = await asyncio.gather(*tasks)

    assert results == ["ok"] * CALLERS
    assert breaker.state is State.CLOSED
    stats = breaker.stats
    assert (stats.fires, stats.successes, stats.failures, stats.rejects, stats.timeouts) == (
        CALLERS,
        CALLERS,
        0,
        0,
        0,
    )


# ------------------------------------------------------------------ one breaker, many loops


def test_threads_each_running_their_own_loops_share_one_breaker_exactly() -> None:
    # Each asyncio.run() makes a loop, and so a deadline queue on the breaker; threads creating
    # and forgetting them at once once raced (dictionary changed size during iteration,
    # KeyError), and each such error kept a capacity slot for good.
    threads_count, runs, calls = 4, 400, 10
    breaker = CircuitBreaker(timeout=30.0, capacity=threads_count * calls, volume_threshold=0)
    errors: list[BaseException] = []
    results: list[str] = []
    start = threading.Barrier(threads_count)

    async def ok() -> str:
        await asyncio.sleep(0)
        return "ok"

    async def batch() -> list[str]:
        return await asyncio.gather(*(breaker.call(ok) for _ in range(calls)))

    def worker() -> None:
        start.wait()
        for _ in range(runs):
            try:
                results.extend(asyncio.run(batch()))
            except BaseException as exc:  # anything is a bug worth seeing
                errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up
    try:
        threads = [threading.Thread(target=worker) for _ in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    total = threads_count * runs * calls
    assert results == ["ok"] * total
    assert breaker.core.in_flight == 0
    stats = breaker.stats
    assert (stats.successes, stats.failures, stats.semaphore_rejections) == (total, 0, 0)
    # Queues of closed loops are forgotten: only the last few loops' can remain.
    assert queue_count() <= threads_count
