"""End to end over gRPC: the User Service under uvicorn calls the gRPC Auth Service on loopback.

Both are real servers on 127.0.0.1 in this process: uvicorn serving the User Service, whose
`/login` calls `auth.AuthService/Verify` on a `grpc.aio` server through `BreakerInterceptor`.
The breaker reads a `FakeClock`, so its 20 s reset timeout passes at once; what is waited for,
with a bound, is the channel reconnecting once the Auth Service is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from fastapi import FastAPI

from example_app.grpc_auth.server import GrpcAuthServer
from example_app.scenario import run_scenario
from example_app.servers import LoopbackServer
from example_app.user_service import AuthSettings, create_user_app
from fastapi_breaker import CircuitBreaker, Event, State
from fastapi_breaker.testing import FakeClock

ROOT = Path(__file__).resolve().parents[1]

# The design note's times; volume 0 so that the first failure opens the breaker.
SETTINGS = AuthSettings(volume_threshold=0)


class Services:
    def __init__(self, auth: GrpcAuthServer, app: FastAPI, client: httpx.AsyncClient) -> None:
        self.auth = auth
        self.app = app
        self.client = client
        self.breaker: CircuitBreaker = app.state.breaker_registry.get("AuthService")
        self.transitions: list[str] = []
        for name in ("open", "half_open", "close"):
            self.breaker.on(name, self._record)

    def _record(self, event: Event) -> None:
        self.transitions.append(event.name)

    async def login(self, token: str = "valid-alice") -> httpx.Response:
        return await self.client.get("/login", params={"token": token})

    async def channel_ready(self, within: float = 5.0) -> None:
        """Wait, at most `within` seconds, until the User Service's channel is connected."""
        channel: grpc.aio.Channel = self.app.state.auth_channel
        async with asyncio.timeout(within):
            state = channel.get_state(try_to_connect=True)
            while state is not grpc.ChannelConnectivity.READY:
                await channel.wait_for_state_change(state)
                state = channel.get_state(try_to_connect=True)


@contextlib.asynccontextmanager
async def running(settings: AuthSettings, clock: FakeClock | None) -> AsyncIterator[Services]:
    auth = GrpcAuthServer()
    await auth.start()
    app = create_user_app(settings=settings, clock=clock, auth_grpc_target=auth.target)
    user = LoopbackServer(app)
    await user.start()
    try:
        async with httpx.AsyncClient(base_url=user.url, timeout=10.0) as client:
            yield Services(auth, app, client)
    finally:
        await user.stop()
        await auth.stop()


@pytest.fixture
async def services() -> AsyncIterator[tuple[Services, FakeClock]]:
    clock = FakeClock()
    async with running(SETTINGS, clock) as services:
        yield services, clock


async def test_auth_service_down_503_with_retry_after_then_back_200(
    services: tuple[Services, FakeClock],
) -> None:
    s, clock = services

    response = await s.login()
    assert (response.status_code, response.json()) == (200, {"user": "alice"})

    await s.auth.stop()
    for _ in range(2):  # 1 of 2 calls failed is not over 50%; 2 of 3 is
        response = await s.login()
        assert response.status_code == 502
        assert response.json() == {"detail": "Auth Service unreachable"}
    assert s.breaker.state is State.OPEN

    response = await s.login()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "20"
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "The service is temporarily unavailable; retry after 20 seconds.",
        "retry_after": 20,
    }

    await s.auth.start()  # the same port
    clock.advance(20)
    await s.channel_ready()
    response = await s.login()
    assert (response.status_code, response.json()) == (200, {"user": "alice"})
    assert s.breaker.state is State.CLOSED
    assert s.transitions == ["open", "half_open", "close"]
    # The first login and the trial: the 503 never reached the Auth Service.
    assert s.auth.calls == 2


async def test_an_invalid_token_is_401_and_no_failure(
    services: tuple[Services, FakeClock],
) -> None:
    s, _ = services

    response = await s.login("forged")

    assert (response.status_code, response.json()) == (401, {"detail": "invalid token"})
    assert (s.breaker.stats.successes, s.breaker.stats.failures) == (1, 0)
    assert s.breaker.state is State.CLOSED


async def test_a_failing_auth_service_opens_the_breaker(
    services: tuple[Services, FakeClock],
) -> None:
    s, _ = services
    s.auth.failing = True

    first = await s.login()
    second = await s.login()

    assert (first.status_code, first.json()) == (502, {"detail": "Auth Service failed"})
    assert (second.status_code, second.headers["retry-after"]) == (503, "20")
    assert s.auth.calls == 1
    assert s.transitions == ["open"]


async def test_a_slow_auth_service_times_out_and_opens_the_breaker() -> None:
    # The breaker's timeout is the call's deadline: real time, 0.2 s.
    async with running(AuthSettings(timeout=0.2, volume_threshold=0), None) as s:
        s.auth.delay = 5.0

        response = await s.login()

        assert (response.status_code, response.json()) == (
            502,
            {"detail": "Auth Service timed out"},
        )
        assert (s.breaker.stats.timeouts, s.breaker.stats.failures) == (1, 1)
        assert s.transitions == ["open"]


# (status, Retry-After, breaker state, /health status), as over HTTP (test_e2e_scenarios.py),
# with the reset timeout scaled down to 2 s.
EXPECTED_STEPS = [
    *[(200, None, "closed", "healthy")] * 3,
    *[(502, None, "closed", "healthy")] * 6,
    (502, None, "open", "degraded"),
    (503, "2", "open", "degraded"),
    (503, "2", "open", "degraded"),
    (502, None, "open", "degraded"),
    (503, "2", "open", "degraded"),
    (200, None, "closed", "healthy"),
    (200, None, "closed", "healthy"),
]


async def test_the_design_notes_scenarios_over_grpc() -> None:
    # Real time, scaled down as `make demo-grpc` runs it: the channel's reconnection needs real
    # time to pass, and the 2 s reset timeouts give it that.
    outcome = await run_scenario(
        settings=AuthSettings().scaled(0.1), wait=asyncio.sleep, echo=_quiet, over_grpc=True
    )

    assert [(s.status, s.retry_after, s.state, s.health) for s in outcome.steps] == EXPECTED_STEPS
    assert outcome.transitions == ["open", "half_open", "open", "half_open", "close"]


def test_make_demo_grpc_exits_0_with_its_steps() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "example_app.grpc_demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("fastapi_breaker demo (Auth Service over gRPC): times scaled by 0.1")
    assert done.stderr == ""
    assert "Auth Service on gRPC 127.0.0.1:" in done.stdout
    statuses = [m[1] for m in map(re.compile(r"^ *[0-9.]+s  .* -> (\d{3}) ").match, lines) if m]
    assert statuses == [
        *["200"] * 3,
        *["502"] * 7,
        "503",
        "503",
        "200",  # /health while half-open
        "502",
        "503",
        "200",  # /health while half-open
        "200",
        "200",
    ]
    assert lines[-1] == "demo finished: both scenarios behaved as the design note describes"


def _quiet(line: str) -> None:
    pass
