"""`make run`: serve the User Service and the Auth Service on 127.0.0.1 until Ctrl-C.

User Service: http://127.0.0.1:8000 (try /docs, /login?token=valid-alice, /health, /metrics for
Prometheus, /breakers/dashboard for the live dashboard). Auth Service: http://127.0.0.1:8001.
Design-note settings, real time. The breaker's state changes are logged to the terminal.

The breakers are read from FASTAPI_BREAKER_* variables, over the design note's settings in
`user_service.env`, as `app` reads them. With FASTAPI_BREAKER_REDIS_URL and
FASTAPI_BREAKER_REDIS_NAMESPACE set, the User Service shares its breaker through that Redis with
every other process of the same namespace.
"""

from __future__ import annotations

import asyncio
import signal

from .auth_service import create_auth_app
from .logs import transition_logs
from .servers import LoopbackServer
from .user_service import (
    DASHBOARD_PATH,
    METRICS_PATH,
    create_user_app,
    registry_from_environment,
)

USER_PORT = 8000
AUTH_PORT = 8001


async def start(
    user_port: int = USER_PORT, auth_port: int = AUTH_PORT
) -> tuple[LoopbackServer, LoopbackServer, list[str]]:
    """Start the Auth Service, then the User Service; return both and the lines to print."""
    auth = LoopbackServer(create_auth_app(), port=auth_port)
    registry = registry_from_environment()
    user = LoopbackServer(create_user_app(auth.url, registry=registry), port=user_port)
    await auth.start()
    try:
        await user.start()
    except BaseException:
        await auth.stop()
        raise
    # The coordinator's namespace (a RedisCoordinator's), not its URL: that may hold a password.
    namespace = getattr(registry.coordinator, "namespace", None)
    return auth, user, banner(user.url, auth.url, namespace)


def banner(user_url: str, auth_url: str, namespace: str | None) -> list[str]:
    lines = [
        f"User Service: {user_url}/docs  {user_url}/login?token=valid-alice",
        f"  health:     {user_url}/health",
        f"  metrics:    {user_url}{METRICS_PATH}  (Prometheus)",
        f"  dashboard:  {user_url}{DASHBOARD_PATH}",
        f"Auth Service: {auth_url}/docs   (Ctrl-C stops both)",
    ]
    if namespace is not None:
        lines.append(f"Breakers shared through Redis, namespace {namespace!r}")
    return lines


async def serve() -> None:
    auth, user, lines = await start()
    print("\n".join(lines), flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await user.stop()
    await auth.stop()


if __name__ == "__main__":
    with transition_logs():
        asyncio.run(serve())
