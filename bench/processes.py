"""The servers of a benchmark, all on 127.0.0.1, always stopped by the harness.

    with UvicornProcess("bench.apps:make_plain_app", env={...}) as server:
        get(server.url + "/login?token=valid-alice")

    with Upstream(HANG) as upstream:      # the Auth Service, in a thread of the harness
        ... point a server at upstream.url ...
        upstream.set_mode(UP); upstream.received

`UvicornProcess`: one worker, asyncio's event loop, no access log, in a subprocess. Readiness
is a bounded poll of a URL; the process is terminated (then killed) on leaving the block.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import httpx
import psutil

from bench.apps import verify

__all__ = ["HANG", "REFUSED", "ROOT", "UP", "Upstream", "UvicornProcess", "free_port", "get"]

ROOT = Path(__file__).resolve().parent.parent
_READY_POLLS = 200  # x 50 ms: a server not answering within 10 s is broken
_WAIT = 5.0  # seconds: between SIGTERM and SIGKILL; for the upstream's thread to act
_MAX_REQUESTS = 1_000_000  # per connection to the upstream: a client that never stops is cut off
UP, HANG, REFUSED = "up", "hang", "refused"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, *, timeout: float = 5.0) -> tuple[int, Any]:
    """GET a 127.0.0.1 URL, no proxy from the environment: (status, the JSON body or None)."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"127.0.0.1 only, not {url!r}")
    response = httpx.get(url, timeout=timeout, trust_env=False)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, None


class _Stoppable:
    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class UvicornProcess(_Stoppable):
    """`uvicorn --factory <target>` on 127.0.0.1 in a subprocess; its log kept to show."""

    def __init__(
        self,
        target: str,
        *,
        env: Mapping[str, str] | None = None,
        ready_path: str = "/_bench/tasks",
        lifespan: str = "on",
    ) -> None:
        self.target = target
        self.env = dict(env or {})
        self.ready_path = ready_path
        self.lifespan = lifespan
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        argv = [
            sys.executable, "-m", "uvicorn", "--factory", self.target,
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--loop", "asyncio", "--lifespan", self.lifespan,
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, **self.env, "PYTHONPATH": os.pathsep.join(path)}
        # Kept open while the server runs (its log, shown if it fails); stop() closes it.
        self._log = tempfile.TemporaryFile(prefix="bench-uvicorn-")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self._log, stderr=self._log)
        for _ in range(_READY_POLLS):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.target} exited early:\n{self.output()}")
            try:
                status, _ = get(self.url + self.ready_path, timeout=1.0)
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            if status != 200:
                raise RuntimeError(f"{self.target}: {self.ready_path} answered {status}")
            if not self._listening():
                # Someone else answers on our port (ours failed to bind): not our server.
                raise RuntimeError(f"{self.url} is served by another process:\n{self.output()}")
            return
        raise RuntimeError(f"{self.target} not ready on {self.url}:\n{self.output()}")

    def _listening(self) -> bool:
        try:
            sockets = psutil.Process(self.pid).net_connections(kind="tcp")
        except psutil.Error:
            return False
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in sockets)

    def output(self) -> str:
        """The last 4,000 characters the server logged."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(_WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(_WAIT)
        if self._log is not None:
            self._log.close()
            self._log = None


class Upstream(_Stoppable):
    """`GET /verify?token=valid-<user>` -> `{"user": "<user>"}`, in one of three modes.

    up: answers at once. hang: accepts and reads requests, never answers. refused: not
    listening. A change of mode drops every open connection, as a restart would. Its event
    loop runs on a thread, so the harness reads the counts at any moment: connections
    `accepted`, requests `received` (heads read in full, whatever the mode), and `answered`.
    """

    def __init__(self, mode: str = UP) -> None:
        self.mode = mode
        self.port = 0
        self.accepted = self.received = self.answered = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        """Zero the counts (open connections stay open)."""
        self.accepted = self.received = self.answered = 0

    def _do(self, work: Any) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(_WAIT)

    def start(self) -> None:
        self._thread.start()
        self._do(self._listen())

    def set_mode(self, mode: str) -> None:
        self._do(self._set_mode(mode))

    def stop(self) -> None:
        if self._thread.is_alive():
            self._do(self._close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_WAIT)
        if not self._loop.is_running():
            self._loop.close()

    async def _listen(self) -> None:
        if self.mode != REFUSED:
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )
            self.port = self._server.sockets[0].getsockname()[1]

    async def _set_mode(self, mode: str) -> None:
        if mode != self.mode:
            await self._close()
            self.mode = mode
            await self._listen()

    async def _close(self) -> None:
        """Stop listening, drop every connection, and let their handlers end."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=_WAIT)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        self._writers.add(writer)
        self.accepted += 1
        try:
            for _ in range(_MAX_REQUESTS):
                head = await reader.readuntil(b"\r\n\r\n")
                self.received += 1
                if self.mode == UP:
                    target = head.split(b" ", 2)[1].decode("latin-1")
                    status, body = verify(target.partition("?")[2])
                    writer.write(
                        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                        b"content-length: %d\r\n\r\n%s"
                        % (status, b"OK" if status == 200 else b"Unauthorized", len(body), body)
                    )
                    await writer.drain()
                    self.answered += 1
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # the client closed, or we dropped the connection
        finally:
            self._writers.discard(writer)
            self._handlers.discard(handler)
            writer.transport.abort()
