"""Run ASGI apps under real uvicorn servers on 127.0.0.1, inside the current event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import uvicorn
from starlette.types import ASGIApp

__all__ = ["LoopbackServer", "free_port"]

_START_POLLS = 500  # x 10 ms: a server that has not started in 5 s is broken


class LoopbackServer:
    """One uvicorn server on 127.0.0.1. `port=0` picks a free port; `port` tells which."""

    def __init__(self, app: ASGIApp, port: int = 0) -> None:
        self.app = app
        self.port = port
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        # A bounded graceful shutdown: an open dashboard stream would otherwise hold Ctrl-C
        # until the stream's own age limit.
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        # Two servers share this process: its signals belong to whoever runs them both.
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        self._server = server
        self._task = asyncio.create_task(server.serve())
        for _ in range(_START_POLLS):
            if server.started:
                break
            if self._task.done():
                self._task.result()  # raises the reason it could not start
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{self.port}")
        self.port = server.servers[0].sockets[0].getsockname()[1]

    def request_stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._server = self._task = None


def free_port() -> int:
    """A loopback port free now, for a server in another process (port 0 would not tell us)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
