"""`AsyncBreakerTransport`: requests through a breaker, with httpx's MockTransport upstream."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import math
import pickle
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import respx

from fastapi_breaker import (
    BreakerRegistry,
    BreakerShutdownError,
    CallTimeoutError,
    CapacityExceededError,
    CircuitBreaker,
    CircuitOpenError,
    State,
    UnknownBreakerError,
)
from fastapi_breaker.httpx import (
    AsyncBreakerTransport,
    BreakerTransport,
    HTTPBreakerShutdownError,
    HTTPCallTimeoutError,
    HTTPCapacityExceededError,
    HTTPCircuitOpenError,
    default_is_failure,
    parse_retry_after,
)
from fastapi_breaker.testing import FakeClock

URL = "http://auth:8000/token"


class Upstream:
    """An inner MockTransport handler that counts the requests that reach it."""

    def __init__(self, respond: Callable[[httpx.Request], Any]) -> None:
        self.respond = respond
        self.calls: list[str] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(str(request.url))
        response = self.respond(request)
        if asyncio.iscoroutine(response):
            response = await response
        if isinstance(response, BaseException):
            raise response
        assert isinstance(response, httpx.Response)
        return response


def status(code: int, headers: dict[str, str] | None = None) -> Callable[[httpx.Request], Any]:
    return lambda request: httpx.Response(code, headers=headers, text=f"status {code}")


class Body(httpx.AsyncByteStream):
    """A streamed body: yields `chunks`, then raises `error` or, with `hang`, waits forever."""

    def __init__(self, *chunks: bytes, error: Exception | None = None, hang: bool = False) -> None:
        self.chunks = chunks
        self.error = error
        self.hang = hang
        self.closed = 0
        self.hanging = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.hang:
            self.hanging.set()
            await asyncio.Event().wait()
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        self.closed += 1


def make_breaker(clock: FakeClock, **options: Any) -> CircuitBreaker:
    options.setdefault("timeout", None)
    options.setdefault("reset_timeout", 10.0)
    # These tests open on the first failures; the default volume_threshold (10) has its own.
    options.setdefault("volume_threshold", 0)
    return CircuitBreaker(name="auth", clock=clock, **options)


def client_for(upstream: Upstream, **kwargs: Any) -> httpx.AsyncClient:
    transport = AsyncBreakerTransport(httpx.MockTransport(upstream), **kwargs)
    return httpx.AsyncClient(transport=transport)


def counts(breaker: CircuitBreaker) -> tuple[int, int, int, int]:
    stats = breaker.stats
    return stats.successes, stats.failures, stats.rejects, stats.timeouts


# ------------------------------------------------------------------ classification


async def test_a_2xx_response_is_a_success() -> None:
    breaker = make_breaker(FakeClock())
    upstream = Upstream(status(200))
    async with client_for(upstream, breaker=breaker) as client:
        response = await client.get(URL)
    assert (response.status_code, response.text) == (200, "status 200")
    assert upstream.calls == [URL]
    assert counts(breaker) == (1, 0, 0, 0)


async def test_a_5xx_response_is_a_failure_and_reaches_the_caller_unchanged() -> None:
    breaker = make_breaker(FakeClock(), volume_threshold=10)
    errors: list[BaseException | None] = []
    breaker.on("failure", lambda event: errors.append(event.error))
    upstream = Upstream(status(502))
    async with client_for(upstream, breaker=breaker) as client:
        response = await client.get(URL)
    assert (response.status_code, response.text) == (502, "status 502")
    assert counts(breaker) == (0, 1, 0, 0)
    # The failure event carries httpx's own status error, with the response and the request.
    [error] = errors
    assert isinstance(error, httpx.HTTPStatusError)
    assert error.response.status_code == 502
    assert str(error.request.url) == URL


@pytest.mark.parametrize("code", [400, 401, 404, 409, 422])
async def test_a_4xx_response_is_not_a_failure(code: int) -> None:
    breaker = make_breaker(FakeClock())
    async with client_for(Upstream(status(code)), breaker=breaker) as client:
        response = await client.get(URL)
    assert response.status_code == code
    assert counts(breaker) == (1, 0, 0, 0)
    assert breaker.state is State.CLOSED


async def test_a_429_is_a_failure_even_without_retry_after() -> None:
    breaker = make_breaker(FakeClock())
    async with client_for(Upstream(status(429)), breaker=breaker) as client:
        response = await client.get(URL)
    assert response.status_code == 429
    assert counts(breaker) == (0, 1, 0, 0)
    assert breaker.retry_after == 10.0


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("refused"),
        httpx.ReadError("reset"),
        httpx.RemoteProtocolError("garbage"),
        httpx.ConnectTimeout("slow connect"),
        httpx.ReadTimeout("slow read"),
    ],
)
async def test_transport_errors_are_failures_and_reach_the_caller_as_they_are(
    error: httpx.TransportError,
) -> None:
    breaker = make_breaker(FakeClock(), volume_threshold=10)
    upstream = Upstream(lambda request: error)
    async with client_for(upstream, breaker=breaker) as client:
        with pytest.raises(type(error)) as raised:
            await client.get(URL)
    assert raised.value is error
    # httpx's own timeouts are failures, not the breaker's timeouts.
    assert counts(breaker) == (0, 1, 0, 0)


async def test_an_exception_that_is_not_a_transport_error_counts_as_neither() -> None:
    # A request body generator that raises says nothing about the upstream, good or bad.
    breaker = make_breaker(FakeClock())

    async def body() -> AsyncIterator[bytes]:
        raise ValueError("bad body")
        yield b""  # pragma: no cover

    async with client_for(Upstream(status(200)), breaker=breaker) as client:
        with pytest.raises(ValueError, match="bad body"):
            await client.post(URL, content=body())
    assert counts(breaker) == (0, 0, 0, 0)
    assert breaker.stats.fires == 1


async def test_is_failure_replaces_the_default_for_responses() -> None:
    breaker = make_breaker(FakeClock(), volume_threshold=10)

    def is_failure(outcome: httpx.Response | Exception) -> bool:
        return isinstance(outcome, httpx.Response) and outcome.status_code == 404

    upstream = Upstream(lambda request: httpx.Response(int(request.url.path.strip("/"))))
    async with client_for(upstream, breaker=breaker, is_failure=is_failure) as client:
        for code in (404, 500, 503, 200):
            await client.get(f"http://auth:8000/{code}")
    assert counts(breaker) == (3, 1, 0, 0)


async def test_is_failure_can_excuse_an_exception_which_still_reaches_the_caller() -> None:
    breaker = make_breaker(FakeClock())
    seen: list[object] = []

    def is_failure(outcome: httpx.Response | Exception) -> bool:
        seen.append(outcome)
        return not isinstance(outcome, httpx.ReadTimeout) and default_is_failure(outcome)

    error = httpx.ReadTimeout("long poll")
    async with client_for(Upstream(lambda r: error), breaker=breaker, is_failure=is_failure) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.get(URL)
    assert seen == [error]
    assert counts(breaker) == (1, 0, 0, 0)


async def test_an_is_failure_that_raises_counts_nothing_and_propagates() -> None:
    breaker = make_breaker(FakeClock())

    def is_failure(outcome: httpx.Response | Exception) -> bool:
        raise KeyError("bug in the predicate")

    async with client_for(Upstream(status(200)), breaker=breaker, is_failure=is_failure) as c:
        with pytest.raises(KeyError):
            await c.get(URL)
    stats = breaker.stats
    assert (stats.fires, stats.successes, stats.failures) == (1, 0, 0)  # cancelled


def test_default_is_failure() -> None:
    request = httpx.Request("GET", URL)
    for code, failure in [(200, False), (304, False), (404, False), (429, True), (500, True)]:
        assert default_is_failure(httpx.Response(code, request=request)) is failure
    assert default_is_failure(httpx.ConnectError("x")) is True
    assert default_is_failure(httpx.PoolTimeout("x")) is False  # our own pool, not the upstream
    assert default_is_failure(ValueError("x")) is False
    assert default_is_failure(httpx.StreamConsumed()) is False


# ------------------------------------------------------------------ refusals


async def test_an_open_breaker_refuses_without_sending_the_request() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    upstream = Upstream(status(500))
    async with client_for(upstream, breaker=breaker) as client:
        await client.get(URL)  # one failure at 100% opens it
        assert breaker.state is State.OPEN
        clock.advance(4.0)
        with pytest.raises(HTTPCircuitOpenError) as raised:
            await client.get(URL)
    assert upstream.calls == [URL]  # the second request never reached the upstream
    error = raised.value
    assert isinstance(error, CircuitOpenError)
    assert isinstance(error, httpx.TransportError)
    assert error.name == "auth"
    assert error.retry_after == 6.0
    assert str(error) == "circuit 'auth' is open; retry after 6.000s"
    assert str(error.request.url) == URL
    assert counts(breaker) == (0, 1, 1, 0)


async def test_code_catching_httpx_transport_error_catches_the_open_error() -> None:
    breaker = make_breaker(FakeClock())
    breaker.open()
    upstream = Upstream(status(200))
    async with client_for(upstream, breaker=breaker) as client:
        try:
            await client.get(URL)
        except httpx.TransportError as exc:  # what existing httpx code already catches
            caught: Exception = exc
    assert type(caught) is HTTPCircuitOpenError
    assert upstream.calls == []


async def test_a_half_open_trial_is_settled_when_its_body_ends() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    breaker.open()
    clock.advance(10.0)
    upstream = Upstream(lambda request: httpx.Response(200, stream=Body(b"a", b"b")))
    client = client_for(upstream, breaker=breaker)
    async with client, client.stream("GET", URL) as response:
        assert breaker.state is State.HALF_OPEN  # headers only: the trial is not over
        with pytest.raises(HTTPCircuitOpenError):
            await client.get(URL)  # and its permit is taken
        assert await response.aread() == b"ab"
        assert breaker.state is State.CLOSED
    assert upstream.calls == [URL]


async def test_capacity_refusal_is_a_transport_error_and_sends_nothing() -> None:
    breaker = make_breaker(FakeClock(), capacity=1)
    upstream = Upstream(lambda request: httpx.Response(200, stream=Body(b"x")))
    async with client_for(upstream, breaker=breaker) as client:
        async with client.stream("GET", URL):  # holds the only slot until it is closed
            with pytest.raises(HTTPCapacityExceededError) as raised:
                await client.get(URL)
        response = await client.get(URL)
    assert response.content == b"x"
    error = raised.value
    assert isinstance(error, CapacityExceededError)
    assert isinstance(error, httpx.TransportError)
    assert (error.name, error.capacity) == ("auth", 1)
    assert str(error) == "circuit 'auth' is at capacity (1 concurrent calls)"
    assert str(error.request.url) == URL
    assert len(upstream.calls) == 2
    assert breaker.stats.semaphore_rejections == 1


async def test_a_shut_down_breaker_refuses_with_a_transport_error() -> None:
    breaker = make_breaker(FakeClock())
    breaker.shutdown()
    upstream = Upstream(status(200))
    async with client_for(upstream, breaker=breaker) as client:
        with pytest.raises(HTTPBreakerShutdownError) as raised:
            await client.get(URL)
    error = raised.value
    assert isinstance(error, BreakerShutdownError)
    assert isinstance(error, httpx.TransportError)
    assert error.name == "auth"
    assert str(error) == "circuit 'auth' has been shut down"
    assert str(error.request.url) == URL
    assert upstream.calls == []


async def test_a_disabled_breaker_sends_everything_and_counts_nothing() -> None:
    breaker = make_breaker(FakeClock())
    breaker.disable()
    upstream = Upstream(status(500))
    async with client_for(upstream, breaker=breaker) as client:
        for _ in range(3):
            assert (await client.get(URL)).status_code == 500
    assert len(upstream.calls) == 3
    assert breaker.stats.fires == 0


# ------------------------------------------------------------------ error types


def test_http_circuit_open_error_fields() -> None:
    request = httpx.Request("GET", URL)
    error = HTTPCircuitOpenError("auth", 2.5, request=request)
    assert error.args == ("auth", 2.5)
    assert (error.name, error.retry_after, error.request) == ("auth", 2.5, request)
    assert str(error) == "circuit 'auth' is open; retry after 2.500s"
    copy = pickle.loads(pickle.dumps(HTTPCircuitOpenError("auth", 2.5)))
    assert (type(copy), copy.args) == (HTTPCircuitOpenError, ("auth", 2.5))
    with pytest.raises(RuntimeError, match="request"):
        _ = copy.request  # httpx's own behaviour when no request was attached


def test_http_call_timeout_error_fields() -> None:
    request = httpx.Request("GET", URL)
    error = HTTPCallTimeoutError("auth", 0.5, request=request)
    for base in (CallTimeoutError, TimeoutError, httpx.TimeoutException, httpx.TransportError):
        assert isinstance(error, base)
    assert (error.name, error.timeout, error.request) == ("auth", 0.5, request)
    assert str(error) == "call through circuit 'auth' timed out after 0.5s"
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.args) == (HTTPCallTimeoutError, ("auth", 0.5))


# ------------------------------------------------------------------ the breaker's timeout


async def test_the_breakers_timeout_cancels_the_request_and_counts_a_timeout() -> None:
    breaker = CircuitBreaker(name="auth", timeout=0.01, volume_threshold=10, clock=FakeClock())

    async def hang(request: httpx.Request) -> None:
        await asyncio.Event().wait()

    upstream = Upstream(hang)
    async with client_for(upstream, breaker=breaker) as client:
        with pytest.raises(HTTPCallTimeoutError) as raised:
            await client.get(URL)
    error = raised.value
    assert isinstance(error, httpx.TimeoutException)
    assert isinstance(error, CallTimeoutError)
    assert (error.name, error.timeout) == ("auth", 0.01)
    assert str(error.request.url) == URL
    assert counts(breaker) == (0, 1, 0, 1)
    assert len(upstream.calls) == 1


async def test_a_response_that_comes_after_the_timeout_is_closed_and_dropped() -> None:
    breaker = CircuitBreaker(name="auth", timeout=0.01, volume_threshold=10, clock=FakeClock())
    body = Body(b"late")

    async def swallow_cancellation(request: httpx.Request) -> httpx.Response:
        with contextlib.suppress(asyncio.CancelledError):  # a transport that answers anyway
            await asyncio.Event().wait()
        return httpx.Response(200, stream=body)

    async with client_for(Upstream(swallow_cancellation), breaker=breaker) as client:
        with pytest.raises(HTTPCallTimeoutError):
            await client.get(URL)
    assert body.closed == 1
    assert counts(breaker) == (0, 1, 0, 1)


async def test_an_inner_breakers_timeout_is_a_plain_failure_for_the_outer_breaker() -> None:
    inner = CircuitBreaker(name="inner", timeout=0.01, volume_threshold=10, clock=FakeClock())
    outer = CircuitBreaker(name="outer", timeout=None, volume_threshold=10, clock=FakeClock())

    async def hang(request: httpx.Request) -> None:
        await asyncio.Event().wait()

    errors: list[BaseException | None] = []
    for breaker in (inner, outer):
        breaker.on("failure", lambda event: errors.append(event.error))
    transport = AsyncBreakerTransport(
        AsyncBreakerTransport(httpx.MockTransport(Upstream(hang)), breaker=inner), breaker=outer
    )
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(HTTPCallTimeoutError) as raised:
            await client.get(URL)
    # The outer transport passes the inner one's error on as it is, and counts it.
    assert errors == [raised.value, raised.value]
    assert raised.value.name == "inner"
    assert counts(inner) == (0, 1, 0, 1)
    assert counts(outer) == (0, 1, 0, 0)


async def test_the_callers_cancellation_is_not_counted() -> None:
    breaker = make_breaker(FakeClock(), timeout=5.0)
    reached = asyncio.Event()

    async def hang(request: httpx.Request) -> None:
        reached.set()
        await asyncio.Event().wait()

    async with client_for(Upstream(hang), breaker=breaker) as client:
        task = asyncio.create_task(client.get(URL))
        await reached.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    stats = breaker.stats
    assert (stats.fires, stats.successes, stats.failures, stats.timeouts) == (1, 0, 0, 0)


# ------------------------------------------------------------------ the body


async def test_a_body_that_fails_while_it_streams_is_a_failure() -> None:
    breaker = make_breaker(FakeClock())
    body = Body(b"first half", error=httpx.ReadError("connection reset mid-body"))
    upstream = Upstream(lambda request: httpx.Response(200, stream=body))
    async with client_for(upstream, breaker=breaker) as client:
        with pytest.raises(httpx.ReadError, match="mid-body"):
            await client.get(URL)
        with pytest.raises(HTTPCircuitOpenError):
            await client.get(URL)
    assert counts(breaker) == (0, 1, 1, 0)
    assert len(upstream.calls) == 1


async def test_a_streamed_response_is_counted_only_when_its_body_ends() -> None:
    breaker = make_breaker(FakeClock())
    upstream = Upstream(lambda request: httpx.Response(200, stream=Body(b"a", b"b", b"c")))
    client = client_for(upstream, breaker=breaker)
    async with client, client.stream("GET", URL) as response:
        assert breaker.stats.fires == 0  # admitted, not yet settled
        assert [chunk async for chunk in response.aiter_raw()] == [b"a", b"b", b"c"]
        assert counts(breaker) == (1, 0, 0, 0)
    assert counts(breaker) == (1, 0, 0, 0)  # closing after the end settles nothing more


async def test_a_body_closed_before_its_end_is_a_success() -> None:
    breaker = make_breaker(FakeClock())
    body = Body(b"a", b"b", b"c")
    upstream = Upstream(lambda request: httpx.Response(200, stream=body))
    client = client_for(upstream, breaker=breaker)
    async with client, client.stream("GET", URL) as response:
        async for chunk in response.aiter_raw():
            assert chunk == b"a"
            break
        assert breaker.stats.fires == 0
    assert body.closed == 1  # closing the response closed the inner stream
    assert counts(breaker) == (1, 0, 0, 0)


async def test_a_caller_cancelled_while_reading_the_body_is_not_counted() -> None:
    breaker = make_breaker(FakeClock())
    body = Body(b"a", hang=True)
    upstream = Upstream(lambda request: httpx.Response(200, stream=body))
    async with client_for(upstream, breaker=breaker) as client:
        task = asyncio.create_task(client.get(URL))
        await body.hanging.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    stats = breaker.stats
    assert (stats.fires, stats.successes, stats.failures) == (1, 0, 0)


# ------------------------------------------------------------------ Retry-After


async def test_retry_after_seconds_keeps_the_breaker_open_that_long() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    upstream = Upstream(status(503, {"Retry-After": "120"}))
    async with client_for(upstream, breaker=breaker) as client:
        response = await client.get(URL)
    assert response.headers["Retry-After"] == "120"  # the caller still sees the hint
    assert breaker.retry_after == 120.0
    clock.advance(119.5)
    assert breaker.state is State.OPEN
    clock.advance(0.5)
    assert breaker.state is State.HALF_OPEN


async def test_retry_after_on_a_429_keeps_the_breaker_open_that_long() -> None:
    breaker = make_breaker(FakeClock())
    async with client_for(Upstream(status(429, {"Retry-After": "45"})), breaker=breaker) as c:
        await c.get(URL)
    assert breaker.retry_after == 45.0


async def test_retry_after_as_an_http_date() -> None:
    breaker = make_breaker(FakeClock())
    date = email.utils.formatdate(time.time() + 120, usegmt=True)  # whole seconds: up to 1 s off
    async with client_for(Upstream(status(503, {"Retry-After": date})), breaker=breaker) as c:
        await c.get(URL)
    assert breaker.retry_after is not None
    assert 118.0 < breaker.retry_after <= 120.0


async def test_retry_after_is_clamped_to_max_retry_after() -> None:
    breaker = make_breaker(FakeClock())
    upstream = Upstream(status(503, {"Retry-After": "86400"}))
    async with client_for(upstream, breaker=breaker, max_retry_after=60.0) as client:
        await client.get(URL)
    assert breaker.retry_after == 60.0


async def test_the_default_max_retry_after_is_five_minutes() -> None:
    breaker = make_breaker(FakeClock())
    async with client_for(Upstream(status(503, {"Retry-After": "9" * 400})), breaker=breaker) as c:
        await c.get(URL)
    assert breaker.retry_after == 300.0


@pytest.mark.parametrize(
    ("code", "value"),
    [
        (500, "120"),  # Retry-After means something only on 429 and 503
        (502, "120"),
        (503, "soon"),  # not valid: ignored
        (503, "0"),
        (503, "5"),  # shorter than reset_timeout: reset_timeout wins
        (503, "Wed, 21 Oct 2015 07:28:00 GMT"),  # in the past
    ],
)
async def test_retry_after_that_does_not_apply_leaves_reset_timeout(code: int, value: str) -> None:
    breaker = make_breaker(FakeClock())
    async with client_for(Upstream(status(code, {"Retry-After": value})), breaker=breaker) as c:
        await c.get(URL)
    assert breaker.state is State.OPEN
    assert breaker.retry_after == 10.0


async def test_retry_after_of_a_failed_half_open_trial_reopens_for_that_long() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    breaker.open()
    clock.advance(10.0)
    async with client_for(Upstream(status(503, {"Retry-After": "90"})), breaker=breaker) as c:
        await c.get(URL)
    assert breaker.state is State.OPEN
    assert breaker.retry_after == 90.0


async def test_retry_after_on_a_response_is_filtered_out_does_not_open() -> None:
    breaker = make_breaker(FakeClock())
    upstream = Upstream(status(503, {"Retry-After": "120"}))
    async with client_for(upstream, breaker=breaker, is_failure=lambda outcome: False) as c:
        await c.get(URL)
    assert breaker.state is State.CLOSED


def test_parse_retry_after() -> None:
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    epoch = email.utils.parsedate_to_datetime(date).timestamp()
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 7 ") == 7.0
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after(date, now=epoch - 30.0) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 -0000", now=epoch - 1.0) == 1.0
    assert parse_retry_after(date, now=epoch + 5.0) == 0.0  # in the past: nothing to wait for
    assert parse_retry_after("9" * 400) == math.inf
    for invalid in ("", "soon", "-5", "1.5", "1e3", "\u0663", "Wed, 32 Oct 2015 07:28:00 GMT"):
        assert parse_retry_after(invalid) is None, invalid


# ------------------------------------------------------------------ choosing the breaker


async def test_a_registry_gives_one_breaker_per_upstream_authority() -> None:
    registry = BreakerRegistry(
        {"volume_threshold": 0, "reset_timeout": 10.0, "timeout": None}, clock=FakeClock()
    )

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500 if request.url.host == "auth" else 200)

    upstream = Upstream(respond)
    async with client_for(upstream, registry=registry) as client:
        assert (await client.get("http://auth:8000/a")).status_code == 500
        with pytest.raises(HTTPCircuitOpenError) as raised:
            await client.get("http://auth:8000/b")
        for _ in range(3):  # the other upstream keeps working
            assert (await client.get("http://users:8000/me")).status_code == 200
        # http and https to one host share a breaker; a port makes another one.
        with pytest.raises(HTTPCircuitOpenError):
            await client.get("https://auth:8000/a")
        assert (await client.get("http://auth/")).status_code == 500
    assert raised.value.name == "auth:8000"
    breakers = registry.breakers()
    assert sorted(breakers) == ["auth", "auth:8000", "users:8000"]
    assert breakers["auth:8000"].state is State.OPEN
    assert counts(breakers["users:8000"]) == (3, 0, 0, 0)
    assert upstream.calls == ["http://auth:8000/a"] + ["http://users:8000/me"] * 3 + [
        "http://auth/"
    ]


async def test_a_registry_with_a_name_uses_one_breaker_for_every_host() -> None:
    registry = BreakerRegistry(
        {"volume_threshold": 0, "reset_timeout": 10.0, "timeout": None}, clock=FakeClock()
    )
    upstream = Upstream(status(500))
    async with client_for(upstream, registry=registry, name="AuthService") as client:
        await client.get("http://auth-1/")
        with pytest.raises(HTTPCircuitOpenError) as raised:
            await client.get("http://auth-2/")
    assert raised.value.name == "AuthService"
    assert list(registry.breakers()) == ["AuthService"]
    assert len(upstream.calls) == 1


async def test_a_registry_with_a_key_function() -> None:
    registry = BreakerRegistry({"timeout": None}, clock=FakeClock())
    upstream = Upstream(status(200))
    async with client_for(upstream, registry=registry, key=lambda r: r.url.path) as client:
        await client.get("http://auth/a")
        await client.get("http://users/a")
        await client.get("http://auth/b")
    assert {name: b.stats.successes for name, b in registry.breakers().items()} == {
        "/a": 2,
        "/b": 1,
    }


async def test_a_key_that_returns_no_string_is_a_type_error() -> None:
    registry = BreakerRegistry(clock=FakeClock())
    upstream = Upstream(status(200))
    async with client_for(upstream, registry=registry, key=lambda r: 42) as client:  # type: ignore[arg-type,return-value]
        with pytest.raises(TypeError, match=r"key\(request\) must return a str, got 42"):
            await client.get(URL)
    assert upstream.calls == []


async def test_a_strict_registry_refuses_an_unknown_name_at_construction() -> None:
    registry = BreakerRegistry(breakers={"AuthService": {}}, strict=True)
    with pytest.raises(UnknownBreakerError, match="'Billing'"):
        AsyncBreakerTransport(
            httpx.MockTransport(Upstream(status(200))), registry=registry, name="Billing"
        )


async def test_a_registry_that_was_shut_down_hands_the_transport_a_fresh_breaker() -> None:
    registry = BreakerRegistry({"volume_threshold": 0, "timeout": None}, clock=FakeClock())
    upstream = Upstream(status(500))
    async with client_for(upstream, registry=registry, name="auth") as client:
        await client.get(URL)
        with pytest.raises(HTTPCircuitOpenError):
            await client.get(URL)
        registry.shutdown()  # an app's lifespan ended; a new one starts with new breakers
        assert (await client.get(URL)).status_code == 500
    assert len(upstream.calls) == 2


# ------------------------------------------------------------------ construction and closing


class ClosingTransport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.closed = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)

    async def aclose(self) -> None:
        self.closed += 1


async def test_aclose_closes_the_wrapped_transport() -> None:
    inner = ClosingTransport()
    transport = AsyncBreakerTransport(inner, breaker=make_breaker(FakeClock()))
    await transport.aclose()
    assert inner.closed == 1


async def test_closing_the_client_closes_the_wrapped_transport() -> None:
    inner = ClosingTransport()
    async with httpx.AsyncClient(
        transport=AsyncBreakerTransport(inner, breaker=make_breaker(FakeClock()))
    ) as client:
        await client.get(URL)
    assert inner.closed == 1


async def test_without_a_transport_it_wraps_httpxs_default_one() -> None:
    # respx patches httpcore, beneath httpx's default transport: requests reach the mock only
    # through that default transport.
    breaker = make_breaker(FakeClock())
    with respx.mock(assert_all_called=True) as router:
        route = router.get(URL).respond(503, headers={"Retry-After": "30"})
        async with httpx.AsyncClient(transport=AsyncBreakerTransport(breaker=breaker)) as client:
            assert (await client.get(URL)).status_code == 503
            with pytest.raises(HTTPCircuitOpenError):
                await client.get(URL)
    assert route.call_count == 1
    assert breaker.retry_after == 30.0


async def test_a_respx_router_as_the_wrapped_transport() -> None:
    breaker = make_breaker(FakeClock(), volume_threshold=10)
    router = respx.MockRouter(assert_all_called=False)
    ok = router.get("http://auth:8000/ok").respond(200, json={"ok": True})
    down = router.get("http://auth:8000/down").mock(side_effect=httpx.ConnectError)
    transport = AsyncBreakerTransport(httpx.MockTransport(router.async_handler), breaker=breaker)
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get("http://auth:8000/ok")).json() == {"ok": True}
        with pytest.raises(httpx.ConnectError):
            await client.get("http://auth:8000/down")
    assert (ok.call_count, down.call_count) == (1, 1)
    assert counts(breaker) == (1, 1, 0, 0)


def test_the_sync_transport_is_refused_as_the_wrapped_async_transport() -> None:
    with pytest.raises(TypeError, match=r"transport must be an httpx\.AsyncBaseTransport"):
        AsyncBreakerTransport(httpx.HTTPTransport(), breaker=make_breaker(FakeClock()))  # type: ignore[arg-type]


BREAKER = CircuitBreaker(name="b")
REGISTRY = BreakerRegistry()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, ValueError, r"needs breaker=CircuitBreaker\(\) or registry=BreakerRegistry\(\)"),
        ({"breaker": BREAKER, "registry": REGISTRY}, ValueError, "either breaker= or registry="),
        ({"breaker": BREAKER, "name": "x"}, ValueError, "name= and key= choose a breaker"),
        ({"breaker": BREAKER, "key": str}, ValueError, "name= and key= choose a breaker"),
        ({"registry": REGISTRY, "name": "x", "key": str}, ValueError, "either name="),
        ({"registry": REGISTRY, "name": ""}, ValueError, "name must be a non-empty string"),
        ({"registry": REGISTRY, "name": 3}, ValueError, "name must be a non-empty string"),
        ({"registry": REGISTRY, "key": "host"}, TypeError, "key must be a callable"),
        ({"breaker": "auth"}, TypeError, "breaker must be a CircuitBreaker or None"),
        ({"registry": {"a": BREAKER}}, TypeError, "registry must be a BreakerRegistry or None"),
        ({"breaker": BREAKER, "is_failure": 500}, TypeError, "is_failure must be a callable"),
        ({"breaker": BREAKER, "max_retry_after": 0}, ValueError, "max_retry_after must be"),
        ({"breaker": BREAKER, "max_retry_after": -1.0}, ValueError, "max_retry_after must be"),
        ({"breaker": BREAKER, "max_retry_after": math.nan}, ValueError, "max_retry_after"),
        ({"breaker": BREAKER, "max_retry_after": math.inf}, ValueError, "max_retry_after"),
        ({"breaker": BREAKER, "max_retry_after": True}, ValueError, "max_retry_after"),
        ({"breaker": BREAKER, "max_retry_after": "60"}, ValueError, "max_retry_after"),
        (
            {"breaker": BREAKER, "max_retry_after": 10**400},
            ValueError,
            r"^max_retry_after must be a number of seconds > 0 and <= 31536000 \(365 days\), "
            r"got 1000",
        ),
    ],
)
@pytest.mark.parametrize("transport_class", [AsyncBreakerTransport, BreakerTransport])
def test_bad_arguments_are_refused_at_construction(
    transport_class: type[Any], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    inner = httpx.MockTransport(lambda request: httpx.Response(200))
    with pytest.raises(error, match=message):
        transport_class(inner, **kwargs)


async def test_the_503_middleware_answers_for_a_refused_outbound_request() -> None:
    # The open error is a CircuitOpenError too: a route that lets it escape gets the 503.
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from fastapi_breaker.middleware import CircuitBreakerMiddleware

    clock = FakeClock()
    breaker = make_breaker(clock)
    breaker.open()
    clock.advance(2.5)
    upstream = Upstream(status(200))
    auth = client_for(upstream, breaker=breaker)

    async def me(request: Request) -> JSONResponse:
        return JSONResponse((await auth.get(URL)).json())

    app = Starlette(routes=[Route("/me", me)], middleware=[Middleware(CircuitBreakerMiddleware)])
    async with (
        auth,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://users"
        ) as client,
    ):
        response = await client.get("/me")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "8"
    assert upstream.calls == []
