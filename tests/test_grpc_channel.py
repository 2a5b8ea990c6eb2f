"""The channel helpers' unary-unary fast path: calls that bypass grpc.aio's interceptors yet go
through the breaker, against a real grpc.aio server on 127.0.0.1 (tests/grpc_server.py)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

from example_app.grpc_auth import auth_pb2, auth_pb2_grpc
from example_app.grpc_auth.server import GrpcAuthServer
from fastapi_breaker import BreakerRegistry, CircuitBreaker, State
from fastapi_breaker.grpc import (
    DEFAULT_FAILURE_CODES,
    BreakerChannel,
    GrpcCallTimeoutError,
    GrpcCircuitOpenError,
    insecure_channel,
)
from fastapi_breaker.testing import FakeClock
from tests.grpc_server import Backend
from tests.test_grpc_interceptor import (
    make_breaker,
    run,
    settled,
)

FAILURES = sorted(DEFAULT_FAILURE_CODES, key=lambda code: code.name)


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    server = Backend()
    await server.start()
    yield server
    await server.stop()


def helper_channel(port: int, breaker: CircuitBreaker, **options: Any) -> BreakerChannel:
    return insecure_channel(f"127.0.0.1:{port}", breaker=breaker, **options)


async def test_unary_unary_bypasses_grpcs_interceptors() -> None:
    async with helper_channel(1, make_breaker()) as channel:
        # grpc's plain multicallable, not its intercepted one: no task per call.
        inner = channel.unary_unary("/t.S/UU")._callable
        assert type(inner) is grpc.aio._channel.UnaryUnaryMultiCallable
        assert type(channel.unary_stream("/t.S/US")).__name__ == "UnaryStreamMultiCallable"
        assert channel.unary_stream("/t.S/US")._interceptors  # streams keep the interceptors


async def test_a_success_is_counted_and_the_call_proxies_grpcs(backend: Backend) -> None:
    breaker = make_breaker()
    async with helper_channel(backend.port, breaker) as channel:
        call: Any = channel.unary_unary("/t.S/UU")(b"ok", timeout=5.0)
        assert await call.wait_for_connection() is None
        assert await call == b"OK"
        assert await call == b"OK"  # awaited twice: still one success
        assert call.done()
        assert not call.cancelled()
        assert not call.cancel()
        assert await call.code() == grpc.StatusCode.OK
        assert await call.details() == ""
        assert await call.initial_metadata() == grpc.aio.Metadata()
        assert await call.trailing_metadata() == grpc.aio.Metadata()
        seen: list[Any] = []
        call.add_done_callback(seen.append)
        assert seen == [call]
    assert (breaker.stats.successes, breaker.stats.failures) == (1, 0)
    assert backend.hits == {"UU": 1}


async def test_a_call_nobody_awaits_is_settled_when_it_ends(backend: Backend) -> None:
    breaker = make_breaker()
    async with helper_channel(backend.port, breaker) as channel:
        call: Any = channel.unary_unary("/t.S/UU")(b"code:INTERNAL")
        assert await call.code() == grpc.StatusCode.INTERNAL
        await settled(breaker, 1)
        with pytest.raises(grpc.aio.AioRpcError):
            await call  # awaited late: not counted again
    assert (breaker.stats.successes, breaker.stats.failures) == (0, 1)


async def test_the_refusal_is_returned_at_once_and_raised_when_awaited(backend: Backend) -> None:
    breaker = make_breaker()
    async with helper_channel(backend.port, breaker) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await run(channel, "UU", b"code:INTERNAL")
        assert breaker.state is State.OPEN
        call = channel.unary_unary("/t.S/UU")(b"ok")
        assert breaker.stats.rejects == 1  # refused at once, raised when awaited
        assert call.done()
        with pytest.raises(GrpcCircuitOpenError) as refused:
            await call
        assert await call.code() == grpc.StatusCode.UNAVAILABLE
        assert await call.trailing_metadata() == grpc.aio.Metadata(("retry-after", "20"))
        assert await call.details() == "circuit breaker 'S' is open; retry after 20.000s"
    assert refused.value.details() == "circuit breaker 'S' is open; retry after 20.000s"
    assert backend.hits == {"UU": 1}


@pytest.mark.parametrize("how", ["task", "call"])
async def test_a_cancelled_call_counts_as_neither_and_gives_its_slot_back(
    backend: Backend, how: str
) -> None:
    breaker = make_breaker(capacity=1)
    async with helper_channel(backend.port, breaker) as channel:
        call: Any = channel.unary_unary("/t.S/UU")(b"hang")
        task = asyncio.ensure_future(call)
        await asyncio.wait_for(backend.hanging.wait(), 5)
        if how == "task":
            task.cancel()
        else:
            assert call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(backend.cancellation.wait(), 5)
        assert call.cancelled()
        assert await run(channel, "UU", b"ok") == b"OK"  # the capacity slot came back
    stats = breaker.stats
    assert (stats.successes, stats.failures, stats.timeouts) == (1, 0, 0)
    assert backend.cancelled == {"UU": 1}


async def test_a_dropped_call_cancelled_by_grpc_gives_its_trial_back(backend: Backend) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock=clock)
    breaker.open()
    clock.advance(20.0)
    async with helper_channel(backend.port, breaker) as channel:
        call: Any = channel.unary_unary("/t.S/UU")(b"hang")
        await asyncio.wait_for(backend.hanging.wait(), 5)
        call.cancel()
        del call
        gc.collect()
        await asyncio.wait_for(backend.cancellation.wait(), 5)
        await asyncio.sleep(0)
        assert breaker.state is State.HALF_OPEN
        assert await run(channel, "UU", b"ok") == b"OK"  # a new trial, admitted
    assert breaker.state is State.CLOSED


async def test_the_shorter_deadline_goes_on_the_wire(backend: Backend) -> None:
    # The rest of the breaker's timeout is covered on both paths in test_grpc_interceptor.py.
    breaker = make_breaker(timeout=0.2, clock=FakeClock())
    async with helper_channel(backend.port, breaker) as channel:
        call: Any = channel.unary_unary("/t.S/UU")(b"hang", timeout=30.0)
        assert 0 < call.time_remaining() <= 0.2
        with pytest.raises(GrpcCallTimeoutError):
            await call
        breaker.close()  # the timeout opened it
        untimed: Any = channel.unary_unary("/t.S/UU")(b"ok", timeout=0.1)
        assert 0 < untimed.time_remaining() <= 0.1
        assert await untimed == b"OK"


async def test_the_channel_methods_are_the_wrapped_channels(backend: Backend) -> None:
    registry = BreakerRegistry(defaults={"volume_threshold": 0, "timeout": None})
    async with insecure_channel(f"127.0.0.1:{backend.port}", registry) as channel:
        assert isinstance(channel, grpc.aio.Channel)
        assert channel.get_state() is grpc.ChannelConnectivity.IDLE
        assert channel.get_state(try_to_connect=True) is grpc.ChannelConnectivity.IDLE
        await asyncio.wait_for(channel.wait_for_state_change(grpc.ChannelConnectivity.IDLE), 5)
        await asyncio.wait_for(channel.channel_ready(), 5)
        assert channel.get_state() is grpc.ChannelConnectivity.READY


async def test_a_generated_stub_works_on_the_helper_channel() -> None:
    server = GrpcAuthServer()
    await server.start()
    registry = BreakerRegistry(defaults={"volume_threshold": 0, "timeout": None})
    try:
        async with insecure_channel(server.target, registry, name="auth") as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            reply = await stub.Verify(auth_pb2.VerifyRequest(token="valid-ada"))
            assert reply.user == "ada"
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Verify(auth_pb2.VerifyRequest(token="nope"))
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        stats = registry.get("auth").stats
        assert (stats.successes, stats.failures) == (2, 0)
    finally:
        await server.stop()


@pytest.mark.parametrize("kind", ["US", "SU", "SS"])
async def test_the_streaming_kinds_still_go_through_the_breaker(
    backend: Backend, kind: str
) -> None:
    breaker = make_breaker()
    async with helper_channel(backend.port, breaker) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await run(channel, kind, b"code:INTERNAL")
        assert raised.value.code() == grpc.StatusCode.INTERNAL
        await settled(breaker, 1)
        assert breaker.state is State.OPEN
        with pytest.raises(GrpcCircuitOpenError):
            await run(channel, kind, b"ok")
    assert backend.hits == {kind: 1}
    assert (breaker.stats.failures, breaker.stats.rejects) == (1, 1)


async def test_close_closes_the_wrapped_channel(backend: Backend) -> None:
    channel = helper_channel(backend.port, make_breaker())
    assert await run(channel, "UU", b"ok") == b"OK"
    await channel.close()
    with pytest.raises(grpc.aio.UsageError):
        await run(channel.channel, "UU", b"ok")
