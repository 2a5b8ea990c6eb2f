"""The Auth Service: the downstream that the User Service depends on, and that goes down."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException

__all__ = ["create_auth_app"]


def create_auth_app() -> FastAPI:
    app = FastAPI(title="Auth Service")

    @app.get("/verify")
    async def verify(token: str) -> dict[str, str]:
        """Tokens of the form `valid-<user>` are good; anything else is a 401."""
        if not token.startswith("valid-"):
            raise HTTPException(status_code=401, detail="invalid token")
        return {"user": token.removeprefix("valid-")}

    return app
