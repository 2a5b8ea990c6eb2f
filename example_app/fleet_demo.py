"""`make demo-fleet`: the User Service as four uvicorn worker processes sharing one breaker.

The demo starts a redis-server (`EmbeddedRedis`), the Auth Service in this process, and
`uvicorn --workers 4` serving the User Service with a `RedisCoordinator`. It makes the Auth
Service fail and shows, with the times it happened:

1. the four workers answering, each from its own process;
2. logins passing while the Auth Service is up;
3. the fleet opening after about `volume_threshold` failing calls IN ALL, where four workers
   with breakers of their own would let four times as many reach the Auth Service;
4. `/health` giving the same answer from every worker;
5. one trial per reset period for the whole fleet, where four workers would send four;
6. the Auth Service recovering: one trial closes the fleet, every worker passes logins again
   and `/health` says so from every worker.

It exits 0, or 1 naming the step that failed. Times are scaled down tenfold as in `make demo`
(reset timeout 2 s). Every loop is bounded; all traffic stays on 127.0.0.1.

Why `uvicorn --workers 4` rather than four uvicorn processes on SO_REUSEPORT sockets: it is how
users run several workers, and it works wherever uvicorn does (SO_REUSEPORT spreads connections
over processes on Linux only). Its workers share one listening socket, and the kernel hands each
new connection to one of the workers waiting on it, unevenly: back to back, some workers take
most connections, and one may go a second or two without any. So the demo opens a new
connection per request (`Connection: close`), paces its requests, and waits, with a bound,
until it has heard from every worker. The `X-Worker-Pid` header, added for the demo only,
tells which worker answered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth_service import create_auth_app
from .embedded_redis import EmbeddedRedis
from .scenario import ScenarioError
from .servers import LoopbackServer, free_port
from .user_service import AUTH_URL_VARIABLE, AuthSettings, app_from_environment

__all__ = [
    "SwitchedAuthService",
    "UvicornWorkers",
    "WorkerPid",
    "main",
    "run_demo",
    "worker_app",
    "worker_environment",
]

SCALE = 0.1
SETTINGS = AuthSettings().scaled(SCALE)  # timeout 0.5 s, reset timeout 2 s, 50%, volume 10
WORKERS = 4
PERIODS = 4  # reset periods over which the trials are counted
NAMESPACE = "user-service-demo"
PID_HEADER = "x-worker-pid"
LOGIN_GAP = 0.025  # seconds between two logins: 40 a second, spread over the workers
HEALTH_GAP = 0.01  # back to back, the kernel tends to hand the connections to the same workers
STARTED_WITHIN = 60.0  # seconds for the four workers to answer (spawned on a busy machine)
STOPPED_WITHIN = 15.0


def worker_app() -> FastAPI:
    """One worker of the fleet: `uvicorn --factory --workers 4` calls this in each process.

    `example_app.user_service:app`, configured the same way from the same variables, with the
    demo's `X-Worker-Pid` header added."""
    app = app_from_environment()
    app.add_middleware(WorkerPid)
    return app


def worker_environment(auth_url: str, redis_url: str | None) -> dict[str, str]:
    """The variables the workers read: where the Auth Service is, the demo's scaled times over
    `user_service.env`'s, and the Redis the fleet shares (None: each worker on its own)."""
    breaker = "FASTAPI_BREAKER_BREAKERS__AuthService__"
    fleet: dict[str, str] = {}
    if redis_url is not None:
        fleet["FASTAPI_BREAKER_REDIS_URL"] = redis_url
        fleet["FASTAPI_BREAKER_REDIS_NAMESPACE"] = NAMESPACE
    return {
        AUTH_URL_VARIABLE: auth_url,
        f"{breaker}TIMEOUT": f"{SETTINGS.timeout:g}",
        f"{breaker}RESET_TIMEOUT": f"{SETTINGS.reset_timeout:g}",
        f"{breaker}ERROR_THRESHOLD_PERCENTAGE": f"{SETTINGS.error_threshold_percentage:g}",
        f"{breaker}VOLUME_THRESHOLD": str(SETTINGS.volume_threshold),
        **fleet,
    }


class WorkerPid:
    """Adds `X-Worker-Pid` to every response, for the demo to tell the workers apart."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.pid = str(os.getpid()).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_pid(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (PID_HEADER.encode(), self.pid)]
            await send(message)

        await self.app(scope, receive, send_with_pid if scope["type"] == "http" else send)


class SwitchedAuthService:
    """The Auth Service with a switch: while `failing`, every request gets a 500. It records
    when each request arrived: what reached it is what the User Service's breakers let pass."""

    def __init__(self) -> None:
        self.app = create_auth_app()
        self.failing = False
        self.arrivals: list[float] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.arrivals.append(time.monotonic())
            if self.failing:
                await send({"type": "http.response.start", "status": 500, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
        await self.app(scope, receive, send)


class UvicornWorkers:
    """`uvicorn --workers 4` serving `worker_app`, in its own session so that stop() reaches
    the supervisor and every worker it spawned."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by logged()

    def start(self, auth_url: str, redis_url: str | None) -> None:
        project = Path(__file__).resolve().parent.parent
        command = [
            *(sys.executable, "-m", "uvicorn", "example_app.fleet_demo:worker_app", "--factory"),
            *("--workers", str(WORKERS), "--host", "127.0.0.1", "--port", str(self.port)),
            *("--app-dir", str(project), "--log-level", "warning", "--no-access-log"),
        ]
        environ = {**os.environ, **worker_environment(auth_url, redis_url)}
        # The workers' own log lines (the fastapi_breaker logger's warnings, each state change
        # in each process) go to a file, not between the demo's lines: it prints them last.
        self.process = subprocess.Popen(
            command,
            env=environ,
            stdin=subprocess.DEVNULL,
            stderr=self.log,
            start_new_session=True,
        )

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()  # uvicorn stops its workers, whose lifespans stop the coordinator
        try:
            process.wait(STOPPED_WITHIN)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOPPED_WITHIN)

    def logged(self) -> list[str]:
        """What the workers wrote to stderr (once they stopped): their log lines."""
        with self.log:
            self.log.seek(0)
            return self.log.read().decode(errors="replace").splitlines()


class _Demo:
    def __init__(
        self, client: httpx.AsyncClient, auth: SwitchedAuthService, echo: Callable[[str], None]
    ) -> None:
        self.client = client
        self.auth = auth
        self.echo = echo
        self.started = time.monotonic()
        self.number = 0

    def say(self, text: str) -> None:
        self.echo(f"{time.monotonic() - self.started:6.2f}s  {text}")

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.number += 1
        self.say(f"== Step {self.number}: {title}")
        try:
            yield
        except Exception as exc:
            raise ScenarioError(f"step {self.number} ({title}): {exc}") from exc

    async def get(self, path: str, **params: str) -> tuple[int, httpx.Response]:
        """One request on a new connection; the pid of the worker that answered."""
        response = await self.client.get(path, params=params)
        return int(response.headers[PID_HEADER]), response

    async def login(self) -> tuple[int, int]:
        pid, response = await self.get("/login", token="valid-alice")
        return pid, response.status_code

    async def health_from_every_worker(self, expect: str, fleet: str) -> None:
        """Ask /health until every worker has answered twice; all must say the same."""
        answers: dict[int, list[tuple[int, str, str | None]]] = collections.defaultdict(list)
        for _ in range(100 * WORKERS):
            pid, response = await self.get("/health")
            body: dict[str, Any] = response.json()
            breaker = body["details"]["AuthService"]
            answers[pid].append((response.status_code, body["status"], breaker["fleet"]))
            if len(answers) == WORKERS and min(map(len, answers.values())) >= 2:
                break
            await asyncio.sleep(HEALTH_GAP)
        else:
            raise ScenarioError(f"only {len(answers)} of {WORKERS} workers answered /health")
        for pid, seen in sorted(answers.items()):
            shown = ", ".join(
                f"{code} {status} (fleet {state})" for code, status, state in set(seen)
            )
            self.say(f"   /health from worker {pid}: {len(seen)} answers, all {shown}")
        distinct = {answer for seen in answers.values() for answer in seen}
        if distinct != {(200, expect, fleet)}:
            raise ScenarioError(f"expected every answer 200 {expect} (fleet {fleet}): {distinct}")


async def run_demo(echo: Callable[[str], None] = print) -> None:
    """Start Redis, the Auth Service and the four workers; play the steps; stop them all."""
    auth = SwitchedAuthService()
    workers = UvicornWorkers()
    try:
        # Connection: close, so that every request is a new connection, which the kernel hands
        # to one of the workers.
        async with (
            httpx.AsyncClient(base_url=workers.url, headers={"Connection": "close"}) as client,
            contextlib.AsyncExitStack() as running,  # stops the workers, then Auth, then Redis
        ):
            demo = _Demo(client, auth, echo)
            with demo.step(f"{WORKERS} uvicorn workers share one Redis for their breakers"):
                redis_server = running.enter_context(EmbeddedRedis())
                demo.say(f"   redis-server on {redis_server.url}, namespace {NAMESPACE!r}")
                auth_server = LoopbackServer(auth)
                await auth_server.start()
                running.push_async_callback(auth_server.stop)
                demo.say(f"   Auth Service on {auth_server.url}")
                workers.start(auth_server.url, redis_server.url)
                running.push_async_callback(asyncio.to_thread, workers.stop)
                demo.say(f"   uvicorn --workers {WORKERS} on {workers.url}")
                await _workers_answer(demo, workers)
            await _logins_pass(demo)
            await _fleet_opens(demo)
            with demo.step("/health gives the same answer from every worker"):
                await demo.health_from_every_worker("degraded", fleet="open")
            await _one_trial_per_period(demo)
            await _recovery(demo)
    finally:
        # After the timeline, not inside it: four processes log the same state changes, in
        # no set order. These are the lines an operator watches (docs/fleet.md).
        lines = workers.logged()
        echo(f"== What the workers logged ({len(lines)} lines, each worker its own changes)")
        for line in lines:
            echo(f"   {line}")


async def _workers_answer(demo: _Demo, workers: UvicornWorkers) -> None:
    assert workers.process is not None
    seen: set[int] = set()
    deadline = time.monotonic() + STARTED_WITHIN
    while len(seen) < WORKERS:
        if workers.process.poll() is not None:
            raise ScenarioError(f"uvicorn exited with {workers.process.returncode}")
        if time.monotonic() > deadline:
            raise ScenarioError(f"{len(seen)} of {WORKERS} workers answered in time")
        try:
            pid, _ = await demo.get("/health/live")
        except httpx.TransportError:
            await asyncio.sleep(0.1)  # not listening yet
            continue
        if pid not in seen:
            seen.add(pid)
            demo.say(f"   worker {pid} answers")


async def _logins_pass(demo: _Demo) -> None:
    with demo.step("the Auth Service is up: logins pass"):
        for _ in range(WORKERS):
            pid, status = await demo.login()
            demo.say(f"   login -> {status} from worker {pid}")
            if status != 200:
                raise ScenarioError(f"expected 200, got {status}")


async def _fleet_opens(demo: _Demo) -> None:
    volume = SETTINGS.volume_threshold
    with demo.step(f"the Auth Service fails: the fleet opens after about {volume} calls in all"):
        demo.auth.failing = True
        before = len(demo.auth.arrivals)
        refusing: set[int] = set()
        for _ in range(20 * WORKERS * volume):
            pid, status = await demo.login()
            received = len(demo.auth.arrivals) - before
            if status == 502:
                demo.say(f"   login -> 502 from worker {pid}; failing calls received: {received}")
            elif status == 503 and pid not in refusing:
                refusing.add(pid)
                demo.say(f"   login -> 503 from worker {pid}: it refuses without calling")
            elif status != 503:
                raise ScenarioError(f"expected 502 or 503, got {status}")
            if len(refusing) == WORKERS:
                break
            await asyncio.sleep(LOGIN_GAP)
        else:
            raise ScenarioError(f"only {len(refusing)} of {WORKERS} workers refuse")
        received = len(demo.auth.arrivals) - before
        demo.say(
            f"   every worker refuses: the Auth Service received {received} failing calls in all"
        )
        demo.say(
            f"   (the fleet opens at {volume} calls over 50% failed, step 2's {WORKERS} successes "
            f"included; {WORKERS} workers with breakers of their own would each wait for "
            f"{volume} calls: about {WORKERS} x {volume} failing calls)"
        )
        if received > 2 * volume:
            raise ScenarioError(f"{received} failing calls, more than 2 x {volume}")


async def _one_trial_per_period(demo: _Demo) -> None:
    reset = SETTINGS.reset_timeout
    with demo.step(f"one trial per reset period ({reset:g} s) for the whole fleet"):
        before = len(demo.auth.arrivals)
        refused: collections.Counter[int] = collections.Counter()
        deadline = time.monotonic() + PERIODS * 2 * reset + 5.0
        while len(demo.auth.arrivals) - before < PERIODS and time.monotonic() < deadline:
            pid, status = await demo.login()
            if status == 502:
                demo.say(f"   trial: login -> 502 from worker {pid}, the Auth Service still fails")
            elif status == 503:
                refused[pid] += 1
            else:
                raise ScenarioError(f"expected 502 or 503, got {status}")
            await asyncio.sleep(LOGIN_GAP)
        trials = demo.auth.arrivals[before:]
        # The calls the Auth Service received in the reset period that each trial began.
        per_period = [sum(start <= at < start + reset for at in trials) for start in trials]
        gaps = [later - earlier for earlier, later in itertools.pairwise(trials)]
        demo.say(
            f"   meanwhile {refused.total()} logins refused with 503, by worker: "
            + ", ".join(f"{pid} ({count})" for pid, count in sorted(refused.items()))
        )
        demo.say(
            "   calls the Auth Service received per reset period: "
            + ", ".join(map(str, per_period))
            + f" ({WORKERS} workers with breakers of their own: {WORKERS} each)"
        )
        demo.say("   seconds between trials: " + ", ".join(f"{gap:.2f}" for gap in gaps))
        if len(trials) != PERIODS:
            raise ScenarioError(f"{len(trials)} trials in {PERIODS * 2 * reset + 5.0:g} s")
        if len(refused) != WORKERS:
            raise ScenarioError(f"only {len(refused)} of {WORKERS} workers refused logins")
        if not all(0.95 * reset <= gap < 2 * reset for gap in gaps):
            raise ScenarioError(f"trials {gaps} s apart: not one per {reset:g} s period")


async def _recovery(demo: _Demo) -> None:
    with demo.step("the Auth Service recovers: one trial closes the fleet for every worker"):
        demo.auth.failing = False
        before = len(demo.auth.arrivals)
        passing: set[int] = set()
        deadline = time.monotonic() + 2 * SETTINGS.reset_timeout + 5.0
        while len(passing) < WORKERS and time.monotonic() < deadline:
            pid, status = await demo.login()
            if status == 200 and not passing:
                calls = len(demo.auth.arrivals) - before
                demo.say(f"   trial: login -> 200 from worker {pid}, the fleet closes")
                if calls != 1:
                    raise ScenarioError(f"the Auth Service received {calls} calls, not 1 trial")
            elif status == 200 and pid not in passing:
                demo.say(f"   login -> 200 from worker {pid}")
            elif status not in (200, 503):
                raise ScenarioError(f"expected 200 or 503, got {status}")
            if status == 200:
                passing.add(pid)
            await asyncio.sleep(LOGIN_GAP)
        if len(passing) < WORKERS:
            raise ScenarioError(f"only {len(passing)} of {WORKERS} workers pass logins")
        await demo.health_from_every_worker("healthy", fleet="closed")


def main() -> int:
    print(
        f"fastapi_breaker fleet demo: {WORKERS} uvicorn workers, one Redis; times scaled by "
        f"{SCALE:g} (timeout {SETTINGS.timeout:g} s, reset timeout {SETTINGS.reset_timeout:g} "
        f"s); threshold {SETTINGS.error_threshold_percentage:g}%, volume threshold "
        f"{SETTINGS.volume_threshold}"
    )
    try:
        asyncio.run(run_demo())
    except ScenarioError as exc:
        print(f"fleet demo failed at {exc}", file=sys.stderr)
        return 1
    print("fleet demo finished: the four workers behaved as one breaker")
    return 0


if __name__ == "__main__":
    sys.exit(main())
