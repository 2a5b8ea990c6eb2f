"""The example User Service documents every status its routes answer."""

from __future__ import annotations

import httpx
import pytest

from example_app.auth_service import create_auth_app
from example_app.servers import LoopbackServer
from example_app.user_service import create_user_app

DETAIL = {"$ref": "#/components/schemas/ErrorDetail"}


@pytest.mark.parametrize(
    "variant", [{"auth_url": "http://127.0.0.1:9"}, {"auth_grpc_target": "127.0.0.1:9"}]
)
def test_login_documents_every_status_it_answers(variant: dict[str, str]) -> None:
    schema = create_user_app(**variant).openapi()
    responses = schema["paths"]["/login"]["get"]["responses"]
    assert sorted(responses) == ["200", "401", "422", "502", "503"]
    for status in ("401", "502"):
        assert responses[status]["content"]["application/json"]["schema"] == DETAIL
    assert schema["components"]["schemas"]["ErrorDetail"]["required"] == ["detail"]
    assert "Retry-After" in responses["503"]["headers"]


async def test_the_documented_401_and_502_are_what_login_answers() -> None:
    auth = LoopbackServer(create_auth_app())
    await auth.start()
    # Port 1 refuses connections: a second User Service whose Auth Service is down.
    servers = [auth, LoopbackServer(create_user_app(auth.url))]
    servers.append(LoopbackServer(create_user_app("http://127.0.0.1:1")))
    for server in servers[1:]:
        await server.start()
    try:
        async with httpx.AsyncClient() as client:
            refused = await client.get(f"{servers[1].url}/login", params={"token": "bad"})
            down = await client.get(f"{servers[2].url}/login", params={"token": "valid-alice"})
    finally:
        for server in servers:
            await server.stop()
    assert (refused.status_code, refused.json()) == (401, {"detail": "invalid token"})
    assert (down.status_code, down.json()) == (502, {"detail": "Auth Service unreachable"})
