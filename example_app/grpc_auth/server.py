"""The Auth Service over gRPC: a `grpc.aio` server on 127.0.0.1, with switches to make it fail.

It answers `auth.AuthService/Verify` as the HTTP Auth Service answers `GET /verify`: a token
`valid-<user>` gets the user's name, any other token UNAUTHENTICATED (the HTTP 401, which a
breaker does not count as a failure). The demos and tests switch it between:

- down: `stop()`; connections to its port are refused until `start()` serves the same port again;
- failing: `failing = True`; every call is answered INTERNAL (the HTTP service's 500);
- slow: `delay = seconds`; every call waits that long before answering.
"""

from __future__ import annotations

import asyncio

import grpc

from . import auth_pb2, auth_pb2_grpc

__all__ = ["GrpcAuthServer"]


class _AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, owner: GrpcAuthServer) -> None:
        self._owner = owner

    async def Verify(
        self,
        request: auth_pb2.VerifyRequest,
        context: grpc.aio.ServicerContext[auth_pb2.VerifyRequest, auth_pb2.VerifyReply],
    ) -> auth_pb2.VerifyReply:
        owner = self._owner
        owner.calls += 1
        if owner.delay > 0:
            await asyncio.sleep(owner.delay)
        if owner.failing:
            await context.abort(grpc.StatusCode.INTERNAL, "Auth Service failed")
        if not request.token.startswith("valid-"):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid token")
        return auth_pb2.VerifyReply(user=request.token.removeprefix("valid-"))


class GrpcAuthServer:
    """One `grpc.aio` Auth Service on 127.0.0.1. `port=0` picks a free port; `port` tells which.

    After `stop()`, `start()` serves the port it had, so that a channel to `target` finds it back.
    `calls` counts the calls that reached the service, whatever it answered.
    """

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.failing = False
        self.delay = 0.0
        self.calls = 0
        self._server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server()
        # protoc's generated module carries no annotations.
        auth_pb2_grpc.add_AuthServiceServicer_to_server(_AuthServicer(self), server)  # type: ignore[no-untyped-call]
        # grpcio raises when it cannot bind; older versions returned port 0 instead.
        port = server.add_insecure_port(self.target)
        if port == 0:
            raise RuntimeError(f"the gRPC Auth Service could not bind {self.target}")
        await server.start()
        self.port = port
        self._server = server

    async def stop(self) -> None:
        """Stop at once: calls in progress are cancelled, new connections refused."""
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None
