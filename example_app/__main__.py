"""`make run`: serve the User Service and the Auth Service on 127.0.0.1 until Ctrl-C.

User Service: http://127.0.0.1:8000 (try /docs, /login?token=valid-alice, /health, /metrics for
Prometheus, /breakers/dashboard for the live dashboard). Auth Service: http://127.0.0.1:8001.
Design-note settings, real time. The breaker's state changes are logged to the terminal.

With FASTAPI_BREAKER_REDIS_URL set (and FASTAPI_BREAKER_REDIS_NAMESPACE, "user-service" by
default), the User Service shares its breaker through that Redis with every other process of
the same namespace.
"""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING

from .auth_service import create_auth_app
from .logs import transition_logs
from .servers import LoopbackServer
from .user_service import DASHBOARD_PATH, METRICS_PATH, coordinator_from_env, create_user_app

if TYPE_CHECKING:  # without Redis the example needs no redis-py
    from fastapi_breaker.redis import RedisCoordinator

USER_PORT = 8000
AUTH_PORT = 8001


async def start(
    user_port: int = USER_PORT, auth_port: int = AUTH_PORT
) -> tuple[LoopbackServer, LoopbackServer, list[str]]:
    """Start the Auth Service, then the User Service; return both and the lines to print."""
    auth = LoopbackServer(create_auth_app(), port=auth_port)
    coordinator = coordinator_from_env()
    user = LoopbackServer(create_user_app(auth.url, coordinator=coordinator), port=user_port)
    await auth.start()
    try:
        await user.start()
    except BaseException:
        await auth.stop()
        raise
    return auth, user, banner(user.url, auth.url, coordinator)


def banner(user_url: str, auth_url: str, coordinator: RedisCoordinator | None) -> list[str]:
    lines = [
        f"User Service: {user_url}/docs  {user_url}/login?token=valid-alice",
        f"  health:     {user_url}/health",
        f"  metrics:    {user_url}{METRICS_PATH}  (Prometheus)",
        f"  dashboard:  {user_url}{DASHBOARD_PATH}",
        f"Auth Service: {auth_url}/docs   (Ctrl-C stops both)",
    ]
    if coordinator is not None:
        # Not the URL: it may hold a password.
        lines.append(f"Breakers shared through Redis, namespace {coordinator.namespace!r}")
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
