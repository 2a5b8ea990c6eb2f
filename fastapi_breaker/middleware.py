"""Turn a `CircuitOpenError` into a `503 Service Unavailable` problem response.

Two ways in, one response:

- `CircuitBreakerMiddleware`, pure ASGI: `app.add_middleware(CircuitBreakerMiddleware)`.
- `circuit_open_handler`, for `app.add_exception_handler(CircuitOpenError, circuit_open_handler)`.

Both build the response with `problem_response()`: an RFC 9457 `application/problem+json` body,
`Retry-After` in whole seconds and `Cache-Control: no-store`. Both also answer an exception group
(what `asyncio.TaskGroup` raises) whose every error, nested groups included, is a
`CircuitOpenError`: with the longest wait among them. Any other group is left alone.

A breaker's name may come from a request, so it may hold a lone surrogate, which UTF-8 cannot
encode: wherever a name is printed, it is written by `printable_name()` (each backslash doubled,
each lone surrogate written as the text `\\udXXX`), one-to-one.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Awaitable, Callable

try:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(
        "fastapi_breaker.middleware needs Starlette: pip install 'fastapi_breaker[fastapi]'"
    ) from exc

from ._errors import CircuitOpenError
from ._names import printable_name

__all__ = [
    "MAX_RETRY_AFTER",
    "CircuitBreakerMiddleware",
    "circuit_open_handler",
    "circuit_open_handler_factory",
    "problem_response",
    "retry_after_header",
]

# The longest wait we ever advertise: one day. It bounds a huge or infinite hint (a breaker held
# open by hand, an upstream's own Retry-After) and keeps the header a short integer.
MAX_RETRY_AFTER = 86_400

_MEDIA_TYPE = "application/problem+json"


def _retry_after_seconds(retry_after: float | None) -> int:
    # Unknown (None, NaN) means we cannot promise a wait: ask for the shortest one.
    if retry_after is None or math.isnan(retry_after) or retry_after <= 1.0:
        return 1
    if retry_after >= MAX_RETRY_AFTER:
        return MAX_RETRY_AFTER
    return math.ceil(retry_after)


def retry_after_header(retry_after: float | None) -> str:
    """The `Retry-After` value for a breaker's `retry_after` seconds.

    The ceiling of the seconds, so that a client that waits that long finds the breaker ready
    for a trial; at least 1, since `Retry-After: 0` invites an immediate retry storm; at most
    `MAX_RETRY_AFTER` (infinity included). None and NaN give 1.
    """
    return str(_retry_after_seconds(retry_after))


def _refusal(exc: BaseException) -> CircuitOpenError | None:
    """The refusal to answer for `exc`, or None to leave `exc` alone.

    A `CircuitOpenError` is its own answer. An exception group is answered only when every error
    in it, nested groups included, is a refusal: by the one with the longest wait, so that a
    client that waits that long finds every breaker ready for a trial.
    """
    if isinstance(exc, CircuitOpenError):
        return exc
    if not isinstance(exc, BaseExceptionGroup):
        return None
    longest: CircuitOpenError | None = None
    longest_wait = 0
    # A stack rather than recursion: however deep the nesting, no RecursionError.
    pending: list[BaseException] = [exc]
    while pending:
        error = pending.pop()
        if isinstance(error, BaseExceptionGroup):
            pending.extend(reversed(error.exceptions))
        elif isinstance(error, CircuitOpenError):
            wait = _retry_after_seconds(error.retry_after)
            if wait > longest_wait:
                longest, longest_wait = error, wait
        else:
            return None
    return longest


def problem_response(exc: CircuitOpenError, *, expose_name: bool = False) -> Response:
    """The 503 response for an open circuit, shared by the middleware and the handler.

    The body names no internal service unless `expose_name` is true; then `detail` names the
    breaker and a `breaker` member carries its name, each lone surrogate in it written as the
    text `\\udXXX`.
    """
    seconds = _retry_after_seconds(exc.retry_after)
    body, _ = _problem(seconds, exc.name if expose_name else None)
    return Response(
        body,
        status_code=503,
        headers={"Retry-After": str(seconds), "Cache-Control": "no-store"},
        media_type=_MEDIA_TYPE,
    )


# The cache of 503s holds at most this many answers, each for a name of at most this many
# characters: about 2 MiB in all, names included, whatever names the breakers have. A longer
# name's answer is built each time (a registry refuses such names by default).
_CACHED_ANSWERS = 1024
_CACHED_NAME_LENGTH = 512

_Problem = tuple[bytes, tuple[tuple[bytes, bytes], ...]]


def _problem(seconds: int, name: str | None) -> _Problem:
    """The body and raw headers of the 503, made once per (seconds, exposed name).

    A flood of rejections while a circuit is open asks for the same few answers again and
    again; building each with json.dumps and a Response object costs more than the rest of
    the rejection.
    """
    if name is not None and len(name) > _CACHED_NAME_LENGTH:
        return _build_problem(seconds, name)
    return _cached_problem(seconds, name)


def _build_problem(seconds: int, name: str | None) -> _Problem:
    """The 503's body and raw headers, built."""
    wait = "1 second" if seconds == 1 else f"{seconds} seconds"
    body: dict[str, object] = {
        # about:blank says the status code is the whole story, so `title` is its reason phrase.
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
    }
    if name is not None:
        # repr() writes a backslash and a lone surrogate as printable_name() does.
        body["detail"] = f"Circuit breaker {name!r} is open; retry after {wait}."
        body["breaker"] = printable_name(name)
    else:
        body["detail"] = f"The service is temporarily unavailable; retry after {wait}."
    body["retry_after"] = seconds
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    headers = (
        (b"retry-after", str(seconds).encode()),
        (b"cache-control", b"no-store"),
        (b"content-length", str(len(content)).encode()),
        (b"content-type", _MEDIA_TYPE.encode()),
    )
    return content, headers


_cached_problem = functools.lru_cache(maxsize=_CACHED_ANSWERS)(_build_problem)


async def circuit_open_handler(request: Request, exc: Exception) -> Response:
    """An exception handler: `app.add_exception_handler(CircuitOpenError, circuit_open_handler)`.

    Registered for `ExceptionGroup` as well, it answers a group made only of refusals. Anything
    else, and any error in a websocket, is re-raised.
    """
    refusal = _answerable(request, exc)
    return problem_response(refusal)


def circuit_open_handler_factory(
    *, expose_name: bool = False
) -> Callable[[Request, Exception], Awaitable[Response]]:
    """An exception handler like `circuit_open_handler`, with the breaker's name on request."""

    async def handler(request: Request, exc: Exception) -> Response:
        return problem_response(_answerable(request, exc), expose_name=expose_name)

    return handler


def _answerable(request: Request, exc: Exception) -> CircuitOpenError:
    """The refusal a handler answers for `exc`, else `exc` raised again."""
    refusal = _refusal(exc)
    # A wider class than refusals: leave the error to whoever handles it next. A websocket
    # cannot take a response; Starlette would drop the answer and, with it, the error.
    if refusal is None or request.scope["type"] != "http":
        raise exc
    return refusal


class CircuitBreakerMiddleware:
    """Answers 503 when a `CircuitOpenError` escapes the app before its response has started.

    "Started" as this middleware sees it: a start held by a middleware inside it (GZip holds it
    until the first body chunk) reached no client, so a refusal raised then is still answered,
    even when Starlette's exception handler, seeing the start go, gave up on it.

    So does an exception group made only of refusals; any other group passes unchanged. Once
    the response has started the error is re-raised: the status line is already on the wire.
    Every message passes through unchanged, so streaming responses are untouched; websocket and
    lifespan scopes are not looked at.
    """

    __slots__ = ("app", "expose_name")

    def __init__(self, app: ASGIApp, *, expose_name: bool = False) -> None:
        self.app = app
        self.expose_name = expose_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = False

        async def send_noting_start(message: Message) -> None:
            nonlocal started
            # After the start, only the cheap flag test runs per body chunk.
            if not started and message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_noting_start)
        except CircuitOpenError as exc:
            if started:
                raise
            await self._answer(exc, send)
        except RuntimeError as exc:
            # Starlette's exception handler refuses to answer a refusal once the app has sent
            # its response start, raising this from it. A middleware between here and there
            # may hold that start (GZip does, until the first body chunk): if it never reached
            # us, nothing reached the client, and the 503 can still go.
            cause = exc.__cause__
            refusal = None if started or cause is None else _refusal(cause)
            if refusal is None:
                raise
            await self._answer(refusal, send)
        except BaseExceptionGroup as group:
            refusal = None if started else _refusal(group)
            if refusal is None:
                raise
            await self._answer(refusal, send)

    async def _answer(self, exc: CircuitOpenError, send: Send) -> None:
        seconds = _retry_after_seconds(exc.retry_after)
        body, headers = _problem(seconds, exc.name if self.expose_name else None)
        # The same bytes problem_response() sends, without building a Response each time.
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
