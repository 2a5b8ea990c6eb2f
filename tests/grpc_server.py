"""A real `grpc.aio` server on 127.0.0.1 for the interceptor tests: generic handlers, raw bytes.

Service `t.S`, one method per kind of call: `UU` (unary-unary), `US` (unary-stream), `SU`
(stream-unary), `SS` (stream-stream). A request says what to do:

    b"ok"               answer: UU the request upper-cased; US b"a", b"b", b"c"; SU the count of
                        requests; SS each request upper-cased
    b"code:NOT_FOUND"   end with that status (streams: after sending their messages)
    b"pushback:1500"    end UNAVAILABLE with trailing metadata grpc-retry-pushback-ms: 1500
    b"hang"             wait until the RPC is cancelled (streams: after one message)

`hits[method]` counts the RPCs each method received; `cancelled[method]` those the server saw
cancelled, and `cancellation` is set at the first; `hanging` is set when one starts to hang.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator

import grpc
import grpc.aio


class Backend:
    def __init__(self) -> None:
        self.hits: collections.Counter[str] = collections.Counter()
        self.cancelled: collections.Counter[str] = collections.Counter()
        self.cancellation = asyncio.Event()
        self.hanging = asyncio.Event()
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> int:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    "t.S",
                    {
                        "UU": grpc.unary_unary_rpc_method_handler(self.unary_unary),
                        "US": grpc.unary_stream_rpc_method_handler(self.unary_stream),
                        "SU": grpc.stream_unary_rpc_method_handler(self.stream_unary),
                        "SS": grpc.stream_stream_rpc_method_handler(self.stream_stream),
                    },
                )
            ]
        )
        self.port = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        self.server = server
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(None)
            self.server = None

    async def _act(self, method: str, request: bytes, context: grpc.aio.ServicerContext) -> None:
        """Do what a non-"ok" request asks; returns for "ok"."""
        if request.startswith(b"code:"):
            await context.abort(grpc.StatusCode[request[5:].decode()], "asked for it")
        if request.startswith(b"pushback:"):
            context.set_trailing_metadata((("grpc-retry-pushback-ms", request[9:].decode()),))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "pushing back")
        if request == b"hang":
            self.hanging.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled[method] += 1
                self.cancellation.set()
                raise

    async def unary_unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.hits["UU"] += 1
        await self._act("UU", request, context)
        return request.upper()

    async def unary_stream(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        self.hits["US"] += 1
        for message in (b"a", b"b", b"c") if request != b"hang" else (b"a",):
            yield message
        await self._act("US", request, context)

    async def stream_unary(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> bytes:
        self.hits["SU"] += 1
        count = 0
        async for request in requests:
            count += 1
            await self._act("SU", request, context)
        return str(count).encode()

    async def stream_stream(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        self.hits["SS"] += 1
        async for request in requests:
            yield request.upper()
            await self._act("SS", request, context)
