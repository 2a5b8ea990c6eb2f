"""Uvicorn servers in subprocesses on 127.0.0.1, started and always stopped by the harness.

    with UvicornProcess("bench.apps:make_plain_app", env={...}) as server:
        get(server.url + "/login?token=valid-alice")

One worker, asyncio's event loop, no access log. Readiness is a bounded poll of a URL; the
process is terminated (then killed) on leaving the block, whatever happened inside it.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import psutil

__all__ = ["ROOT", "UvicornProcess", "free_port", "get"]

ROOT = Path(__file__).resolve().parent.parent
_READY_POLLS = 200  # x 50 ms: a server not answering within 10 s is broken
_STOP_WAIT = 5.0  # seconds between SIGTERM and SIGKILL


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(url: str, *, timeout: float = 5.0) -> tuple[int, Any]:
    """GET a 127.0.0.1 URL with http.client (no proxy from the environment); (status, JSON)."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"127.0.0.1 only, not {url!r}")
    hostport, _, path = url.removeprefix("http://").partition("/")
    host, _, port = hostport.partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", "/" + path)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(body) if body else None
    except ValueError:
        return response.status, body.decode("latin-1")


class UvicornProcess:
    """`uvicorn --factory <target>` on 127.0.0.1 in a subprocess."""

    def __init__(
        self,
        target: str,
        *,
        env: Mapping[str, str] | None = None,
        ready_path: str = "/_bench/tasks",
        lifespan: str = "on",
        port: int | None = None,
        cpus: Sequence[int] | None = None,
    ) -> None:
        self.target = target
        self.env = dict(env or {})
        self.ready_path = ready_path
        self.lifespan = lifespan
        self.port = port or free_port()
        self.cpus = tuple(cpus or ())
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
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            self.target,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--loop",
            "asyncio",
            "--lifespan",
            self.lifespan,
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        if self.cpus:  # taskset execs uvicorn: the pid stays the server's
            argv = ["taskset", "-c", ",".join(map(str, self.cpus)), *argv]
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
            except OSError:
                time.sleep(0.05)
                continue
            if status == 200 and self._listening():
                return
            if status == 200:
                # Someone else answers on our port (ours failed to bind): not our server.
                raise RuntimeError(f"{self.url} is served by another process:\n{self.output()}")
            raise RuntimeError(f"{self.target}: {self.ready_path} answered {status}")
        raise RuntimeError(f"{self.target} not ready on {self.url}:\n{self.output()}")

    def _listening(self) -> bool:
        assert self.proc is not None
        try:
            sockets = psutil.Process(self.proc.pid).net_connections(kind="tcp")
        except psutil.Error:
            return False
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in sockets)

    def output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(_STOP_WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(_STOP_WAIT)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> UvicornProcess:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
