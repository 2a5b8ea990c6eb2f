"""`make run`: serve the User Service and the Auth Service on 127.0.0.1 until Ctrl-C.

User Service: http://127.0.0.1:8000 (try /docs, /health, /login?token=valid-alice).
Auth Service: http://127.0.0.1:8001. Design-note settings, real time.

With FASTAPI_BREAKER_REDIS_URL set (and FASTAPI_BREAKER_REDIS_NAMESPACE, "user-service" by
default), the User Service shares its breaker through that Redis with every other process of
the same namespace.
"""

from __future__ import annotations

import asyncio
import signal

from .auth_service import create_auth_app
from .servers import LoopbackServer
from .user_service import coordinator_from_env, create_user_app

USER_PORT = 8000
AUTH_PORT = 8001


async def serve() -> None:
    auth = LoopbackServer(create_auth_app(), port=AUTH_PORT)
    coordinator = coordinator_from_env()
    user = LoopbackServer(create_user_app(auth.url, coordinator=coordinator), port=USER_PORT)
    await auth.start()
    await user.start()
    print(f"User Service: {user.url}/docs  {user.url}/health  {user.url}/login?token=valid-alice")
    print(f"Auth Service: {auth.url}/docs   (Ctrl-C stops both)")
    if coordinator is not None:
        # Not the URL: it may hold a password.
        print(f"Breakers shared through Redis, namespace {coordinator.namespace!r}")
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await user.stop()
    await auth.stop()


if __name__ == "__main__":
    asyncio.run(serve())
