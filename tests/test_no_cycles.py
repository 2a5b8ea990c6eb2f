"""Refusals and failures leave no reference cycles behind, and successes leave little.

A cycle (error -> traceback -> frame -> error) is freed only by the cyclic garbage collector.
While a circuit is open every request is refused, and one cycle per refusal buys a full
collection every few thousand requests: pauses of tens of milliseconds in the p99 of the very
503s that are meant to be fast.
"""

from __future__ import annotations

import collections
import contextlib
import gc
from collections.abc import Iterator

import httpx
import pytest

from fastapi_breaker import CircuitBreaker, CircuitOpenError
from fastapi_breaker.httpx import AsyncBreakerTransport, BreakerTransport
from fastapi_breaker.testing import FakeClock


class Boom(Exception):
    pass


async def ok() -> str:
    return "ok"


async def fail() -> None:
    raise Boom


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_collector")
@pytest.mark.parametrize("listening", [False, True], ids=["quiet", "with-reject-handler"])
async def test_rejected_calls_leave_no_cycles(listening: bool) -> None:
    breaker = CircuitBreaker(clock=FakeClock(), timeout=None)
    if listening:  # takes the guarded path instead of the quick rejection
        breaker.on("reject", lambda event: None)
    breaker.open()
    gc.collect()
    for _ in range(10):
        with contextlib.suppress(CircuitOpenError):
            await breaker.call(ok)
        with contextlib.suppress(CircuitOpenError):
            breaker.begin()
    assert gc.collect() == 0


@pytest.mark.usefixtures("no_collector")
@pytest.mark.parametrize("call_timeout", [None, 5.0])
async def test_failed_calls_leave_no_cycles(call_timeout: float | None) -> None:
    breaker = CircuitBreaker(clock=FakeClock(), timeout=call_timeout, volume_threshold=1000)
    gc.collect()
    for _ in range(10):
        with contextlib.suppress(Boom):
            await breaker.call(fail)
    assert gc.collect() == 0


@pytest.mark.usefixtures("no_collector")
def test_rejected_sync_calls_leave_no_cycles() -> None:
    breaker = CircuitBreaker(clock=FakeClock(), timeout=None)
    breaker.open()
    gc.collect()
    for _ in range(10):
        with contextlib.suppress(CircuitOpenError):
            breaker.call_sync(lambda: "ok")
    assert gc.collect() == 0


# httpx itself keeps each response in a cycle (response -> stream -> response): what the body
# still holds is freed only with it, by the collector. The breaker's part lets go of its attempt
# (and the attempt's ticket) when the body ends, leaving one stream wrapper per response.


def _ours_in_garbage() -> collections.Counter[str]:
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return collections.Counter(
            type(o).__qualname__
            for o in gc.garbage
            if type(o).__module__.startswith("fastapi_breaker")
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def _answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, stream=httpx.ByteStream(b'{"user": "alice"}'))


@pytest.mark.usefixtures("no_collector")
async def test_async_transport_leaves_only_its_stream_wrapper_to_the_collector() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    transport = AsyncBreakerTransport(httpx.MockTransport(_answer), breaker=breaker)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("http://auth/verify")
        gc.collect()
        for _ in range(10):
            assert (await client.get("http://auth/verify")).json() == {"user": "alice"}
        assert _ours_in_garbage() == {"_AsyncSettlingStream": 10}
    assert breaker.stats.successes == 11


@pytest.mark.usefixtures("no_collector")
def test_sync_transport_leaves_only_its_stream_wrapper_to_the_collector() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    transport = BreakerTransport(httpx.MockTransport(_answer), breaker=breaker)
    with httpx.Client(transport=transport) as client:
        client.get("http://auth/verify")
        gc.collect()
        for _ in range(10):
            assert client.get("http://auth/verify").json() == {"user": "alice"}
        assert _ours_in_garbage() == {"_SettlingStream": 10}
    assert breaker.stats.successes == 11
