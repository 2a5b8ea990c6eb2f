"""The apps the harnesses serve, each a uvicorn factory (`uvicorn --factory bench.apps:...`).

`make_breaker_app` is the example User Service as shipped; `make_plain_app` the same /login with
a plain httpx client; `make_upstream_app` a minimal Auth Service; `make_health_app` /health over
BENCH_BREAKERS used breakers. Settings come from the environment: BENCH_UPSTREAM_URL (127.0.0.1
only), BENCH_TIMEOUT and BENCH_RESET_TIMEOUT (the breaker's), BENCH_HTTPX_TIMEOUT (5 s). The User
Services also serve `/_bench/...` routes for the harness, after /login so that they cost it
nothing: the task count; for the breaker app, `open`, its event counts, and `floor` (the same
503 answered at once: what the framework alone costs).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException, Request, Response
from starlette.types import Receive, Scope, Send

from example_app.user_service import AUTH_SERVICE_LIMITS, AuthSettings, create_user_app
from fastapi_breaker import BreakerRegistry, CircuitBreaker, CircuitOpenError, Event, EventName
from fastapi_breaker.fastapi import get_registry, setup_breakers
from fastapi_breaker.health import health_router
from fastapi_breaker.middleware import problem_response

__all__ = [
    "add_tasks_route",
    "make_breaker_app",
    "make_health_app",
    "make_plain_app",
    "make_upstream_app",
    "populate",
    "upstream_url",
    "verify",
]

BREAKER = "AuthService"
# Counted for the fast-failure check. Not `reject`, `fire` or `success`: a listener on those
# would add work to every request, and the check needs only the state changes and trials.
COUNTED_EVENTS: tuple[EventName, ...] = ("open", "half_open", "close", "timeout", "failure")
# The /health app's breakers keep their stats and their open state for the whole run.
HEALTH_OPTIONS = {"reset_timeout": 3600.0, "rolling_count_timeout": 3600.0, "volume_threshold": 0}


def upstream_url() -> str:
    url = os.environ.get("BENCH_UPSTREAM_URL", "")
    if not url.startswith("http://127.0.0.1:"):
        raise RuntimeError(f"BENCH_UPSTREAM_URL must be http://127.0.0.1:<port>, got {url!r}")
    return url


def _seconds(name: str, default: float) -> float:
    value = os.environ.get(name)
    return default if value is None else float(value)


def add_tasks_route(app: FastAPI) -> None:
    @app.get("/_bench/tasks", include_in_schema=False)
    async def tasks() -> dict[str, int]:
        return {"tasks": len(asyncio.all_tasks())}


def make_breaker_app() -> FastAPI:
    """The example User Service: breaker, `AsyncBreakerTransport` and the 503 middleware."""
    defaults = AuthSettings()
    settings = AuthSettings(
        timeout=_seconds("BENCH_TIMEOUT", defaults.timeout),
        reset_timeout=_seconds("BENCH_RESET_TIMEOUT", defaults.reset_timeout),
    )
    app = create_user_app(
        upstream_url(), settings, http_timeout=_seconds("BENCH_HTTPX_TIMEOUT", 5.0)
    )
    counts: collections.Counter[str] = collections.Counter()
    counted: list[CircuitBreaker] = []  # the breaker the listeners are on, if any

    def count(event: Event) -> None:
        counts[event.name] += 1

    def snapshot(breaker: CircuitBreaker) -> dict[str, Any]:
        # Copy the counts before reading `state`: reading it after the reset timeout emits
        # `half_open` without admitting a trial, which must not be taken for one.
        events = {name: counts[name] for name in COUNTED_EVENTS}
        return {"events": events, "failures": breaker.stats.failures, "state": breaker.state.value}

    @app.get("/_bench/open", include_in_schema=False)
    async def open_breaker(request: Request) -> dict[str, Any]:
        """Open the breaker now and start counting its events (the first time)."""
        breaker = get_registry(request).get(BREAKER)
        if breaker not in counted:
            for name in COUNTED_EVENTS:
                breaker.on(name, count)
            counted.append(breaker)
        breaker.open()
        return snapshot(breaker)

    @app.get("/_bench/floor", include_in_schema=False)
    async def floor() -> Response:
        """The same 503 without a breaker or a request to make: the framework's own cost."""
        return problem_response(CircuitOpenError(BREAKER, 1.0))

    @app.get("/_bench/breaker", include_in_schema=False)
    async def breaker_state(request: Request) -> dict[str, Any]:
        return snapshot(get_registry(request).get(BREAKER))

    add_tasks_route(app)
    return app


def make_plain_app() -> FastAPI:
    """The same `/login` with a plain httpx client: no breaker, transport or middleware."""
    auth_url = upstream_url()
    timeout = _seconds("BENCH_HTTPX_TIMEOUT", 5.0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The transport the breaker app's AsyncBreakerTransport wraps, with the same pool;
        # passed explicitly, as there, so that no proxy from the environment applies.
        transport = httpx.AsyncHTTPTransport(limits=AUTH_SERVICE_LIMITS)
        async with httpx.AsyncClient(
            base_url=auth_url, transport=transport, timeout=timeout
        ) as client:
            app.state.auth_client = client
            yield

    app = FastAPI(title="User Service (no breaker)", lifespan=lifespan)

    @app.get("/login")
    async def login(token: str, request: Request) -> dict[str, str]:
        client: httpx.AsyncClient = request.app.state.auth_client
        try:
            response = await client.get("/verify", params={"token": token})
        except httpx.HTTPError as exc:
            raise HTTPException(status_code=502, detail="Auth Service unreachable") from exc
        if response.status_code == 401:
            raise HTTPException(status_code=401, detail="invalid token")
        if response.is_error:
            raise HTTPException(status_code=502, detail="Auth Service failed")
        return {"user": response.json()["user"]}  # the same body as the breaker variant

    add_tasks_route(app)
    return app


def verify(query: str) -> tuple[int, bytes]:
    """The Auth Service's answer to /verify?<query>: 200 for token=valid-<user>, else 401."""
    token = query.partition("token=")[2].partition("&")[0]
    if token.startswith("valid-"):
        return 200, b'{"user":"' + token.removeprefix("valid-").encode() + b'"}'
    return 401, b'{"detail":"invalid token"}'


async def _upstream(scope: Scope, receive: Receive, send: Send) -> None:
    # Without a framework: the upstream shares the machine's two cores with the server under
    # test and with wrk, so the less it costs, the more the User Service's own cost shows.
    assert scope["type"] == "http"
    status, body = verify(scope["query_string"].decode("latin-1"))
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def make_upstream_app() -> Any:
    """A minimal raw-ASGI Auth Service (run it with `--lifespan off`)."""
    return _upstream


def populate(
    registry: BreakerRegistry, count: int, name_of: Callable[[int], str] | None = None
) -> None:
    """`count` breakers with history: 20% failures (closed), every 10th opened by 60%.
    `name_of(index)` names them (`svc-0000000`, ... by default)."""

    def ok() -> None:
        return None

    def fail() -> None:
        raise ValueError("upstream said no")

    # 2 successes then 3 failures: 33%, 50% (not above), 60% opens it; then 2 refused.
    opening = [ok] * 2 + [fail] * 3 + [ok] * 2
    for index in range(count):
        breaker = registry.get(f"svc-{index:07d}" if name_of is None else name_of(index))
        for action in opening if index % 10 == 9 else [ok] * 8 + [fail] * 2:
            with contextlib.suppress(ValueError, CircuitOpenError):
                breaker.call_sync(action)


def make_health_app(registry: BreakerRegistry | None = None) -> FastAPI:
    """`/health` with every detail; by default over BENCH_BREAKERS (1,000) used breakers."""
    if registry is None:
        registry = BreakerRegistry(HEALTH_OPTIONS, max_breakers=None)
        populate(registry, int(os.environ.get("BENCH_BREAKERS", "1000")))
    app = FastAPI()
    setup_breakers(app, registry)
    app.include_router(health_router(detail="always"))
    return app
