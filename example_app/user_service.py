"""The User Service: a FastAPI app that logs users in through the Auth Service, over httpx.

Every call to the Auth Service goes through `AsyncBreakerTransport`, so the breaker named
"AuthService" counts each one, and refuses them at once while it is open. The middleware that
`setup_breakers` installs turns that refusal into a 503 with `Retry-After`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request

from fastapi_breaker import BreakerRegistry, CircuitBreaker, CircuitOpenError, Clock
from fastapi_breaker.fastapi import CIRCUIT_OPEN_RESPONSE, get_breaker, setup_breakers
from fastapi_breaker.health import health_router
from fastapi_breaker.httpx import AsyncBreakerTransport

__all__ = ["AuthSettings", "create_user_app"]


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


def create_user_app(
    auth_url: str, settings: AuthSettings | None = None, *, clock: Clock | None = None
) -> FastAPI:
    settings = settings or AuthSettings()
    registry = BreakerRegistry(
        breakers={"AuthService": dataclasses.asdict(settings)}, strict=True, clock=clock
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        transport = AsyncBreakerTransport(registry=registry, name="AuthService")
        async with httpx.AsyncClient(base_url=auth_url, transport=transport) as client:
            app.state.auth_client = client
            yield

    app = FastAPI(title="User Service", lifespan=lifespan)
    setup_breakers(app, registry)

    # /login is the hot route: it reaches its breaker through the registry rather than
    # `Depends`, whose machinery costs FastAPI more than the whole breaker (bench/http_layers),
    # and documents its 503 itself.
    @app.get("/login", responses={503: dict(CIRCUIT_OPEN_RESPONSE)})
    async def login(token: str, request: Request) -> dict[str, str]:
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

    @app.get("/auth-status")
    async def auth_status(
        breaker: Annotated[CircuitBreaker, Depends(get_breaker("AuthService"))],
    ) -> dict[str, object]:
        """The Auth Service breaker, taken the `Depends` way: its state and retry-after."""
        return {"state": breaker.state.value, "retry_after": breaker.retry_after}

    # Included after /login: FastAPI tries routes in order, and a request matched past an
    # included router pays for walking it.
    app.include_router(health_router())
    return app
