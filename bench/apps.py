"""App factories for the HTTP benchmark, each served by its own uvicorn process:

    uvicorn --factory bench.apps:make_breaker_app     # the example User Service, as shipped
    uvicorn --factory bench.apps:make_plain_app       # the same /login with no breaker at all
    uvicorn --factory bench.apps:make_upstream_app    # a minimal, fast stand-in Auth Service

Settings come from environment variables (a factory takes no arguments):

- `BENCH_UPSTREAM_URL`: the Auth Service's base URL (127.0.0.1 only);
- `BENCH_TIMEOUT`, `BENCH_RESET_TIMEOUT`: the breaker's times in seconds (breaker app;
  defaults: the example's `AuthSettings`);
- `BENCH_HTTPX_TIMEOUT`: httpx's timeout in seconds (both apps; default 5.0, httpx's own);
- `BENCH_GC_STATS=1`: time every garbage collection, served at `/_bench/gc?reset=true`.

Both User Services also serve `/_bench/...` routes for the harness, added after `/login` so
that they cost `/login` nothing: the number of asyncio tasks, and for the breaker app an
`open` switch, the counts of the breaker's state events, and `floor`: the same 503 answered
straight away, to show what the framework alone costs.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from starlette.types import Receive, Scope, Send

from example_app.user_service import AUTH_SERVICE_LIMITS, AuthSettings, create_user_app
from fastapi_breaker import CircuitBreaker, CircuitOpenError, Event, EventName
from fastapi_breaker.fastapi import get_registry
from fastapi_breaker.middleware import problem_response

__all__ = ["create_plain_app", "make_breaker_app", "make_plain_app", "make_upstream_app"]

BREAKER = "AuthService"
# Counted for the fast-failure check. Not `reject`, `fire` or `success`: a listener on those
# would add work to every request, and the check needs only the state changes and trials.
COUNTED_EVENTS: tuple[EventName, ...] = ("open", "half_open", "close", "timeout", "failure")


def _upstream_url() -> str:
    url = os.environ.get("BENCH_UPSTREAM_URL", "")
    if not url.startswith("http://127.0.0.1:"):
        raise RuntimeError(f"BENCH_UPSTREAM_URL must be http://127.0.0.1:<port>, got {url!r}")
    return url


def _seconds(name: str, default: float) -> float:
    value = os.environ.get(name)
    return default if value is None else float(value)


def _add_task_count(app: FastAPI) -> None:
    @app.get("/_bench/tasks", include_in_schema=False)
    async def tasks() -> dict[str, int]:
        return {"tasks": len(asyncio.all_tasks())}

    if os.environ.get("BENCH_GC_STATS") == "1":
        _add_gc_stats(app)


def _add_gc_stats(app: FastAPI) -> None:
    """Time every garbage collection, by generation: a long one is a latency outlier."""
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    started = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append(time.perf_counter() - started[0])

    gc.callbacks.append(timed)

    @app.get("/_bench/gc", include_in_schema=False)
    async def gc_stats(reset: bool = False) -> dict[str, Any]:
        found = {
            str(gen): {
                "count": len(times),
                "total_ms": round(sum(times) * 1e3, 2),
                "max_ms": round(max(times, default=0.0) * 1e3, 2),
            }
            for gen, times in pauses.items()
        }
        if reset:
            for times in pauses.values():
                times.clear()
        return found


def make_breaker_app() -> FastAPI:
    """The example User Service: breaker, `AsyncBreakerTransport` and the 503 middleware."""
    defaults = AuthSettings()
    settings = AuthSettings(
        timeout=_seconds("BENCH_TIMEOUT", defaults.timeout),
        reset_timeout=_seconds("BENCH_RESET_TIMEOUT", defaults.reset_timeout),
    )
    app = create_user_app(
        _upstream_url(), settings, http_timeout=_seconds("BENCH_HTTPX_TIMEOUT", 5.0)
    )
    counts: collections.Counter[str] = collections.Counter()
    counted: list[CircuitBreaker] = []  # the breaker the listeners are on, if any

    def count(event: Event) -> None:
        counts[event.name] += 1

    def snapshot(breaker: CircuitBreaker) -> dict[str, Any]:
        # Copy the counts before reading `state`: reading it after the reset timeout emits
        # `half_open` without admitting a trial, which must not be taken for one.
        events = {name: counts[name] for name in COUNTED_EVENTS}
        stats = breaker.stats
        return {
            "events": events,
            "stats": {
                "successes": stats.successes,
                "failures": stats.failures,
                "rejects": stats.rejects,
                "timeouts": stats.timeouts,
            },
            "state": breaker.state.value,
        }

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

    _add_task_count(app)
    return app


def make_plain_app() -> FastAPI:
    """The same `/login` with a plain httpx client: no breaker, transport or middleware."""
    auth_url = _upstream_url()
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

    app = create_plain_app(lifespan=lifespan)
    _add_task_count(app)
    return app


def create_plain_app(*, lifespan: Any = None, routers_first: Sequence[APIRouter] = ()) -> FastAPI:
    """The plain User Service; the caller puts an httpx client at `app.state.auth_client`.

    `routers_first`: routers included before `/login` (bench.http_layers measures what that
    costs each `/login` request).
    """
    app = FastAPI(title="User Service (no breaker)", lifespan=lifespan)
    for router in routers_first:
        app.include_router(router)

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

    return app


async def _upstream(scope: Scope, receive: Receive, send: Send) -> None:
    # The Auth Service's answer to /verify?token=valid-<user>, without a framework: the
    # upstream shares the machine's two cores with the server under test and with wrk, so
    # the less it costs, the more the User Service's own cost shows.
    assert scope["type"] == "http"
    query = scope["query_string"].decode("latin-1")
    token = query.partition("token=")[2].partition("&")[0]
    if token.startswith("valid-"):
        status, body = 200, b'{"user":"' + token.removeprefix("valid-").encode() + b'"}'
    else:
        status, body = 401, b'{"detail":"invalid token"}'
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def make_upstream_app() -> Any:
    """A minimal raw-ASGI Auth Service (run it with `--lifespan off`)."""
    return _upstream
