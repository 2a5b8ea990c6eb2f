"""The User Service's side of the gRPC Auth Service: a breaker-guarded channel, and the check.

Every call on the channel goes through `BreakerInterceptor`, so the breaker named "AuthService"
counts each one, and refuses them at once while it is open. Its refusal is a `CircuitOpenError`
(and a `grpc.aio.AioRpcError` with UNAVAILABLE), which the middleware that `setup_breakers`
installs answers with a 503 and `Retry-After`, exactly as for the HTTP Auth Service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import grpc
from fastapi import FastAPI, HTTPException, Request

from fastapi_breaker import BreakerRegistry, CallTimeoutError, CircuitOpenError
from fastapi_breaker.grpc import BreakerInterceptor

from . import auth_pb2, auth_pb2_grpc

__all__ = [
    "AUTH_BREAKER",
    "channel_options",
    "grpc_lifespan",
    "grpc_login",
    "open_auth_channel",
    "verify",
]

AUTH_BREAKER = "AuthService"


def channel_options(reset_timeout: float) -> list[tuple[str, int]]:
    """Channel arguments that let the breaker's trial reach an Auth Service that is back.

    A channel whose connection failed waits before connecting again (1 s at first, growing to
    120 s by default), and meanwhile fails every call at once with UNAVAILABLE. A trial made
    during that wait would fail without reaching the server and reopen the breaker. So the
    channel tries again at least four times per reset timeout, and at most once a second.
    """
    backoff_ms = max(10, round(min(1.0, reset_timeout / 4) * 1000))
    return [
        ("grpc.initial_reconnect_backoff_ms", backoff_ms),
        ("grpc.max_reconnect_backoff_ms", backoff_ms),
    ]


def open_auth_channel(
    target: str, registry: BreakerRegistry, reset_timeout: float
) -> grpc.aio.Channel:
    """A channel to the Auth Service at `target` whose every call goes through its breaker."""
    return grpc.aio.insecure_channel(
        target,
        options=channel_options(reset_timeout),
        interceptors=BreakerInterceptor(registry, name=AUTH_BREAKER),
    )


async def verify(stub: auth_pb2_grpc.AuthServiceStub, token: str) -> str:
    """The user a token names, by `auth.AuthService/Verify`; the HTTP errors /login answers.

    UNAUTHENTICATED is the user's fault: 401, and the breaker does not count it. Every other
    status, and the breaker's timeout, is the Auth Service failing: 502. An open circuit
    propagates, for the middleware to answer 503 with `Retry-After`.
    """
    try:
        reply: auth_pb2.VerifyReply = await stub.Verify(auth_pb2.VerifyRequest(token=token))
    except CircuitOpenError:
        raise  # before AioRpcError: the refusal is one too, and must stay a 503
    except CallTimeoutError as exc:
        raise HTTPException(status_code=502, detail="Auth Service timed out") from exc
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            raise HTTPException(status_code=401, detail="invalid token") from exc
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            raise HTTPException(status_code=502, detail="Auth Service unreachable") from exc
        raise HTTPException(status_code=502, detail="Auth Service failed") from exc
    return reply.user


def grpc_lifespan(
    target: str, registry: BreakerRegistry, reset_timeout: float
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The User Service's lifespan: one channel to the Auth Service, closed at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_auth_channel(target, registry, reset_timeout) as channel:
            app.state.auth_channel = channel
            app.state.auth_stub = auth_pb2_grpc.AuthServiceStub(channel)  # type: ignore[no-untyped-call]
            yield

    return lifespan


async def grpc_login(token: str, request: Request) -> dict[str, str]:
    """Log a user in by verifying the token with the Auth Service, over gRPC."""
    # No `check()` first, unlike the HTTP route: the interceptor refuses before the RPC starts.
    return {"user": await verify(request.app.state.auth_stub, token)}
