"""Soak: minutes of load on a breaker-protected service while its upstream flaps.

    python -m bench.soak [--seconds 120] [--flap-seconds 20] [--concurrency 32]

Three parts, all on 127.0.0.1:

- The service: a FastAPI app built with the library (`create_soak_app`, below) under uvicorn,
  one worker, in a subprocess. `GET /login` calls the upstream through `AsyncBreakerTransport`
  (breaker "AuthService"); an open breaker becomes the middleware's 503, and a failure the
  breaker counted while still closed becomes the same kind of 503 (the service cannot answer
  without its upstream). `GET /login-or-guest` calls it under `breaker.call()` with a fallback
  (breaker "AuthServiceCall"): every failure and refusal answers a guest. Also `/health`
  (`health_router`) and `/debug/tasks`, which counts the server's asyncio tasks.
- The upstream, in this process: a small HTTP server that flaps. Up for `--flap-seconds`, then
  down as long, and so on. Down periods alternate between *hanging* (it accepts and reads, and
  never answers) and *refused* (its socket is closed: connect fails). Each change of mode drops
  the open connections, as a restart would.
- The load, in this process: `--concurrency` workers, each with its own keep-alive connection
  (a minimal HTTP/1.1 client: httpx's pool would take more CPU than the server under test),
  each looping until the deadline (and at most a fixed number of requests), half on each
  route. Every response is classified: the upstream's answer, the fallback, or a 503 with
  `Retry-After` and a problem+json body. Anything else is a violation: another status, a
  malformed 503, a request that takes longer than `--client-timeout` (hung), a connection
  error, or an error the server logged.

Every `--sample-seconds` the harness reads the server's RSS (psutil) and its task count. Verdicts:
no violation; the RSS after the warm-up (the first up-and-down cycle, at least 20% of the run)
grows by less than 5% to the end of the load; the task count returns to its idle baseline once
the load stops. Exit code 1 if any verdict fails.

The load generator shares the machine's cores with the server, so the request rate is what this
client reaches, not the server's capacity. Needs only the `[bench]` extra (no wrk).
Results: a table per flap period on stdout, and bench/results/soak-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import httpx
import psutil
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from bench.report import machine, save
from fastapi_breaker import BreakerRegistry, CircuitBreaker, CircuitOpenError
from fastapi_breaker.fastapi import get_breaker, setup_breakers
from fastapi_breaker.health import health_router
from fastapi_breaker.httpx import AsyncBreakerTransport
from fastapi_breaker.middleware import retry_after_header

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

TRANSPORT_BREAKER = "AuthService"  # GET /login: httpx transport, 503 when refused
CALL_BREAKER = "AuthServiceCall"  # GET /login-or-guest: breaker.call() with a fallback
ROUTES = ("/login", "/login-or-guest")

# The 503 bodies: the middleware's (breaker open) and the app's (a counted failure).
OPEN_DETAIL = "The service is temporarily unavailable"
FAILED_DETAIL = "The Auth Service failed"

UP, HANG, REFUSED = "up", "hang", "refused"
UPSTREAM = "upstream"
FALLBACK = "fallback"
OPEN_503 = "503 open"
FAILED_503 = "503 failed"
GOOD_CLASSES = (UPSTREAM, FALLBACK, OPEN_503, FAILED_503)

RSS_GROWTH_LIMIT = 0.05
MAX_REQUESTS_PER_SECOND = 10_000  # per run: the hard cap on the request count is seconds x this
MAX_REQUESTS_PER_CONNECTION = 1_000_000  # the upstream's loop bound for one keep-alive connection
START_POLLS = 200  # x 50 ms: a server that has not started in 10 s is broken
DRAIN_POLLS = 120  # x 250 ms: tasks get 30 s to return to the baseline after the load
EXAMPLES_KEPT = 20  # violations described in full; the rest are only counted


# ---------------------------------------------------------------------------------- the service


def create_soak_app() -> FastAPI:
    """The service under test; `uvicorn --factory bench.soak:create_soak_app`.

    Settings come from the environment (the harness sets them): SOAK_UPSTREAM_URL, and the
    breakers' SOAK_TIMEOUT, SOAK_RESET_TIMEOUT, SOAK_VOLUME_THRESHOLD and SOAK_WINDOW.
    """
    upstream = os.environ["SOAK_UPSTREAM_URL"]
    options = {
        "timeout": float(os.environ.get("SOAK_TIMEOUT", "1.0")),
        "reset_timeout": float(os.environ.get("SOAK_RESET_TIMEOUT", "5.0")),
        "volume_threshold": int(os.environ.get("SOAK_VOLUME_THRESHOLD", "10")),
        "error_threshold_percentage": 50.0,
        "rolling_count_timeout": float(os.environ.get("SOAK_WINDOW", "10.0")),
    }
    registry = BreakerRegistry(
        breakers={TRANSPORT_BREAKER: options, CALL_BREAKER: options}, strict=True
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry.get(CALL_BREAKER).fallback(_guest)
        transport = AsyncBreakerTransport(registry=registry, name=TRANSPORT_BREAKER)
        async with (
            httpx.AsyncClient(base_url=upstream, transport=transport) as guarded,
            httpx.AsyncClient(base_url=upstream) as plain,
        ):
            app.state.guarded = guarded
            app.state.plain = plain
            yield

    app = FastAPI(title="Soak service", lifespan=lifespan)
    setup_breakers(app, registry)
    app.include_router(health_router(detail="always"))

    @app.get("/login", response_model=None)
    async def login(
        token: str,
        request: Request,
        breaker: Annotated[CircuitBreaker, Depends(get_breaker(TRANSPORT_BREAKER))],
    ) -> dict[str, str] | Response:
        client: httpx.AsyncClient = request.app.state.guarded
        try:
            response = await client.get("/verify", params={"token": token})
        except CircuitOpenError:
            raise  # the middleware answers 503 with Retry-After
        except httpx.TransportError:
            return _failed(breaker)  # counted; the breaker may open on it
        if response.is_error:
            return _failed(breaker)
        return {"user": response.json()["user"], "source": UPSTREAM}

    @app.get("/login-or-guest")
    async def login_or_guest(
        token: str,
        request: Request,
        breaker: Annotated[CircuitBreaker, Depends(get_breaker(CALL_BREAKER))],
    ) -> dict[str, str]:
        answer: dict[str, str] = await breaker.call(_verify, request.app.state.plain, token)
        return answer

    @app.get("/debug/tasks")
    async def debug_tasks() -> dict[str, int]:
        """This bench app only: how many asyncio tasks the server has (this request's included)."""
        return {"tasks": len(asyncio.all_tasks())}

    return app


async def _verify(client: httpx.AsyncClient, token: str) -> dict[str, str]:
    response = await client.get("/verify", params={"token": token})
    response.raise_for_status()
    return {"user": response.json()["user"], "source": UPSTREAM}


def _guest(client: httpx.AsyncClient, token: str, exc: BaseException) -> dict[str, str]:
    return {"user": "guest", "source": FALLBACK}


def _failed(breaker: CircuitBreaker) -> Response:
    """503 for a failure the breaker counted: same shape as the middleware's, its own detail."""
    seconds = retry_after_header(breaker.retry_after)
    body = {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": f"{FAILED_DETAIL}; retry after {seconds} s.",
        "retry_after": int(seconds),
    }
    return JSONResponse(
        body,
        status_code=503,
        headers={"Retry-After": seconds, "Cache-Control": "no-store"},
        media_type="application/problem+json",
    )


# ---------------------------------------------------------------------------------- the upstream


class FlappingUpstream:
    """`GET /verify?token=valid-<user>` -> `{"user": "<user>"}`, in one of three modes.

    up: answers at once. hang: accepts and reads requests, never answers. refused: not
    listening. Changing the mode drops every open connection. Counts what it received.
    """

    def __init__(self) -> None:
        self.mode = UP
        self.port = 0
        self.received = 0  # requests read, whatever the mode
        self.answered = 0
        self.hung = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, HOST, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, drop every connection, and let their handlers end (5 s at most)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._drop_connections()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5.0)

    async def set_mode(self, mode: str) -> None:
        if mode == self.mode:
            return
        self.mode = mode
        if mode == REFUSED:
            await self.stop()
        else:
            self._drop_connections()
            if self._server is None:
                await self.start()

    def _drop_connections(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        self._writers.add(writer)
        try:
            for _ in range(MAX_REQUESTS_PER_CONNECTION):
                head = await reader.readuntil(b"\r\n\r\n")
                self.received += 1
                if self.mode != UP:
                    self.hung += 1
                    # Never answer; keep reading until the client gives up or the mode changes.
                    for _ in range(MAX_REQUESTS_PER_CONNECTION):
                        if not await reader.read(65536):
                            break
                    return
                writer.write(_answer(head))
                await writer.drain()
                self.answered += 1
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # the client closed, or we dropped the connection
        finally:
            self._writers.discard(writer)
            self._handlers.discard(handler)
            writer.transport.abort()


def _answer(head: bytes) -> bytes:
    target = head.split(b" ", 2)[1].decode("latin-1")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
    token = query.get("token", [""])[0]
    if token.startswith("valid-"):
        status, body = "200 OK", {"user": token.removeprefix("valid-")}
    else:
        status, body = "401 Unauthorized", {"detail": "invalid token"}
    content = json.dumps(body).encode()
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(content)}\r\n\r\n"
    ).encode() + content


# ---------------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """uvicorn, one worker, serving `create_soak_app` in a subprocess; its stderr to a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "bench.soak:create_soak_app",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        self._env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self._log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        with self._log.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env=self._env, stdout=log, stderr=subprocess.STDOUT
            )

    async def ready(self, client: httpx.AsyncClient) -> None:
        assert self.process is not None
        for _ in range(START_POLLS):
            if self.process.poll() is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{self.url}/health/live")).status_code == 200:
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the server did not start; its log:\n{self.errors()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def errors(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""


# ---------------------------------------------------------------------------------- the load


@dataclasses.dataclass
class Period:
    index: int
    mode: str
    counts: Counter[str] = dataclasses.field(default_factory=Counter)
    latencies: list[float] = dataclasses.field(default_factory=list)
    open_latencies: list[float] = dataclasses.field(default_factory=list)
    upstream_received: int = 0
    upstream_answered: int = 0
    samples: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Run:
    args: argparse.Namespace
    periods: list[Period]
    t0: float = 0.0
    deadline: float = 0.0
    current: int = 0  # the period whose mode the upstream is in; the flapper moves it
    by_route: dict[str, Counter[str]] = dataclasses.field(default_factory=dict)
    violations: Counter[str] = dataclasses.field(default_factory=Counter)
    examples: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    samples: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def record(self, route: str, period: Period, latency: float, kind: str, why: str) -> None:
        period.counts[kind] += 1
        period.latencies.append(latency)
        if kind == OPEN_503:
            period.open_latencies.append(latency)
        self.by_route.setdefault(route, Counter())[kind] += 1
        if kind not in GOOD_CLASSES:
            self.violation(kind, why, route=route, period=period.index, mode=period.mode)

    def violation(self, kind: str, why: str, **where: Any) -> None:
        self.violations[kind] += 1
        if len(self.examples) < EXAMPLES_KEPT:
            self.examples.append({"kind": kind, "why": why, **where})


def schedule(periods: int, down: str) -> list[str]:
    """Up first; then down and up by turns, the down periods hanging and refused by turns."""
    modes = []
    downs = [HANG, REFUSED] if down == "both" else [down]
    for index in range(periods):
        modes.append(UP if index % 2 == 0 else downs[(index // 2) % len(downs)])
    return modes


@dataclasses.dataclass(frozen=True)
class Answer:
    """One HTTP response as the load client read it: status, headers (lower-case), body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class ProtocolError(Exception):
    """The server's answer was not the HTTP/1.1 this client reads."""


class Connection:
    """One keep-alive HTTP/1.1 connection of the load client.

    httpx's connection pool costs far more CPU per request at 32 concurrent requests than the
    server under test does, and the two share the cores; this reads only what the
    classification needs: status line, headers, a Content-Length body.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def get(self, target: str) -> Answer:
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or parts[0] != "HTTP/1.1" or not parts[1].isdigit():
            raise ProtocolError(f"status line {status_line!r}")
        headers = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = headers.get("content-length")
        if length is None or not length.isdigit():
            raise ProtocolError(f"no Content-Length: {headers}")
        body = await self.reader.readexactly(int(length))
        return Answer(int(parts[1]), headers, body)

    def close(self) -> None:
        self.writer.transport.abort()


def classify(answer: Answer, user: str) -> tuple[str, str]:
    """One of GOOD_CLASSES, or a violation's kind; and why, for a violation."""
    status = answer.status
    body = answer.json()
    if status == 200 and isinstance(body, dict):
        if body == {"user": user, "source": UPSTREAM}:
            return UPSTREAM, ""
        if body == {"user": "guest", "source": FALLBACK}:
            return FALLBACK, ""
    if status == 503:
        why = _bad_503(answer, body)
        if why:
            return "bad 503", why
        return (OPEN_503 if body["detail"].startswith(OPEN_DETAIL) else FAILED_503), ""
    return f"status {status}", answer.body[:200].decode("latin-1")


def _bad_503(answer: Answer, body: Any) -> str:
    retry_after = answer.headers.get("retry-after", "")
    if not (retry_after.isdigit() and int(retry_after) >= 1):
        return f"Retry-After {retry_after!r}"
    content_type = answer.headers.get("content-type", "")
    if not content_type.startswith("application/problem+json"):
        return f"content-type {content_type!r}"
    if not isinstance(body, dict) or body.get("status") != 503:
        return f"body {answer.body[:200]!r}"
    if body.get("retry_after") != int(retry_after):
        return f"body retry_after {body.get('retry_after')!r} != header {retry_after}"
    detail = body.get("detail")
    if not isinstance(detail, str) or not detail.startswith((OPEN_DETAIL, FAILED_DETAIL)):
        return f"detail {detail!r}"
    return ""


async def worker(run: Run, port: int, number: int, budget: int) -> None:
    """Requests one after another on one connection (a new one after an error)."""
    route = ROUTES[number % len(ROUTES)]
    user = f"u{number}"
    target = f"{route}?token=valid-{user}"
    loop = asyncio.get_running_loop()
    connection: Connection | None = None
    try:
        for _ in range(budget):
            start = loop.time()
            if start >= run.deadline:
                return
            period = run.periods[run.current]  # a request belongs to the mode it started in
            keep = False
            try:
                async with asyncio.timeout(run.args.client_timeout):
                    if connection is None:
                        connection = await Connection.open(port)
                    answer = await connection.get(target)
            except TimeoutError:
                kind, why = "hung", f"no answer within {run.args.client_timeout} s"
            except (
                OSError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                ProtocolError,
            ) as exc:
                kind, why = "connection error", repr(exc)
            else:
                kind, why = classify(answer, user)
                keep = answer.headers.get("connection", "").lower() != "close"
            run.record(route, period, loop.time() - start, kind, why)
            if not keep and connection is not None:
                connection.close()
                connection = None
    finally:
        if connection is not None:
            connection.close()


async def sample(
    run: Run, client: httpx.AsyncClient, server: ServerProcess, process: psutil.Process
) -> dict[str, Any]:
    """RSS, task count and breaker states of the server, now."""
    loop = asyncio.get_running_loop()
    found: dict[str, Any] = {
        "t": round(loop.time() - run.t0, 2),
        "rss": process.memory_info().rss,
        "cpu_percent": process.cpu_percent(None),
        "tasks": None,
        "states": None,
    }
    try:
        found["tasks"] = (await client.get(f"{server.url}/debug/tasks")).json()["tasks"]
        health = (await client.get(f"{server.url}/health")).json()
        found["states"] = {name: info["state"] for name, info in health["details"].items()}
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        run.violation("sampler error", repr(exc), t=found["t"])
    return found


async def sampler(
    run: Run, client: httpx.AsyncClient, server: ServerProcess, process: psutil.Process
) -> None:
    loop = asyncio.get_running_loop()
    interval = run.args.sample_seconds
    for index in range(1, math.ceil(run.args.seconds / interval) + 1):
        await asyncio.sleep(max(0.0, run.t0 + index * interval - loop.time()))
        if loop.time() > run.deadline + 0.5:
            return
        found = await sample(run, client, server, process)
        run.samples.append(found)
        run.periods[run.current].samples.append(found)


async def flapper(run: Run, upstream: FlappingUpstream) -> None:
    loop = asyncio.get_running_loop()
    for period in run.periods:
        received, answered = upstream.received, upstream.answered
        await upstream.set_mode(period.mode)
        run.current = period.index
        end = min(run.t0 + (period.index + 1) * run.args.flap_seconds, run.deadline)
        await asyncio.sleep(max(0.0, end - loop.time()))
        period.upstream_received = upstream.received - received
        period.upstream_answered = upstream.answered - answered


async def idle_tasks(client: httpx.AsyncClient, server: ServerProcess) -> int:
    response = await client.get(f"{server.url}/debug/tasks")
    return int(response.json()["tasks"])


async def soak(args: argparse.Namespace, log: Path) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    count = math.ceil(args.seconds / args.flap_seconds)
    modes = schedule(count, args.down)
    run = Run(args, [Period(index, mode) for index, mode in enumerate(modes)])
    upstream = FlappingUpstream()
    await upstream.start()
    env = {
        "SOAK_UPSTREAM_URL": upstream.url,
        "SOAK_TIMEOUT": str(args.breaker_timeout),
        "SOAK_RESET_TIMEOUT": str(args.reset_timeout),
        "SOAK_VOLUME_THRESHOLD": str(args.volume_threshold),
        "SOAK_WINDOW": str(args.window),
    }
    server = ServerProcess(env, log)
    probe = httpx.AsyncClient(timeout=5.0)
    report: dict[str, Any] = {"server_command": " ".join(server.command[1:])}
    background: list[asyncio.Task[None]] = []
    try:
        server.start()
        await server.ready(probe)
        assert server.process is not None
        process = psutil.Process(server.process.pid)
        report["server_pid"] = process.pid
        harness = psutil.Process()
        # Idle baseline: after one request of each kind has been served (imports, pools).
        async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as warm:
            for route in ROUTES:
                await warm.get(route, params={"token": "valid-warm"})
        await asyncio.sleep(0.5)
        baseline_tasks = [await idle_tasks(probe, server) for _ in range(3)]
        report["baseline"] = {"tasks": baseline_tasks[-1], "rss": process.memory_info().rss}

        budget = math.ceil(args.seconds * MAX_REQUESTS_PER_SECOND / args.concurrency)
        process.cpu_percent(None)
        harness.cpu_percent(None)
        run.t0 = loop.time()
        run.deadline = run.t0 + args.seconds
        background += [
            asyncio.create_task(flapper(run, upstream)),
            asyncio.create_task(sampler(run, probe, server, process)),
        ]
        await asyncio.gather(
            *(worker(run, server.port, number, budget) for number in range(args.concurrency))
        )
        ended = loop.time()
        await asyncio.gather(*background)
        report["load_seconds"] = round(ended - run.t0, 2)
        report["harness_cpu_percent"] = harness.cpu_percent(None)
        final = await sample(run, probe, server, process)
        await upstream.set_mode(UP)

        # Drain: the client has closed its connections; tasks must return to the baseline.
        started = loop.time()
        after = final["tasks"]
        for _ in range(DRAIN_POLLS):
            try:
                after = await idle_tasks(probe, server)
            except httpx.HTTPError as exc:
                run.violation("sampler error", repr(exc), t="drain")
            else:
                if after <= report["baseline"]["tasks"]:
                    break
            await asyncio.sleep(0.25)
        report["drain"] = {
            "tasks_at_end_of_load": final["tasks"],
            "tasks_after": after,
            "seconds": round(loop.time() - started, 2),
            "rss_after": process.memory_info().rss,
        }
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await probe.aclose()
        server.stop()
        await upstream.stop()
    errors = [line for line in server.errors().splitlines() if line.strip()]
    if errors:
        run.violation("server log", "\n".join(errors[:40]), lines=len(errors))
    report["run"] = run
    return report


# ---------------------------------------------------------------------------------- the report


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    run: Run = report.pop("run")
    args = run.args
    rows = []
    for period in run.periods:
        total = sum(period.counts.values())
        seconds = min(args.flap_seconds, args.seconds - period.index * args.flap_seconds)
        last = period.samples[-1] if period.samples else {}
        tasks = [s["tasks"] for s in period.samples if s["tasks"] is not None]
        rows.append(
            {
                "period": period.index,
                "mode": period.mode,
                "start_s": period.index * args.flap_seconds,
                "requests": total,
                "counts": {kind: period.counts[kind] for kind in GOOD_CLASSES},
                "violations": total - sum(period.counts[kind] for kind in GOOD_CLASSES),
                "rps": total / seconds if seconds > 0 else 0.0,
                "p50_ms": percentile(period.latencies, 0.5) * 1e3,
                "p99_ms": percentile(period.latencies, 0.99) * 1e3,
                "max_ms": max(period.latencies, default=0.0) * 1e3,
                "open_503_p99_ms": percentile(period.open_latencies, 0.99) * 1e3,
                "upstream_received": period.upstream_received,
                "upstream_answered": period.upstream_answered,
                "rss_mb": last.get("rss", 0) / 2**20,
                "tasks_max": max(tasks, default=None),
                "states": sorted(
                    {f"{n}:{s}" for x in period.samples for n, s in (x["states"] or {}).items()}
                ),
            }
        )

    warmup_end = min(max(0.2 * args.seconds, 2 * args.flap_seconds), args.seconds)
    loaded = [s for s in run.samples if s["t"] <= args.seconds + 0.5]
    after_warmup = [s for s in loaded if s["t"] >= warmup_end]
    rss: dict[str, Any] = {"warmup_end_s": warmup_end}
    if after_warmup:
        warm, final = after_warmup[0]["rss"], after_warmup[-1]["rss"]
        peak = max(s["rss"] for s in after_warmup)
        rss |= {
            "at_warmup": warm,
            "final": final,
            "max": peak,
            "growth": (final - warm) / warm,
            "max_growth": (peak - warm) / warm,
            "baseline_idle": report["baseline"]["rss"],
        }
    cpu = [s["cpu_percent"] for s in loaded]
    report["server_cpu_percent"] = sum(cpu) / len(cpu) if cpu else 0.0
    drain = report.get("drain", {})
    violations = sum(run.violations.values())
    verdicts = [
        {
            "goal": "every response is the upstream's answer, a fallback or a 503 with Retry-After;"
            " no 500, no hung request",
            "met": violations == 0,
            "text": f"{violations} violations {dict(run.violations)}"
            if violations
            else f"{sum(r['requests'] for r in rows):,} responses, all classified",
        },
        {
            "goal": f"RSS after warm-up ({warmup_end:.0f} s) grows by less than 5%",
            "met": bool(after_warmup) and rss["growth"] < RSS_GROWTH_LIMIT,
            "text": (
                f"{rss['at_warmup'] / 2**20:.1f} MB -> {rss['final'] / 2**20:.1f} MB "
                f"({rss['growth']:+.2%}; max {rss['max'] / 2**20:.1f} MB, "
                f"{rss['max_growth']:+.2%})"
                if after_warmup
                else "no sample after the warm-up: run longer"
            ),
        },
        {
            "goal": "asyncio tasks return to the idle baseline after the load",
            "met": drain.get("tasks_after") is not None
            and drain["tasks_after"] <= report["baseline"]["tasks"],
            "text": f"baseline {report['baseline']['tasks']}, "
            f"max under load {max((s['tasks'] or 0 for s in run.samples), default=0)}, "
            f"at end of load {drain.get('tasks_at_end_of_load')}, "
            f"after {drain.get('seconds')} s: {drain.get('tasks_after')}",
        },
    ]
    # The run proves nothing unless the upstream really flapped and both routes saw it.
    flapped = all(
        (r["counts"][UPSTREAM] > 0)
        if r["mode"] == UP
        else (
            r["counts"][FALLBACK] > 0 and r["counts"][OPEN_503] > 0 and r["counts"][UPSTREAM] == 0
        )
        for r in rows
    )
    verdicts.append(
        {
            "goal": "the flaps were seen: upstream answers when up; fallbacks and open 503s,"
            " and no upstream answer, when down",
            "met": flapped,
            "text": "every period" if flapped else "see the table",
        }
    )
    return {
        **report,
        "config": dict(vars(args)),
        "periods": rows,
        "by_route": {route: dict(counts) for route, counts in run.by_route.items()},
        "violations": dict(run.violations),
        "violation_examples": run.examples,
        "rss": rss,
        "samples": run.samples,
        "verdicts": verdicts,
    }


def render(report: dict[str, Any]) -> str:
    config = report["config"]
    info = report["machine"]
    lines = [
        f"fastapi_breaker soak, {report['date']}",
        f"machine: {info['nproc']} cores, {info['python']}, {info['platform']}; "
        f"load average at start {info['loadavg']}",
        f"server: {report['server_command']} (pid {report.get('server_pid')})",
        f"load: {config['concurrency']} workers, one keep-alive connection each, in the harness "
        f"process (with the upstream); client timeout {config['client_timeout']} s; "
        f"{config['seconds']} s, flaps of {config['flap_seconds']} s",
        f"breakers: timeout {config['breaker_timeout']} s, reset_timeout "
        f"{config['reset_timeout']} s, volume_threshold {config['volume_threshold']}, "
        f"50%, window {config['window']} s",
        f"CPU: server {report.get('server_cpu_percent', 0):.0f}%, harness "
        f"{report.get('harness_cpu_percent', 0):.0f}% (100% = one core)",
        "",
    ]
    head = (
        f"{'#':>2} {'mode':<7}{'reqs':>7}{'req/s':>7}{'upstr':>7}{'fallbk':>7}{'503open':>8}"
        f"{'503fail':>8}{'bad':>5}{'p50ms':>7}{'p99ms':>7}{'maxms':>7}{'503p99':>7}"
        f"{'up rcv':>7}{'RSS MB':>8}{'tasks':>6}"
    )
    lines.append(head)
    for row in report["periods"]:
        counts = row["counts"]
        lines.append(
            f"{row['period']:>2} {row['mode']:<7}{row['requests']:>7}{row['rps']:>7.0f}"
            f"{counts[UPSTREAM]:>7}{counts[FALLBACK]:>7}{counts[OPEN_503]:>8}"
            f"{counts[FAILED_503]:>8}{row['violations']:>5}{row['p50_ms']:>7.1f}"
            f"{row['p99_ms']:>7.1f}{row['max_ms']:>7.0f}{row['open_503_p99_ms']:>7.1f}"
            f"{row['upstream_received']:>7}{row['rss_mb']:>8.1f}"
            f"{row['tasks_max'] if row['tasks_max'] is not None else '-':>6}"
        )
    lines.append(
        "(503p99: p99 of the open-circuit 503s; up rcv: requests the upstream received; RSS and"
        " tasks: last sample and max of the samples in the period)"
    )
    lines.append(f"by route: {json.dumps(report['by_route'])}")
    for example in report["violation_examples"][:10]:
        lines.append(f"  violation: {json.dumps(example)[:400]}")
    lines += ["", "verdicts:"]
    for verdict in report["verdicts"]:
        lines.append(
            f"  {'MET    ' if verdict['met'] else 'NOT MET'} {verdict['goal']}: {verdict['text']}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=120.0, help="load duration (120)")
    parser.add_argument("--flap-seconds", type=float, default=20.0, help="up, then down (20)")
    parser.add_argument(
        "--down", choices=("both", HANG, REFUSED), default="both", help="kind of down (both)"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="client workers (32)")
    parser.add_argument("--client-timeout", type=float, default=10.0, help="hung after (10 s)")
    parser.add_argument("--sample-seconds", type=float, default=2.0, help="RSS/tasks (2 s)")
    parser.add_argument("--breaker-timeout", type=float, default=1.0, help="breaker (1 s)")
    parser.add_argument(
        "--reset-timeout", type=float, default=None, help="breaker (default flap-seconds / 4)"
    )
    parser.add_argument("--volume-threshold", type=int, default=10, help="breaker (10)")
    parser.add_argument(
        "--window", type=float, default=None, help="breaker's rolling window (flap-seconds / 4)"
    )
    args = parser.parse_args(argv)
    if args.flap_seconds <= 0 or args.seconds < 2 * args.flap_seconds:
        parser.error("--seconds must cover at least one up and one down flap")
    if not 1 <= args.concurrency <= 1000:
        parser.error("--concurrency must be between 1 and 1000")
    if args.sample_seconds <= 0 or args.client_timeout <= args.breaker_timeout:
        parser.error("--sample-seconds must be > 0, --client-timeout > --breaker-timeout")
    # A quarter of a flap: the breaker opens, probes and closes within every period, several
    # times over, instead of carrying the last period's successes into the next one.
    if args.reset_timeout is None:
        args.reset_timeout = args.flap_seconds / 4
    if args.window is None:
        args.window = args.flap_seconds / 4
    return args


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through the `finally` that stops the servers


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    now = dt.datetime.now(dt.UTC)
    info = machine()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        try:
            report = asyncio.run(soak(args, Path(tmp) / "server.log"))
        except KeyboardInterrupt:
            print("interrupted; the servers were stopped", file=sys.stderr)
            return 130
    report = summarize({"date": now.strftime("%Y-%m-%d %H:%M UTC"), "machine": info, **report})
    print(render(report))
    path = save("soak", report, now)
    met = all(verdict["met"] for verdict in report["verdicts"])
    print(f"\n{'PASS' if met else 'FAIL'}; wrote {path}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
