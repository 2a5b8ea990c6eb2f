"""httpx transports that send every request through a circuit breaker.

    transport = AsyncBreakerTransport(registry=registry)     # one breaker per upstream address
    client = httpx.AsyncClient(transport=transport)

`AsyncBreakerTransport` and `BreakerTransport` wrap the next transport (httpx's default one when
none is given), as httpx recommends for cross-cutting behaviour. Entering and leaving one
(`with`, `async with`, or the client's own) enters and leaves the transport it wraps.

Which breaker: `breaker=` (one for every request), or a registry with `name=` (one named breaker)
or `key=` (`key(request) -> name`, one breaker per name). A registry alone gives one breaker per
upstream address, named `host[:port]` with one spelling per address: lower case, IDNA-encoded,
no user info, no trailing dot, the scheme's default port left out, an IPv4 address as a dotted
quad whichever form the resolver would read (`127.1`, `2130706433`, `0x7f.1`,
`[::ffff:127.0.0.1]` are all `127.0.0.1`), an IPv6 one compressed (`"[::1]:8000"`). So nobody
steps around an open breaker by spelling its host another way. The scheme is not part of the
name, so `http://auth` and `https://auth` share one breaker: one host, one service, one health.
With `name=`, the registry is asked for the breaker once at construction, so that a strict
registry refuses an unknown name there; every request then asks it again, so that a registry
that was shut down (the app's lifespan ended) hands out fresh ones.

What counts: `is_failure(outcome) -> bool`, called with the `httpx.Response` once its headers
arrive, or with the `Exception` the wrapped transport (or the body stream) raised. The default,
`default_is_failure`, counts every 5xx response, 429, and every `httpx.TransportError` that may
come from the upstream (httpx's timeouts included). A 429 counts because the upstream is
shedding our load: sending more makes it worse. If an upstream rate-limits per end user, one
user's 429s must not open the breaker for all: exclude it,
`is_failure=lambda o: default_is_failure(o) and getattr(o, "status_code", 0) != 429`.
An outcome `is_failure` does not count is a success when the upstream answered or was reached
(a response; a transport error it excuses, such as a long poll's read timeout), and counts as
neither when the upstream had no part in it: the request was never sent (`UnsupportedProtocol`
for an `ftp://` URL, `InvalidURL`, `LocalProtocolError`, `PoolTimeout` while waiting for one of
our own pool's connections), a breaker refused it (an inner breaker transport's
`HTTPCircuitOpenError`...), or the caller's own code raised (a request body generator). The
engine's `error_filter` still applies on top. The breaker's own timeout is always a failure.

A failing response is returned unchanged: the caller still reads its 503. A successful one is
settled when its body ends: a success when it is read to the end or closed early (the caller saw
nothing wrong), a failure when reading it raises an error `is_failure` counts (a `ReadError`
half-way), not counted at all when the caller is cancelled. Close every response (httpx asks the
same): one that is garbage collected unclosed is settled then, as cancelled (its `capacity`
slot and half-open trial permit go back), with a `ResourceWarning` naming the breaker.

`Retry-After`: when a failing 429 or 503 carries one (seconds or an HTTP-date) and that failure
opens the breaker, the breaker stays open at least that long, at most `max_retry_after` seconds.

Errors: every refusal is an `httpx.TransportError`, so code that already handles an unreachable
upstream handles a refused request too, and also a `BreakerError`, so the 503 middleware and
`except CircuitOpenError` see it:

    HTTPCircuitOpenError          CircuitOpenError + httpx.TransportError      (request not sent)
    HTTPCapacityExceededError     CapacityExceededError + httpx.TransportError (request not sent)
    HTTPBreakerShutdownError      BreakerShutdownError + httpx.TransportError  (request not sent)
    HTTPUnknownBreakerError       UnknownBreakerError + httpx.TransportError   (request not sent)
    HTTPRegistryFullError         RegistryFullError + httpx.TransportError     (request not sent)
    HTTPNameTooLongError          NameTooLongError + httpx.TransportError      (request not sent)
    HTTPCallTimeoutError          CallTimeoutError + httpx.TimeoutException    (request cancelled)

What the library writes about a request (the `HTTPStatusError` of a failing response, which
failure events carry; warnings) shows its URL without user info, query or fragment.

Timeouts: the breaker's time limit (`timeout`, or a trial's limit in half-open) bounds the wait
for the response headers; the body is bounded by httpx's own read timeout, since a stream may
legitimately run long. A trial whose headers came within its limit is judged by how its body
ends, however long that takes. `AsyncBreakerTransport` cancels a request whose headers do not
come in time. `BreakerTransport` cannot cancel a thread: a request in the closed state is judged
by its answer however long it took, and a half-open trial whose headers come after the trial
limit counts as a timeout (the breaker reopens) though its response is still returned. Bound
sync requests with httpx's `timeout=`; its errors are failures.
The breaker's `fallback` never runs for a transport: catch the errors above instead. The async
transport needs asyncio (not trio).
"""

from __future__ import annotations

import collections
import email.utils
import functools
import ipaddress
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import UTC
from types import TracebackType
from typing import Self

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(
        "fastapi_breaker.httpx needs httpx: pip install 'fastapi_breaker[httpx]'"
    ) from exc

from ._attempt import Attempt
from ._breaker import CircuitBreaker
from ._errors import (
    BreakerError,
    BreakerShutdownError,
    CallTimeoutError,
    CapacityExceededError,
    CircuitOpenError,
)
from ._options import check_seconds
from ._registry import (
    BreakerRegistry,
    NameTooLongError,
    RegistryFullError,
    UnknownBreakerError,
)

__all__ = [
    "AsyncBreakerTransport",
    "BreakerTransport",
    "HTTPBreakerShutdownError",
    "HTTPCallTimeoutError",
    "HTTPCapacityExceededError",
    "HTTPCircuitOpenError",
    "HTTPNameTooLongError",
    "HTTPRegistryFullError",
    "HTTPUnknownBreakerError",
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


class HTTPUnknownBreakerError(UnknownBreakerError, httpx.TransportError):
    """A strict registry has no breaker by the name `key(request)` gave: the request was not
    sent."""

    def __init__(
        self, name: str, known: Iterable[str], *, request: httpx.Request | None = None
    ) -> None:
        httpx.TransportError.__init__(self, "", request=request)
        self.args = (name, tuple(sorted(known)))


class HTTPRegistryFullError(RegistryFullError, httpx.TransportError):
    """The registry holds `max_breakers` breakers, none of which may be forgotten, so it made no
    breaker for this request's name: the request was not sent."""

    def __init__(
        self, name: str, max_breakers: int, *, request: httpx.Request | None = None
    ) -> None:
        httpx.TransportError.__init__(self, "", request=request)
        self.args = (name, max_breakers)


class HTTPNameTooLongError(NameTooLongError, httpx.TransportError):
    """The name `key(request)` gave (a host name, by default) is longer than the registry's
    `max_name_length`, so it made no breaker for it: the request was not sent."""

    def __init__(
        self, name: str, max_name_length: int, *, request: httpx.Request | None = None
    ) -> None:
        httpx.TransportError.__init__(self, "", request=request)
        self.args = (name, max_name_length)


class HTTPCallTimeoutError(CallTimeoutError, httpx.TimeoutException):
    """No response headers within the breaker's time limit: the request was cancelled."""

    def __init__(self, name: str, timeout: float, *, request: httpx.Request | None = None) -> None:
        httpx.TimeoutException.__init__(self, "", request=request)
        self.args = (name, timeout)


# ---------------------------------------------------------------------------------- policy


# Errors raised before the upstream could do anything: a URL or scheme the transport cannot
# send, a request that breaks the protocol on our side, a wait for a connection of our own pool
# (which requests to other upstreams may hold: slowness is counted by those requests).
_NOT_SENT = (
    httpx.UnsupportedProtocol,
    httpx.InvalidURL,
    httpx.LocalProtocolError,
    httpx.PoolTimeout,
)


def _may_be_the_upstreams(error: Exception) -> bool:
    """Whether `error` may say something about the upstream: an httpx transport error, except a
    request that was never sent and a breaker's refusal (an inner breaker transport's)."""
    if isinstance(error, BreakerError):
        # An inner breaker's timeout is the upstream being slow; its refusals are not.
        return isinstance(error, CallTimeoutError) and isinstance(error, httpx.TransportError)
    return isinstance(error, httpx.TransportError) and not isinstance(error, _NOT_SENT)


def default_is_failure(outcome: httpx.Response | Exception) -> bool:
    """5xx and 429 responses are failures, and transport errors that may come from the upstream
    (timeouts included); nothing else is.

    Not failures: errors raised before anything was sent (`UnsupportedProtocol`, `InvalidURL`,
    `LocalProtocolError`, `PoolTimeout`: our own pool had no free connection), a breaker's
    refusal (an inner breaker transport's `HTTPCircuitOpenError`...), and any exception that is
    not an `httpx.TransportError` (a request body generator that raises, a misused stream). The
    transport counts those as neither success nor failure.
    """
    if isinstance(outcome, httpx.Response):
        return outcome.status_code >= 500 or outcome.status_code == 429
    return _may_be_the_upstreams(outcome)


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


def _shown_url(url: httpx.URL) -> str:
    """`url` as the library writes it in errors, events and warnings: no user info (a password,
    a token as user name), no query (tokens, personal data) and no fragment."""
    return str(url.copy_with(userinfo=b"", query=None, fragment=None))


_DIGITS = {8: frozenset("01234567"), 10: frozenset("0123456789"), 16: frozenset("0123456789abcdef")}


def _legacy_ipv4(host: str) -> str | None:
    """`host` as a dotted quad if a resolver reads it as an IPv4 address, else None.

    The forms of `inet_aton`, which `getaddrinfo` accepts: one to four parts, each decimal,
    octal (a leading 0) or hex (0x), the last filling the bytes left (`127.1`, `2130706433`,
    `0x7f.1`). `host` is lower case.
    """
    parts = host.split(".")
    if len(parts) > 4:
        return None
    values: list[int] = []
    for part in parts:
        if part.startswith("0x"):
            digits, base = part[2:], 16
        elif part.startswith("0") and len(part) > 1:
            digits, base = part[1:], 8
        else:
            digits, base = part, 10
        if not digits or not _DIGITS[base].issuperset(digits):
            return None
        values.append(int(digits, base))
    *leading, last = values
    if any(value > 255 for value in leading) or last >= 1 << 8 * (5 - len(values)):
        return None
    number = last
    for i, value in enumerate(leading):
        number |= value << 8 * (3 - i)
    return str(ipaddress.IPv4Address(number))


# Cached: parsing an address with `ipaddress` costs microseconds per request. Bounded, since
# hosts may come from user input; a miss costs only the parse.
@functools.lru_cache(maxsize=1024)
def _canonical_host(host: str) -> str:
    """One spelling per address: what the per-host breaker is named after."""
    if ":" in host:  # an IPv6 literal, which httpx has checked
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:  # pragma: no cover - httpx refuses the URL first
            return f"[{host.lower()}]"
        mapped = address.ipv4_mapped  # ::ffff:a.b.c.d is reached as the IPv4 address
        return str(mapped) if mapped is not None else f"[{address.compressed}]"
    host = host.lower()
    if host.endswith("."):  # an absolute name: `auth.example.com.` is `auth.example.com`
        host = host[:-1]
    return _legacy_ipv4(host) or host


def _authority(request: httpx.Request) -> str:
    """The per-host breaker's name, `host[:port]`; httpx leaves out the scheme's default port."""
    url = request.url
    host = url.raw_host.decode("ascii")  # IDNA-encoded by httpx
    if not host:
        raise httpx.UnsupportedProtocol(
            f"Request URL has no host: {_shown_url(url)!r}", request=request
        )
    host = _canonical_host(host)
    port = url.port
    return host if port is None else f"{host}:{port}"


# Attempts of responses collected unclosed while their breaker could not be settled safely
# (see `Attempt.collected`); the next request through any breaker transport settles them.
_ABANDONED: collections.deque[Attempt] = collections.deque()


def _settle_abandoned() -> None:
    while True:
        try:
            attempt = _ABANDONED.popleft()
        except IndexError:  # empty, or another thread took the last one
            return
        attempt.cancelled()


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
        # The engine's check: comparisons, which never overflow on a huge int.
        check_seconds("max_retry_after", max_retry_after)
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
        if _ABANDONED:
            _settle_abandoned()
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
            try:
                breaker = self.registry.get(name)
            except UnknownBreakerError as exc:
                raise HTTPUnknownBreakerError(exc.name, exc.known, request=request) from None
            except RegistryFullError as exc:
                raise HTTPRegistryFullError(exc.name, exc.max_breakers, request=request) from None
            except NameTooLongError as exc:
                raise HTTPNameTooLongError(exc.name, exc.max_name_length, request=request) from None
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
        elif _may_be_the_upstreams(exc):
            attempt.succeeded()  # the upstream was reached: say, a long poll's read timeout
        else:
            attempt.cancelled()  # not the upstream's doing: neither; a trial's permit goes back

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
                f"{response.status_code} {response.reason_phrase} from {_shown_url(request.url)}",
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

    _attempt: Attempt | None = None  # a class default: `__del__` may run after a failed __init__
    _policy: _Policy

    def __del__(self) -> None:
        # Collected with its body neither ended nor closed: nobody else will settle it now. A
        # finalizer runs on whatever thread collected it, at any allocation: settle it if that
        # is safe (else the next request does), and only then warn, since warnings may be
        # errors (then Python reports this one as unraisable, after the release).
        attempt = self._attempt
        if attempt is None:
            return
        self._attempt = None
        if not attempt.collected():
            _ABANDONED.append(attempt)
        warnings.warn(
            f"unclosed response through circuit breaker {attempt.breaker.name!r}: it held the "
            "breaker's capacity slot and half-open trial, if any, until it was garbage "
            "collected; close every response, as httpx asks",
            ResourceWarning,
            stacklevel=1,
            source=self,
        )

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
        if not attempt.answered():
            # No timer fired, but the breaker's clock says the trial's answer came too late.
            attempt.timed_out()
            return response
        if policy.settle_response(attempt, request, response):
            return response
        stream = response.stream
        if isinstance(stream, httpx.AsyncByteStream):
            response.stream = _AsyncSettlingStream(stream, attempt, policy)
        else:  # pragma: no cover - a broken inner transport; its body cannot be awaited
            attempt.succeeded()
        return response

    async def __aenter__(self) -> Self:
        await self._transport.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self._transport.__aexit__(exc_type, exc_value, traceback)

    async def aclose(self) -> None:
        await self._transport.aclose()


class BreakerTransport(httpx.BaseTransport):
    """A sync httpx transport that sends each request through a circuit breaker.

    As `AsyncBreakerTransport`, wrapping `httpx.HTTPTransport()` by default, except that a
    thread cannot be cancelled: the breaker's `timeout` does not apply in the closed state
    (httpx's `timeout=` does), and a half-open trial whose headers come after the trial limit
    counts as a timeout, though its response is still returned. A trial whose headers came in
    time is judged by how its body ends.
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
        if not attempt.answered():
            # A trial whose headers came after its limit: a timeout, though nothing could cancel
            # it. The caller still gets the answer it waited for.
            attempt.timed_out()
            return response
        if policy.settle_response(attempt, request, response):
            return response
        stream = response.stream
        if isinstance(stream, httpx.SyncByteStream):
            response.stream = _SettlingStream(stream, attempt, policy)
        else:  # pragma: no cover - a broken inner transport; its body cannot be iterated
            attempt.succeeded()
        return response

    def __enter__(self) -> Self:
        self._transport.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self._transport.__exit__(exc_type, exc_value, traceback)

    def close(self) -> None:
        self._transport.close()
