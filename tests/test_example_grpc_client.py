"""The User Service's gRPC side: its construction, and a trial that reaches a server back up."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from example_app.grpc_auth.client import channel_options
from example_app.grpc_auth.server import GrpcAuthServer
from example_app.servers import LoopbackServer
from example_app.user_service import AuthSettings, create_user_app
from fastapi_breaker import CircuitBreaker, State


@pytest.mark.parametrize(
    ("auth_url", "target"), [(None, None), ("http://127.0.0.1:1", "127.0.0.1:1")]
)
def test_create_user_app_wants_exactly_one_auth_service(
    auth_url: str | None, target: str | None
) -> None:
    with pytest.raises(ValueError, match="give exactly one of auth_url") as caught:
        create_user_app(auth_url, auth_grpc_target=target)

    assert str(caught.value) == (
        "create_user_app: give exactly one of auth_url (HTTP) and auth_grpc_target (gRPC), "
        f"got auth_url={auth_url!r} and auth_grpc_target={target!r}"
    )


@pytest.mark.parametrize(
    ("reset_timeout", "backoff_ms"), [(20.0, 1000), (4.0, 1000), (2.0, 500), (0.4, 100), (0.0, 10)]
)
def test_the_channel_reconnects_four_times_per_reset_timeout_at_most_each_second(
    reset_timeout: float, backoff_ms: int
) -> None:
    assert channel_options(reset_timeout) == [
        ("grpc.initial_reconnect_backoff_ms", backoff_ms),
        ("grpc.max_reconnect_backoff_ms", backoff_ms),
    ]


async def test_the_trial_after_a_short_reset_timeout_reaches_the_server_back_up() -> None:
    # Real time: grpc's default wait before reconnecting (1 s at first) is longer than this
    # reset timeout, and would fail the trial without reaching the server.
    settings = AuthSettings(reset_timeout=0.4, volume_threshold=0)
    auth = GrpcAuthServer()
    await auth.start()
    app = create_user_app(settings=settings, auth_grpc_target=auth.target)
    user = LoopbackServer(app)
    await user.start()
    breaker: CircuitBreaker = app.state.breaker_registry.get("AuthService")
    try:
        async with httpx.AsyncClient(base_url=user.url, timeout=10.0) as client:

            async def login() -> int:
                response = await client.get("/login", params={"token": "valid-bob"})
                return response.status_code

            assert await login() == 200
            await auth.stop()
            assert [await login(), await login()] == [502, 502]
            assert breaker.state is State.OPEN
            await auth.start()

            deadline = time.monotonic() + 5.0  # a bound, far above the 0.4 s
            while breaker.state is State.OPEN:
                assert time.monotonic() < deadline, "the breaker never went half-open"
                await asyncio.sleep(0.02)

            assert await login() == 200
            assert breaker.state is State.CLOSED
            assert auth.calls == 2
    finally:
        await user.stop()
        await auth.stop()
