"""fastapi_breaker.grpc against a real grpc.aio server on 127.0.0.1 (tests/grpc_server.py)."""

from __future__ import annotations

import asyncio
import gc
import math
import pickle
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import grpc.aio
import pytest

from fastapi_breaker import (
    BreakerRegistry,
    CallTimeoutError,
    CircuitBreaker,
    CircuitOpenError,
    State,
)
from fastapi_breaker.grpc import (
    DEFAULT_FAILURE_CODES,
    BreakerInterceptor,
    GrpcCallTimeoutError,
    GrpcCircuitOpenError,
    insecure_channel,
)
from fastapi_breaker.testing import FakeClock
from tests.grpc_server import Backend

FAILURES = sorted(DEFAULT_FAILURE_CODES, key=lambda code: code.name)
NOT_FAILURES = [
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNIMPLEMENTED,
]


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    server = Backend()
    await server.start()
    yield server
    await server.stop()


def make_breaker(**options: Any) -> CircuitBreaker:
    options.setdefault("volume_threshold", 0)
    options.setdefault("timeout", None)
    options.setdefault("reset_timeout", 20.0)
    return CircuitBreaker(name="S", clock=options.pop("clock", FakeClock()), **options)


PATH = {"path": "interceptor"}


@pytest.fixture(autouse=True, params=["interceptor", "helper"])
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test runs on both paths: `BreakerInterceptor` on a channel built by hand, and the
    channel helper, whose unary-unary calls bypass grpc's interceptors."""
    PATH["path"] = request.param
    yield request.param
    PATH["path"] = "interceptor"


def channel_for(port: int, breaker: CircuitBreaker, **options: Any) -> grpc.aio.Channel:
    target = f"127.0.0.1:{port}"
    if PATH["path"] == "helper":
        return insecure_channel(target, breaker=breaker, **options)
    return grpc.aio.insecure_channel(
        target, interceptors=BreakerInterceptor(breaker=breaker, **options)
    )


async def settled(breaker: CircuitBreaker, calls: int) -> None:
    """Let the loop run until `calls` calls are counted (a stream settles as it ends)."""
    for _ in range(200):
        stats = breaker.stats
        if stats.successes + stats.failures == calls:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{calls} calls not settled: {breaker.stats}")


async def requests(*items: bytes) -> AsyncIterator[bytes]:
    for item in items:
        yield item


async def run(channel: grpc.aio.Channel, kind: str, request: bytes) -> Any:
    """One call of `kind` carrying `request`; returns its response(s) or raises its error."""
    if kind == "UU":
        return await channel.unary_unary("/t.S/UU")(request)
    if kind == "US":
        return [m async for m in channel.unary_stream("/t.S/US")(request)]
    if kind == "SU":
        return await channel.stream_unary("/t.S/SU")(requests(request))
    return [m async for m in channel.stream_stream("/t.S/SS")(requests(request))]


async def read_into(received: list[bytes], call: Any) -> None:
    async for message in call:
        received.append(message)


KINDS = ["UU", "US", "SU", "SS"]
OK = {"UU": b"OK", "US": [b"a", b"b", b"c"], "SU": b"1", "SS": [b"OK"]}


# ------------------------------------------------------------------ outcomes by status code


@pytest.mark.parametrize("kind", KINDS)
async def test_every_kind_of_call_answers_and_counts_a_success(backend: Backend, kind: str) -> None:
    breaker = make_breaker()
    async with channel_for(backend.port, breaker) as channel:
        assert await run(channel, kind, b"ok") == OK[kind]
        await settled(breaker, 1)
    assert (breaker.stats.successes, breaker.stats.failures) == (1, 0)
    assert backend.hits == {kind: 1}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("code", FAILURES, ids=[c.name for c in FAILURES])
async def test_each_failure_code_opens_the_breaker_after_the_volume(
    backend: Backend, kind: str, code: grpc.StatusCode
) -> None:
    breaker = make_breaker(volume_threshold=2)
    async with channel_for(backend.port, breaker) as channel:
        for calls in (1, 2):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await run(channel, kind, b"code:" + code.name.encode())
            assert raised.value.code() == code
            await settled(breaker, calls)
            assert breaker.state is (State.CLOSED if calls == 1 else State.OPEN)
        with pytest.raises(GrpcCircuitOpenError):
            await run(channel, kind, b"ok")
    assert backend.hits == {kind: 2}  # the refused call never reached the server
    assert (breaker.stats.failures, breaker.stats.rejects) == (2, 1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("code", NOT_FAILURES, ids=[c.name for c in NOT_FAILURES])
async def test_codes_that_are_the_callers_business_count_as_successes(
    backend: Backend, kind: str, code: grpc.StatusCode
) -> None:
    breaker = make_breaker()
    async with channel_for(backend.port, breaker) as channel:
        for calls in (1, 2, 3):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await run(channel, kind, b"code:" + code.name.encode())
            assert raised.value.code() == code
            await settled(breaker, calls)
    assert (breaker.stats.successes, breaker.stats.failures) == (3, 0)
    assert breaker.state is State.CLOSED


async def test_is_failure_replaces_the_classification(backend: Backend) -> None:
    seen: list[grpc.StatusCode] = []

    def only_not_found(error: grpc.aio.AioRpcError) -> bool:
        seen.append(error.code())
        return error.code() == grpc.StatusCode.NOT_FOUND

    breaker = make_breaker()
    channel = channel_for(backend.port, breaker, is_failure=only_not_found)
    async with channel:
        for request in (b"code:UNAVAILABLE", b"code:NOT_FOUND"):
            with pytest.raises(grpc.aio.AioRpcError):
                await run(channel, "UU", request)
    assert seen == [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND]
    assert (breaker.stats.successes, breaker.stats.failures) == (1, 1)


async def test_a_call_the_caller_cancels_counts_as_neither(backend: Backend) -> None:
    breaker = make_breaker()
    async with channel_for(backend.port, breaker) as channel:
        call = channel.unary_unary("/t.S/UU")(b"hang")
        task = asyncio.ensure_future(call)
        await asyncio.wait_for(backend.hanging.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(backend.cancellation.wait(), 5)
    stats = breaker.stats
    assert (stats.successes, stats.failures, stats.timeouts) == (0, 0, 0)
    assert backend.cancelled == {"UU": 1}


# ------------------------------------------------------------------ the refusal


async def test_the_refusal_is_a_circuit_open_error_and_an_unavailable_rpc_error(
    backend: Backend,
) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock=clock)
    breaker.open()
    clock.advance(5.5)
    async with channel_for(backend.port, breaker) as channel:
        call = channel.unary_unary("/t.S/UU")(b"ok")
        with pytest.raises(GrpcCircuitOpenError) as raised:
            await call
        assert await call.code() == grpc.StatusCode.UNAVAILABLE
    error = raised.value
    assert isinstance(error, CircuitOpenError)
    assert isinstance(error, grpc.aio.AioRpcError)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details() == "circuit breaker 'S' is open; retry after 14.500s"
    assert error.trailing_metadata() == grpc.aio.Metadata(("retry-after", "15"))
    assert (error.name, error.retry_after) == ("S", 14.5)
    assert str(error) == "circuit 'S' is open; retry after 14.500s"
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.name, copy.retry_after) == (GrpcCircuitOpenError, "S", 14.5)
    assert backend.hits == {}


async def test_the_documented_breaker_call_path_still_works(backend: Backend) -> None:
    # Without the interceptor: `await breaker.call(stub.Method, request)` on a plain channel.
    breaker = make_breaker()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{backend.port}") as channel:
        method = channel.unary_unary("/t.S/UU")
        assert await breaker.call(method, b"abc", timeout=5.0) == b"ABC"
        with pytest.raises(grpc.aio.AioRpcError):
            await breaker.call(method, b"code:UNAVAILABLE")
    assert (breaker.stats.successes, breaker.stats.failures) == (1, 1)


# ------------------------------------------------------------------ deadlines


async def test_the_breakers_timeout_cancels_the_rpc_on_the_wire(backend: Backend) -> None:
    breaker = make_breaker(timeout=0.2, clock=FakeClock())
    async with channel_for(backend.port, breaker) as channel:
        with pytest.raises(GrpcCallTimeoutError) as raised:
            await channel.unary_unary("/t.S/UU")(b"hang", timeout=30.0)
        await asyncio.wait_for(backend.cancellation.wait(), 5)
    error = raised.value
    assert isinstance(error, CallTimeoutError)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert (error.name, error.timeout) == ("S", 0.2)
    assert isinstance(error.__cause__, grpc.aio.AioRpcError)
    assert backend.cancelled == {"UU": 1}
    assert (breaker.stats.failures, breaker.stats.timeouts) == (1, 1)


async def test_the_calls_own_shorter_deadline_is_a_deadline_failure(backend: Backend) -> None:
    breaker = make_breaker(timeout=30.0, clock=FakeClock())
    async with channel_for(backend.port, breaker) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary("/t.S/UU")(b"hang", timeout=0.2)
        await asyncio.wait_for(backend.cancellation.wait(), 5)
    assert type(raised.value) is not GrpcCallTimeoutError
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert (breaker.stats.failures, breaker.stats.timeouts) == (1, 0)


async def call_with_timeout(
    channel: grpc.aio.Channel, kind: str, request: bytes, deadline: float
) -> Any:
    if kind == "UU":
        return await channel.unary_unary("/t.S/UU")(request, timeout=deadline)
    if kind == "US":
        return [m async for m in channel.unary_stream("/t.S/US")(request, timeout=deadline)]
    if kind == "SU":
        return await channel.stream_unary("/t.S/SU")(requests(request), timeout=deadline)
    return [m async for m in channel.stream_stream("/t.S/SS")(requests(request), timeout=deadline)]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_deadline_spent_before_the_call_counts_as_neither(
    backend: Backend, kind: str
) -> None:
    # The caller's doing (a forwarded deadline already used up), not the server's: ten of them
    # must not open a breaker that opens on one failure.
    breaker = make_breaker(timeout=5.0)
    async with channel_for(backend.port, breaker) as channel:
        for _ in range(10):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call_with_timeout(channel, kind, b"ok", -1.0)
            assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(20):
        await asyncio.sleep(0)  # a stream's late settlement would land by now
    assert breaker.state is State.CLOSED
    assert (breaker.stats.fires, breaker.stats.failures, breaker.stats.successes) == (10, 0, 0)


@pytest.mark.parametrize("deadline", [0, 0.0, -0.0, -1e-9])
def test_a_zero_deadline_is_settled_as_neither_before_the_call_starts(deadline: float) -> None:
    # A zero deadline races grpc's own work on a real channel (an answer, DEADLINE_EXCEEDED,
    # INTERNAL, a CancelledError of grpc.aio's), and those races unsettle the grpc calls of
    # the tests after it: what the breaker decides is checked here, before grpc runs at all.
    breaker = make_breaker(timeout=5.0)
    policy = BreakerInterceptor(breaker=breaker)
    details = grpc.aio.ClientCallDetails("/t.S/UU", deadline, None, None, None)
    attempt, sent, limit = policy._begin(details)
    assert attempt.settled
    assert (sent, limit) == (details, None)  # the caller's deadline goes out as it is
    attempt.failed(RuntimeError("what grpc said afterwards"))  # ignored: settled already
    assert (breaker.stats.fires, breaker.stats.failures, breaker.stats.successes) == (1, 0, 0)
    assert breaker.state is State.CLOSED


@pytest.mark.parametrize("kind", KINDS)
async def test_a_nan_deadline_is_refused_naming_it(backend: Backend, kind: str) -> None:
    breaker = make_breaker()
    async with channel_for(backend.port, breaker) as channel:
        with pytest.raises(
            ValueError, match=r"^timeout must be a number of seconds or None, got nan$"
        ):
            await call_with_timeout(channel, kind, b"ok", math.nan)
    assert (breaker.stats.fires, sum(backend.hits.values())) == (0, 0)


async def test_a_stream_is_bounded_by_the_breakers_timeout(backend: Backend) -> None:
    breaker = make_breaker(timeout=0.2, clock=FakeClock())
    async with channel_for(backend.port, breaker) as channel:
        received: list[bytes] = []
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await read_into(received, channel.unary_stream("/t.S/US")(b"hang"))
        await settled(breaker, 1)
        await asyncio.wait_for(backend.cancellation.wait(), 5)
    assert received == [b"a"]
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert (breaker.stats.failures, breaker.stats.timeouts) == (1, 1)


# ------------------------------------------------------------------ pushback


async def test_pushback_keeps_the_breaker_open_that_long_capped(backend: Backend) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock=clock, reset_timeout=1.0)
    channel = channel_for(backend.port, breaker, max_pushback=60.0)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await run(channel, "UU", b"pushback:45000")
        assert breaker.retry_after == 45.0
        breaker.close()
        with pytest.raises(grpc.aio.AioRpcError):
            await run(channel, "UU", b"pushback:900000")
        assert breaker.retry_after == 60.0  # capped by max_pushback
        breaker.close()
        with pytest.raises(grpc.aio.AioRpcError):
            await run(channel, "UU", b"pushback:-5")  # invalid: no pushback
        assert breaker.retry_after == 1.0


async def test_pushback_at_the_end_of_a_stream(backend: Backend) -> None:
    breaker = make_breaker(reset_timeout=1.0)
    async with channel_for(backend.port, breaker) as channel:
        received: list[bytes] = []
        with pytest.raises(grpc.aio.AioRpcError):
            await read_into(received, channel.unary_stream("/t.S/US")(b"pushback:45000"))
        await settled(breaker, 1)
    assert received == [b"a", b"b", b"c"]
    assert breaker.retry_after == 45.0


# ------------------------------------------------------------------ a dead server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_dead_server_opens_the_breaker_and_a_trial_closes_it() -> None:
    port = free_port()
    clock = FakeClock()
    registry = BreakerRegistry(
        defaults={"volume_threshold": 0, "timeout": None, "reset_timeout": 20.0}, clock=clock
    )
    target = f"127.0.0.1:{port}"
    async with insecure_channel(target, registry) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await run(channel, "UU", b"ok")  # connection refused
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        breaker = registry.get(target)
        assert breaker.state is State.OPEN
        backend = Backend()
        await backend.start(port)
        try:
            with pytest.raises(GrpcCircuitOpenError):
                await run(channel, "UU", b"ok")
            assert backend.hits == {}
            clock.advance(20.0)
            assert breaker.state is State.HALF_OPEN
            # The channel may still be backing off its last failed connection: wait_for_ready
            # lets the trial wait for the server rather than fail at once.
            call = channel.unary_unary("/t.S/UU")(b"ok", wait_for_ready=True)
            assert await call == b"OK"
            assert breaker.state is State.CLOSED
            assert backend.hits == {"UU": 1}
        finally:
            await backend.stop()


# ------------------------------------------------------------------ streams


@pytest.mark.parametrize("kind", ["US", "SS"])
async def test_an_error_mid_stream_is_a_failure(backend: Backend, kind: str) -> None:
    breaker = make_breaker()
    async with channel_for(backend.port, breaker) as channel:
        received: list[bytes] = []
        if kind == "US":
            call: Any = channel.unary_stream("/t.S/US")(b"code:INTERNAL")
        else:
            call = channel.stream_stream("/t.S/SS")(requests(b"ok", b"code:INTERNAL", b"ok"))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await read_into(received, call)
        await settled(breaker, 1)
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert received == ([b"a", b"b", b"c"] if kind == "US" else [b"OK", b"CODE:INTERNAL"])
    assert (breaker.stats.successes, breaker.stats.failures) == (0, 1)
    assert breaker.state is State.OPEN


@pytest.mark.parametrize("kind", ["US", "SS"])
async def test_a_stream_the_caller_stops_reading_and_cancels_is_not_a_failure(
    backend: Backend, kind: str
) -> None:
    breaker = make_breaker(capacity=1)
    async with channel_for(backend.port, breaker) as channel:
        if kind == "US":
            call: Any = channel.unary_stream("/t.S/US")(b"hang")
        else:
            call = channel.stream_stream("/t.S/SS")(requests(b"hang"))
        async for message in call:
            assert message in (b"a", b"HANG")
            break
        call.cancel()
        await asyncio.wait_for(backend.cancellation.wait(), 5)
        # The capacity slot came back: the next call is admitted.
        assert await run(channel, "UU", b"ok") == b"OK"
    assert (breaker.stats.successes, breaker.stats.failures) == (1, 0)


async def test_an_abandoned_stream_gives_its_trial_back_when_its_channel_closes(
    backend: Backend,
) -> None:
    # grpc keeps an RPC nobody reads or cancels open (dropping the call does not end it), until
    # its deadline or its channel's close; the trial permit comes back then.
    clock = FakeClock()
    breaker = make_breaker(clock=clock)
    breaker.open()
    clock.advance(20.0)
    channel = channel_for(backend.port, breaker)
    call: Any = channel.unary_stream("/t.S/US")(b"hang")
    assert await call.read() == b"a"  # the trial is running
    with pytest.raises(GrpcCircuitOpenError):
        await run(channel, "UU", b"ok")  # the only trial permit is taken
    del call
    gc.collect()
    await channel.close()
    await asyncio.wait_for(backend.cancellation.wait(), 5)
    assert breaker.state is State.HALF_OPEN
    async with channel_for(backend.port, breaker) as again:
        assert await run(again, "UU", b"ok") == b"OK"  # a new trial, admitted
    assert breaker.state is State.CLOSED


async def test_a_stream_unary_call_with_writes_is_settled_when_it_ends(backend: Backend) -> None:
    breaker = make_breaker()
    async with channel_for(backend.port, breaker) as channel:
        call: Any = channel.stream_unary("/t.S/SU")()
        await call.write(b"ok")
        await call.write(b"ok")
        await call.done_writing()
        assert await call == b"2"
        await settled(breaker, 1)
    assert breaker.stats.successes == 1


# ------------------------------------------------------------------ choosing the breaker


async def test_one_breaker_per_target_by_default(backend: Backend) -> None:
    other = Backend()
    await other.start()
    registry = BreakerRegistry(defaults={"volume_threshold": 0, "timeout": None})
    first, second = f"127.0.0.1:{backend.port}", f"127.0.0.1:{other.port}"
    try:
        async with insecure_channel(first, registry) as a, insecure_channel(second, registry) as b:
            with pytest.raises(grpc.aio.AioRpcError):
                await run(a, "UU", b"code:UNAVAILABLE")
            assert await run(b, "UU", b"ok") == b"OK"
        assert registry.get(first).state is State.OPEN
        assert registry.get(second).state is State.CLOSED
    finally:
        await other.stop()


async def test_a_breaker_by_name_or_by_full_method_name(backend: Backend) -> None:
    registry = BreakerRegistry(defaults={"volume_threshold": 0, "timeout": None})
    methods: list[str] = []

    def by_method(method: str) -> str:
        methods.append(method)
        return method.rsplit("/", 1)[1]

    target = f"127.0.0.1:{backend.port}"
    async with (
        insecure_channel(target, registry, name="named") as named,
        insecure_channel(target, registry, key=by_method) as keyed,
    ):
        with pytest.raises(grpc.aio.AioRpcError):
            await run(named, "UU", b"code:UNAVAILABLE")
        with pytest.raises(grpc.aio.AioRpcError):
            await run(keyed, "US", b"code:UNAVAILABLE")
        assert await run(keyed, "UU", b"ok") == b"OK"
        await settled(registry.get("US"), 1)
    assert methods == ["/t.S/US", "/t.S/UU"]
    assert registry.get("named").state is State.OPEN
    assert registry.get("US").state is State.OPEN
    assert registry.get("UU").state is State.CLOSED
    assert target not in registry


# ------------------------------------------------------------------ bad arguments


def test_a_single_object_in_a_list_is_refused_by_grpc_naming_the_fix() -> None:
    interceptor = BreakerInterceptor(breaker=make_breaker())
    assert len(interceptor) == 4
    with pytest.raises(ValueError, match=r"install it with interceptors=interceptor"):
        grpc.aio.insecure_channel("127.0.0.1:1", interceptors=[interceptor])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({}, ValueError, "needs breaker=CircuitBreaker() or registry=BreakerRegistry()"),
        ({"breaker": "S"}, TypeError, "breaker must be a CircuitBreaker or None, got 'S'"),
        ({"registry": {}}, TypeError, "registry must be a BreakerRegistry or None, got {}"),
        ({"registry": "r", "name": ""}, ValueError, "name must be a non-empty string"),
        ({"registry": "r", "target": ""}, ValueError, "target must be a non-empty string"),
        ({"registry": "r", "key": 3}, TypeError, "key must be a callable key(method) -> str"),
        ({"registry": "r", "is_failure": 1}, TypeError, "is_failure must be a callable"),
        ({"registry": "r", "max_pushback": 0}, ValueError, "max_pushback must be a number"),
        ({"registry": "r", "max_pushback": True}, ValueError, "max_pushback must be a number"),
        ({"registry": "r", "max_pushback": float("inf")}, ValueError, "max_pushback must be"),
        (
            {"registry": "r", "max_pushback": 10**400},
            ValueError,
            "max_pushback must be a number of seconds > 0 and <= 31536000 (365 days), got 1000",
        ),
        ({"registry": "r"}, ValueError, "with registry=, pass name=, key= or target="),
        ({"registry": "r", "breaker": "b"}, ValueError, "pass either breaker= or registry="),
        ({"breaker": "b", "name": "x"}, ValueError, "name= and key= choose a breaker"),
        ({"registry": "r", "name": "x", "key": str}, ValueError, "pass either name="),
    ],
)
def test_bad_arguments_are_refused_naming_the_field(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    for field, value in (("registry", BreakerRegistry()), ("breaker", make_breaker())):
        if options.get(field) == field[0]:
            options[field] = value
    with pytest.raises(error) as raised:
        BreakerInterceptor(**options)
    assert message in str(raised.value)


def test_a_strict_registry_refuses_an_unknown_name_at_construction() -> None:
    registry = BreakerRegistry(breakers={"known": {}}, strict=True)
    with pytest.raises(LookupError, match="unknown circuit breaker 'other'"):
        BreakerInterceptor(registry, name="other")
