"""The example User Service's client to the Auth Service, over real HTTP on 127.0.0.1.

Its pool holds at most `AUTH_SERVICE_LIMITS.max_connections` connections and keeps every one
alive: a burst beyond the limit waits for a connection and then reuses it, instead of opening
more (docs/fastapi.md, "The connection pool"). `http_timeout` is httpx's own limit per phase.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from starlette.types import Receive, Scope, Send

from example_app.servers import LoopbackServer
from example_app.user_service import AUTH_SERVICE_LIMITS, AuthSettings, create_user_app

_POLLS = 500  # x 10 ms
assert AUTH_SERVICE_LIMITS.max_connections is not None
LIMIT = AUTH_SERVICE_LIMITS.max_connections


class HeldAuthService:
    """An Auth Service that holds every /verify until `release` is set, counting connections."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0
        self.connections: set[tuple[str, int]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        host, port = scope["client"]
        self.connections.add((host, port))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        body = b'{"user": "alice"}'
        headers = [(b"content-type", b"application/json"), (b"content-length", b"17")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def serving(upstream: HeldAuthService, http_timeout: float = 5.0) -> AsyncIterator[str]:
    auth = LoopbackServer(upstream)  # type: ignore[arg-type]
    await auth.start()
    user = LoopbackServer(create_user_app(auth.url, AuthSettings(), http_timeout=http_timeout))
    try:
        await user.start()
        try:
            yield user.url
        finally:
            await user.stop()
    finally:
        upstream.release.set()
        await auth.stop()


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(_POLLS):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition did not hold within 5 s")


async def test_a_burst_beyond_the_pool_waits_and_reuses_its_connections() -> None:
    upstream = HeldAuthService()
    burst = LIMIT + 2
    async with serving(upstream) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        logins = [
            asyncio.create_task(client.get("/login", params={"token": "valid-alice"}))
            for _ in range(burst)
        ]
        await _until(lambda: upstream.in_flight == LIMIT)
        await asyncio.sleep(0.1)  # time enough for the two over the limit, were they sent
        assert upstream.in_flight == LIMIT
        upstream.release.set()
        responses = await asyncio.gather(*logins)

    assert [r.status_code for r in responses] == [200] * burst
    assert upstream.most_in_flight == LIMIT
    assert len(upstream.connections) == LIMIT  # the last two reused kept-alive connections


async def test_http_timeout_bounds_the_wait_for_the_auth_service() -> None:
    upstream = HeldAuthService()  # never released until the end: the Auth Service hangs
    async with serving(upstream, http_timeout=0.2) as url, httpx.AsyncClient(base_url=url) as c:
        response = await c.get("/login", params={"token": "valid-alice"})

    # httpx's read timeout (0.2 s) struck long before the breaker's 5 s time limit.
    assert response.status_code == 502
    assert response.json() == {"detail": "Auth Service unreachable"}
