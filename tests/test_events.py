"""Events: exact order per outcome, payloads, handler failures, async handlers, on/off."""

import asyncio
import logging
import re
from typing import Any

import pytest

from fastapi_breaker import (
    EVENT_NAMES,
    BreakerShutdownError,
    CallTimeoutError,
    CapacityExceededError,
    CircuitBreaker,
    CircuitOpenError,
    Event,
)
from fastapi_breaker.testing import FakeClock

# `snapshot` is left out of the order checks: it fires whenever a call crosses a bucket edge,
# which is tested on its own below.
ORDER_EVENTS = sorted(EVENT_NAMES - {"snapshot"})


def record(breaker: CircuitBreaker, names: list[str] = ORDER_EVENTS) -> list[Event]:
    log: list[Event] = []
    for name in names:
        breaker.on(name, log.append)  # type: ignore[arg-type]
    return log


def names(log: list[Event]) -> list[str]:
    return [event.name for event in log]


async def ok(value: Any = "ok") -> Any:
    return value


async def boom() -> None:
    raise RuntimeError("down")


async def hang() -> None:
    await asyncio.Event().wait()


def fallback_value(*args: Any, **kwargs: Any) -> str:
    return "fallback"


async def settle(done: Any, rounds: int = 50) -> None:
    """Give scheduled handler tasks a bounded number of loop turns to finish."""
    for _ in range(rounds):
        if done():
            return
        await asyncio.sleep(0)


# ------------------------------------------------------------------ orders


async def test_success_order() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    log = record(breaker)
    assert await breaker.call(ok) == "ok"
    assert names(log) == ["fire", "success"]


async def test_failure_that_opens_order() -> None:
    breaker = CircuitBreaker(clock=FakeClock(), volume_threshold=0).fallback(fallback_value)
    log = record(breaker)
    assert await breaker.call(boom) == "fallback"
    assert names(log) == ["fire", "failure", "open", "fallback"]


async def test_failure_below_threshold_order() -> None:
    breaker = CircuitBreaker(clock=FakeClock(), volume_threshold=5)
    log = record(breaker)
    with pytest.raises(RuntimeError):
        await breaker.call(boom)
    assert names(log) == ["fire", "failure"]


async def test_timeout_that_opens_order() -> None:
    breaker = CircuitBreaker(clock=FakeClock(), timeout=0.01, volume_threshold=0).fallback(
        fallback_value
    )
    log = record(breaker)
    assert await breaker.call(hang) == "fallback"
    assert names(log) == ["fire", "timeout", "failure", "open", "fallback"]


async def test_rejection_order() -> None:
    breaker = CircuitBreaker(clock=FakeClock()).fallback(fallback_value)
    breaker.open()
    log = record(breaker)
    assert await breaker.call(ok) == "fallback"
    assert names(log) == ["fire", "reject", "fallback"]


async def test_rejection_without_fallback_order() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    breaker.open()
    log = record(breaker)
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    assert names(log) == ["fire", "reject"]


async def test_filtered_error_order() -> None:
    # An excused error is a success: no failure, no fallback, and the error still propagates.
    breaker = CircuitBreaker(
        clock=FakeClock(), error_filter=lambda exc: isinstance(exc, KeyError)
    ).fallback(fallback_value)
    log = record(breaker)
    error = KeyError("missing")

    async def excused() -> None:
        raise error

    with pytest.raises(KeyError):
        await breaker.call(excused)
    assert names(log) == ["fire", "success"]
    assert log[1].error is error


async def test_raising_fallback_order() -> None:
    # The fallback's own error is raised, and no `fallback` event claims it answered.
    breaker = CircuitBreaker(clock=FakeClock(), volume_threshold=0)

    def broken_fallback(exc: BaseException) -> None:
        raise LookupError("fallback down")

    breaker.fallback(broken_fallback)
    log = record(breaker)
    with pytest.raises(LookupError):
        await breaker.call(boom)
    assert names(log) == ["fire", "failure", "open"]


async def test_fallback_event_on_the_quiet_rejection_path() -> None:
    # Listening to `fallback` only: the rejection takes the breaker's cheapest path.
    breaker = CircuitBreaker(clock=FakeClock()).fallback(fallback_value)
    breaker.open()
    log = record(breaker, ["fallback"])
    assert await breaker.call(ok, 5) == "fallback"
    (fallback,) = log
    assert isinstance(fallback.error, CircuitOpenError)
    assert (fallback.args, fallback.result) == ((5,), "fallback")


async def test_capacity_order() -> None:
    breaker = CircuitBreaker(clock=FakeClock(), capacity=1).fallback(fallback_value)
    log = record(breaker)
    release = asyncio.Event()

    async def busy() -> str:
        await release.wait()
        return "busy"

    first = asyncio.create_task(breaker.call(busy))
    await settle(lambda: log)
    assert names(log) == ["fire"]
    log.clear()

    assert await breaker.call(ok) == "fallback"
    assert names(log) == ["fire", "semaphore_locked", "fallback"]

    release.set()
    assert await first == "busy"


async def test_half_open_trial_success_order() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, reset_timeout=30.0)
    breaker.open()
    clock.advance(30.0)
    # No timer moves the state: half_open is emitted by the call that notices the time.
    log = record(breaker)
    assert await breaker.call(ok) == "ok"
    assert names(log) == ["fire", "half_open", "success", "close"]


async def test_half_open_trial_failure_order() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, reset_timeout=30.0).fallback(fallback_value)
    breaker.open()
    clock.advance(30.0)
    log = record(breaker)
    assert await breaker.call(boom) == "fallback"
    assert names(log) == ["fire", "half_open", "failure", "open", "fallback"]


async def test_reading_state_emits_half_open_once() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, reset_timeout=30.0)
    breaker.open()
    log = record(breaker)
    clock.advance(29.0)
    assert breaker.opened
    assert names(log) == []
    clock.advance(1.0)
    assert breaker.half_open
    assert breaker.half_open
    assert names(log) == ["half_open"]


def test_open_and_close_emit_once() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    log = record(breaker)
    breaker.close()  # already closed: nothing happens
    breaker.open()
    breaker.open()  # re-opening restarts the reset timeout but is no new `open`
    breaker.close()
    assert names(log) == ["open", "close"]


def test_force_open_then_close() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    log = record(breaker)
    breaker.force_open()
    breaker.close()
    assert names(log) == ["open", "close"]


async def test_shutdown_emits_once_and_later_calls_emit_nothing() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    log = record(breaker)
    breaker.shutdown()
    breaker.shutdown()
    assert names(log) == ["shutdown"]
    with pytest.raises(BreakerShutdownError):
        await breaker.call(ok)
    assert names(log) == ["shutdown"]


# ------------------------------------------------------------------ payloads


async def test_fire_and_success_payloads() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock)
    log = record(breaker)

    async def slow_add(a: int, b: int, *, scale: int) -> int:
        clock.advance(2.5)
        return (a + b) * scale

    assert await breaker.call(slow_add, 1, 2, scale=10) == 30
    fire, success = log
    assert fire.breaker is breaker
    assert (fire.args, fire.kwargs) == ((1, 2), {"scale": 10})
    assert (fire.result, fire.error, fire.latency, fire.stats) == (None, None, None, None)
    assert success.breaker is breaker
    assert (success.args, success.kwargs) == ((1, 2), {"scale": 10})
    assert success.result == 30
    assert success.error is None
    assert success.latency == 2.5


async def test_failure_and_fallback_payloads() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock).fallback(fallback_value)
    log = record(breaker, ["failure", "fallback"])
    error = RuntimeError("down")

    async def slow_boom(x: int, *, y: int) -> None:
        clock.advance(1.25)
        raise error

    assert await breaker.call(slow_boom, 7, y=8) == "fallback"
    failure, fallback = log
    assert failure.error is error
    assert failure.latency == 1.25
    assert (failure.args, failure.kwargs) == ((7,), {"y": 8})
    assert fallback.error is error
    assert fallback.result == "fallback"
    assert (fallback.args, fallback.kwargs) == ((7,), {"y": 8})


async def test_timeout_payload() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, timeout=0.01)
    log = record(breaker, ["timeout", "failure"])

    async def stall() -> None:
        clock.advance(0.75)
        await asyncio.Event().wait()

    with pytest.raises(CallTimeoutError) as caught:
        await breaker.call(stall)
    timeout, failure = log
    assert timeout.error is caught.value
    assert failure.error is caught.value
    assert timeout.latency == failure.latency == 0.75


async def test_reject_and_capacity_payloads_carry_the_refusal() -> None:
    breaker = CircuitBreaker(clock=FakeClock(), capacity=1)
    log = record(breaker, ["reject", "semaphore_locked"])
    started, release = asyncio.Event(), asyncio.Event()

    async def busy() -> None:
        started.set()
        await release.wait()

    first = asyncio.create_task(breaker.call(busy))
    await settle(started.is_set)
    with pytest.raises(CapacityExceededError) as full:
        await breaker.call(ok, 1)
    release.set()
    await first

    breaker.open()
    with pytest.raises(CircuitOpenError) as rejected:
        await breaker.call(ok, 2)

    locked, reject = log
    assert (locked.name, locked.error, locked.args) == ("semaphore_locked", full.value, (1,))
    assert (reject.name, reject.error, reject.args) == ("reject", rejected.value, (2,))


async def test_snapshot_is_emitted_when_the_window_rotates() -> None:
    clock = FakeClock()
    # Buckets of 1 s each.
    breaker = CircuitBreaker(clock=clock, rolling_count_timeout=10.0, rolling_count_buckets=10)
    await breaker.call(ok)
    log = record(breaker, ["snapshot"])

    clock.advance(0.5)
    await breaker.call(ok)
    assert log == []  # still inside the first bucket

    clock.advance(0.5)
    await breaker.call(ok)
    (snapshot,) = log
    assert snapshot.breaker is breaker
    assert snapshot.stats is not None
    # The window as it was when the bucket closed: the two earlier calls, not this one.
    assert snapshot.stats.successes == 2
    assert snapshot.stats.fires == 2


# ------------------------------------------------------------------ handlers


async def test_raising_sync_handler_is_logged_and_the_call_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    breaker = CircuitBreaker(clock=FakeClock(), name="svc")
    seen: list[str] = []

    def broken(event: Event) -> None:
        raise ValueError("handler bug")

    breaker.on("success", broken)
    breaker.on("success", lambda event: seen.append(event.name))  # still runs after the bug
    with caplog.at_level(logging.ERROR, logger="fastapi_breaker"):
        assert await breaker.call(ok) == "ok"
    assert seen == ["success"]
    (log_record,) = caplog.records
    assert log_record.name == "fastapi_breaker"
    assert log_record.levelno == logging.ERROR
    assert log_record.exc_info is not None
    assert isinstance(log_record.exc_info[1], ValueError)
    assert "'svc'" in log_record.getMessage()


async def test_raising_async_handler_is_logged_and_the_call_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    breaker = CircuitBreaker(clock=FakeClock(), name="svc")

    async def broken(event: Event) -> None:
        raise ValueError("async handler bug")

    breaker.on("success", broken)
    with caplog.at_level(logging.ERROR, logger="fastapi_breaker"):
        assert await breaker.call(ok) == "ok"
        await settle(lambda: caplog.records)
    (log_record,) = caplog.records
    assert log_record.name == "fastapi_breaker"
    assert log_record.exc_info is not None
    assert isinstance(log_record.exc_info[1], ValueError)
    assert "'svc'" in log_record.getMessage()


async def test_async_handler_runs() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    handled = asyncio.Event()
    seen: list[Any] = []

    async def handler(event: Event) -> None:
        await asyncio.sleep(0)
        seen.append(event.result)
        handled.set()

    breaker.on("success", handler)
    await breaker.call(ok, 42)
    await settle(handled.is_set)
    assert seen == [42]


def test_unknown_event_name_is_refused() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    with pytest.raises(ValueError, match="'sucess'"):
        breaker.on("sucess", print)  # type: ignore[arg-type]


def test_non_callable_handler_is_refused() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    with pytest.raises(TypeError):
        breaker.on("success", 42)  # type: ignore[arg-type]


async def test_off_removes_only_that_handler() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    first: list[Event] = []
    second: list[Event] = []

    def first_handler(event: Event) -> None:
        first.append(event)

    def second_handler(event: Event) -> None:
        second.append(event)

    breaker.on("success", first_handler)
    breaker.on("success", second_handler)
    await breaker.call(ok)
    breaker.off("success", first_handler)
    await breaker.call(ok)
    assert (len(first), len(second)) == (1, 2)


async def test_off_last_handler_stops_the_event() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    log: list[Event] = []

    def handler(event: Event) -> None:
        log.append(event)

    breaker.on("fire", handler)
    breaker.off("fire", handler)
    await breaker.call(ok)
    assert log == []


async def test_off_removes_a_bound_method_handler() -> None:
    # `obj.method` is a new object on every access: off() must match it by equality, or
    # `breaker.off("fire", self.on_fire)` silently does nothing.
    breaker = CircuitBreaker(clock=FakeClock())
    log: list[Event] = []
    breaker.on("fire", log.append)  # type: ignore[arg-type]
    breaker.off("fire", log.append)  # type: ignore[arg-type]
    await breaker.call(ok)
    assert log == []


async def test_nothing_is_kept_for_handlers_subscribed_later() -> None:
    # With no handlers, every transition happens silently; a late subscriber sees only what
    # happens after it subscribed.
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, reset_timeout=30.0).fallback(fallback_value)
    await breaker.call(boom)  # opens
    await breaker.call(ok)  # rejected
    clock.advance(30.0)
    await breaker.call(ok)  # half-open trial closes it
    assert breaker.closed

    log = record(breaker, sorted(EVENT_NAMES))
    await breaker.call(ok)
    assert names(log) == ["fire", "success"]


# ------------------------------------------------------------------ bounded subscriptions


async def test_subscribing_the_same_handler_again_is_a_no_op() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    log: list[str] = []

    def first(event: Event) -> None:
        log.append("first")

    def second(event: Event) -> None:
        log.append("second")

    breaker.on("success", first)
    breaker.on("success", second)
    for _ in range(20_000):
        breaker.on("success", first)  # kept once, and in its first place
    await breaker.call(ok)
    assert log == ["first", "second"]
    assert len(breaker._emitter._handlers["success"]) == 2


async def test_an_equal_bound_method_is_the_same_handler() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    log: list[Event] = []
    breaker.on("success", log.append)  # type: ignore[arg-type]
    breaker.on("success", log.append)  # type: ignore[arg-type]  # a new, equal object
    await breaker.call(ok)
    assert names(log) == ["success"]
    breaker.off("success", log.append)  # type: ignore[arg-type]
    await breaker.call(ok)
    assert names(log) == ["success"]


def test_one_event_keeps_at_most_a_thousand_distinct_handlers() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    handlers = [lambda event: None for _ in range(1001)]
    for handler in handlers[:1000]:
        breaker.on("failure", handler)
    expected = (
        "event 'failure' already has 1000 handlers, the most one event keeps; "
        "remove one with off() first"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        breaker.on("failure", handlers[1000])
    # Re-subscribing a kept one is still a no-op, other events are not affected, and off()
    # makes room.
    breaker.on("failure", handlers[0])
    breaker.on("success", handlers[1000])
    breaker.off("failure", handlers[0])
    breaker.on("failure", handlers[1000])
    assert len(breaker._emitter._handlers["failure"]) == 1000
