"""The example's gRPC Auth Service: a real `grpc.aio` server on loopback, a plain channel."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from example_app.grpc_auth import auth_pb2, auth_pb2_grpc
from example_app.grpc_auth.server import GrpcAuthServer


@pytest.fixture
async def auth() -> AsyncIterator[GrpcAuthServer]:
    server = GrpcAuthServer()
    await server.start()
    yield server
    await server.stop()


async def verify(target: str, token: str, deadline: float = 5.0) -> str:
    # A channel of its own subchannels: by default channels to one address share them, and with
    # them the wait before reconnecting that a refused connection started.
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)  # type: ignore[no-untyped-call]
        reply = await stub.Verify(auth_pb2.VerifyRequest(token=token), timeout=deadline)
        return str(reply.user)


async def status_of(target: str, token: str, deadline: float = 5.0) -> tuple[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await verify(target, token, deadline)
    return caught.value.code().name, caught.value.details() or ""


async def test_a_valid_token_names_its_user(auth: GrpcAuthServer) -> None:
    assert auth.port != 0
    assert auth.target == f"127.0.0.1:{auth.port}"
    assert await verify(auth.target, "valid-alice") == "alice"
    assert auth.calls == 1


async def test_any_other_token_is_unauthenticated(auth: GrpcAuthServer) -> None:
    assert await status_of(auth.target, "forged") == ("UNAUTHENTICATED", "invalid token")
    assert auth.calls == 1


async def test_failing_answers_internal_until_switched_back(auth: GrpcAuthServer) -> None:
    auth.failing = True
    assert await status_of(auth.target, "valid-alice") == ("INTERNAL", "Auth Service failed")

    auth.failing = False
    assert await verify(auth.target, "valid-alice") == "alice"
    assert auth.calls == 2


async def test_slow_answers_after_its_delay(auth: GrpcAuthServer) -> None:
    auth.delay = 5.0
    assert await status_of(auth.target, "valid-alice", deadline=0.05) == (
        "DEADLINE_EXCEEDED",
        "Deadline Exceeded",
    )
    assert auth.calls == 1


async def test_down_refuses_then_comes_back_on_the_same_port(auth: GrpcAuthServer) -> None:
    port = auth.port
    await auth.stop()
    code, _ = await status_of(auth.target, "valid-alice")
    assert code == "UNAVAILABLE"

    await auth.start()
    assert auth.port == port
    assert await verify(auth.target, "valid-alice") == "alice"
    assert auth.calls == 1  # the refused call never reached the service
