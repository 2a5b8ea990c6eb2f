"""Both httpx transports against a caller's mistakes, unclosed responses, slow trials, secrets in
URLs, and the wrapped transport's context manager."""

from __future__ import annotations

import gc
import logging
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Any

import httpx
import pytest

from fastapi_breaker import (
    BreakerRegistry,
    CircuitBreaker,
    CircuitOpenError,
    Event,
    NameTooLongError,
    State,
)
from fastapi_breaker.httpx import (
    AsyncBreakerTransport,
    BreakerTransport,
    HTTPBreakerShutdownError,
    HTTPCallTimeoutError,
    HTTPCapacityExceededError,
    HTTPCircuitOpenError,
    HTTPNameTooLongError,
    HTTPRegistryFullError,
    HTTPUnknownBreakerError,
    default_is_failure,
)
from fastapi_breaker.testing import FakeClock

URL = "http://auth:8000/token"
SECRET_URL = "http://alice:s3cr3t@auth:8000/login?token=abc123#frag"
SHOWN_URL = "http://auth:8000/login"  # what the library writes for SECRET_URL
SECRETS = ("alice", "s3cr3t", "token", "abc123", "frag")


def make_breaker(clock: FakeClock, **options: Any) -> CircuitBreaker:
    options.setdefault("timeout", None)
    options.setdefault("reset_timeout", 10.0)
    options.setdefault("volume_threshold", 0)
    return CircuitBreaker(name="auth", clock=clock, **options)


def counts(breaker: CircuitBreaker) -> tuple[int, int, int, int, int]:
    stats = breaker.stats
    return stats.fires, stats.successes, stats.failures, stats.rejects, stats.timeouts


class AsyncBody(httpx.AsyncByteStream):
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


class SyncBody(httpx.SyncByteStream):
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks


def streamed(*chunks: bytes) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(200, stream=AsyncBody(*chunks))


def streamed_sync(*chunks: bytes) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(200, stream=SyncBody(*chunks))


def async_client(handler: Callable[[httpx.Request], Any], **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=AsyncBreakerTransport(httpx.MockTransport(handler), **kwargs)
    )


def sync_client(handler: Callable[[httpx.Request], Any], **kwargs: Any) -> httpx.Client:
    return httpx.Client(transport=BreakerTransport(httpx.MockTransport(handler), **kwargs))


def half_open(clock: FakeClock, **options: Any) -> CircuitBreaker:
    breaker = make_breaker(clock, **options)
    breaker.open()
    clock.advance(10.0)
    assert breaker.state is State.HALF_OPEN
    return breaker


def record(breaker: CircuitBreaker) -> list[str]:
    seen: list[str] = []
    for name in ("open", "close", "timeout", "failure", "success"):
        breaker.on(name, lambda event: seen.append(event.name))  # type: ignore[arg-type]
    return seen


def collect(held: list[Any]) -> None:
    """Drop the only reference to what `held` holds, and run the collector."""
    held.clear()
    gc.collect()


UNCLOSED = r"^unclosed response through circuit breaker 'auth': "


# ------------------------------------------------------------------ unclosed responses


async def test_an_unclosed_response_gives_its_trial_back_when_collected() -> None:
    clock = FakeClock()
    breaker = half_open(clock)
    async with async_client(streamed(b"a"), breaker=breaker) as client:
        held = [await client.send(client.build_request("GET", SECRET_URL), stream=True)]
        with pytest.raises(HTTPCircuitOpenError):
            await client.get(URL)  # the one trial permit is taken
        assert counts(breaker) == (1, 0, 0, 1, 0)
        with pytest.warns(ResourceWarning, match=UNCLOSED) as warned:
            collect(held)
        [warning] = warned
        assert not any(secret in str(warning.message) for secret in SECRETS)
        # Settled as cancelled: counted in fires only, and the trial permit is back.
        assert counts(breaker) == (2, 0, 0, 1, 0)
        assert breaker.state is State.HALF_OPEN
        assert (await client.get(URL)).text == "a"  # the next request is the trial
    assert breaker.state is State.CLOSED  # which cleared the window


async def test_an_unclosed_response_gives_its_capacity_slot_back_when_collected() -> None:
    breaker = make_breaker(FakeClock(), capacity=1)
    async with async_client(streamed(b"a"), breaker=breaker) as client:
        held = [await client.send(client.build_request("GET", URL), stream=True)]
        with pytest.raises(HTTPCapacityExceededError):
            await client.get(URL)
        with pytest.warns(ResourceWarning, match=UNCLOSED):
            collect(held)
        assert (await client.get(URL)).text == "a"
    assert counts(breaker) == (3, 1, 0, 0, 0)  # the cancelled one, the refused one, the success
    assert breaker.stats.semaphore_rejections == 1


def test_an_unclosed_sync_response_gives_its_slot_and_trial_back_when_collected() -> None:
    clock = FakeClock()
    breaker = half_open(clock, capacity=1)
    with sync_client(streamed_sync(b"a"), breaker=breaker) as client:
        held = [client.send(client.build_request("GET", URL), stream=True)]
        with pytest.raises(HTTPCircuitOpenError):
            client.get(URL)
        with pytest.warns(ResourceWarning, match=UNCLOSED):
            collect(held)
        assert counts(breaker) == (2, 0, 0, 1, 0)
        assert breaker.state is State.HALF_OPEN
        assert client.get(URL).text == "a"
    assert breaker.state is State.CLOSED


def test_a_response_read_to_its_end_but_not_closed_warns_nothing() -> None:
    breaker = make_breaker(FakeClock(), capacity=1)
    with sync_client(streamed_sync(b"a", b"b"), breaker=breaker) as client:
        response = client.send(client.build_request("GET", URL), stream=True)
        assert b"".join(response.iter_raw()) == b"ab"  # settled by its end
        del response
        gc.collect()  # filterwarnings=error: a warning here would fail the test
    assert counts(breaker) == (1, 1, 0, 0, 0)


def test_collected_while_this_thread_is_inside_the_breaker_the_release_waits() -> None:
    # A finalizer runs at whatever allocation started the collector: maybe in the middle of the
    # breaker's own bookkeeping, under its lock, on this thread. It must not change the breaker
    # half-way: the release waits for the next request through a breaker transport.
    breaker = make_breaker(FakeClock(), capacity=1)
    with sync_client(streamed_sync(b"a"), breaker=breaker) as client:
        held = [client.send(client.build_request("GET", URL), stream=True)]
        with breaker.core._lock, pytest.warns(ResourceWarning, match=UNCLOSED):
            collect(held)
        assert counts(breaker) == (0, 0, 0, 0, 0)  # not yet released
        assert client.get(URL).text == "a"  # released first, then admitted
    assert counts(breaker) == (2, 1, 0, 0, 0)


def test_the_slot_is_free_before_the_warning_even_when_warnings_are_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    breaker = make_breaker(FakeClock(), capacity=1)
    with sync_client(streamed_sync(b"a"), breaker=breaker) as client:
        held = [client.send(client.build_request("GET", URL), stream=True)]
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            collect(held)
        [report] = unraisable
        assert type(report.exc_value) is ResourceWarning
        unraisable.clear()
        del report
        assert client.get(URL).text == "a"
    assert counts(breaker) == (2, 1, 0, 0, 0)


# ------------------------------------------------------------------ secrets in URLs


@pytest.mark.parametrize("sync", [False, True])
async def test_errors_events_and_logs_carry_no_credentials_and_no_query(
    sync: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    breaker = make_breaker(FakeClock(), volume_threshold=10)
    texts: list[str] = []

    def on_failure(event: Event) -> None:
        texts.extend((str(event.error), repr(event.error)))
        raise RuntimeError(f"handler saw {event.error}")  # logged by the library, traceback too

    breaker.on("failure", on_failure)
    handler = lambda request: httpx.Response(500)  # noqa: E731
    if sync:
        with sync_client(handler, breaker=breaker) as client:
            assert client.get(SECRET_URL).status_code == 500
    else:
        async with async_client(handler, breaker=breaker) as client:
            assert (await client.get(SECRET_URL)).status_code == 500
    message = f"500 Internal Server Error from {SHOWN_URL}"
    assert texts == [message, f"HTTPStatusError({message!r})"]
    # httpx's own INFO line ("HTTP Request: GET <url>") is httpx's: ours are checked here.
    ours = [r for r in caplog.records if r.name.startswith("fastapi_breaker")]
    assert [r.getMessage().split(" of event")[0] for r in ours] == [f"handler {on_failure!r}"]
    logged = caplog.handler.format(ours[0])
    assert f"RuntimeError: handler saw {message}" in logged
    for secret in SECRETS:
        assert secret not in logged


# ------------------------------------------------------------------ caller mistakes


async def test_unsupported_protocols_do_not_open_the_breaker() -> None:
    breaker = make_breaker(FakeClock())
    # httpx's own transport: it refuses an ftp:// URL without touching the network.
    async with httpx.AsyncClient(transport=AsyncBreakerTransport(breaker=breaker)) as client:
        for _ in range(20):
            with pytest.raises(httpx.UnsupportedProtocol):
                await client.get("ftp://auth/file")
    assert breaker.state is State.CLOSED
    assert counts(breaker) == (20, 0, 0, 0, 0)


def test_unsupported_protocols_do_not_open_the_breaker_sync() -> None:
    breaker = make_breaker(FakeClock())
    with httpx.Client(transport=BreakerTransport(breaker=breaker)) as client:
        for _ in range(20):
            with pytest.raises(httpx.UnsupportedProtocol):
                client.get("ftp://auth/file")
    assert breaker.state is State.CLOSED
    assert counts(breaker) == (20, 0, 0, 0, 0)


NOT_THE_UPSTREAMS = [
    httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'."),
    httpx.InvalidURL("Invalid port: 'x'"),
    httpx.LocalProtocolError("Illegal header value b' x'"),
    httpx.PoolTimeout("no connection free in the pool"),
    ValueError("a request body generator failed"),
    HTTPCircuitOpenError("inner", 5.0),
    HTTPCapacityExceededError("inner", 1),
    HTTPBreakerShutdownError("inner"),
    HTTPUnknownBreakerError("inner", ()),
    HTTPRegistryFullError("inner", 10),
    HTTPNameTooLongError("inner", 300),
    CircuitOpenError("inner", 5.0),  # the engine's own, from a breaker inside the transport
]


@pytest.mark.parametrize("error", NOT_THE_UPSTREAMS, ids=lambda e: type(e).__name__)
async def test_errors_that_are_not_the_upstreams_count_as_neither(error: Exception) -> None:
    clock = FakeClock()
    breaker = half_open(clock)
    calls: list[str] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/bad":
            raise error
        return httpx.Response(200)

    async with async_client(upstream, breaker=breaker) as client:
        with pytest.raises(type(error)) as raised:
            await client.get("http://auth/bad")
        assert raised.value is error
        assert breaker.state is State.HALF_OPEN  # not a failed trial
        assert counts(breaker) == (1, 0, 0, 0, 0)
        assert (await client.get("http://auth/ok")).status_code == 200  # the permit is back
    assert breaker.state is State.CLOSED
    assert calls == ["/bad", "/ok"]


@pytest.mark.parametrize("error", NOT_THE_UPSTREAMS[:5], ids=lambda e: type(e).__name__)
def test_errors_that_are_not_the_upstreams_count_as_neither_sync(error: Exception) -> None:
    breaker = make_breaker(FakeClock())

    def upstream(request: httpx.Request) -> httpx.Response:
        raise error

    with sync_client(upstream, breaker=breaker) as client:
        for _ in range(3):
            with pytest.raises(type(error)):
                client.get(URL)
    assert breaker.state is State.CLOSED
    assert counts(breaker) == (3, 0, 0, 0, 0)


async def test_an_inner_breakers_refusal_does_not_open_the_outer_one() -> None:
    inner = CircuitBreaker(name="inner", timeout=None, clock=FakeClock())
    outer = make_breaker(FakeClock())
    inner.force_open()
    transport = AsyncBreakerTransport(
        AsyncBreakerTransport(httpx.MockTransport(lambda r: httpx.Response(200)), breaker=inner),
        breaker=outer,
    )
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(5):
            with pytest.raises(HTTPCircuitOpenError) as raised:
                await client.get(URL)
            assert raised.value.name == "inner"
    assert outer.state is State.CLOSED
    assert counts(outer) == (5, 0, 0, 0, 0)
    assert counts(inner) == (5, 0, 0, 5, 0)


async def test_is_failure_may_still_count_pool_exhaustion() -> None:
    breaker = make_breaker(FakeClock())

    def is_failure(outcome: httpx.Response | Exception) -> bool:
        return isinstance(outcome, httpx.PoolTimeout) or default_is_failure(outcome)

    def upstream(request: httpx.Request) -> httpx.Response:
        raise httpx.PoolTimeout("no connection free in the pool")

    async with async_client(upstream, breaker=breaker, is_failure=is_failure) as client:
        with pytest.raises(httpx.PoolTimeout):
            await client.get(URL)
    assert breaker.state is State.OPEN
    assert counts(breaker) == (1, 0, 1, 0, 0)


def test_default_is_failure_counts_only_what_the_upstream_did() -> None:
    request = httpx.Request("GET", URL)
    for outcome, failure in [
        (httpx.Response(503, request=request), True),
        (httpx.Response(429, request=request), True),
        (httpx.Response(404, request=request), False),
        (httpx.ConnectError("refused"), True),
        (httpx.ReadTimeout("slow"), True),
        (httpx.RemoteProtocolError("garbage"), True),
        (HTTPCallTimeoutError("inner", 1.0), True),  # the upstream was slow for the inner one
        *((error, False) for error in NOT_THE_UPSTREAMS),
    ]:
        assert default_is_failure(outcome) is failure, outcome


# ------------------------------------------------------------------ trials that run long


async def test_a_trial_whose_body_ends_after_the_trial_limit_closes_the_breaker() -> None:
    clock = FakeClock()
    breaker = half_open(clock, timeout=5.0)  # the trial limit
    seen = record(breaker)
    client = async_client(streamed(b"a", b"b"), breaker=breaker)
    async with client, client.stream("GET", URL) as response:
        clock.advance(30.0)  # the body streams long after the limit: the answer came in time
        assert breaker.state is State.HALF_OPEN
        assert await response.aread() == b"ab"
    assert breaker.state is State.CLOSED
    assert seen == ["success", "close"]


def test_a_sync_trial_whose_body_ends_after_the_trial_limit_closes_the_breaker() -> None:
    clock = FakeClock()
    breaker = half_open(clock, timeout=5.0)
    seen = record(breaker)
    client = sync_client(streamed_sync(b"a", b"b"), breaker=breaker)
    with client, client.stream("GET", URL) as response:
        clock.advance(30.0)
        assert breaker.state is State.HALF_OPEN
        assert response.read() == b"ab"
    assert breaker.state is State.CLOSED
    assert seen == ["success", "close"]


@pytest.mark.parametrize("sync", [False, True])
async def test_a_trial_whose_headers_come_after_the_trial_limit_reopens(sync: bool) -> None:
    # The breaker's clock says the answer came late; no timer cancelled it (the sync transport
    # cannot cancel a thread). The trial is a timeout, and the caller still gets the response.
    clock = FakeClock()
    breaker = half_open(clock, timeout=5.0)
    seen = record(breaker)

    def slow(request: httpx.Request) -> httpx.Response:
        clock.advance(5.5)
        return httpx.Response(200, stream=SyncBody(b"late") if sync else AsyncBody(b"late"))

    if sync:
        with sync_client(slow, breaker=breaker) as client:
            response = client.get(URL)
    else:
        async with async_client(slow, breaker=breaker) as client:
            response = await client.get(URL)
    assert (response.status_code, response.text) == (200, "late")
    assert breaker.state is State.OPEN
    assert breaker.retry_after == 10.0
    assert counts(breaker) == (1, 0, 1, 0, 1)
    assert seen == ["open", "timeout", "failure"]


def test_a_slow_sync_request_outside_half_open_is_judged_by_its_answer() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, timeout=1.0)

    def slow(request: httpx.Request) -> httpx.Response:
        clock.advance(30.0)
        return httpx.Response(200)

    with sync_client(slow, breaker=breaker) as client:
        assert client.get(URL).status_code == 200
    assert counts(breaker) == (1, 1, 0, 0, 0)


# ------------------------------------------------------------------ context managers


class RecordingAsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __aenter__(self) -> RecordingAsyncTransport:
        self.calls.append("aenter")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        self.calls.append(f"aexit {exc_type.__name__ if exc_type else None}")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"request {request.url.path}")
        return httpx.Response(200)

    async def aclose(self) -> None:
        self.calls.append("aclose")


class RecordingTransport(httpx.BaseTransport):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __enter__(self) -> RecordingTransport:
        self.calls.append("enter")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        self.calls.append(f"exit {exc_type.__name__ if exc_type else None}")

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"request {request.url.path}")
        return httpx.Response(200)

    def close(self) -> None:
        self.calls.append("close")


async def test_async_with_enters_and_exits_the_wrapped_transport() -> None:
    inner = RecordingAsyncTransport()
    transport = AsyncBreakerTransport(inner, breaker=make_breaker(FakeClock()))
    async with transport as entered:
        assert entered is transport
        assert inner.calls == ["aenter"]
    with pytest.raises(KeyError):
        async with transport:
            raise KeyError("x")
    await transport.aclose()
    assert inner.calls == ["aenter", "aexit None", "aenter", "aexit KeyError", "aclose"]


async def test_an_async_client_reaches_the_wrapped_transports_context() -> None:
    inner = RecordingAsyncTransport()
    transport = AsyncBreakerTransport(inner, breaker=make_breaker(FakeClock()))
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("http://auth/a")
    assert inner.calls == ["aenter", "request /a", "aexit None"]


def test_with_enters_and_exits_the_wrapped_transport() -> None:
    inner = RecordingTransport()
    transport = BreakerTransport(inner, breaker=make_breaker(FakeClock()))
    with transport as entered:
        assert entered is transport
        assert inner.calls == ["enter"]
    with pytest.raises(KeyError), transport:
        raise KeyError("x")
    transport.close()
    assert inner.calls == ["enter", "exit None", "enter", "exit KeyError", "close"]


def test_a_client_reaches_the_wrapped_transports_context() -> None:
    inner = RecordingTransport()
    with httpx.Client(transport=BreakerTransport(inner, breaker=make_breaker(FakeClock()))) as c:
        c.get("http://auth/a")
    assert inner.calls == ["enter", "request /a", "exit None"]


@pytest.mark.parametrize("sync", [False, True])
async def test_a_host_longer_than_max_name_length_is_refused_as_an_httpx_error(
    sync: bool,
) -> None:
    registry = BreakerRegistry(clock=FakeClock())
    sent: list[httpx.Request] = []
    inner = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(200))
    request = httpx.Request("GET", f"http://{'a' * 10_000}.example/")

    async def send() -> None:
        if sync:
            BreakerTransport(inner, registry=registry).handle_request(request)
        else:
            await AsyncBreakerTransport(inner, registry=registry).handle_async_request(request)

    with pytest.raises(HTTPNameTooLongError) as refused:
        await send()
    error = refused.value
    assert isinstance(error, httpx.TransportError)
    assert isinstance(error, NameTooLongError)
    assert error.request is request
    assert (len(error.name), error.max_name_length) == (10_008, 300)
    assert (sent, registry.breakers()) == ([], {})
