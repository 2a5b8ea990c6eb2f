"""Breakers that were used and shut down leave no task, no timer and no reference behind."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
import time
import weakref

import pytest

from fastapi_breaker import CircuitBreaker, CircuitOpenError, State
from fastapi_breaker.testing import FakeClock

BREAKERS = 1_000
WITH_HEALTH_CHECK = 10
RESET = 30.0


def active_timers(loop: asyncio.AbstractEventLoop) -> list[asyncio.TimerHandle]:
    # `_scheduled` is private to BaseEventLoop, but it is the only list of pending timers.
    scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
    return [handle for handle in scheduled if not handle.cancelled()]


async def ok() -> str:
    return "ok"


async def boom() -> None:
    raise RuntimeError("down")


async def healthy() -> None:
    return None


async def use(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """Successes, a failure, a rejection and a half-open trial, all through the loop timers."""
    assert await breaker.call(ok) == "ok"
    assert await breaker.call(ok) == "ok"
    try:
        await breaker.call(boom)
    except RuntimeError:
        pass
    else:  # pragma: no cover
        raise AssertionError("the failure was swallowed")
    breaker.open()
    try:
        await breaker.call(ok)
    except CircuitOpenError:
        pass
    else:  # pragma: no cover
        raise AssertionError("an open breaker let a call through")
    clock.advance(RESET)
    assert await breaker.call(ok) == "ok"  # the trial, on the trial deadline queue
    assert breaker.state is State.CLOSED


async def test_a_thousand_used_and_shut_down_breakers_leave_nothing_behind() -> None:
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    assert asyncio.all_tasks() == {me}
    assert active_timers(loop) == []

    clock = FakeClock()
    breakers = [
        CircuitBreaker(clock=clock, timeout=5.0, reset_timeout=RESET, name=f"b{i}")
        for i in range(BREAKERS)
    ]
    health_tasks = [b.health_check(healthy, interval=60) for b in breakers[:WITH_HEALTH_CHECK]]
    for breaker in breakers:
        await use(breaker, clock)
    # Before shutdown the health checks are still running.
    assert len(asyncio.all_tasks()) == 1 + WITH_HEALTH_CHECK

    for breaker in breakers:
        breaker.shutdown()
    # Cancelling a task takes effect when it next runs: let the health checks finish. Use
    # asyncio.wait, which does not fetch their CancelledError: on CPython 3.11 a fetched one
    # keeps its traceback, and so the breaker in its frames, alive until the loop closes
    # (plain asyncio does the same with any object whose method a cancelled task ran).
    async with asyncio.timeout(10):  # a guard against a hang if shutdown missed a task
        await asyncio.wait(health_tasks)
    assert all(task.cancelled() for task in health_tasks)

    assert asyncio.all_tasks() == {me}
    assert active_timers(loop) == []

    refs = [weakref.ref(b) for b in breakers]
    del breakers, breaker, health_tasks
    gc.collect()
    assert [r for r in refs if r() is not None] == []


SCRIPTS = {
    "a call with timeout=30": """
        async def main():
            breaker = CircuitBreaker(timeout=30.0)
            assert await breaker.call(noop) == "done"
    """,
    "a call and a health check, never shut down": """
        async def main():
            breaker = CircuitBreaker(timeout=30.0)
            breaker.health_check(noop, interval=60)
            assert await breaker.call(noop) == "done"
    """,
    "a call_sync with timeout=30": """
        async def main():
            breaker = CircuitBreaker(timeout=30.0)
            assert breaker.call_sync(lambda: "done") == "done"
    """,
}


@pytest.mark.parametrize("body", list(SCRIPTS.values()), ids=list(SCRIPTS))
def test_process_using_a_breaker_exits_at_once(body: str) -> None:
    script = (
        textwrap.dedent(
            """
        import asyncio
        from fastapi_breaker import CircuitBreaker

        async def noop():
            return "done"
        """
        )
        + textwrap.dedent(body)
        + "\nasyncio.run(main())\nprint('exited')\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=20, check=False
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert done.stdout == "exited\n"
    assert elapsed < 5.0
