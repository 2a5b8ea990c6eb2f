"""The design note's two scenarios, Service Down and Service Recovery, over real HTTP.

Two FastAPI apps run under uvicorn on 127.0.0.1: the User Service, whose `/login` calls the
Auth Service through a breaker-protected httpx client. The scenario takes the Auth Service
down and brings it back, and records what a client of the User Service sees at each step:
status, `Retry-After`, the breaker's state and the `/health` status.

With `over_grpc=True` the Auth Service is the gRPC one (example_app/grpc_auth) and `/login`
calls it through `fastapi_breaker.grpc`'s interceptor: the same steps, the same answers.

`run_scenario()` serves `make demo` and `make demo-grpc` (real time, settings scaled down) and
the end-to-end test (a `FakeClock`, so the reset timeout passes without waiting). It checks
every step against what the design note says must happen, and raises `ScenarioError` at the
first one that differs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx

from fastapi_breaker import CircuitBreaker, Clock, Event

from .auth_service import create_auth_app
from .servers import LoopbackServer
from .user_service import AuthSettings, create_user_app

__all__ = ["Outcome", "ScenarioError", "Step", "run_scenario"]

Wait = Callable[[float], Awaitable[None]]


class AuthServer(Protocol):
    """An Auth Service the scenario takes down and brings back on the same port."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ScenarioError(AssertionError):
    """A step did not go as the design note says it must."""


@dataclasses.dataclass(frozen=True)
class Step:
    """What a client of the User Service saw at one step."""

    at: float  # seconds since the scenario started, by the wall clock
    action: str
    status: int
    retry_after: str | None
    state: str  # the "AuthService" breaker's state, from /health
    health: str  # the overall /health status

    def line(self) -> str:
        retry = f"Retry-After: {self.retry_after}" if self.retry_after else ""
        return (
            f"{self.at:7.2f}s  {self.action:<44} -> {self.status}  "
            f"{retry:<16} breaker {self.state:<9} /health {self.health}"
        )


@dataclasses.dataclass
class Outcome:
    """The steps a client saw, and the breaker's state changes in the order they happened."""

    steps: list[Step] = dataclasses.field(default_factory=list)
    transitions: list[str] = dataclasses.field(default_factory=list)
    health_bodies: list[dict[str, Any]] = dataclasses.field(default_factory=list)


class _Run:
    def __init__(self, user: httpx.AsyncClient, echo: Callable[[str], None]) -> None:
        self.user = user
        self.echo = echo
        self.started = time.monotonic()
        self.outcome = Outcome()

    def say(self, text: str) -> None:
        self.echo(f"{time.monotonic() - self.started:7.2f}s  == {text}")

    def watch(self, breaker: CircuitBreaker) -> None:
        def transition(event: Event) -> None:
            self.outcome.transitions.append(event.name)
            self.echo(f"{time.monotonic() - self.started:7.2f}s  ** breaker -> {event.name}")

        for name in ("open", "half_open", "close"):
            breaker.on(name, transition)  # type: ignore[arg-type]

    async def health(self, action: str, *, expect_state: str) -> dict[str, Any]:
        response = await self.user.get("/health")
        body: dict[str, Any] = response.json()
        self.outcome.health_bodies.append(body)
        state = body["details"]["AuthService"]["state"]
        self.echo(
            f"{time.monotonic() - self.started:7.2f}s  {action:<44} -> {response.status_code}  "
            f"{'':<16} breaker {state:<9} /health {body['status']}"
        )
        if state != expect_state:
            raise ScenarioError(f"{action}: expected the breaker {expect_state}, got {state}")
        return body

    async def login(self, action: str, *, expect: int) -> Step:
        response = await self.user.get("/login", params={"token": "valid-alice"})
        health = (await self.user.get("/health")).json()
        breaker = health.get("details", {}).get("AuthService", {})
        step = Step(
            at=time.monotonic() - self.started,
            action=action,
            status=response.status_code,
            retry_after=response.headers.get("retry-after"),
            state=breaker.get("state", "closed"),
            health=health["status"],
        )
        self.outcome.steps.append(step)
        self.echo(step.line())
        if step.status != expect:
            raise ScenarioError(f"{action}: expected {expect}, got {step.status}")
        return step


async def run_scenario(
    *,
    settings: AuthSettings | None = None,
    clock: Clock | None = None,
    wait: Wait,
    echo: Callable[[str], None] = print,
    over_grpc: bool = False,
) -> Outcome:
    """Play both scenarios; `wait(seconds)` lets that much breaker time pass.

    `over_grpc`: against the gRPC Auth Service. A channel whose connection failed waits a
    little real time before connecting again (grpc_auth/client.py), so with a fake clock
    `wait` must also let that much real time pass.
    """
    settings = settings or AuthSettings()
    auth: AuthServer
    if over_grpc:
        from .grpc_auth.server import GrpcAuthServer  # the HTTP demo needs no grpcio

        auth = grpc_auth = GrpcAuthServer()
        await grpc_auth.start()
        address = f"gRPC {grpc_auth.target}"
        user_app = create_user_app(
            settings=settings, clock=clock, auth_grpc_target=grpc_auth.target
        )
    else:
        auth = http_auth = LoopbackServer(create_auth_app())
        await http_auth.start()
        address = http_auth.url
        user_app = create_user_app(http_auth.url, settings, clock=clock)
    user = LoopbackServer(user_app)
    await user.start()
    try:
        async with httpx.AsyncClient(base_url=user.url, timeout=30.0) as client:
            run = _Run(client, echo)
            run.watch(user_app.state.breaker_registry.get("AuthService"))
            run.say(f"User Service on {user.url}, Auth Service on {address}")
            await _service_down(run, auth, settings, wait)
            await _service_recovery(run, auth, settings, wait)
            return run.outcome
    finally:
        await user.stop()
        await auth.stop()


async def _service_down(run: _Run, auth: AuthServer, settings: AuthSettings, wait: Wait) -> None:
    run.say("Scenario 1: Service Down")
    for _ in range(3):
        await run.login("1. User Service calls Auth Service", expect=200)

    await auth.stop()
    run.say("2. Auth Service is down (connections refused)")
    # Three successes are in the window: with 50% and a volume of 10, the 7th failure opens it.
    failures_to_open = 7
    for n in range(1, failures_to_open + 1):
        step = await run.login(f"   login fails ({n} of {failures_to_open})", expect=502)
    if step.state != "open":
        raise ScenarioError(f"the breaker should be open after {failures_to_open} failures")
    run.say("3. Circuit opens: requests are rejected without calling the Auth Service")
    for _ in range(2):
        step = await run.login("4. Fast failure response to user", expect=503)
        if step.retry_after is None:
            raise ScenarioError("a 503 from an open circuit must carry Retry-After")

    await wait(settings.reset_timeout)
    run.say(f"5. After {settings.reset_timeout:g} s the circuit tests recovery")
    await run.health("   /health: the breaker is half-open", expect_state="half_open")
    await run.login("   trial call: Auth Service still down", expect=502)
    step = await run.login("6. Circuit stays open", expect=503)
    if step.state != "open":
        raise ScenarioError("a failed trial must reopen the breaker")


async def _service_recovery(
    run: _Run, auth: AuthServer, settings: AuthSettings, wait: Wait
) -> None:
    run.say("Scenario 2: Service Recovery")
    await auth.start()  # same port as before
    run.say("1. Circuit is OPEN; the Auth Service is back")
    await wait(settings.reset_timeout)
    run.say(f"2. After {settings.reset_timeout:g} s the circuit moves to HALF_OPEN")
    await run.health("   /health: the breaker is half-open", expect_state="half_open")
    step = await run.login("3. Test request to Auth Service", expect=200)
    if step.state != "closed":
        raise ScenarioError("a successful trial must close the breaker")
    run.say("4. Auth Service responds successfully; the circuit closes")
    await run.login("5. Normal operation resumes", expect=200)
