"""Client interceptors that send every `grpc.aio` call through a circuit breaker.

    channel = insecure_channel("auth:50051", registry)     # one breaker named "auth:50051"
    stub = AuthServiceStub(channel)

or, on a channel you build yourself,

    interceptor = BreakerInterceptor(registry, name="auth")
    channel = grpc.aio.insecure_channel("auth:50051", interceptors=interceptor)

`BreakerInterceptor` is one object for the four kinds of call: unary-unary, unary-stream,
stream-unary and stream-stream.

The channel helpers are the faster path: their `BreakerChannel` sends unary-unary calls through
the breaker without grpc's interceptors (which start a task per call), and installs
`BreakerInterceptor` for the three streaming kinds only.

Which breaker: `breaker=` (one for every call), or a registry with `name=` (one named breaker),
`key=` (`key(method) -> name`, called with the full method name such as
`"/auth.AuthService/Verify"`), or `target=` (one breaker named after the channel's target, as
given; the channel helpers pass it). As for httpx, the registry is asked on every call, so a
registry that was shut down hands out fresh breakers.

What counts: the RPC's status code. `DEFAULT_FAILURE_CODES` are failures: `UNAVAILABLE` (the
server is down or unreachable), `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, `INTERNAL`, `UNKNOWN`,
`DATA_LOSS`. Every other code is the server answering, a success: `INVALID_ARGUMENT`,
`NOT_FOUND`, `PERMISSION_DENIED` and the like are the caller's business. `CANCELLED` counts as
neither (the caller gave up, and a half-open trial's permit goes back), and so does an error
raised on our side before anything was sent. `is_failure(error) -> bool` replaces the default
and is called with the `grpc.aio.AioRpcError` of every non-OK, non-CANCELLED call. The
engine's `error_filter` still applies on top.

When a call ends: a unary response when it arrives; a streaming response when the stream ends,
so an error half-way through is judged by its code like any other, and a caller that stops
reading and cancels the call counts as neither. A stream dropped without being cancelled goes on
(as it does in grpc without the interceptor) and keeps its capacity slot or trial until its
deadline, which the breaker's limit sets, or until its channel closes; it then counts as neither.

Time: the breaker's limit (`timeout`, or the trial limit in half-open) and the call's own
`timeout=` both bound the call: the shorter is sent as the call's deadline, so the RPC is
cancelled on the wire and the server sees it. When the breaker's limit was the shorter, a
`DEADLINE_EXCEEDED` counts as the breaker's timeout, and a unary-unary call raises
`GrpcCallTimeoutError`. A streaming call is bounded as a whole: give long-lived streams a breaker
of their own with a longer `timeout` (or none).

Pushback: a failed call whose trailing metadata carries `grpc-retry-pushback-ms` keeps the
breaker open at least that long, if that failure opens it, at most `max_pushback` seconds.

Refusals: while the breaker is open the RPC is never started. Every refusal is both the
breaker's error and a `grpc.aio.AioRpcError` with code `UNAVAILABLE`, so code that handles gRPC
errors handles it too, and the FastAPI middleware answers `503` with `Retry-After`:

    GrpcCircuitOpenError          CircuitOpenError + AioRpcError(UNAVAILABLE)
    GrpcCapacityExceededError     CapacityExceededError + AioRpcError(UNAVAILABLE)
    GrpcBreakerShutdownError      BreakerShutdownError + AioRpcError(UNAVAILABLE)
    GrpcCallTimeoutError          CallTimeoutError + AioRpcError(DEADLINE_EXCEEDED)

`GrpcCircuitOpenError` carries `retry-after` (whole seconds) in its trailing metadata. A strict
registry's `UnknownBreakerError` and a full registry's `RegistryFullError` are raised as they
are: they are configuration errors, not the server's health. The breaker's `fallback` never runs
for an interceptor: an interceptor must return the call's own response, so catch the errors
above instead.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, overload

try:
    import grpc
    import grpc.aio
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(
        "fastapi_breaker.grpc needs grpcio: pip install 'fastapi_breaker[grpc]'"
    ) from exc

from ._attempt import Attempt
from ._breaker import CircuitBreaker
from ._errors import (
    BreakerShutdownError,
    CallTimeoutError,
    CapacityExceededError,
    CircuitOpenError,
)
from ._options import check_seconds
from ._registry import BreakerRegistry

__all__ = [
    "DEFAULT_FAILURE_CODES",
    "BreakerChannel",
    "BreakerInterceptor",
    "GrpcBreakerShutdownError",
    "GrpcCallTimeoutError",
    "GrpcCapacityExceededError",
    "GrpcCircuitOpenError",
    "IsFailure",
    "default_is_failure",
    "insecure_channel",
    "secure_channel",
]

IsFailure = Callable[[grpc.aio.AioRpcError], bool]
"""`is_failure(error)`: the `AioRpcError` of a call that ended neither OK nor CANCELLED."""

DEFAULT_FAILURE_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
    }
)

_PUSHBACK = "grpc-retry-pushback-ms"


def default_is_failure(error: grpc.aio.AioRpcError) -> bool:
    """Whether the call's status code is one of `DEFAULT_FAILURE_CODES`."""
    return error.code() in DEFAULT_FAILURE_CODES


# ---------------------------------------------------------------------------------- errors
#
# As in fastapi_breaker.httpx: each error keeps the engine error's fields in `args` (`.name`,
# `str()`), and grpc's fields through AioRpcError's own constructor, called explicitly since
# the two constructors take different arguments.


class GrpcCircuitOpenError(CircuitOpenError, grpc.aio.AioRpcError):
    """The breaker is open: the RPC was not started."""

    def __init__(self, name: str, retry_after: float) -> None:
        grpc.aio.AioRpcError.__init__(
            self,
            grpc.StatusCode.UNAVAILABLE,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(("retry-after", str(max(1, math.ceil(retry_after))))),
            f"circuit breaker {name!r} is open; retry after {retry_after:.3f}s",
        )
        self.args = (name, retry_after)

    def __reduce__(self) -> Any:
        return type(self), self.args


class GrpcCapacityExceededError(CapacityExceededError, grpc.aio.AioRpcError):
    """The breaker already runs `capacity` calls: this RPC was not started."""

    def __init__(self, name: str, capacity: int) -> None:
        grpc.aio.AioRpcError.__init__(
            self,
            grpc.StatusCode.UNAVAILABLE,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            f"circuit breaker {name!r} is at capacity ({capacity} concurrent calls)",
        )
        self.args = (name, capacity)

    def __reduce__(self) -> Any:
        return type(self), self.args


class GrpcBreakerShutdownError(BreakerShutdownError, grpc.aio.AioRpcError):
    """The breaker was shut down (the app's lifespan ended): the RPC was not started."""

    def __init__(self, name: str) -> None:
        grpc.aio.AioRpcError.__init__(
            self,
            grpc.StatusCode.UNAVAILABLE,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            f"circuit breaker {name!r} has been shut down",
        )
        self.args = (name,)

    def __reduce__(self) -> Any:
        return type(self), self.args


class GrpcCallTimeoutError(CallTimeoutError, grpc.aio.AioRpcError):
    """The breaker's time limit, shorter than the call's own, passed: the RPC was cancelled."""

    def __init__(self, name: str, timeout: float) -> None:
        grpc.aio.AioRpcError.__init__(
            self,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            f"call through circuit breaker {name!r} timed out after {timeout}s",
        )
        self.args = (name, timeout)

    def __reduce__(self) -> Any:
        return type(self), self.args


# ---------------------------------------------------------------------------------- helpers


def _pushback_seconds(metadata: Any) -> float | None:
    """`grpc-retry-pushback-ms` from trailing metadata, in seconds; None if absent or invalid
    (gRPC's retry design reads a negative or malformed value as "do not retry": no delay)."""
    if not metadata:
        return None
    for key, value in metadata:
        if key == _PUSHBACK:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
            text = text.strip()
            if text.isascii() and text.isdigit() and int(text) > 0:
                return int(text) / 1000.0
            return None
    return None


def _method_name(method: str | bytes) -> str:
    # grpc.aio hands interceptors the method as bytes; the stubs say str.
    return method.decode("utf-8", "replace") if isinstance(method, bytes) else method


# Attempts of calls collected by the garbage collector while their breaker could not be settled
# safely (see `Attempt.collected`); the next call through any interceptor settles them.
_ABANDONED: collections.deque[Attempt] = collections.deque()


def _settle_abandoned() -> None:
    while True:
        try:
            attempt = _ABANDONED.popleft()
        except IndexError:
            return
        attempt.cancelled()


# Tasks that read a finished stream's status: held here so that none is collected while pending.
_SETTLING: set[asyncio.Task[None]] = set()


# ---------------------------------------------------------------------------------- interceptor


class BreakerInterceptor(Sequence[grpc.aio.ClientInterceptor]):
    """`grpc.aio` client interceptors that send each call through a circuit breaker.

    A sequence of four interceptors, one per kind of call, since a `grpc.aio` channel files
    each interceptor under one kind only: install it with `interceptors=interceptor`, or
    `interceptors=[*interceptor, ...]` beside others. `interceptors=[interceptor]` fails at
    once with grpc's ValueError, rather than leaving streams unprotected.

    The breaker: `breaker`, or `registry` with `name` (one breaker), `key` (`key(method) ->
    name`) or `target` (one breaker named after the channel's target). `is_failure`: see
    `default_is_failure`. `max_pushback`: the longest a server's `grpc-retry-pushback-ms` may
    keep the breaker open, in seconds.
    """

    def __init__(
        self,
        registry: BreakerRegistry | None = None,
        *,
        breaker: CircuitBreaker | None = None,
        name: str | None = None,
        key: Callable[[str], str] | None = None,
        target: str | None = None,
        is_failure: IsFailure | None = None,
        max_pushback: float = 300.0,
    ) -> None:
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"breaker must be a CircuitBreaker or None, got {breaker!r}")
        if registry is not None and not isinstance(registry, BreakerRegistry):
            raise TypeError(f"registry must be a BreakerRegistry or None, got {registry!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name must be a non-empty string or None, got {name!r}")
        if target is not None and (not isinstance(target, str) or not target):
            raise ValueError(f"target must be a non-empty string or None, got {target!r}")
        if key is not None and not callable(key):
            raise TypeError(f"key must be a callable key(method) -> str or None, got {key!r}")
        if is_failure is not None and not callable(is_failure):
            raise TypeError(
                f"is_failure must be a callable is_failure(error) -> bool or None, "
                f"got {is_failure!r}"
            )
        # The engine's check: comparisons, which never overflow on a huge int.
        check_seconds("max_pushback", max_pushback)
        if breaker is None and registry is None:
            raise ValueError(
                "a breaker interceptor needs breaker=CircuitBreaker() or registry=BreakerRegistry()"
            )
        if breaker is not None and registry is not None:
            raise ValueError("pass either breaker= or registry=, not both")
        if breaker is not None and (name is not None or key is not None):
            raise ValueError("name= and key= choose a breaker from registry=; not with breaker=")
        chosen = [option for option, value in (("name", name), ("key", key)) if value is not None]
        if len(chosen) > 1:
            raise ValueError("pass either name= (one breaker) or key= (a name per method)")
        if registry is not None and not chosen and target is None:
            raise ValueError(
                "with registry=, pass name=, key= or target= (insecure_channel() and "
                "secure_channel() pass the channel's target)"
            )
        if registry is not None and name is None and key is None:
            name = target  # one breaker per channel target
        if registry is not None and name is not None:
            registry.get(name)  # a strict registry refuses an unknown name now, not per call
        self.breaker = breaker
        self.registry = registry
        self.name = name
        self.key = key
        self.is_failure: IsFailure = default_is_failure if is_failure is None else is_failure
        self.max_pushback = float(max_pushback)
        self._kinds: tuple[grpc.aio.ClientInterceptor, ...] = (
            _UnaryUnary(self),
            _UnaryStream(self),
            _StreamUnary(self),
            _StreamStream(self),
        )

    @overload
    def __getitem__(self, index: int) -> grpc.aio.ClientInterceptor: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[grpc.aio.ClientInterceptor]: ...

    def __getitem__(
        self, index: int | slice
    ) -> grpc.aio.ClientInterceptor | Sequence[grpc.aio.ClientInterceptor]:
        return self._kinds[index]

    def __len__(self) -> int:
        return len(self._kinds)

    def __repr__(self) -> str:
        # grpc's ValueError for `interceptors=[interceptor]` shows this: say how to install it.
        return (
            "<BreakerInterceptor: four interceptors, one per kind of call; install it with "
            "interceptors=interceptor or interceptors=[*interceptor]>"
        )

    # -------------------------------------------------------------- admission

    def _breaker_for(self, method: str | bytes) -> CircuitBreaker:
        if self.breaker is not None:
            return self.breaker
        assert self.registry is not None
        if self.key is not None:
            name = self.key(_method_name(method))
            if not isinstance(name, str):
                raise TypeError(f"key(method) must return a str, got {name!r}")
        else:
            assert self.name is not None
            name = self.name
        return self.registry.get(name)

    def _begin(
        self, details: grpc.aio.ClientCallDetails
    ) -> tuple[Attempt, grpc.aio.ClientCallDetails, float | None]:
        """Admit the call, or raise the refusal; returns the attempt, the call details with the
        deadline to send, and the breaker's limit if it is the shorter one (else None)."""
        if _ABANDONED:
            _settle_abandoned()
        spent = details.timeout is not None and _spent(details.timeout)
        breaker = self._breaker_for(details.method)
        try:
            attempt = breaker.begin()
        except CircuitOpenError as exc:
            raise GrpcCircuitOpenError(exc.name, exc.retry_after) from None
        except CapacityExceededError as exc:
            raise GrpcCapacityExceededError(exc.name, exc.capacity) from None
        except BreakerShutdownError as exc:
            raise GrpcBreakerShutdownError(exc.name) from None
        if spent:
            # The caller's deadline had passed before the call (a timeout of 0 or less, a
            # forwarded deadline already used up): grpc ends it DEADLINE_EXCEEDED, the caller's
            # doing, not the server's. Neither success nor failure; nothing later counts it.
            attempt.cancelled()
            return attempt, details, None
        if not breaker.enabled:
            return attempt, details, None
        options = breaker.options
        limit = options.trial_timeout if attempt.trial else options.timeout
        if limit is None or (details.timeout is not None and details.timeout <= limit):
            return attempt, details, None
        details = grpc.aio.ClientCallDetails(
            details.method, limit, details.metadata, details.credentials, details.wait_for_ready
        )
        return attempt, details, limit

    # -------------------------------------------------------------- settlement

    def _settle_error(
        self, attempt: Attempt, error: BaseException, limit: float | None
    ) -> BaseException:
        """Settle a call that ended with `error`; returns the error the caller should see."""
        if not isinstance(error, grpc.aio.AioRpcError):
            # A cancellation, or our own side's error (a request that cannot be serialized,
            # a misused call): the server had no part in it.
            attempt.cancelled()
            return error
        code = error.code()
        if code == grpc.StatusCode.CANCELLED:
            attempt.cancelled()
            return error
        if limit is not None and code == grpc.StatusCode.DEADLINE_EXCEEDED:
            # The deadline sent was the breaker's: its timeout, whatever the server says.
            attempt.timed_out()
            timeout = GrpcCallTimeoutError(attempt.breaker.name, limit)
            timeout.__cause__ = error
            return timeout
        try:
            failure = self.is_failure(error)
        except BaseException:
            attempt.cancelled()
            raise
        if not failure:
            attempt.succeeded()
            return error
        seconds = _pushback_seconds(error.trailing_metadata())
        open_for = None if seconds is None else min(seconds, self.max_pushback)
        attempt.failed(error, open_for=open_for)
        return error

    def _succeeded(self, attempt: Attempt) -> None:
        if attempt.answered():
            attempt.succeeded()
        else:  # the breaker's clock says the trial answered after its limit
            attempt.timed_out()

    def _settle_when_done(self, attempt: Attempt, limit: float | None, call: Any) -> None:
        """Settle a call whose outcome is known only when it ends (a stream, a request stream)."""

        def done(call: Any) -> None:
            if call.cancelled():
                # Cancelled by its caller, or by grpc as it collected the call: maybe inside
                # the garbage collector, where the breaker may be busy; then the next call does.
                if not attempt.collected():
                    _ABANDONED.append(attempt)
                return
            task = asyncio.get_running_loop().create_task(self._read_status(attempt, limit, call))
            _SETTLING.add(task)
            task.add_done_callback(_SETTLING.discard)

        call.add_done_callback(done)

    async def _read_status(self, attempt: Attempt, limit: float | None, call: Any) -> None:
        try:
            code = await call.code()
            if code == grpc.StatusCode.OK:
                self._succeeded(attempt)
                return
            error = grpc.aio.AioRpcError(
                code,
                await call.initial_metadata(),
                await call.trailing_metadata(),
                await call.details(),
            )
        except BaseException:
            attempt.cancelled()
            raise
        self._settle_error(attempt, error, limit)

    async def _start(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        """Start a call whose outcome is settled when it ends; returns grpc's call."""
        attempt, details, limit = self._begin(details)
        try:
            call = await continuation(details, request)
        except BaseException as exc:
            raise self._settle_error(attempt, exc, limit) from None
        self._settle_when_done(attempt, limit, call)
        return call

    # -------------------------------------------------------------- the four kinds of call

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        attempt, details, limit = self._begin(client_call_details)
        try:
            call = await continuation(details, request)
            # Awaited here, not by the caller: the outcome is known without a task of our own,
            # and the caller's own await of the call returns the same response.
            await call
        except BaseException as exc:
            seen = self._settle_error(attempt, exc, limit)
            if seen is exc:
                raise
            raise seen from exc
        self._succeeded(attempt)
        return call

    async def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await self._start(continuation, client_call_details, request)

    async def intercept_stream_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        # Not awaited here: a caller that writes its requests with `call.write()` waits for
        # this interceptor to return the call first.
        return await self._start(continuation, client_call_details, request_iterator)

    async def intercept_stream_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        return await self._start(continuation, client_call_details, request_iterator)


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    __slots__ = ("_policy",)

    def __init__(self, policy: BreakerInterceptor) -> None:
        self._policy = policy

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await self._policy.intercept_unary_unary(continuation, client_call_details, request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    __slots__ = ("_policy",)

    def __init__(self, policy: BreakerInterceptor) -> None:
        self._policy = policy

    async def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await self._policy.intercept_unary_stream(continuation, client_call_details, request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    __slots__ = ("_policy",)

    def __init__(self, policy: BreakerInterceptor) -> None:
        self._policy = policy

    async def intercept_stream_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        return await self._policy.intercept_stream_unary(
            continuation, client_call_details, request_iterator
        )


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    __slots__ = ("_policy",)

    def __init__(self, policy: BreakerInterceptor) -> None:
        self._policy = policy

    async def intercept_stream_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        return await self._policy.intercept_stream_stream(
            continuation, client_call_details, request_iterator
        )


# ---------------------------------------------------------------------------------- channels
#
# grpc.aio runs every intercepted call in a task of its own, which costs more than the breaker's
# own work. The channel helpers therefore install the interceptor for the three streaming kinds
# only, and wrap the channel so that a unary-unary call admits through the breaker itself and
# calls grpc's plain multicallable: grpc keeps such a call on its fast path.


class _RefusedCall(grpc.aio.UnaryUnaryCall):  # type: ignore[type-arg]
    """A call the breaker refused (or that could not start): awaiting it raises the error."""

    __slots__ = ("_error",)

    def __init__(self, error: BaseException) -> None:
        self._error = error

    def __await__(self) -> Any:
        raise self._error
        yield  # pragma: no cover - makes this a generator

    def _status(self) -> grpc.aio.AioRpcError:
        if isinstance(self._error, grpc.aio.AioRpcError):
            return self._error
        return grpc.aio.AioRpcError(
            grpc.StatusCode.UNKNOWN, grpc.aio.Metadata(), grpc.aio.Metadata(), str(self._error)
        )

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def time_remaining(self) -> float | None:
        return None

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        callback(self)

    async def initial_metadata(self) -> Any:
        return self._status().initial_metadata()

    async def trailing_metadata(self) -> Any:
        return self._status().trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        return self._status().code()

    async def details(self) -> str:
        return self._status().details() or ""

    async def wait_for_connection(self) -> None:
        return None


class _UnaryUnaryCall(grpc.aio.UnaryUnaryCall):  # type: ignore[type-arg]
    """grpc's unary-unary call, settling its breaker attempt exactly once: when awaited, or,
    for a call nobody awaits, when it ends."""

    __slots__ = ("_attempt", "_awaited", "_call", "_limit", "_policy")

    def __init__(
        self, policy: BreakerInterceptor, attempt: Attempt, limit: float | None, call: Any
    ) -> None:
        self._policy = policy
        self._attempt = attempt
        self._limit = limit
        self._call = call
        self._awaited = False
        call.add_done_callback(self._ended)

    def __await__(self) -> Any:
        if self._awaited or self._attempt.settled:
            return (yield from self._call.__await__())
        self._awaited = True  # this await settles the attempt, whatever happens
        try:
            response = yield from self._call.__await__()
        except BaseException as exc:
            seen = self._policy._settle_error(self._attempt, exc, self._limit)
            if seen is exc:
                raise
            raise seen from exc
        self._policy._succeeded(self._attempt)
        return response

    def _ended(self, call: Any) -> None:
        if self._awaited or self._attempt.settled:
            return  # the await settles it
        if call.cancelled():
            if not self._attempt.collected():
                _ABANDONED.append(self._attempt)
            return
        # Ended before anyone awaited it: an await may still come in this turn of the loop;
        # if none has by the next, read its status.
        asyncio.get_running_loop().call_soon(self._unawaited)

    def _unawaited(self) -> None:
        if self._awaited or self._attempt.settled:
            return
        task = asyncio.get_running_loop().create_task(
            self._policy._read_status(self._attempt, self._limit, self._call)
        )
        _SETTLING.add(task)
        task.add_done_callback(_SETTLING.discard)

    def cancel(self) -> bool:
        return bool(self._call.cancel())

    def cancelled(self) -> bool:
        return bool(self._call.cancelled())

    def done(self) -> bool:
        return bool(self._call.done())

    def time_remaining(self) -> float | None:
        remaining: float | None = self._call.time_remaining()
        return remaining

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._call.add_done_callback(lambda _call: callback(self))

    async def initial_metadata(self) -> Any:
        return await self._call.initial_metadata()

    async def trailing_metadata(self) -> Any:
        return await self._call.trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        code: grpc.StatusCode = await self._call.code()
        return code

    async def details(self) -> str:
        details: str = await self._call.details()
        return details

    async def wait_for_connection(self) -> None:
        await self._call.wait_for_connection()


class _UnaryUnaryMultiCallable(grpc.aio.UnaryUnaryMultiCallable):  # type: ignore[type-arg]
    """`channel.unary_unary(method)` of a breaker channel: admits each call through the breaker
    and starts it on grpc's plain multicallable."""

    __slots__ = ("_callable", "_method", "_policy")

    def __init__(self, policy: BreakerInterceptor, method: str, callable_: Any) -> None:
        self._policy = policy
        self._method = method
        self._callable = callable_

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> _UnaryUnaryCall | _RefusedCall:
        details = grpc.aio.ClientCallDetails(
            self._method, timeout, metadata, credentials, wait_for_ready
        )
        try:
            attempt, details, limit = self._policy._begin(details)
        except Exception as exc:  # raised when the call is awaited, as grpc's interceptors do
            return _RefusedCall(exc)
        try:
            call = self._callable(
                request,
                timeout=details.timeout,
                metadata=metadata,
                credentials=credentials,
                wait_for_ready=wait_for_ready,
                compression=compression,
            )
        except BaseException as exc:
            raise self._policy._settle_error(attempt, exc, limit) from None
        return _UnaryUnaryCall(self._policy, attempt, limit, call)


def _spent(timeout: float) -> bool:
    """Whether a call's own `timeout` has already passed; a timeout that is no number of seconds
    is refused, naming it (grpc would take NaN as no deadline at all)."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout != timeout:
        raise ValueError(f"timeout must be a number of seconds or None, got {timeout!r}")
    return timeout <= 0


class BreakerChannel(grpc.aio.Channel):
    """A `grpc.aio.Channel` whose calls go through a circuit breaker; `insecure_channel()` and
    `secure_channel()` return one. Unary-unary calls bypass grpc's interceptors (see above);
    every other method is the wrapped channel's, `channel`."""

    def __init__(self, channel: grpc.aio.Channel, interceptor: BreakerInterceptor) -> None:
        self.channel = channel
        self.interceptor = interceptor

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> _UnaryUnaryMultiCallable:
        return _UnaryUnaryMultiCallable(
            self.interceptor, method, self.channel.unary_unary(method, *args, **kwargs)
        )

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.channel.unary_stream(method, *args, **kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.channel.stream_unary(method, *args, **kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.channel.stream_stream(method, *args, **kwargs)

    async def close(self, grace: float | None = None) -> None:
        await self.channel.close(grace)

    async def __aenter__(self) -> BreakerChannel:
        await self.channel.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.channel.__aexit__(*exc_info)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self.channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self.channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self.channel.channel_ready()


def _interceptor(
    target: str, registry: BreakerRegistry | None, options: dict[str, Any]
) -> BreakerInterceptor:
    if "target" not in options and options.get("breaker") is None:
        options = {**options, "target": target}
    return BreakerInterceptor(registry, **options)


def insecure_channel(
    target: str, registry: BreakerRegistry | None = None, **interceptor_options: Any
) -> BreakerChannel:
    """`grpc.aio.insecure_channel(target)` through a breaker: by default one breaker per
    target, named `target`; `interceptor_options` are `BreakerInterceptor`'s."""
    interceptor = _interceptor(target, registry, interceptor_options)
    return BreakerChannel(
        grpc.aio.insecure_channel(target, interceptors=interceptor[1:]), interceptor
    )


def secure_channel(
    target: str,
    credentials: grpc.ChannelCredentials,
    registry: BreakerRegistry | None = None,
    **interceptor_options: Any,
) -> BreakerChannel:
    """`grpc.aio.secure_channel(target, credentials)` through a breaker, as
    `insecure_channel`."""
    interceptor = _interceptor(target, registry, interceptor_options)
    return BreakerChannel(
        grpc.aio.secure_channel(target, credentials, interceptors=interceptor[1:]), interceptor
    )
