"""gRPC calls through a breaker: `await breaker.call(stub.Method, request)`.

grpcio is not installed (and need not be): these tests use a stand-in shaped like `grpc.aio`.
A stub method is a multicallable object; calling it starts the RPC and returns a call object
that is awaitable through `__await__` (it is not a coroutine) and whose await raises an
`AioRpcError` carrying a status `code()`. As in grpc.aio, the RPC runs in its own task that the
call object awaits, so cancelling the awaiting task (the breaker's timeout) cancels the RPC.
Nothing in fastapi_breaker is gRPC-specific: `call()` awaits whatever awaitable it is handed.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import pytest

from fastapi_breaker import CallTimeoutError, CircuitBreaker, CircuitOpenError, State
from fastapi_breaker.testing import FakeClock


class StatusCode(enum.Enum):
    OK = 0
    NOT_FOUND = 5
    UNAVAILABLE = 14
    DEADLINE_EXCEEDED = 4


class AioRpcError(Exception):
    """Stand-in for grpc.aio.AioRpcError: the RPC ended with a non-OK status."""

    def __init__(self, code: StatusCode, details: str) -> None:
        super().__init__(code, details)
        self._code = code
        self._details = details

    def code(self) -> StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class UnaryUnaryCall:
    """Stand-in for grpc.aio.UnaryUnaryCall: awaitable, cancellable, not a coroutine."""

    def __init__(self, rpc: Awaitable[Any]) -> None:
        self._task = asyncio.ensure_future(rpc)

    def __await__(self) -> Generator[Any, None, Any]:
        return self._task.__await__()

    def cancelled(self) -> bool:
        return self._task.cancelled()


class UnaryUnaryMultiCallable:
    """Stand-in for grpc.aio.UnaryUnaryMultiCallable: `stub.Method(request, timeout=...)`."""

    def __init__(self, server: Callable[[Any], Awaitable[Any]]) -> None:
        self._server = server
        self.invocations: list[tuple[Any, float | None, tuple[tuple[str, str], ...]]] = []

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> UnaryUnaryCall:
        self.invocations.append((request, timeout, metadata))
        self.last_call = UnaryUnaryCall(self._server(request))
        return self.last_call


class AuthStub:
    """A generated-stub look-alike with one unary method."""

    def __init__(self, server: Callable[[Any], Awaitable[Any]]) -> None:
        self.Verify = UnaryUnaryMultiCallable(server)


async def answer(request: dict[str, str]) -> dict[str, str]:
    return {"user": request["token"].upper()}


def fail_with(code: StatusCode) -> Callable[[Any], Awaitable[Any]]:
    async def server(request: Any) -> Any:
        raise AioRpcError(code, f"{code.name.lower()} for {request}")

    return server


def make_breaker(clock: FakeClock, **options: Any) -> CircuitBreaker:
    options.setdefault("timeout", None)
    return CircuitBreaker(name="AuthService", clock=clock, reset_timeout=20.0, **options)


async def test_the_stand_in_has_grpc_aios_shape() -> None:
    stub = AuthStub(answer)
    call = stub.Verify({"token": "abc"})
    assert inspect.isawaitable(call)
    assert not inspect.iscoroutine(call)
    assert await call == {"user": "ABC"}


async def test_a_successful_rpc_returns_its_response_and_counts_a_success() -> None:
    breaker = make_breaker(FakeClock())
    stub = AuthStub(answer)
    metadata = (("authorization", "Bearer abc"),)
    response = await breaker.call(stub.Verify, {"token": "abc"}, timeout=5.0, metadata=metadata)
    assert response == {"user": "ABC"}
    assert stub.Verify.invocations == [({"token": "abc"}, 5.0, metadata)]
    assert (breaker.stats.successes, breaker.stats.failures) == (1, 0)


async def test_errors_raised_on_await_are_failures_and_open_the_breaker() -> None:
    breaker = make_breaker(FakeClock(), volume_threshold=2)
    stub = AuthStub(fail_with(StatusCode.UNAVAILABLE))
    for _ in range(2):
        with pytest.raises(AioRpcError) as raised:
            await breaker.call(stub.Verify, {"token": "abc"})
        assert raised.value.code() is StatusCode.UNAVAILABLE
    assert breaker.state is State.OPEN
    with pytest.raises(CircuitOpenError):
        await breaker.call(stub.Verify, {"token": "abc"})
    assert len(stub.Verify.invocations) == 2  # the refused call never started an RPC
    stats = breaker.stats
    assert (stats.failures, stats.rejects) == (2, 1)


async def test_error_filter_excuses_status_codes_that_are_the_callers_fault() -> None:
    # The gRPC analogue of "4xx is not a failure".
    def callers_fault(exc: BaseException) -> bool:
        return isinstance(exc, AioRpcError) and exc.code() is StatusCode.NOT_FOUND

    breaker = make_breaker(FakeClock(), error_filter=callers_fault)
    stub = AuthStub(fail_with(StatusCode.NOT_FOUND))
    with pytest.raises(AioRpcError):
        await breaker.call(stub.Verify, {"token": "nobody"})
    assert (breaker.stats.successes, breaker.stats.failures) == (1, 0)
    assert breaker.state is State.CLOSED


async def test_the_breakers_timeout_cancels_the_rpc() -> None:
    breaker = CircuitBreaker(name="AuthService", timeout=0.01, volume_threshold=10)

    async def hang(request: Any) -> Any:
        await asyncio.Event().wait()

    stub = AuthStub(hang)
    with pytest.raises(CallTimeoutError):
        await breaker.call(stub.Verify, {"token": "abc"})
    with pytest.raises(asyncio.CancelledError):
        await stub.Verify.last_call  # the RPC itself was cancelled, not just abandoned
    assert stub.Verify.last_call.cancelled()
    assert (breaker.stats.timeouts, breaker.stats.failures) == (1, 1)


async def test_a_fallback_answers_while_the_breaker_is_open() -> None:
    breaker = make_breaker(FakeClock())
    breaker.fallback(lambda request, exc: {"user": "anonymous", "because": type(exc).__name__})
    stub = AuthStub(answer)
    breaker.open()
    assert await breaker.call(stub.Verify, {"token": "abc"}) == {
        "user": "anonymous",
        "because": "CircuitOpenError",
    }
    assert stub.Verify.invocations == []
