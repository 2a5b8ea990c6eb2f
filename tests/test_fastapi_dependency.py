"""`Depends(get_breaker(name))`: routes receive the app's breaker, and tests can override it."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, WebSocket
from starlette.responses import PlainTextResponse
from starlette.types import Message

from fastapi_breaker import BreakerRegistry, CircuitBreaker, CircuitOpenError, UnknownBreakerError
from fastapi_breaker.fastapi import BreakerDependency, get_breaker, get_registry, setup_breakers
from fastapi_breaker.testing import FakeClock

AuthBreaker = Annotated[CircuitBreaker, Depends(get_breaker("AuthService"))]


class AuthClient:
    """A dependency of a route that itself depends on the breaker."""

    def __init__(self, breaker: AuthBreaker) -> None:
        self.breaker = breaker


def client(app: FastAPI) -> httpx.AsyncClient:
    # No lifespan needed here: setup_breakers attaches the registry at once.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def make_app(registry: BreakerRegistry) -> FastAPI:
    app = FastAPI()
    setup_breakers(app, registry, middleware=False)

    @app.get("/whoami")
    async def whoami(breaker: AuthBreaker) -> dict[str, Any]:
        result = await breaker.call(lambda: "user-1")
        return {"breaker": breaker.name, "user": result, "successes": breaker.stats.successes}

    return app


# ---------------------------------------------------------------- equality and hashing


def test_equal_names_give_equal_hashable_dependencies() -> None:
    assert get_breaker("AuthService") == get_breaker("AuthService")
    assert hash(get_breaker("AuthService")) == hash(get_breaker("AuthService"))
    assert get_breaker("AuthService") != get_breaker("Billing")
    assert {get_breaker("AuthService"): 1}[get_breaker("AuthService")] == 1
    assert get_breaker("AuthService") == BreakerDependency("AuthService")


def test_the_dependency_is_frozen() -> None:
    dependency = get_breaker("AuthService")

    with pytest.raises(dataclasses.FrozenInstanceError):
        dependency.name = "Billing"  # type: ignore[misc]


@pytest.mark.parametrize("name", ["", None, 3])
def test_a_bad_name_is_refused_at_once(name: Any) -> None:
    with pytest.raises(ValueError, match=r"^a breaker name must be a non-empty string"):
        get_breaker(name)


def test_the_dependency_runs_on_the_event_loop() -> None:
    # FastAPI runs a sync dependency on a worker thread: a thread hop on every request.
    assert inspect.iscoroutinefunction(BreakerDependency.__call__)


# ---------------------------------------------------------------- routes get the app's breaker


async def test_a_route_receives_the_registry_breaker() -> None:
    registry = BreakerRegistry(breakers={"AuthService": {"timeout": 5.0}}, clock=FakeClock())
    app = make_app(registry)

    async with client(app) as http:
        first = (await http.get("/whoami")).json()
        second = (await http.get("/whoami")).json()

    assert first == {"breaker": "AuthService", "user": "user-1", "successes": 1}
    assert second["successes"] == 2  # the same breaker on every request
    assert registry.get("AuthService").options.timeout == 5.0
    assert list(registry.breakers()) == ["AuthService"]


async def test_a_nested_dependency_receives_the_breaker() -> None:
    registry = BreakerRegistry(clock=FakeClock())
    app = FastAPI()
    setup_breakers(app, registry, middleware=False)

    @app.get("/client")
    async def client_route(auth: Annotated[AuthClient, Depends()]) -> dict[str, str]:
        return {"breaker": auth.breaker.name}

    async with client(app) as http:
        assert (await http.get("/client")).json() == {"breaker": "AuthService"}


@pytest.mark.parametrize("opened", [False, True])
async def test_a_websocket_route_receives_the_breaker(opened: bool) -> None:
    registry = BreakerRegistry(clock=FakeClock())
    app = FastAPI()
    setup_breakers(app, registry, middleware=False)
    breaker = registry.get("AuthService")
    if opened:
        breaker.open()  # not refused before the route: a websocket decides for itself

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, breaker: AuthBreaker) -> None:
        await websocket.accept()
        await websocket.send_text(f"{breaker.name} {breaker.state.value}")
        await websocket.close()

    # httpx speaks no websocket: hold the ASGI conversation by hand.
    incoming: list[Message] = [{"type": "websocket.connect"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b""}
    await app(scope, receive, send)

    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == f"AuthService {'open' if opened else 'closed'}"
    assert breaker.stats.rejects == 0


# ---------------------------------------------------------------- overrides


async def test_dependency_overrides_replace_the_breaker() -> None:
    registry = BreakerRegistry(clock=FakeClock())
    app = make_app(registry)
    fake = CircuitBreaker(name="fake", clock=FakeClock())
    # A new, equal object as key: what a test module that never saw the route's object writes.
    app.dependency_overrides[get_breaker("AuthService")] = lambda: fake

    async with client(app) as http:
        body = (await http.get("/whoami")).json()

    assert body == {"breaker": "fake", "user": "user-1", "successes": 1}
    assert fake.stats.successes == 1
    assert registry.breakers() == {}  # the real breaker was never made


async def test_an_override_can_stand_in_an_open_breaker() -> None:
    app = make_app(BreakerRegistry(clock=FakeClock()))
    always_open = CircuitBreaker(name="fake", clock=FakeClock())
    always_open.force_open()
    app.dependency_overrides[get_breaker("AuthService")] = lambda: always_open

    async def name_the_error(request: Any, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse(type(exc).__name__, status_code=418)

    app.add_exception_handler(CircuitOpenError, name_the_error)

    async with client(app) as http:
        response = await http.get("/whoami")

    assert (response.status_code, response.text) == (418, "CircuitOpenError")
    assert always_open.stats.rejects == 1


# ---------------------------------------------------------------- where the registry comes from


async def test_a_route_without_setup_gets_a_clear_error() -> None:
    app = FastAPI()

    @app.get("/whoami")
    async def whoami(breaker: AuthBreaker) -> str:
        return breaker.name

    async with client(app) as http:
        with pytest.raises(RuntimeError) as caught:
            await http.get("/whoami")

    assert str(caught.value) == (
        "this app has no breaker registry: call fastapi_breaker.fastapi.setup_breakers(app) "
        "or set app.state.breaker_registry to a BreakerRegistry"
    )


async def test_get_registry_reads_the_app_state() -> None:
    registry = BreakerRegistry()
    app = FastAPI()
    app.state.breaker_registry = registry

    @app.get("/same")
    async def same(found: Annotated[BreakerRegistry, Depends(get_registry)]) -> bool:
        return found is registry

    async with client(app) as http:
        assert (await http.get("/same")).json() is True


async def test_a_strict_registry_refuses_an_unknown_breaker_at_request_time() -> None:
    # Startup would have caught this one; a registry attached by hand skips that check.
    app = FastAPI()
    app.state.breaker_registry = BreakerRegistry(breakers={"Billing": {}}, strict=True)

    @app.get("/whoami")
    async def whoami(breaker: AuthBreaker) -> str:
        return breaker.name

    async with client(app) as http:
        with pytest.raises(UnknownBreakerError) as caught:
            await http.get("/whoami")

    assert caught.value.name == "AuthService"
    assert caught.value.known == ("Billing",)
