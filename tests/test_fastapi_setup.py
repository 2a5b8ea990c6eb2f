"""setup_breakers: the registry on the app, the lifespan's strict check and shutdown, the 503 doc.

Starlette's TestClient now wants `httpx2`, so the apps here run under a small ASGI driver of
our own: it plays the lifespan conversation a server holds, and serves requests through
`httpx.ASGITransport` with the lifespan state in each scope, as uvicorn does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from fastapi_breaker import BreakerRegistry, CircuitBreaker, CircuitOpenError, State
from fastapi_breaker.fastapi import CIRCUIT_OPEN_RESPONSE, get_breaker, setup_breakers
from fastapi_breaker.health import health_router
from fastapi_breaker.httpx import AsyncBreakerTransport, HTTPCircuitOpenError
from fastapi_breaker.middleware import CircuitBreakerMiddleware
from fastapi_breaker.testing import FakeClock

AuthBreaker = Annotated[CircuitBreaker, Depends(get_breaker("AuthService"))]


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app as a server would, hand out a client, and shut the app down after."""
    state: dict[str, Any] = {}
    to_app: asyncio.Queue[Message] = asyncio.Queue()
    from_app: asyncio.Queue[Message] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
    lifespan = asyncio.create_task(app(scope, to_app.get, from_app.put))

    await to_app.put({"type": "lifespan.startup"})
    if (await from_app.get())["type"] == "lifespan.startup.failed":
        await lifespan  # Starlette re-raises the startup error: let it reach the test

    async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "state": dict(state)}, receive, send)

    transport = httpx.ASGITransport(app=with_state)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        await from_app.get()
        await lifespan  # re-raises a shutdown error


def plain_app(registry: BreakerRegistry | None = None, **kwargs: Any) -> FastAPI:
    app = FastAPI()
    setup_breakers(app, registry, **{"middleware": False, **kwargs})
    return app


# ---------------------------------------------------------------- attaching the registry


def test_setup_attaches_and_returns_the_registry() -> None:
    registry = BreakerRegistry()
    app = FastAPI()

    assert setup_breakers(app, registry, middleware=False) is registry
    assert app.state.breaker_registry is registry


def test_setup_without_a_registry_makes_a_lenient_one() -> None:
    app = FastAPI()

    registry = setup_breakers(app, middleware=False)

    assert isinstance(registry, BreakerRegistry)
    assert registry.strict is False
    assert app.state.breaker_registry is registry


def test_setup_twice_on_one_app_is_an_error() -> None:
    app = plain_app()

    with pytest.raises(RuntimeError) as caught:
        setup_breakers(app, BreakerRegistry(), middleware=False)

    assert str(caught.value) == (
        "setup_breakers() was already called for this app (app.state.breaker_registry is set)"
    )


def test_setup_refuses_something_that_is_not_a_registry() -> None:
    with pytest.raises(TypeError, match=r"^registry must be a BreakerRegistry or None, got \{\}$"):
        setup_breakers(FastAPI(), {})  # type: ignore[arg-type]


def test_middleware_is_added_on_request() -> None:
    with_middleware = FastAPI()
    setup_breakers(with_middleware, expose_name=True)
    without = FastAPI()
    setup_breakers(without, middleware=False)

    [added] = with_middleware.user_middleware
    assert added.cls is CircuitBreakerMiddleware  # type: ignore[comparison-overlap]
    assert added.kwargs == {"expose_name": True}
    assert without.user_middleware == []


async def test_with_the_middleware_an_open_breaker_answers_503() -> None:
    registry = BreakerRegistry(breakers={"AuthService": {"reset_timeout": 20.0}}, clock=FakeClock())
    app = FastAPI()
    setup_breakers(app, registry)

    @app.get("/me")
    async def me(breaker: AuthBreaker) -> str:
        return str(await breaker.call(lambda: "user-1"))

    async with running(app) as client:
        registry.get("AuthService").open()
        response = await client.get("/me")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "20"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["retry_after"] == 20


async def test_two_apps_keep_separate_registries() -> None:
    first, second = plain_app(BreakerRegistry()), plain_app(BreakerRegistry())
    seen: list[CircuitBreaker] = []
    for app in (first, second):

        @app.get("/me")
        async def me(breaker: AuthBreaker) -> str:
            seen.append(breaker)
            return breaker.name

    async with running(first) as one, running(second) as two:
        await one.get("/me")
        await two.get("/me")
        await one.get("/me")
        assert seen[0] is seen[2]
        assert seen[0] is not seen[1]
        assert seen[0] is first.state.breaker_registry.get("AuthService")
        assert seen[1] is second.state.breaker_registry.get("AuthService")

        # Opening one app's breaker leaves the other's alone.
        seen[0].open()
        assert seen[1].state is State.CLOSED


async def test_ending_one_app_does_not_end_the_other() -> None:
    first, second = plain_app(), plain_app()
    async with running(second):
        async with running(first):
            mine = first.state.breaker_registry.get("AuthService")
            theirs = second.state.breaker_registry.get("AuthService")
        assert mine.is_shutdown
        assert not theirs.is_shutdown
    assert theirs.is_shutdown


# ---------------------------------------------------------------- the lifespan


async def test_breakers_and_their_tasks_end_with_the_lifespan() -> None:
    registry = BreakerRegistry()
    started: list[asyncio.Task[None]] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # An hour between checks: the task is parked on the loop's timer when the app stops.
        started.append(registry.get("AuthService").health_check(lambda: None, interval=3600))
        yield

    app = FastAPI(lifespan=lifespan)
    setup_breakers(app, registry, middleware=False)

    async with running(app):
        breaker = registry.get("AuthService")
        other = registry.get("Search")
        [task] = started
        assert not task.done()

    assert breaker.is_shutdown
    assert other.is_shutdown
    assert registry.breakers() == {}
    assert task.cancelling() == 1  # cancelled by the shutdown, not by the loop's end
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_breakers_end_even_when_the_app_lifespan_fails_at_shutdown() -> None:
    registry = BreakerRegistry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        raise OSError("database pool would not close")

    app = FastAPI(lifespan=lifespan)
    setup_breakers(app, registry, middleware=False)

    with pytest.raises(OSError, match="database pool would not close"):
        async with running(app):
            breaker = registry.get("AuthService")

    assert breaker.is_shutdown


async def test_breakers_end_even_when_the_app_lifespan_fails_at_startup() -> None:
    registry = BreakerRegistry()
    made: list[CircuitBreaker] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        made.append(registry.get("AuthService"))
        raise OSError("no database")
        yield  # pragma: no cover

    app = FastAPI(lifespan=lifespan)
    setup_breakers(app, registry, middleware=False)

    with pytest.raises(OSError, match="no database"):
        async with running(app):
            pass  # pragma: no cover

    [breaker] = made
    assert breaker.is_shutdown


async def test_the_app_lifespan_state_still_reaches_requests() -> None:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {"pool": "the-pool"}

    app = FastAPI(lifespan=lifespan)
    setup_breakers(app, middleware=False)

    @app.get("/from-state")
    async def from_state(request: Request, breaker: AuthBreaker) -> str:
        return f"{request.state.pool} {breaker.name}"

    async with running(app) as client:
        assert (await client.get("/from-state")).json() == "the-pool AuthService"


async def test_the_lifespan_can_run_again_with_fresh_breakers() -> None:
    registry = BreakerRegistry()
    app = plain_app(registry)

    async with running(app):
        first = registry.get("AuthService")
    async with running(app):
        second = registry.get("AuthService")
        assert second is not first
        assert not second.is_shutdown
    assert first.is_shutdown
    assert second.is_shutdown


async def test_the_registry_may_come_from_the_lifespan_state_instead() -> None:
    registry = BreakerRegistry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {"breaker_registry": registry}
        registry.shutdown()

    app = FastAPI(lifespan=lifespan)

    @app.get("/same")
    async def same(breaker: AuthBreaker) -> bool:
        return breaker is registry.get("AuthService")

    async with running(app) as client:
        assert (await client.get("/same")).json() is True


# ---------------------------------------------------------------- strict startup


def strict_app(*configured: str) -> FastAPI:
    breakers: dict[str, dict[str, Any]] = {name: {} for name in configured}
    return app_using_breakers(BreakerRegistry(breakers=breakers, strict=True))


def app_using_breakers(registry: BreakerRegistry) -> FastAPI:
    """Breakers used every way a route can: directly, nested, by a router, by a websocket."""
    app = plain_app(registry)

    @app.get("/me")
    async def me(breaker: AuthBreaker) -> str:
        return breaker.name

    @app.api_route("/pay", methods=["POST", "PUT"])
    async def pay(breaker: Annotated[CircuitBreaker, Depends(get_breaker("Billing"))]) -> str:
        return breaker.name

    @app.get("/search")
    async def search(client: Annotated[Any, Depends(search_client)]) -> str:
        return "ok"

    router = APIRouter(prefix="/admin", dependencies=[Depends(get_breaker("Billing"))])

    @router.get("/refunds")
    async def refunds() -> str:
        return "ok"

    app.include_router(router)

    @app.websocket("/live")
    async def live(websocket: WebSocket, breaker: AuthBreaker) -> None:
        await websocket.close()

    return app


async def search_client(
    breaker: Annotated[CircuitBreaker, Depends(get_breaker("Search"))],
) -> CircuitBreaker:
    return breaker


async def test_strict_startup_names_every_unknown_breaker_and_its_routes() -> None:
    app = strict_app("Search")

    with pytest.raises(RuntimeError) as caught:
        async with running(app):
            pass  # pragma: no cover

    assert str(caught.value) == (
        "strict breaker registry: routes depend on unknown breakers: "
        "'AuthService' (used by GET /me, WEBSOCKET /live); "
        "'Billing' (used by POST,PUT /pay, GET /admin/refunds). "
        "Configured breakers: 'Search'"
    )


async def test_strict_startup_passes_when_every_breaker_is_configured() -> None:
    app = strict_app("AuthService", "Billing", "Search")

    async with running(app) as client:
        assert (await client.get("/me")).json() == "AuthService"


async def test_strict_startup_with_nothing_configured_says_so() -> None:
    app = plain_app(BreakerRegistry(strict=True))

    @app.get("/me")
    async def me(breaker: AuthBreaker) -> str:
        return breaker.name  # pragma: no cover

    with pytest.raises(RuntimeError, match=r"Configured breakers: none$"):
        async with running(app):
            pass  # pragma: no cover


async def test_strict_startup_also_sees_routes_added_after_setup() -> None:
    app = plain_app(BreakerRegistry(breakers={"AuthService": {}}, strict=True))

    async with running(app):
        pass  # nothing unknown yet

    @app.get("/late")
    async def late(breaker: Annotated[CircuitBreaker, Depends(get_breaker("Late"))]) -> str:
        return breaker.name  # pragma: no cover

    with pytest.raises(RuntimeError, match=r"'Late' \(used by GET /late\)"):
        async with running(app):
            pass  # pragma: no cover


async def test_an_overridden_breaker_is_not_checked() -> None:
    app = strict_app("Search", "Billing")
    fake = CircuitBreaker(name="fake", clock=FakeClock())
    app.dependency_overrides[get_breaker("AuthService")] = lambda: fake

    async with running(app) as client:
        assert (await client.get("/me")).json() == "fake"


async def test_a_lenient_registry_does_not_check_at_startup() -> None:
    app = app_using_breakers(BreakerRegistry(breakers={"Search": {}}))

    async with running(app) as client:
        assert (await client.get("/me")).json() == "AuthService"


async def test_strict_startup_checks_the_critical_names_of_health_routes() -> None:
    registry = BreakerRegistry(breakers={"AuthService": {}}, strict=True)
    app = plain_app(registry)
    app.include_router(health_router(critical=["AuthService", "Sidecar"]), prefix="/internal")

    @app.get("/cache")
    async def cache(breaker: Annotated[CircuitBreaker, Depends(get_breaker("Sidecar"))]) -> str:
        return breaker.name  # pragma: no cover

    with pytest.raises(RuntimeError) as caught:
        async with running(app):
            pass  # pragma: no cover

    assert str(caught.value) == (
        "strict breaker registry: routes depend on unknown breakers: "
        "'Sidecar' (critical for GET /internal/health/ready; used by GET /cache). "
        "Configured breakers: 'AuthService'"
    )


async def test_strict_startup_passes_when_the_critical_names_are_configured() -> None:
    registry = BreakerRegistry(breakers={"Sidecar": {}}, strict=True, clock=FakeClock())
    app = plain_app(registry)
    app.include_router(health_router(critical=["Sidecar"]))

    async with running(app) as client:
        registry.get("Sidecar").open()
        response = await client.get("/health/ready")

    assert (response.status_code, response.json()) == (503, {"status": "not_ready"})


async def test_critical_names_of_a_health_router_with_its_own_registry_are_not_rechecked() -> None:
    # That router was checked against its own registry when it was built.
    app = plain_app(BreakerRegistry(breakers={"AuthService": {}}, strict=True))
    app.include_router(health_router(registry=BreakerRegistry(), critical=["Sidecar"]))

    async with running(app) as client:
        assert (await client.get("/health/ready")).json() == {"status": "ready"}


# ---------------------------------------------------------------- the app's exception handlers


def upstream_app(*, handler_first: bool, expose_name: bool = False) -> tuple[FastAPI, FakeClock]:
    """An app that maps every httpx error to a 502, as many do, and calls an open breaker."""
    clock = FakeClock()
    registry = BreakerRegistry(breakers={"AuthService": {"reset_timeout": 20.0}}, clock=clock)
    app = FastAPI()

    def add_handler() -> None:
        @app.exception_handler(httpx.HTTPError)
        async def upstream_failed(request: Request, exc: httpx.HTTPError) -> JSONResponse:
            return JSONResponse({"detail": "upstream failed"}, status_code=502)

    if handler_first:
        add_handler()
    setup_breakers(app, registry, expose_name=expose_name)
    if not handler_first:
        add_handler()

    async def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"user": "ada"})

    @app.get("/me")
    async def me() -> Any:
        transport = AsyncBreakerTransport(
            httpx.MockTransport(upstream), registry=registry, name="AuthService"
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://auth") as auth:
            return (await auth.get("/verify")).json()

    @app.get("/broken")
    async def broken() -> Any:
        raise httpx.ConnectError("connection refused")

    return app, clock


@pytest.mark.parametrize("handler_first", [True, False])
async def test_a_refusal_is_a_503_despite_an_httpx_error_handler(handler_first: bool) -> None:
    app, clock = upstream_app(handler_first=handler_first)

    async with running(app) as client:
        assert (await client.get("/me")).json() == {"user": "ada"}
        app.state.breaker_registry.get("AuthService").open()
        clock.advance(7.5)
        refused = await client.get("/me")
        broken = await client.get("/broken")

    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "13"
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["cache-control"] == "no-store"
    assert refused.json() == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "The service is temporarily unavailable; retry after 13 seconds.",
        "retry_after": 13,
    }
    # The app's own handler still answers the other httpx errors.
    assert (broken.status_code, broken.json()) == (502, {"detail": "upstream failed"})


async def test_the_handler_setup_registers_follows_expose_name() -> None:
    app, _clock = upstream_app(handler_first=False, expose_name=True)

    async with running(app) as client:
        app.state.breaker_registry.get("AuthService").open()
        refused = await client.get("/me")

    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "20"
    assert refused.json()["breaker"] == "AuthService"


@pytest.mark.parametrize("handler_first", [True, False])
async def test_a_handler_the_app_registers_for_circuit_open_error_itself_is_kept(
    handler_first: bool,
) -> None:
    app = FastAPI()

    async def own(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("come back later", status_code=429)

    if handler_first:
        app.add_exception_handler(CircuitOpenError, own)
    setup_breakers(app, BreakerRegistry())
    if not handler_first:
        app.add_exception_handler(CircuitOpenError, own)

    @app.get("/me")
    async def me() -> str:
        raise CircuitOpenError("AuthService", 3.0)

    async with running(app) as client:
        response = await client.get("/me")

    assert (response.status_code, response.text) == (429, "come back later")


async def test_the_handler_is_back_even_if_the_apps_handlers_were_replaced() -> None:
    app = FastAPI()
    setup_breakers(app, BreakerRegistry())
    app.exception_handlers = {}

    @app.get("/me")
    async def me() -> str:
        raise HTTPCircuitOpenError("AuthService", 2.0)

    @app.exception_handler(httpx.HTTPError)
    async def upstream_failed(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("bad gateway", status_code=502)  # pragma: no cover

    async with running(app) as client:
        response = await client.get("/me")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"


def test_without_the_middleware_no_handler_is_registered() -> None:
    # middleware=False: the app answers refusals itself.
    app = plain_app()

    assert CircuitOpenError not in app.exception_handlers


async def test_a_task_group_of_transport_refusals_is_a_503_despite_an_httpx_handler() -> None:
    clock = FakeClock()
    registry = BreakerRegistry(
        breakers={"AuthService": {"reset_timeout": 20.0}, "Billing": {"reset_timeout": 45.0}},
        clock=clock,
    )
    app = FastAPI()
    setup_breakers(app, registry)

    @app.exception_handler(httpx.HTTPError)
    async def upstream_failed(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("bad gateway", status_code=502)  # pragma: no cover

    async def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)  # pragma: no cover

    @app.get("/dashboard")
    async def dashboard() -> str:
        async with asyncio.TaskGroup() as tasks:
            for name in ("AuthService", "Billing"):
                transport = AsyncBreakerTransport(
                    httpx.MockTransport(upstream), registry=registry, name=name
                )
                client = httpx.AsyncClient(transport=transport, base_url="http://upstream")
                tasks.create_task(client.get("/"))
        return "unreachable"  # pragma: no cover

    async with running(app) as client:
        registry.get("AuthService").open()
        registry.get("Billing").open()
        clock.advance(4.2)
        response = await client.get("/dashboard")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "41"  # ceil(45 - 4.2), the longer of the two
    assert response.json()["retry_after"] == 41


async def test_a_refusal_in_a_websocket_route_still_reaches_the_server() -> None:
    # A handler cannot answer a websocket with a response: the error must not be swallowed.
    app = FastAPI()
    setup_breakers(app, BreakerRegistry())

    @app.websocket("/live")
    async def live(websocket: WebSocket) -> None:
        raise CircuitOpenError("AuthService", 2.0)

    scope = {
        "type": "websocket",
        "path": "/live",
        "raw_path": b"/live",
        "query_string": b"",
        "headers": [],
        "root_path": "",
        "scheme": "ws",
        "subprotocols": [],
        "asgi": {"version": "3.0"},
        "client": ("127.0.0.1", 5),
        "server": ("t", 80),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    with pytest.raises(CircuitOpenError):
        await app(scope, receive, send)
    assert sent == []


# ---------------------------------------------------------------- OpenAPI


def openapi_app() -> FastAPI:
    app = plain_app()

    @app.get("/me")
    async def me(breaker: AuthBreaker) -> str:
        return breaker.name  # pragma: no cover

    @app.get("/plain")
    async def plain() -> str:
        return "ok"  # pragma: no cover

    @app.get(
        "/own-503",
        responses={503: {"description": "Maintenance window"}},
    )
    async def own(breaker: AuthBreaker) -> str:
        return breaker.name  # pragma: no cover

    @app.get("/nested")
    async def nested(client: Annotated[Any, Depends(search_client)]) -> str:
        return "ok"  # pragma: no cover

    @app.get("/hidden", include_in_schema=False)
    async def hidden(breaker: AuthBreaker) -> str:
        return breaker.name  # pragma: no cover

    return app


def responses(schema: dict[str, Any], path: str, method: str = "get") -> dict[str, Any]:
    return dict(schema["paths"][path][method]["responses"])


def test_openapi_documents_503_on_breaker_routes_only() -> None:
    app = openapi_app()
    router = APIRouter(prefix="/admin", dependencies=[Depends(get_breaker("Billing"))])

    @router.post("/refunds")
    async def refunds() -> str:
        return "ok"  # pragma: no cover

    app.include_router(router)  # after setup: the schema must still see it

    schema = app.openapi()

    assert responses(schema, "/me")["503"] == CIRCUIT_OPEN_RESPONSE
    assert responses(schema, "/nested")["503"] == CIRCUIT_OPEN_RESPONSE
    assert responses(schema, "/admin/refunds", "post")["503"] == CIRCUIT_OPEN_RESPONSE
    assert "503" not in responses(schema, "/plain")
    assert "/hidden" not in schema["paths"]


def test_openapi_keeps_a_503_the_user_documented() -> None:
    schema = openapi_app().openapi()

    assert responses(schema, "/own-503")["503"] == {"description": "Maintenance window"}


def test_the_documented_503_is_a_problem_with_retry_after() -> None:
    documented = responses(openapi_app().openapi(), "/me")["503"]

    assert documented["description"] == (
        "Circuit open: the call was refused; retry after the Retry-After header"
    )
    assert documented["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}
    problem = documented["content"]["application/problem+json"]["schema"]
    assert problem["required"] == ["type", "title", "status", "detail", "retry_after"]
    assert set(problem["properties"]) == {
        "type",
        "title",
        "status",
        "detail",
        "retry_after",
        "breaker",
    }


async def test_the_served_schema_has_the_503_and_stays_stable() -> None:
    app = openapi_app()

    async with running(app) as client:
        first = (await client.get("/openapi.json")).json()
        second = (await client.get("/openapi.json")).json()

    assert first == second
    assert responses(first, "/me")["503"] == CIRCUIT_OPEN_RESPONSE
    assert "503" not in responses(first, "/plain")


def test_a_route_added_after_the_first_schema_is_documented_too() -> None:
    app = openapi_app()
    app.openapi()

    @app.put("/late")
    async def late(breaker: AuthBreaker) -> str:
        return breaker.name  # pragma: no cover

    assert responses(app.openapi(), "/late", "put")["503"] == CIRCUIT_OPEN_RESPONSE


def test_each_route_gets_its_own_copy_of_the_503() -> None:
    schema = openapi_app().openapi()

    responses(schema, "/me")["503"]["description"] = "edited"

    assert responses(schema, "/nested")["503"]["description"] != "edited"


@pytest.mark.parametrize("refusal", ["plain", "group"])
async def test_a_refusal_behind_a_middleware_that_holds_the_start_answers_503(
    refusal: str,
) -> None:
    # GZip holds the response start until the first body chunk: the app "started" its response,
    # but nothing reached the client when the refusal came, so a 503 can still be sent.
    app = FastAPI()
    app.add_middleware(GZipMiddleware, minimum_size=0)
    setup_breakers(app)
    error = CircuitOpenError("AuthService", 7.5)

    async def body() -> AsyncIterator[bytes]:
        if refusal == "group":
            raise ExceptionGroup("calls", [error])
        raise error
        yield b""  # pragma: no cover - a generator that raises before its first chunk

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(body())

    async with running(app) as client:
        response = await client.get("/stream", headers={"accept-encoding": "gzip"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "8"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["retry_after"] == 8
