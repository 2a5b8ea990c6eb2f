"""Manual control: open, force_open, close, disable, enable, shutdown and health checks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastapi_breaker import (
    BreakerShutdownError,
    CircuitBreaker,
    CircuitOpenError,
    Event,
    State,
)
from fastapi_breaker.testing import FakeClock


class Boom(Exception):
    pass


def ok() -> str:
    return "ok"


def fail() -> None:
    raise Boom


def record(breaker: CircuitBreaker, *names: Any) -> list[str]:
    seen: list[str] = []
    for name in names:
        breaker.on(name, lambda event: seen.append(event.name))
    return seen


STATE_EVENTS = ("open", "half_open", "close", "shutdown")


# ------------------------------------------------------------------ open, force_open, close


async def test_open_rejects_until_reset_timeout_then_half_opens() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(reset_timeout=30, clock=clock)
    seen = record(breaker, *STATE_EVENTS)
    breaker.open()
    assert breaker.opened
    assert not breaker.forced_open
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    clock.advance(30)
    assert breaker.half_open
    assert seen == ["open", "half_open"]


async def test_open_again_restarts_the_reset_timeout_without_a_new_event() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(reset_timeout=30, clock=clock)
    seen = record(breaker, *STATE_EVENTS)
    breaker.open()
    clock.advance(20)
    breaker.open()
    assert breaker.retry_after == 30.0
    clock.advance(29)
    assert breaker.opened
    assert seen == ["open"]


async def test_force_open_stays_open_past_reset_timeout_until_close() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(reset_timeout=30, clock=clock)
    seen = record(breaker, *STATE_EVENTS)
    breaker.force_open()
    assert breaker.forced_open
    clock.advance(1000)
    assert breaker.state is State.OPEN
    assert breaker.retry_after == 30.0  # no release time: reset_timeout as a hint
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    breaker.close()
    assert breaker.state is State.CLOSED
    assert not breaker.forced_open
    assert await breaker.call(ok) == "ok"
    assert seen == ["open", "close"]


async def test_force_open_on_an_open_breaker_pins_it() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(reset_timeout=30, clock=clock)
    seen = record(breaker, *STATE_EVENTS)
    breaker.open()
    breaker.force_open()
    clock.advance(100)
    assert breaker.state is State.OPEN
    assert breaker.forced_open
    assert seen == ["open"]


async def test_open_releases_a_forced_open_to_the_reset_timeout() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(reset_timeout=30, clock=clock)
    breaker.force_open()
    breaker.open()
    assert not breaker.forced_open
    clock.advance(30)
    assert breaker.state is State.HALF_OPEN


async def test_close_on_a_closed_breaker_emits_nothing_but_clears_the_window() -> None:
    breaker = CircuitBreaker(clock=FakeClock(), volume_threshold=10)
    seen = record(breaker, *STATE_EVENTS)
    await breaker.call(ok)
    with pytest.raises(Boom):
        await breaker.call(fail)
    assert (breaker.stats.successes, breaker.stats.failures) == (1, 1)
    breaker.close()
    assert breaker.closed
    assert seen == []
    assert (breaker.stats.successes, breaker.stats.failures) == (0, 0)


# ------------------------------------------------------------------ disable, enable


async def test_disabled_breaker_lets_calls_through_uncounted_even_while_open() -> None:
    breaker = CircuitBreaker(volume_threshold=0, clock=FakeClock())
    seen = record(breaker, "fire", "success", "failure", "reject", "open")
    await breaker.call(ok)
    breaker.open()
    before = breaker.stats
    seen.clear()

    breaker.disable()
    assert not breaker.enabled
    assert await breaker.call(ok) == "ok"
    with pytest.raises(Boom):
        await breaker.call(fail)
    assert breaker.call_sync(ok) == "ok"
    assert breaker.stats == before
    assert seen == []
    assert breaker.state is State.OPEN

    breaker.enable()
    assert breaker.enabled
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    assert breaker.stats.rejects == before.rejects + 1


async def test_disabled_breaker_does_not_open_on_failures() -> None:
    breaker = CircuitBreaker(volume_threshold=0, clock=FakeClock())
    breaker.disable()
    for _ in range(5):
        with pytest.raises(Boom):
            await breaker.call(fail)
    assert breaker.state is State.CLOSED
    assert breaker.stats.fires == 0
    breaker.enable()
    with pytest.raises(Boom):
        await breaker.call(fail)
    assert breaker.state is State.OPEN


async def test_created_disabled() -> None:
    breaker = CircuitBreaker(enabled=False, clock=FakeClock())
    breaker.open()
    assert await breaker.call(ok) == "ok"
    assert breaker.stats.fires == 0


# ------------------------------------------------------------------ shutdown


async def test_shutdown_refuses_later_calls_and_emits_once() -> None:
    breaker = CircuitBreaker(ok, name="gone", clock=FakeClock())
    seen = record(breaker, *STATE_EVENTS)
    breaker.shutdown()
    assert breaker.is_shutdown
    with pytest.raises(BreakerShutdownError) as caught:
        await breaker.call(ok)
    assert caught.value.name == "gone"
    with pytest.raises(BreakerShutdownError):
        await breaker.fire()
    with pytest.raises(BreakerShutdownError):
        breaker.call_sync(ok)
    breaker.shutdown()  # a no-op
    assert seen == ["shutdown"]
    assert breaker.stats.fires == 0


async def test_shutdown_of_an_open_breaker_refuses_with_shutdown_not_open() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    breaker.open()
    breaker.shutdown()
    with pytest.raises(BreakerShutdownError):
        await breaker.call(ok)


# ------------------------------------------------------------------ health checks


async def test_failing_health_check_emits_then_opens_and_shutdown_cancels_it() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    failed = asyncio.Event()
    events: list[Event] = []

    def on_failed(event: Event) -> None:
        events.append(event)
        failed.set()

    seen = record(breaker, "open", "health_check_failed")
    breaker.on("health_check_failed", on_failed)
    problem = Boom("downstream unhealthy")

    def check() -> None:
        raise problem

    task = breaker.health_check(check, interval=0.001)
    async with asyncio.timeout(2):
        await failed.wait()
    assert events[0].error is problem
    assert seen[:2] == ["health_check_failed", "open"]
    assert breaker.state is State.OPEN
    # Later failures re-open an open breaker: that restarts its timeout, it is no new `open`.
    assert seen.count("open") == 1

    breaker.shutdown()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_async_health_check_failing_opens() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    failed = asyncio.Event()
    breaker.on("health_check_failed", lambda event: failed.set())

    async def check() -> None:
        raise Boom

    task = breaker.health_check(check, interval=0.001)
    async with asyncio.timeout(2):
        await failed.wait()
    assert breaker.state is State.OPEN
    breaker.shutdown()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_passing_health_check_leaves_the_breaker_closed() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    seen = record(breaker, "open", "health_check_failed")
    checked = asyncio.Event()
    runs = 0

    def check() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            checked.set()

    task = breaker.health_check(check, interval=0.001)
    async with asyncio.timeout(2):
        await checked.wait()
    assert breaker.state is State.CLOSED
    assert seen == []
    breaker.shutdown()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("interval", [0, -1, True, "1", None])
async def test_health_check_rejects_a_bad_interval(interval: Any) -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    with pytest.raises(ValueError, match="interval"):
        breaker.health_check(ok, interval=interval)


def test_health_check_needs_a_running_loop() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    with pytest.raises(RuntimeError, match="running event loop"):
        breaker.health_check(ok, interval=1)


async def test_health_check_after_shutdown_is_refused() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    breaker.shutdown()
    with pytest.raises(BreakerShutdownError):
        breaker.health_check(ok, interval=1)
