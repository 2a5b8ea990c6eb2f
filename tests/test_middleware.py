"""CircuitBreakerMiddleware, circuit_open_handler and the 503 problem response they share."""

import asyncio
import json
import math
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_breaker import BreakerError, CallTimeoutError, CircuitBreaker, CircuitOpenError
from fastapi_breaker.middleware import (
    MAX_RETRY_AFTER,
    CircuitBreakerMiddleware,
    circuit_open_handler,
    circuit_open_handler_factory,
    problem_response,
    retry_after_header,
)
from fastapi_breaker.testing import FakeClock

PROBLEM_HEADERS = {
    "content-type": "application/problem+json",
    "cache-control": "no-store",
}


def http_scope(path: str = "/") -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def receive_request() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def server_receive() -> Receive:
    # Like a server: the request body once, then nothing until the client goes away.
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return await receive_request()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


async def serve(app: ASGIApp, scope: Scope) -> list[Message]:
    """Call the app as a server would and return every message it sent, in order."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, server_receive(), send)
    return sent


def raising(exc: BaseException) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise exc

    return app


def client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def generic_body(seconds: int) -> dict[str, object]:
    wait = "1 second" if seconds == 1 else f"{seconds} seconds"
    return {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": f"The service is temporarily unavailable; retry after {wait}.",
        "retry_after": seconds,
    }


# --- retry_after_header -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [
        (0.0, "1"),
        (0.2, "1"),
        (1.0, "1"),
        (1.01, "2"),
        (2.0, "2"),
        (17.7, "18"),
        (29.999, "30"),
        (-3.0, "1"),
        (None, "1"),
        (math.nan, "1"),
        (-math.inf, "1"),
        (86_398.5, "86399"),
        (86_399.2, "86400"),
        (86_400.0, "86400"),
        (86_400.5, "86400"),
        (1e300, "86400"),
        (math.inf, "86400"),
    ],
)
def test_retry_after_header_is_the_ceiling_clamped_to_one_second_and_one_day(
    retry_after: float | None, header: str
) -> None:
    assert retry_after_header(retry_after) == header


def test_max_retry_after_is_one_day() -> None:
    assert MAX_RETRY_AFTER == 86_400


# --- problem_response ---------------------------------------------------------------------------


def test_problem_response_without_name_names_no_service() -> None:
    response = problem_response(CircuitOpenError("AuthService", 4.2))

    assert response.status_code == 503
    assert response.media_type == "application/problem+json"
    assert dict(response.headers) == {
        "retry-after": "5",
        "cache-control": "no-store",
        "content-length": str(len(response.body)),
        "content-type": "application/problem+json",
    }
    assert json.loads(bytes(response.body)) == generic_body(5)
    assert b"AuthService" not in bytes(response.body)


def test_problem_response_with_expose_name_names_the_breaker() -> None:
    response = problem_response(CircuitOpenError("AuthService", 1.0), expose_name=True)

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert json.loads(bytes(response.body)) == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "Circuit breaker 'AuthService' is open; retry after 1 second.",
        "breaker": "AuthService",
        "retry_after": 1,
    }


def test_problem_response_body_is_utf8_json_for_a_non_ascii_name() -> None:
    response = problem_response(CircuitOpenError("Zahlungsdienst-ü", 3.0), expose_name=True)

    assert json.loads(bytes(response.body).decode("utf-8"))["breaker"] == "Zahlungsdienst-ü"


# --- the middleware on raw ASGI apps ------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [(0.0, "1"), (0.2, "1"), (1.0, "1"), (1.01, "2"), (30.0, "30"), (math.inf, "86400")],
)
async def test_open_circuit_before_start_becomes_a_503(retry_after: float, header: str) -> None:
    app = CircuitBreakerMiddleware(raising(CircuitOpenError("AuthService", retry_after)))

    async with client(app) as http:
        response = await http.get("/")

    assert response.status_code == 503
    assert response.headers["retry-after"] == header
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == generic_body(int(header))
    assert response.json()["retry_after"] == int(response.headers["retry-after"])


async def test_expose_name_puts_the_breaker_name_in_the_body() -> None:
    app = CircuitBreakerMiddleware(raising(CircuitOpenError("AuthService", 7.5)), expose_name=True)

    async with client(app) as http:
        response = await http.get("/")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "8"
    assert response.json() == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "Circuit breaker 'AuthService' is open; retry after 8 seconds.",
        "breaker": "AuthService",
        "retry_after": 8,
    }


async def test_the_503_is_sent_as_exactly_one_start_and_one_body() -> None:
    app = CircuitBreakerMiddleware(raising(CircuitOpenError("AuthService", 2.0)))

    sent = await serve(app, http_scope())

    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 503
    assert dict(sent[0]["headers"]) == {
        b"retry-after": b"2",
        b"cache-control": b"no-store",
        b"content-length": str(len(sent[1]["body"])).encode(),
        b"content-type": b"application/problem+json",
    }
    assert json.loads(sent[1]["body"]) == generic_body(2)


async def test_open_circuit_after_the_response_started_is_reraised() -> None:
    error = CircuitOpenError("AuthService", 2.0)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise error

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with pytest.raises(CircuitOpenError) as raised:
        await CircuitBreakerMiddleware(app)(http_scope(), server_receive(), send)

    assert raised.value is error
    # No second status line after the first one went out.
    assert [m["type"] for m in sent] == ["http.response.start"]
    assert sent[0]["status"] == 200


async def test_a_runtime_error_from_a_refusal_after_the_start_went_out_is_reraised() -> None:
    # What Starlette's exception handler raises when the start had reached us: too late.
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("response already started") from CircuitOpenError("AuthService", 2.0)

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with pytest.raises(RuntimeError, match=r"^response already started$"):
        await CircuitBreakerMiddleware(app)(http_scope(), server_receive(), send)
    assert [m["type"] for m in sent] == ["http.response.start"]


async def test_a_runtime_error_caused_by_anything_but_a_refusal_is_reraised() -> None:
    error = RuntimeError("boom")
    error.__cause__ = ValueError("not a refusal")
    with pytest.raises(RuntimeError) as raised:
        await serve(CircuitBreakerMiddleware(raising(error)), http_scope())
    assert raised.value is error


async def test_other_exceptions_are_not_caught() -> None:
    # Other breaker errors too: only an open circuit means "retry later".
    for error in (RuntimeError("boom"), CallTimeoutError("AuthService", 5.0)):
        with pytest.raises(type(error)) as raised:
            await serve(CircuitBreakerMiddleware(raising(error)), http_scope())
        assert raised.value is error


async def test_a_normal_response_passes_through_as_the_same_messages() -> None:
    start: Message = {"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]}
    body: Message = {"type": "http.response.body", "body": b"ok"}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start)
        await send(body)

    sent = await serve(CircuitBreakerMiddleware(app), http_scope())

    assert len(sent) == 2
    assert sent[0] is start
    assert sent[1] is body


@pytest.mark.parametrize("scope_type", ["websocket", "lifespan"])
async def test_non_http_scopes_pass_straight_through(scope_type: str) -> None:
    seen: list[tuple[str, Receive, Send]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope["type"], receive, send))

    async def receive() -> Message:
        raise AssertionError("not called")

    async def send(message: Message) -> None:
        raise AssertionError("not called")

    await CircuitBreakerMiddleware(app)({"type": scope_type}, receive, send)

    # The very same callables: no wrapper, nothing watched.
    assert seen == [(scope_type, receive, send)]


@pytest.mark.parametrize("scope_type", ["websocket", "lifespan"])
async def test_open_circuit_in_a_non_http_scope_is_not_turned_into_a_response(
    scope_type: str,
) -> None:
    error = CircuitOpenError("AuthService", 2.0)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with pytest.raises(CircuitOpenError) as raised:
        await CircuitBreakerMiddleware(raising(error))({"type": scope_type}, server_receive(), send)

    assert raised.value is error
    assert sent == []


async def test_request_state_is_per_request_not_shared_between_concurrent_requests() -> None:
    # Request A starts its response and then hits an open circuit; meanwhile request B hits one
    # before starting. B must get its 503 although A has started, and A must still be re-raised.
    a_started = asyncio.Event()
    b_done = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/a":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            a_started.set()
            await b_done.wait()
        raise CircuitOpenError("AuthService", 3.0)

    middleware = CircuitBreakerMiddleware(app)

    async def request_b() -> list[Message]:
        await a_started.wait()
        try:
            return await serve(middleware, http_scope("/b"))
        finally:
            b_done.set()

    a, b = await asyncio.gather(
        serve(middleware, http_scope("/a")), request_b(), return_exceptions=True
    )

    assert isinstance(a, CircuitOpenError)
    assert isinstance(b, list)
    assert [m["type"] for m in b] == ["http.response.start", "http.response.body"]
    assert b[0]["status"] == 503


# --- streaming ----------------------------------------------------------------------------------

CHUNKS = [b"first,", b"", b"second,", b"third" * 1000]


async def chunks() -> AsyncIterator[bytes]:
    for chunk in CHUNKS:
        yield chunk


def streaming_app(body: AsyncIterator[bytes] | None = None) -> Starlette:
    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(chunks() if body is None else body, media_type="text/plain")

    return Starlette(
        routes=[Route("/stream", stream)], middleware=[Middleware(CircuitBreakerMiddleware)]
    )


async def test_streaming_chunks_arrive_unchanged_in_order_after_a_single_start() -> None:
    sent = await serve(streaming_app(), http_scope("/stream"))

    types = [m["type"] for m in sent]
    assert types.count("http.response.start") == 1
    assert types[0] == "http.response.start"
    assert sent[0]["status"] == 200
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    # One message per chunk, in order, then Starlette's empty closing message.
    assert [m["body"] for m in bodies] == [*CHUNKS, b""]
    assert [m.get("more_body", False) for m in bodies] == [True] * len(CHUNKS) + [False]


async def test_open_circuit_while_streaming_is_reraised_without_a_second_start() -> None:
    async def breaks_midway() -> AsyncIterator[bytes]:
        yield b"partial"
        raise CircuitOpenError("AuthService", 2.0)

    app = streaming_app(breaks_midway())
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    # ServerErrorMiddleware (outermost) sees the response started, so it re-raises too.
    with pytest.raises(CircuitOpenError):
        await app(http_scope("/stream"), server_receive(), send)

    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 200
    assert sent[1]["body"] == b"partial"


# --- Starlette and FastAPI apps -----------------------------------------------------------------


def fastapi_app(error: BaseException) -> FastAPI:
    app = FastAPI()

    @app.get("/me")
    async def me() -> dict[str, str]:
        raise error

    return app


async def test_without_the_middleware_an_open_circuit_is_a_500() -> None:
    # The control for the tests below: the 503 comes from our middleware, not from FastAPI.
    app = fastapi_app(CircuitOpenError("AuthService", 2.0))

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.get("/me")

    assert response.status_code == 500


async def test_fastapi_endpoint_error_reaches_middleware_added_with_add_middleware() -> None:
    # User middleware sits between ServerErrorMiddleware and ExceptionMiddleware, and no handler
    # for CircuitOpenError is installed, so the error passes ExceptionMiddleware and reaches us.
    app = fastapi_app(CircuitOpenError("AuthService", 2.5))
    app.add_middleware(CircuitBreakerMiddleware)

    async with client(app) as http:
        response = await http.get("/me")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    assert {k: response.headers[k] for k in PROBLEM_HEADERS} == PROBLEM_HEADERS
    assert response.json() == generic_body(3)


async def test_starlette_route_error_reaches_the_middleware() -> None:
    async def endpoint(request: Request) -> Response:
        raise CircuitOpenError("AuthService", 0.4)

    app = Starlette(
        routes=[Route("/", endpoint)],
        middleware=[Middleware(CircuitBreakerMiddleware, expose_name=True)],
    )

    async with client(app) as http:
        response = await http.get("/")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["breaker"] == "AuthService"


async def test_other_endpoint_errors_still_become_the_apps_500() -> None:
    app = fastapi_app(RuntimeError("boom"))
    app.add_middleware(CircuitBreakerMiddleware)

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.get("/me")

    assert response.status_code == 500
    assert response.text == "Internal Server Error"


async def test_real_breaker_opened_under_a_fake_clock_gives_the_remaining_reset_time() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(name="AuthService", reset_timeout=30.0, clock=clock)
    calls = 0

    async def fetch_user() -> dict[str, str]:
        nonlocal calls
        calls += 1
        return {"name": "ada"}

    app = FastAPI()

    @app.get("/me")
    async def me() -> dict[str, str]:
        user: dict[str, str] = await breaker.call(fetch_user)
        return user

    app.add_middleware(CircuitBreakerMiddleware)
    breaker.open()
    clock.advance(12.3)

    async with client(app) as http:
        response = await http.get("/me")
        clock.advance(17.0)  # 0.7 s left
        later = await http.get("/me")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "18"  # ceil(30 - 12.3)
    assert response.json() == generic_body(18)
    assert later.status_code == 503
    assert later.headers["retry-after"] == "1"
    assert calls == 0


async def test_cors_added_after_the_middleware_wraps_the_503() -> None:
    app = fastapi_app(CircuitOpenError("AuthService", 2.0))
    app.add_middleware(CircuitBreakerMiddleware)
    # Added last, so outermost: it sees our 503 like any other response.
    app.add_middleware(CORSMiddleware, allow_origins=["https://ui.example"])

    async with client(app) as http:
        response = await http.get("/me", headers={"Origin": "https://ui.example"})

    assert response.status_code == 503
    assert response.headers["access-control-allow-origin"] == "https://ui.example"
    assert response.headers["retry-after"] == "2"
    assert response.json() == generic_body(2)


async def test_cors_added_before_the_middleware_cannot_see_the_503() -> None:
    # The reverse order, to show why the order matters: the error passes CORS on its way out,
    # and our 503 is built outside it.
    app = fastapi_app(CircuitOpenError("AuthService", 2.0))
    app.add_middleware(CORSMiddleware, allow_origins=["https://ui.example"])
    app.add_middleware(CircuitBreakerMiddleware)

    async with client(app) as http:
        response = await http.get("/me", headers={"Origin": "https://ui.example"})

    assert response.status_code == 503
    assert "access-control-allow-origin" not in response.headers


# --- the exception handler ----------------------------------------------------------------------


async def test_exception_handler_gives_the_same_response_as_the_middleware() -> None:
    error = CircuitOpenError("AuthService", 4.01)
    with_handler = fastapi_app(error)
    with_handler.add_exception_handler(CircuitOpenError, circuit_open_handler)
    with_middleware = fastapi_app(error)
    with_middleware.add_middleware(CircuitBreakerMiddleware)

    async with client(with_handler) as http:
        handled = await http.get("/me")
    async with client(with_middleware) as http:
        caught = await http.get("/me")

    assert handled.status_code == caught.status_code == 503
    assert handled.headers.multi_items() == caught.headers.multi_items()
    assert handled.content == caught.content
    assert handled.headers["retry-after"] == "5"
    assert handled.json() == generic_body(5)


async def test_handler_factory_with_expose_name_matches_the_middleware_with_expose_name() -> None:
    error = CircuitOpenError("AuthService", 9.0)
    with_handler = fastapi_app(error)
    with_handler.add_exception_handler(
        CircuitOpenError, circuit_open_handler_factory(expose_name=True)
    )
    with_middleware = fastapi_app(error)
    with_middleware.add_middleware(CircuitBreakerMiddleware, expose_name=True)

    async with client(with_handler) as http:
        handled = await http.get("/me")
    async with client(with_middleware) as http:
        caught = await http.get("/me")

    assert handled.status_code == 503
    assert handled.headers.multi_items() == caught.headers.multi_items()
    assert handled.content == caught.content
    assert handled.json()["breaker"] == "AuthService"


async def test_handler_factory_default_names_no_service() -> None:
    app = fastapi_app(CircuitOpenError("AuthService", 1.5))
    app.add_exception_handler(CircuitOpenError, circuit_open_handler_factory())

    async with client(app) as http:
        response = await http.get("/me")

    assert response.json() == generic_body(2)


@pytest.mark.parametrize(
    "handler", [circuit_open_handler, circuit_open_handler_factory(expose_name=True)]
)
async def test_handler_registered_for_a_wider_class_leaves_other_errors_alone(
    handler: object,
) -> None:
    error = CallTimeoutError("AuthService", 5.0)
    app = fastapi_app(error)
    app.add_exception_handler(BreakerError, handler)  # type: ignore[arg-type]

    with pytest.raises(CallTimeoutError) as raised:
        async with client(app) as http:
            await http.get("/me")

    assert raised.value is error


# --- names that UTF-8 cannot carry --------------------------------------------------------------


def exposed_body(shown: str, seconds: int) -> dict[str, object]:
    wait = "1 second" if seconds == 1 else f"{seconds} seconds"
    return {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": f"Circuit breaker {shown} is open; retry after {wait}.",
        "breaker": shown.strip("'"),
        "retry_after": seconds,
    }


async def test_expose_name_with_a_lone_surrogate_answers_a_utf8_503() -> None:
    # A JSON request body can carry "\udc80", and a route may name a breaker after it.
    app = fastapi_app(CircuitOpenError("auth\udc80", 2.5))
    app.add_middleware(CircuitBreakerMiddleware, expose_name=True)

    async with client(app) as http:
        response = await http.get("/me")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    # Strict decoding: the body is valid UTF-8, the surrogate written as the text \udc80.
    assert json.loads(response.content.decode("utf-8")) == exposed_body("'auth\\udc80'", 3)


def test_problem_response_with_a_lone_surrogate_is_the_middlewares_body() -> None:
    response = problem_response(CircuitOpenError("auth\udc80\ud800", 1.0), expose_name=True)

    assert json.loads(bytes(response.body).decode("utf-8")) == exposed_body(
        "'auth\\udc80\\ud800'", 1
    )
    assert response.headers["content-length"] == str(len(response.body))


async def test_names_that_differ_in_a_surrogate_stay_apart_in_the_503() -> None:
    bodies = []
    for name in ("a\udc80", "a\udc81", "a\ufffd"):
        app = CircuitBreakerMiddleware(raising(CircuitOpenError(name, 1.0)), expose_name=True)
        async with client(app) as http:
            bodies.append((await http.get("/")).json()["breaker"])

    assert bodies == ["a\\udc80", "a\\udc81", "a\ufffd"]


async def test_a_valid_unicode_name_is_sent_as_it_is() -> None:
    name = "Zahlungsdienst-\u00fc-\U0001f4b3-\u202e"
    app = CircuitBreakerMiddleware(raising(CircuitOpenError(name, 1.0)), expose_name=True)

    async with client(app) as http:
        response = await http.get("/")

    assert response.json()["breaker"] == name


# --- exception groups (asyncio.TaskGroup) -------------------------------------------------------


def fan_out_app(*errors: BaseException, expose_name: bool = False) -> FastAPI:
    """A route that runs one task per error in a TaskGroup, each raising its error."""
    app = FastAPI()

    @app.get("/fan-out")
    async def fan_out() -> str:
        async def raise_it(error: BaseException) -> None:
            raise error

        async with asyncio.TaskGroup() as tasks:
            for error in errors:
                tasks.create_task(raise_it(error))
        return "unreachable"  # pragma: no cover

    app.add_middleware(CircuitBreakerMiddleware, expose_name=expose_name)
    return app


async def test_a_task_group_of_refusals_answers_503_with_the_longest_retry_after() -> None:
    app = fan_out_app(
        CircuitOpenError("AuthService", 2.0),
        CircuitOpenError("Billing", 17.2),
        CircuitOpenError("Search", 5.0),
    )

    async with client(app) as http:
        response = await http.get("/fan-out")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "18"
    assert {k: response.headers[k] for k in PROBLEM_HEADERS} == PROBLEM_HEADERS
    assert response.json() == generic_body(18)


async def test_nested_groups_of_refusals_answer_503_naming_the_longest() -> None:
    group = ExceptionGroup(
        "outer",
        [
            CircuitOpenError("AuthService", 3.0),
            ExceptionGroup("inner", [CircuitOpenError("Billing", 40.5)]),
            CircuitOpenError("Search", math.nan),
        ],
    )
    app = CircuitBreakerMiddleware(raising(group), expose_name=True)

    sent = await serve(app, http_scope())

    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 503
    assert dict(sent[0]["headers"])[b"retry-after"] == b"41"
    assert json.loads(sent[1]["body"]) == exposed_body("'Billing'", 41)


@pytest.mark.parametrize(
    "others",
    [
        [RuntimeError("boom")],
        [CallTimeoutError("Billing", 5.0)],
        [ExceptionGroup("inner", [CircuitOpenError("Billing", 1.0), ValueError("bad")])],
        [asyncio.CancelledError()],
    ],
)
async def test_a_group_with_anything_but_refusals_is_reraised_unchanged(
    others: list[BaseException],
) -> None:
    group = BaseExceptionGroup("fan-out", [CircuitOpenError("AuthService", 2.0), *others])
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with pytest.raises(BaseExceptionGroup) as raised:
        await CircuitBreakerMiddleware(raising(group))(http_scope(), server_receive(), send)

    assert raised.value is group
    assert sent == []


async def test_a_mixed_task_group_is_still_the_apps_500() -> None:
    app = fan_out_app(CircuitOpenError("AuthService", 2.0), RuntimeError("boom"))

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.get("/fan-out")

    assert response.status_code == 500
    assert response.text == "Internal Server Error"


async def test_a_group_of_refusals_after_the_response_started_is_reraised() -> None:
    group = ExceptionGroup("fan-out", [CircuitOpenError("AuthService", 2.0)])

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise group

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with pytest.raises(ExceptionGroup) as raised:
        await CircuitBreakerMiddleware(app)(http_scope(), server_receive(), send)

    assert raised.value is group
    assert [m["type"] for m in sent] == ["http.response.start"]


@pytest.mark.parametrize(
    "handler", [circuit_open_handler, circuit_open_handler_factory(expose_name=True)]
)
async def test_the_handler_answers_a_group_of_refusals_like_the_middleware(
    handler: object,
) -> None:
    group = ExceptionGroup(
        "fan-out", [CircuitOpenError("AuthService", 2.0), CircuitOpenError("Billing", 9.5)]
    )
    with_handler = fastapi_app(group)
    with_handler.add_exception_handler(ExceptionGroup, handler)  # type: ignore[arg-type]
    with_middleware = CircuitBreakerMiddleware(
        raising(group), expose_name=handler is not circuit_open_handler
    )

    async with client(with_handler) as http:
        handled = await http.get("/me")
    async with client(with_middleware) as http:
        caught = await http.get("/")

    assert handled.status_code == 503
    assert handled.headers["retry-after"] == "10"
    assert handled.headers.multi_items() == caught.headers.multi_items()
    assert handled.content == caught.content


async def test_the_handler_reraises_a_mixed_group_unchanged() -> None:
    group = ExceptionGroup("fan-out", [CircuitOpenError("AuthService", 2.0), OSError("down")])
    app = fastapi_app(group)
    app.add_exception_handler(ExceptionGroup, circuit_open_handler)

    with pytest.raises(ExceptionGroup) as raised:
        async with client(app) as http:
            await http.get("/me")

    assert raised.value is group


# --- the optional import ------------------------------------------------------------------------


def test_the_cache_of_503s_holds_no_long_name_and_at_most_1024_answers() -> None:
    from fastapi_breaker import middleware

    middleware._cached_problem.cache_clear()
    # Names from requests, with no bound on the registry: none of these answers is kept.
    for index in range(100):
        name = f"{index}-" + "a" * 10_000
        body = problem_response(CircuitOpenError(name, 3.0), expose_name=True).body
        assert json.loads(body)["breaker"] == name
    assert middleware._cached_problem.cache_info().currsize == 0
    for index in range(2000):
        problem_response(CircuitOpenError(f"tenant-{index}", 3.0), expose_name=True)
    assert middleware._cached_problem.cache_info().currsize == 1024
