"""Fallbacks: what they receive, when they answer, and what happens when they fail."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastapi_breaker import (
    CallTimeoutError,
    CapacityExceededError,
    CircuitBreaker,
    CircuitOpenError,
    Event,
)
from fastapi_breaker.testing import FakeClock


class Boom(Exception):
    pass


class FallbackFailed(Exception):
    pass


def fail(*args: Any, **kwargs: Any) -> None:
    raise Boom


async def hang() -> None:
    await asyncio.Event().wait()


def record(breaker: CircuitBreaker, *names: Any) -> list[Event]:
    seen: list[Event] = []
    for name in names:
        breaker.on(name, seen.append)
    return seen


ALL_EVENTS = ("fire", "success", "failure", "timeout", "reject", "open", "fallback")


# ------------------------------------------------------------------ what a fallback receives


async def test_sync_fallback_receives_args_error_kwargs_and_answers() -> None:
    received: list[tuple[Any, ...]] = []

    def fallback(*args: Any, **kwargs: Any) -> str:
        received.append((args, kwargs))
        return "from fallback"

    breaker = CircuitBreaker(fail, clock=FakeClock()).fallback(fallback)
    assert await breaker.fire(1, 2, key="v") == "from fallback"
    ((args, kwargs),) = received
    assert args[:2] == (1, 2)
    assert isinstance(args[2], Boom)
    assert kwargs == {"key": "v"}


async def test_async_fallback_is_awaited() -> None:
    received: list[tuple[Any, ...]] = []

    async def fallback(a: int, exc: BaseException, *, key: str) -> str:
        await asyncio.sleep(0)
        received.append((a, exc, key))
        return f"async {a} {key}"

    breaker = CircuitBreaker(fail, clock=FakeClock()).fallback(fallback)
    assert await breaker.fire(7, key="k") == "async 7 k"
    ((a, exc, key),) = received
    assert (a, key) == (7, "k")
    assert isinstance(exc, Boom)


async def test_breaker_as_fallback_fires_its_action_with_args_error_kwargs() -> None:
    received: list[tuple[Any, ...]] = []

    async def backup(a: int, exc: BaseException, *, key: str) -> str:
        received.append((a, exc, key))
        return "from backup"

    backup_breaker = CircuitBreaker(backup, name="backup", clock=FakeClock())
    breaker = CircuitBreaker(fail, name="primary", clock=FakeClock()).fallback(backup_breaker)
    assert await breaker.fire(3, key="x") == "from backup"
    ((a, exc, key),) = received
    assert (a, key) == (3, "x")
    assert isinstance(exc, Boom)
    assert (backup_breaker.stats.fires, backup_breaker.stats.successes) == (1, 1)
    assert breaker.stats.fallbacks == 1


def test_fallback_returns_the_breaker_for_chaining() -> None:
    breaker = CircuitBreaker()
    assert breaker.fallback(lambda exc: None) is breaker


def test_fallback_must_be_callable() -> None:
    with pytest.raises(TypeError, match="fallback"):
        CircuitBreaker().fallback("not callable")  # type: ignore[arg-type]


# ------------------------------------------------------------------ when it answers


async def test_fallback_on_failure_in_event_order() -> None:
    breaker = CircuitBreaker(fail, clock=FakeClock(), volume_threshold=0).fallback(
        lambda exc: type(exc).__name__
    )
    seen = record(breaker, *ALL_EVENTS)
    assert await breaker.fire() == "Boom"
    assert [event.name for event in seen] == ["fire", "failure", "open", "fallback"]
    assert seen[-1].result == "Boom"
    assert isinstance(seen[-1].error, Boom)
    assert (breaker.stats.failures, breaker.stats.fallbacks) == (1, 1)


async def test_fallback_on_rejection_in_event_order() -> None:
    breaker = CircuitBreaker(fail, clock=FakeClock()).fallback(lambda exc: exc)
    breaker.open()
    seen = record(breaker, *ALL_EVENTS)
    error = await breaker.fire()
    assert isinstance(error, CircuitOpenError)
    assert error.retry_after == 30.0
    assert [event.name for event in seen] == ["fire", "reject", "fallback"]
    assert (breaker.stats.rejects, breaker.stats.fallbacks) == (1, 1)


async def test_fallback_on_rejection_when_nobody_listens() -> None:
    # With no listener the open breaker refuses on its shortest path; the fallback still runs.
    breaker = CircuitBreaker(fail, clock=FakeClock()).fallback(lambda exc: exc)
    breaker.open()
    assert isinstance(await breaker.fire(), CircuitOpenError)
    assert (breaker.stats.rejects, breaker.stats.fallbacks) == (1, 1)


async def test_fallback_on_capacity_in_event_order() -> None:
    gate = asyncio.Event()

    async def held() -> str:
        await gate.wait()
        return "held"

    breaker = CircuitBreaker(held, capacity=1, clock=FakeClock()).fallback(lambda exc: exc)
    first = asyncio.create_task(breaker.fire())
    await asyncio.sleep(0)
    seen = record(breaker, *ALL_EVENTS, "semaphore_locked")
    error = await breaker.fire()
    assert isinstance(error, CapacityExceededError)
    assert error.capacity == 1
    assert [event.name for event in seen] == ["fire", "semaphore_locked", "fallback"]
    gate.set()
    assert await first == "held"
    assert (breaker.stats.semaphore_rejections, breaker.stats.fallbacks) == (1, 1)


async def test_fallback_on_timeout_in_event_order() -> None:
    breaker = CircuitBreaker(hang, timeout=0.02, clock=FakeClock(), volume_threshold=0).fallback(
        lambda exc: exc
    )
    seen = record(breaker, *ALL_EVENTS)
    error = await breaker.fire()
    assert isinstance(error, CallTimeoutError)
    assert [event.name for event in seen] == ["fire", "timeout", "failure", "open", "fallback"]
    assert (breaker.stats.timeouts, breaker.stats.fallbacks) == (1, 1)


# ------------------------------------------------------------------ when it does not


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_fallback_that_raises_propagates_its_error_without_fallback_event(kind: str) -> None:
    def sync_fallback(exc: BaseException) -> None:
        raise FallbackFailed

    async def async_fallback(exc: BaseException) -> None:
        raise FallbackFailed

    fallback = sync_fallback if kind == "sync" else async_fallback
    breaker = CircuitBreaker(fail, clock=FakeClock(), volume_threshold=0).fallback(fallback)
    seen = record(breaker, *ALL_EVENTS)
    with pytest.raises(FallbackFailed):
        await breaker.fire()
    assert [event.name for event in seen] == ["fire", "failure", "open"]
    assert (breaker.stats.failures, breaker.stats.fallbacks) == (1, 0)
    # The same when the fallback answers a rejection.
    with pytest.raises(FallbackFailed):
        await breaker.fire()
    assert [event.name for event in seen][3:] == ["fire", "reject"]
    assert (breaker.stats.rejects, breaker.stats.fallbacks) == (1, 0)


async def test_filtered_error_skips_the_fallback() -> None:
    used: list[BaseException] = []
    breaker = CircuitBreaker(
        fail, error_filter=lambda exc: isinstance(exc, Boom), clock=FakeClock()
    ).fallback(used.append)
    seen = record(breaker, *ALL_EVENTS)
    with pytest.raises(Boom):
        await breaker.fire()
    assert used == []
    assert [event.name for event in seen] == ["fire", "success"]
    assert (breaker.stats.successes, breaker.stats.failures, breaker.stats.fallbacks) == (1, 0, 0)


async def test_success_does_not_use_the_fallback() -> None:
    used: list[BaseException] = []
    breaker = CircuitBreaker(lambda: "fine", clock=FakeClock()).fallback(used.append)
    assert await breaker.fire() == "fine"
    assert used == []
    assert breaker.stats.fallbacks == 0


async def test_fallbacks_stat_counts_every_answer_exactly() -> None:
    # volume 3: the first two failures leave it closed, the third opens it.
    breaker = CircuitBreaker(fail, volume_threshold=3, clock=FakeClock()).fallback(lambda e: None)
    for _ in range(3):
        assert await breaker.fire() is None
    for _ in range(4):
        assert await breaker.fire() is None  # rejected
    stats = breaker.stats
    assert (stats.failures, stats.rejects, stats.fallbacks) == (3, 4, 7)


def test_has_fallback_says_whether_one_is_set() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    assert breaker.has_fallback is False
    breaker.fallback(lambda exc: "backup")
    assert breaker.has_fallback is True
