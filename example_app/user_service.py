"""The User Service: a FastAPI app that logs users in through the Auth Service, over httpx.

Every call to the Auth Service goes through `AsyncBreakerTransport`, so the breaker named
"AuthService" counts each one, and refuses them at once while it is open. Given
`auth_grpc_target` instead of `auth_url`, it calls the gRPC Auth Service through
`fastapi_breaker.grpc`'s interceptor, with the same breaker and the same answers. The middleware
that `setup_breakers` installs turns that refusal into a 503 with `Retry-After`. The breakers are
watched at `/health`, `/metrics` (Prometheus) and `/breakers/dashboard` (a live page).

`app` is the User Service configured the documented way, for `uvicorn
example_app.user_service:app --workers 4`: its breakers from `FASTAPI_BREAKER_*` variables through
`registry_from_settings()`, over the design note's settings in `user_service.env` (any variable
in the environment overrides the file's), and the Auth Service at `EXAMPLE_AUTH_URL`
(`http://127.0.0.1:8001` when unset). With `FASTAPI_BREAKER_REDIS_URL` and
`FASTAPI_BREAKER_REDIS_NAMESPACE` set, every worker shares the breaker through that Redis.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel

from fastapi_breaker import BreakerRegistry, CircuitBreaker, CircuitOpenError, Clock
from fastapi_breaker.dashboard import dashboard_router
from fastapi_breaker.fastapi import CIRCUIT_OPEN_RESPONSE, get_breaker, setup_breakers
from fastapi_breaker.health import health_router
from fastapi_breaker.httpx import AsyncBreakerTransport
from fastapi_breaker.prometheus import mount_metrics
from fastapi_breaker.settings import RegistrySettings, registry_from_settings

if TYPE_CHECKING:  # imported when used: without Redis the example needs no redis-py
    from fastapi_breaker.redis import RedisCoordinator

__all__ = [
    "AUTH_SERVICE_LIMITS",
    "AUTH_URL_VARIABLE",
    "DASHBOARD_PATH",
    "DEFAULT_AUTH_URL",
    "METRICS_PATH",
    "SETTINGS_FILE",
    "AuthSettings",
    "app",
    "app_from_environment",
    "create_user_app",
    "registry_from_environment",
]

# The connection pool to the Auth Service: at most 10 connections, and all of them kept alive.
# httpcore (1.0.9) closes an idle connection whenever the pool holds more connections in all
# than `max_keepalive_connections` (encode/httpcore#1000), and its pool scans every connection
# for every request it queues or releases. With httpx's defaults (100 and 20) a burst can
# grow the pool to 20, after which it closes and reopens connections for as long as the load
# lasts: under 32 concurrent requests, up to twice the CPU per /login (docs/benchmarks.md).
AUTH_SERVICE_LIMITS = httpx.Limits(max_connections=10, max_keepalive_connections=10)


@dataclasses.dataclass(frozen=True)
class AuthSettings:
    """The design note's settings for the Auth Service breaker (times in seconds)."""

    timeout: float = 5.0
    error_threshold_percentage: float = 50.0
    reset_timeout: float = 20.0
    volume_threshold: int = 10

    def scaled(self, factor: float) -> AuthSettings:
        """The same settings with every time multiplied by `factor` (for a quick demo)."""
        return dataclasses.replace(
            self, timeout=self.timeout * factor, reset_timeout=self.reset_timeout * factor
        )


# What FastAPI takes as `lifespan=`.
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

# Where the User Service serves its breakers' metrics and the live dashboard.
METRICS_PATH = "/metrics"
DASHBOARD_PATH = "/breakers/dashboard"  # dashboard_router's default prefix, then /dashboard

# The design note's settings as FASTAPI_BREAKER_* variables, read under the environment's.
SETTINGS_FILE = Path(__file__).with_name("user_service.env")
# Where `app` finds the Auth Service: `make run` serves it at the default.
AUTH_URL_VARIABLE = "EXAMPLE_AUTH_URL"
DEFAULT_AUTH_URL = "http://127.0.0.1:8001"


def registry_from_environment() -> BreakerRegistry:
    """The breakers the documented way: `FASTAPI_BREAKER_*` variables from the environment,
    over those of `user_service.env`, through `registry_from_settings()`. A variable that means
    nothing, or a value out of range, raises `BreakerSettingsError` naming it; a Redis URL with
    its namespace gives the registry a `RedisCoordinator`."""
    return registry_from_settings(RegistrySettings(_env_file=SETTINGS_FILE))


def app_from_environment() -> FastAPI:
    """The User Service, configured from the environment (see `registry_from_environment`),
    calling the Auth Service at `EXAMPLE_AUTH_URL`."""
    auth_url = os.environ.get(AUTH_URL_VARIABLE) or DEFAULT_AUTH_URL
    return create_user_app(auth_url, registry=registry_from_environment())


class ErrorDetail(BaseModel):
    """The body of /login's 401 and 502 (FastAPI's HTTPException)."""

    detail: str


def create_user_app(
    auth_url: str | None = None,
    settings: AuthSettings | None = None,
    *,
    clock: Clock | None = None,
    http_timeout: float = 5.0,
    coordinator: RedisCoordinator | None = None,
    auth_grpc_target: str | None = None,
    registry: BreakerRegistry | None = None,
) -> FastAPI:
    """The User Service, calling the Auth Service at `auth_url` (HTTP) or `auth_grpc_target`.

    `auth_grpc_target`: the gRPC Auth Service's `host:port`; `/login` then calls its `Verify`.
    Exactly one of the two is given.

    `http_timeout`: httpx's own limit on each phase of a request (connect, write, read, and the
    wait for a pooled connection); the breaker's `settings.timeout` bounds the whole call.
    `coordinator`: shares the breaker with the other processes of the fleet (the lifespan that
    `setup_breakers` installs starts and stops it).
    `registry`: a registry made elsewhere (from settings, say) with the "AuthService" breaker,
    instead of one made here from `settings`, `clock` and `coordinator`.
    """
    if (auth_url is None) == (auth_grpc_target is None):
        raise ValueError(
            "create_user_app: give exactly one of auth_url (HTTP) and auth_grpc_target (gRPC), "
            f"got auth_url={auth_url!r} and auth_grpc_target={auth_grpc_target!r}"
        )
    if registry is None:
        registry = BreakerRegistry(
            breakers={"AuthService": dataclasses.asdict(settings or AuthSettings())},
            strict=True,
            clock=clock,
            coordinator=coordinator,
        )
    elif settings is not None or clock is not None or coordinator is not None:
        raise ValueError(
            "create_user_app: give registry, or settings, clock and coordinator to make one, "
            "not both"
        )
    reset_timeout = registry.get("AuthService").options.reset_timeout

    @asynccontextmanager
    async def http_lifespan(app: FastAPI) -> AsyncIterator[None]:
        assert auth_url is not None  # the gRPC variant has a lifespan of its own
        transport = AsyncBreakerTransport(
            httpx.AsyncHTTPTransport(limits=AUTH_SERVICE_LIMITS),
            registry=registry,
            name="AuthService",
        )
        async with httpx.AsyncClient(
            base_url=auth_url, transport=transport, timeout=http_timeout
        ) as client:
            app.state.auth_client = client
            yield

    # /login is the hot route: it reaches its breaker through the registry rather than
    # `Depends`, whose machinery costs FastAPI more than the whole breaker (docs/benchmarks.md),
    # and documents its 503 itself.
    async def http_login(token: str, request: Request) -> dict[str, str]:
        """Log a user in by verifying the token with the Auth Service."""
        client: httpx.AsyncClient = request.app.state.auth_client
        registry.get("AuthService").check()  # while open, refuse before building the request
        try:
            response = await client.get("/verify", params={"token": token})
        except CircuitOpenError:
            raise  # the middleware answers 503 with Retry-After, at once
        except httpx.HTTPError as exc:
            raise HTTPException(status_code=502, detail="Auth Service unreachable") from exc
        if response.status_code == 401:
            raise HTTPException(status_code=401, detail="invalid token")
        if response.is_error:
            raise HTTPException(status_code=502, detail="Auth Service failed")
        return {"user": response.json()["user"]}

    lifespan: Lifespan = http_lifespan
    login: Callable[[str, Request], Awaitable[dict[str, str]]] = http_login
    if auth_grpc_target is not None:
        # Imported here: the HTTP variant needs no grpcio.
        from .grpc_auth.client import grpc_lifespan, grpc_login

        lifespan = grpc_lifespan(auth_grpc_target, registry, reset_timeout)
        login = grpc_login

    app = FastAPI(title="User Service", lifespan=lifespan)
    setup_breakers(app, registry)
    # The same route, name and answers whichever way it reaches the Auth Service: every status
    # it can answer is documented, so that a client (or a schema-driven test) can rely on it.
    app.add_api_route(
        "/login",
        login,
        methods=["GET"],
        name="login",
        responses={
            401: {"model": ErrorDetail, "description": "The Auth Service refused the token"},
            502: {
                "model": ErrorDetail,
                "description": "The Auth Service failed, timed out or could not be reached",
            },
            503: dict(CIRCUIT_OPEN_RESPONSE),
        },
    )

    # refuse_early=False: a status page reads the breaker, and must answer while it is open.
    @app.get("/auth-status")
    async def auth_status(
        breaker: Annotated[CircuitBreaker, Depends(get_breaker("AuthService", refuse_early=False))],
    ) -> dict[str, object]:
        """The Auth Service breaker, taken the `Depends` way: its state and retry-after."""
        return {"state": breaker.state.value, "retry_after": breaker.retry_after}

    # Included after /login: FastAPI tries routes in order, and a request matched past an
    # included router pays for walking it. detail="always" because the demo reads the breaker's
    # state from /health and listens on 127.0.0.1 only; a deployed service would keep the
    # default ("never") or use detail="authorized".
    app.include_router(health_router(detail="always"))
    # Both name the breakers to whoever reaches them, as /health does here: a deployed service
    # would pass `dependencies=` to mount_metrics and `authorize=` to dashboard_router.
    mount_metrics(app, path=METRICS_PATH)
    app.include_router(dashboard_router())
    return app


# Declared, not assigned: reading it calls __getattr__ below.
app: FastAPI
_app: FastAPI | None = None


def __getattr__(name: str) -> FastAPI:
    # `app` is made on first use, not at import: the tests import this module for
    # create_user_app(), and an app read from the environment belongs to the process that
    # serves it (uvicorn reads the attribute in each worker).
    global _app
    if name == "app":
        if _app is None:
            _app = app_from_environment()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
