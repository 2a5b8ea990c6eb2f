"""httpx transports that send every request through a circuit breaker.

    transport = AsyncBreakerTransport(registry=registry)     # one breaker per upstream authority
    client = httpx.AsyncClient(transport=transport)

`AsyncBreakerTransport` and `BreakerTransport` wrap the next transport (httpx's default one when
none is given), as httpx recommends for cross-cutting behaviour.

Which breaker: `breaker=` (one for every request), or a registry with `name=` (one named breaker)
or `key=` (`key(request) -> name`, one breaker per name). A registry alone gives one breaker per
upstream authority, named `host[:port]` as httpx normalizes it: lower case, IDNA-encoded, no
user info, the scheme's default port left out (`"auth:8000"`, `"auth"`, `"[::1]:8000"`). The
scheme is not part of the name, so `http://auth` and `https://auth` share one breaker: one host,
one service, one health. With `name=`, the registry is asked for the breaker once at
construction, so that a strict registry refuses an unknown name there; every request then asks
it again, so that a registry that was shut down (the app's lifespan ended) hands out fresh ones.

What counts as a failure: `is_failure(outcome) -> bool`, called with the `httpx.Response` once
its headers arrive, or with the `Exception` the wrapped transport (or the body stream) raised.
The default, `default_is_failure`, counts every `httpx.TransportError` (httpx's timeouts
included), every 5xx response, and 429. A 429 counts because the upstream is shedding our load:
sending more makes it worse. If an upstream rate-limits per end user, one user's 429s must not
open the breaker for all: exclude it,
`is_failure=lambda o: default_is_failure(o) and getattr(o, "status_code", 0) != 429`.
An outcome that is not a failure counts as a success, as with the engine's `error_filter` (which
still applies on top). The breaker's own timeout is always a failure.

A failing response is returned unchanged: the caller still reads its 503. A successful one is
settled when its body ends: a success when it is read to the end or closed early (the caller saw
nothing wrong), a failure when reading it raises an error `is_failure` counts (a `ReadError`
half-way), not counted at all when the caller is cancelled. Close every response (httpx asks the
same): one never closed holds a `capacity` slot and, in half-open, its trial until the trial's
time limit.

`Retry-After`: when a failing 429 or 503 carries one (seconds or an HTTP-date) and that failure
opens the breaker, the breaker stays open at least that long, at most `max_retry_after` seconds.

Errors: every refusal is an `httpx.TransportError`, so code that already handles an unreachable
upstream handles a refused request too, and also a `BreakerError`, so the 503 middleware and
`except CircuitOpenError` see it:

    HTTPCircuitOpenError          CircuitOpenError + httpx.TransportError      (request not sent)
    HTTPCapacityExceededError     CapacityExceededError + httpx.TransportError (request not sent)
    HTTPBreakerShutdownError      BreakerShutdownError + httpx.TransportError  (request not sent)
    HTTPCallTimeoutError          CallTimeoutError + httpx.TimeoutException    (request cancelled)

Timeouts: in `AsyncBreakerTransport` the breaker's `timeout` (a trial's limit in half-open)
bounds the wait for the response headers; the body is bounded by httpx's own read timeout, since
a stream may legitimately run long. `BreakerTransport` cannot cancel a thread, so the breaker's
timeout does not apply there: a request, half-open trials included, is judged by its answer
however long it took. Bound sync requests with httpx's `timeout=`; its errors are failures.
The breaker's `fallback` never runs for a transport: catch the errors above instead. The async
transport needs asyncio (not trio).
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(
        "fastapi_breaker.httpx needs httpx: pip install 'fastapi_breaker[httpx]'"
    ) from exc

from ._attempt import Attempt
from ._breaker import CircuitBreaker
from ._errors import (
    BreakerShutdownError,
    CallTimeoutError,
    CapacityExceededError,
    CircuitOpenError,
)
from ._registry import BreakerRegistry

__all__ = [
    "AsyncBreakerTransport",
    "BreakerTransport",
    "HTTPBreakerShutdownError",
    "HTTPCallTimeoutError",
    "HTTPCapacityExceededError",
    "HTTPCircuitOpenError",
    "IsFailure",
    "default_is_failure",
    "parse_retry_after",
]

IsFailure = Callable[[httpx.Response | Exception], bool]
"""`is_failure(outcome)`: a response (headers received) or an exception; True means failure."""

# Statuses whose Retry-After asks us to stay away (RFC 9110 §10.2.3, RFC 6585 §4).
_RETRY_AFTER_STATUSES = frozenset({429, 503})


# ---------------------------------------------------------------------------------- errors
#
# Each error keeps the engine error's fields in `args` (so `.name`, `.retry_after`, `str()` and
# pickling work as for the engine error) and sets httpx's `.request` through httpx's own
# constructor. The engine errors' cooperative `__init__` would hand (name, value) to httpx's
# `__init__(message, *, request)`, so both are called explicitly instead.


class HTTPCircuitOpenError(CircuitOpenError, httpx.TransportError):
    """The breaker is open: the request was not sent."""

    def __init__(
        self, name: str, retry_after: float, *, request: httpx.Request | None = None
    ) -> None:
        httpx.TransportError.__init__(self, "", request=request)
        self.args = (name, retry_after)


class HTTPCapacityExceededError(CapacityExceededError, httpx.TransportError):
    """The breaker already runs `capacity` requests: this one was not sent."""

    def __init__(self, name: str, capacity: int, *, request: httpx.Request | None = None) -> None:
        httpx.TransportError.__init__(self, "", request=request)
        self.args = (name, capacity)


class HTTPBreakerShutdownError(BreakerShutdownError, httpx.TransportError):
    """The breaker was shut down (the app's lifespan ended): the request was not sent."""

    def __init__(self, name: str, *, request: httpx.Request | None = None) -> None:
        httpx.TransportError.__init__(self, "", request=request)
        self.args = (name,)


class HTTPCallTimeoutError(CallTimeoutError, httpx.TimeoutException):
    """No response headers within the breaker's time limit: the request was cancelled."""

    def __init__(self, name: str, timeout: float, *, request: httpx.Request | None = None) -> None:
        httpx.TimeoutException.__init__(self, "", request=request)
        self.args = (name, timeout)


# ---------------------------------------------------------------------------------- policy


def default_is_failure(outcome: httpx.Response | Exception) -> bool:
    """Transport errors (timeouts included), 5xx and 429 are failures; nothing else is.

    Any other exception (a request body generator that raises, a misused stream) says nothing
    about the upstream's health.
    """
    if isinstance(outcome, httpx.Response):
        return outcome.status_code >= 500 or outcome.status_code == 429
    return isinstance(outcome, httpx.TransportError)


def parse_retry_after(value: str, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` value, or None if it is not valid.

    Takes delay-seconds (`"120"`) or an HTTP-date (`"Wed, 21 Oct 2015 07:28:00 GMT"`); a date
    in the past gives 0.0. `now` is the current Unix time, for tests; default `time.time()`.
    """
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)  # float(): a huge value becomes inf, later clamped, never an error
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    # Wall-clock time only turns the date into a delay. No state decision reads it: the breaker
    # keeps itself open by its own monotonic clock for the delay computed here.
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _authority(request: httpx.Request) -> str:
    return request.url.netloc.decode("ascii")


class _Policy:
    """Breaker choice and classification, shared by the async and the sync transport."""

    def __init__(
        self,
        *,
        breaker: CircuitBreaker | None,
        registry: BreakerRegistry | None,
        name: str | None,
        key: Callable[[httpx.Request], str] | None,
        is_failure: IsFailure | None,
        max_retry_after: float,
    ) -> None:
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"breaker must be a CircuitBreaker or None, got {breaker!r}")
        if registry is not None and not isinstance(registry, BreakerRegistry):
            raise TypeError(f"registry must be a BreakerRegistry or None, got {registry!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name must be a non-empty string or None, got {name!r}")
        if key is not None and not callable(key):
            raise TypeError(f"key must be a callable key(request) -> str or None, got {key!r}")
        if is_failure is not None and not callable(is_failure):
            raise TypeError(
                f"is_failure must be a callable is_failure(response_or_exception) -> bool "
                f"or None, got {is_failure!r}"
            )
        if (
            isinstance(max_retry_after, bool)
            or not isinstance(max_retry_after, int | float)
            or not math.isfinite(max_retry_after)
            or max_retry_after <= 0
        ):
            raise ValueError(
                f"max_retry_after must be a finite number of seconds > 0, got {max_retry_after!r}"
            )
        if breaker is None and registry is None:
            raise ValueError(
                "a breaker transport needs breaker=CircuitBreaker() or registry=BreakerRegistry()"
            )
        if breaker is not None and registry is not None:
            raise ValueError("pass either breaker= or registry=, not both")
        if breaker is not None and (name is not None or key is not None):
            raise ValueError("name= and key= choose a breaker from registry=; not with breaker=")
        if name is not None and key is not None:
            raise ValueError("pass either name= (one breaker) or key= (a name per request)")
        if registry is not None and name is not None:
            registry.get(name)  # a strict registry refuses an unknown name now, not per request
        self.breaker = breaker
        self.registry = registry
        self.name = name
        self.key = _authority if key is None and name is None else key
        self.is_failure = default_is_failure if is_failure is None else is_failure
        self.max_retry_after = float(max_retry_after)

    def begin(self, request: httpx.Request) -> Attempt:
        """Admit the request, or raise the breaker's refusal as an httpx error."""
        breaker = self.breaker
        if breaker is None:
            # Per request, not cached: a registry that was shut down hands out fresh breakers.
            assert self.registry is not None
            if self.key is None:
                assert self.name is not None
                name = self.name
            else:
                name = self.key(request)
                if not isinstance(name, str):
                    raise TypeError(f"key(request) must return a str, got {name!r}")
            breaker = self.registry.get(name)
        try:
            return breaker.begin()
        except CircuitOpenError as exc:
            raise HTTPCircuitOpenError(exc.name, exc.retry_after, request=request) from None
        except CapacityExceededError as exc:
            raise HTTPCapacityExceededError(exc.name, exc.capacity, request=request) from None
        except BreakerShutdownError as exc:
            raise HTTPBreakerShutdownError(exc.name, request=request) from None

    def settle_error(self, attempt: Attempt, exc: BaseException) -> None:
        """Settle an attempt whose request or body raised `exc` (which the caller re-raises)."""
        if not isinstance(exc, Exception):
            attempt.failed(exc)  # a cancellation: counted as neither, a trial's permit goes back
            return
        try:
            failure = self.is_failure(exc)
        except BaseException:
            attempt.cancelled()
            raise
        if failure:
            attempt.failed(exc)
        else:
            attempt.succeeded()

    def settle_response(
        self, attempt: Attempt, request: httpx.Request, response: httpx.Response
    ) -> bool:
        """Settle a failing response now (True); False means: settle it when its body ends."""
        try:
            failure = self.is_failure(response)
        except BaseException:
            attempt.cancelled()
            raise
        if failure:
            error = httpx.HTTPStatusError(
                f"{response.status_code} {response.reason_phrase} from {request.url}",
                request=request,
                response=response,
            )
            attempt.failed(error, open_for=self.open_for(response))
            return True
        if response.is_closed or response.is_stream_consumed:
            attempt.succeeded()  # the body was read already (Response(content=...)): it is over
            return True
        return False

    def open_for(self, response: httpx.Response) -> float | None:
        if response.status_code not in _RETRY_AFTER_STATUSES:
            return None
        value = response.headers.get("retry-after")
        if value is None:
            return None
        seconds = parse_retry_after(value)
        if not seconds:  # invalid, or nothing to wait for
            return None
        return min(seconds, self.max_retry_after)


# ---------------------------------------------------------------------------------- streams


class _SettlesOnce:
    """What a response body settles: its attempt, let go of as soon as it is settled.

    httpx keeps every response in a reference cycle (response, stream, response), so whatever
    the body still refers to waits for the cyclic garbage collector with it. Letting go of the
    attempt frees it, and its ticket, when the body ends: two objects per request fewer for
    the collector, which otherwise runs more often and longer under load.
    """

    _attempt: Attempt | None
    _policy: _Policy

    def _succeeded(self) -> None:
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            attempt.succeeded()

    def _failed(self, error: BaseException) -> None:
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            self._policy.settle_error(attempt, error)


class _AsyncSettlingStream(_SettlesOnce, httpx.AsyncByteStream):
    """The response body; settles the attempt when it ends, fails, or is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, attempt: Attempt, policy: _Policy) -> None:
        self._stream = stream
        self._attempt = attempt
        self._policy = policy

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _AsyncSettlingIterator(self._stream.__aiter__(), self)

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        except BaseException as exc:
            self._failed(exc)
            raise
        self._succeeded()  # nothing left to do if the body already settled it


class _AsyncSettlingIterator:
    # A plain iterator, not an async generator: a caller that stops early leaves no generator
    # to be finalized later, at a moment nobody chose.
    __slots__ = ("_body", "_chunks")

    def __init__(self, chunks: AsyncIterator[bytes], body: _AsyncSettlingStream) -> None:
        self._chunks = chunks
        self._body = body

    def __aiter__(self) -> _AsyncSettlingIterator:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            self._body._succeeded()
            raise
        except BaseException as exc:
            self._body._failed(exc)
            raise


class _SettlingStream(_SettlesOnce, httpx.SyncByteStream):
    """The sync response body; settles the attempt when it ends, fails, or is closed."""

    def __init__(self, stream: httpx.SyncByteStream, attempt: Attempt, policy: _Policy) -> None:
        self._stream = stream
        self._attempt = attempt
        self._policy = policy

    def __iter__(self) -> Iterator[bytes]:
        return _SettlingIterator(iter(self._stream), self)

    def close(self) -> None:
        try:
            self._stream.close()
        except BaseException as exc:
            self._failed(exc)
            raise
        self._succeeded()


class _SettlingIterator:
    __slots__ = ("_body", "_chunks")

    def __init__(self, chunks: Iterator[bytes], body: _SettlingStream) -> None:
        self._chunks = chunks
        self._body = body

    def __iter__(self) -> _SettlingIterator:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except StopIteration:
            self._body._succeeded()
            raise
        except BaseException as exc:
            self._body._failed(exc)
            raise


# ---------------------------------------------------------------------------------- transports


class AsyncBreakerTransport(httpx.AsyncBaseTransport):
    """An async httpx transport that sends each request through a circuit breaker.

    `transport`: the transport to wrap, default `httpx.AsyncHTTPTransport()`; closing this one
    closes it. The breaker: `breaker`, or `registry` with `name` (one breaker), `key`
    (`key(request) -> name`) or neither (one breaker per `host[:port]`). `is_failure`: see
    `default_is_failure`. `max_retry_after`: the longest an upstream's `Retry-After` may keep
    the breaker open, in seconds.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        breaker: CircuitBreaker | None = None,
        registry: BreakerRegistry | None = None,
        name: str | None = None,
        key: Callable[[httpx.Request], str] | None = None,
        is_failure: IsFailure | None = None,
        max_retry_after: float = 300.0,
    ) -> None:
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(
                f"transport must be an httpx.AsyncBaseTransport or None, got {transport!r}"
            )
        self._policy = _Policy(
            breaker=breaker,
            registry=registry,
            name=name,
            key=key,
            is_failure=is_failure,
            max_retry_after=max_retry_after,
        )
        self._transport = httpx.AsyncHTTPTransport() if transport is None else transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        policy = self._policy
        attempt = policy.begin(request)
        response: httpx.Response | None = None
        raised: BaseException | None = None
        try:
            async with attempt.time_limit():
                try:
                    response = await self._transport.handle_async_request(request)
                except BaseException as exc:
                    raised = exc
                    raise
        except CallTimeoutError as exc:
            if exc is raised:  # the wrapped transport's own error, not our time limit
                policy.settle_error(attempt, exc)
                raise
            if response is not None:  # it swallowed the cancellation and answered too late
                await response.aclose()
            timeout = HTTPCallTimeoutError(exc.name, exc.timeout, request=request)
            attempt.failed(timeout)
            raise timeout from exc.__cause__
        except BaseException as exc:
            policy.settle_error(attempt, exc)
            raise
        assert response is not None
        if policy.settle_response(attempt, request, response):
            return response
        stream = response.stream
        if isinstance(stream, httpx.AsyncByteStream):
            response.stream = _AsyncSettlingStream(stream, attempt, policy)
        else:  # pragma: no cover - a broken inner transport; its body cannot be awaited
            attempt.succeeded()
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()


class BreakerTransport(httpx.BaseTransport):
    """A sync httpx transport that sends each request through a circuit breaker.

    As `AsyncBreakerTransport`, wrapping `httpx.HTTPTransport()` by default, except that the
    breaker's `timeout` does not apply: a thread cannot be cancelled. httpx's `timeout=` does.
    """

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        breaker: CircuitBreaker | None = None,
        registry: BreakerRegistry | None = None,
        name: str | None = None,
        key: Callable[[httpx.Request], str] | None = None,
        is_failure: IsFailure | None = None,
        max_retry_after: float = 300.0,
    ) -> None:
        if transport is not None and not isinstance(transport, httpx.BaseTransport):
            raise TypeError(f"transport must be an httpx.BaseTransport or None, got {transport!r}")
        self._policy = _Policy(
            breaker=breaker,
            registry=registry,
            name=name,
            key=key,
            is_failure=is_failure,
            max_retry_after=max_retry_after,
        )
        self._transport = httpx.HTTPTransport() if transport is None else transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        policy = self._policy
        attempt = policy.begin(request)
        try:
            response = self._transport.handle_request(request)
        except BaseException as exc:
            policy.settle_error(attempt, exc)
            raise
        if policy.settle_response(attempt, request, response):
            return response
        stream = response.stream
        if isinstance(stream, httpx.SyncByteStream):
            response.stream = _SettlingStream(stream, attempt, policy)
        else:  # pragma: no cover - a broken inner transport; its body cannot be iterated
            attempt.succeeded()
        return response

    def close(self) -> None:
        self._transport.close()
