"""`BreakerTransport`: the sync transport, with httpx's MockTransport upstream.

The classification, Retry-After and error logic is shared with the async transport and tested
at length in test_httpx_transport.py; here each behaviour is shown once more through the sync
code path, plus what only the sync transport does (no breaker timeout).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import respx

from fastapi_breaker import (
    BreakerRegistry,
    BreakerShutdownError,
    CapacityExceededError,
    CircuitBreaker,
    CircuitOpenError,
    Event,
    State,
)
from fastapi_breaker.httpx import (
    BreakerTransport,
    HTTPBreakerShutdownError,
    HTTPCapacityExceededError,
    HTTPCircuitOpenError,
)
from fastapi_breaker.testing import FakeClock

URL = "http://auth:8000/token"


class Upstream:
    """An inner MockTransport handler that counts the requests that reach it."""

    def __init__(self, respond: Callable[[httpx.Request], httpx.Response | Exception]) -> None:
        self.respond = respond
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(str(request.url))
        response = self.respond(request)
        if isinstance(response, Exception):
            raise response
        return response


def status(code: int, headers: dict[str, str] | None = None) -> Callable[[httpx.Request], Any]:
    return lambda request: httpx.Response(code, headers=headers, text=f"status {code}")


class Body(httpx.SyncByteStream):
    """A streamed body: yields `chunks`, then raises `error` if given."""

    def __init__(self, *chunks: bytes, error: Exception | None = None) -> None:
        self.chunks = chunks
        self.error = error
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.closed += 1


def make_breaker(clock: FakeClock, **options: Any) -> CircuitBreaker:
    options.setdefault("timeout", None)
    options.setdefault("reset_timeout", 10.0)
    # These tests open on the first failures; the default volume_threshold (10) has its own.
    options.setdefault("volume_threshold", 0)
    return CircuitBreaker(name="auth", clock=clock, **options)


def client_for(upstream: Upstream, **kwargs: Any) -> httpx.Client:
    return httpx.Client(transport=BreakerTransport(httpx.MockTransport(upstream), **kwargs))


def counts(breaker: CircuitBreaker) -> tuple[int, int, int, int]:
    stats = breaker.stats
    return stats.successes, stats.failures, stats.rejects, stats.timeouts


def test_2xx_and_4xx_are_successes_and_5xx_is_a_failure_returned_unchanged() -> None:
    breaker = make_breaker(FakeClock(), volume_threshold=10)
    upstream = Upstream(lambda request: httpx.Response(int(request.url.path.strip("/")), text="x"))
    with client_for(upstream, breaker=breaker) as client:
        responses = [client.get(f"http://auth/{code}") for code in (200, 404, 500, 503)]
    assert [(r.status_code, r.text) for r in responses] == [
        (200, "x"),
        (404, "x"),
        (500, "x"),
        (503, "x"),
    ]
    assert counts(breaker) == (2, 2, 0, 0)
    assert len(upstream.calls) == 4


def test_a_transport_error_is_a_failure_and_reaches_the_caller_as_it_is() -> None:
    breaker = make_breaker(FakeClock(), volume_threshold=10)
    error = httpx.ConnectError("refused")
    client = client_for(Upstream(lambda request: error), breaker=breaker)
    with client, pytest.raises(httpx.ConnectError) as raised:
        client.get(URL)
    assert raised.value is error
    assert counts(breaker) == (0, 1, 0, 0)


def test_an_open_breaker_refuses_without_sending_the_request() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    upstream = Upstream(status(500))
    with client_for(upstream, breaker=breaker) as client:
        client.get(URL)
        clock.advance(2.5)
        try:
            client.get(URL)
        except httpx.TransportError as exc:  # what existing httpx code already catches
            caught: Exception = exc
    assert type(caught) is HTTPCircuitOpenError
    assert isinstance(caught, CircuitOpenError)
    assert (caught.name, caught.retry_after) == ("auth", 7.5)
    assert str(caught) == "circuit 'auth' is open; retry after 7.500s"
    assert str(caught.request.url) == URL
    assert upstream.calls == [URL]
    assert counts(breaker) == (0, 1, 1, 0)


def test_capacity_and_shutdown_refusals_are_transport_errors_and_send_nothing() -> None:
    breaker = make_breaker(FakeClock(), capacity=1)
    upstream = Upstream(lambda request: httpx.Response(200, stream=Body(b"x")))
    with client_for(upstream, breaker=breaker) as client:
        with client.stream("GET", URL), pytest.raises(HTTPCapacityExceededError) as full:
            client.get(URL)
        breaker.shutdown()
        with pytest.raises(HTTPBreakerShutdownError) as shut:
            client.get(URL)
    assert isinstance(full.value, CapacityExceededError)
    assert isinstance(full.value, httpx.TransportError)
    assert full.value.capacity == 1
    assert isinstance(shut.value, BreakerShutdownError)
    assert isinstance(shut.value, httpx.TransportError)
    assert upstream.calls == [URL]


def test_a_body_that_fails_while_it_streams_is_a_failure() -> None:
    breaker = make_breaker(FakeClock())
    body = Body(b"first half", error=httpx.ReadError("connection reset mid-body"))
    upstream = Upstream(lambda request: httpx.Response(200, stream=body))
    with client_for(upstream, breaker=breaker) as client:
        with pytest.raises(httpx.ReadError, match="mid-body"):
            client.get(URL)
        with pytest.raises(HTTPCircuitOpenError):
            client.get(URL)
    assert counts(breaker) == (0, 1, 1, 0)
    assert len(upstream.calls) == 1


def test_a_streamed_response_is_counted_when_its_body_ends_or_is_closed() -> None:
    breaker = make_breaker(FakeClock())
    bodies: list[Body] = []

    def respond(request: httpx.Request) -> httpx.Response:
        bodies.append(Body(b"a", b"b"))
        return httpx.Response(200, stream=bodies[-1])

    with client_for(Upstream(respond), breaker=breaker) as client:
        with client.stream("GET", URL) as response:
            assert breaker.stats.fires == 0  # headers only: not settled yet
            assert list(response.iter_raw()) == [b"a", b"b"]
            assert counts(breaker) == (1, 0, 0, 0)
        with client.stream("GET", URL) as response:
            next(response.iter_raw())  # the caller stops early: it saw nothing wrong
            assert counts(breaker) == (1, 0, 0, 0)
        assert counts(breaker) == (2, 0, 0, 0)
    assert [body.closed for body in bodies] == [1, 1]


def test_a_half_open_trial_closes_the_breaker() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    breaker.open()
    clock.advance(10.0)
    with client_for(Upstream(status(200)), breaker=breaker) as client:
        assert client.get(URL).status_code == 200
    assert breaker.state is State.CLOSED


def test_the_breakers_timeout_does_not_apply_to_the_sync_transport() -> None:
    # A thread cannot be cancelled: a slow answer is still an answer. httpx's own timeouts
    # (which raise httpx.TimeoutException, a failure) are what bound a sync request.
    clock = FakeClock()
    breaker = make_breaker(clock, timeout=1.0)

    def slow(request: httpx.Request) -> httpx.Response:
        clock.advance(30.0)
        return httpx.Response(200)

    with client_for(Upstream(slow), breaker=breaker) as client:
        assert client.get(URL).status_code == 200
    assert counts(breaker) == (1, 0, 0, 0)


def test_retry_after_seconds_date_and_clamping() -> None:
    date = email.utils.formatdate(time.time() + 120, usegmt=True)
    cases = [("90", 300.0, 90.0), ("86400", 60.0, 60.0)]
    for value, cap, expected in cases:
        breaker = make_breaker(FakeClock())
        upstream = Upstream(status(503, {"Retry-After": value}))
        with client_for(upstream, breaker=breaker, max_retry_after=cap) as client:
            client.get(URL)
        assert breaker.retry_after == expected, value
    breaker = make_breaker(FakeClock())
    with client_for(Upstream(status(429, {"Retry-After": date})), breaker=breaker) as client:
        client.get(URL)
    assert breaker.retry_after is not None
    assert 118.0 < breaker.retry_after <= 120.0


def test_a_registry_gives_one_breaker_per_upstream_authority() -> None:
    registry = BreakerRegistry({"volume_threshold": 0, "timeout": None}, clock=FakeClock())

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500 if request.url.host == "auth" else 200)

    upstream = Upstream(respond)
    with client_for(upstream, registry=registry) as client:
        client.get("http://auth:8000/")
        with pytest.raises(HTTPCircuitOpenError):
            client.get("http://auth:8000/")
        assert client.get("http://users:8000/").status_code == 200
    assert registry.breakers()["auth:8000"].state is State.OPEN
    assert registry.breakers()["users:8000"].state is State.CLOSED
    assert upstream.calls == ["http://auth:8000/", "http://users:8000/"]


class ClosingTransport(httpx.BaseTransport):
    def __init__(self) -> None:
        self.closed = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)

    def close(self) -> None:
        self.closed += 1


def test_close_closes_the_wrapped_transport() -> None:
    inner = ClosingTransport()
    BreakerTransport(inner, breaker=make_breaker(FakeClock())).close()
    assert inner.closed == 1
    inner = ClosingTransport()
    with httpx.Client(transport=BreakerTransport(inner, breaker=make_breaker(FakeClock()))):
        pass
    assert inner.closed == 1


def test_without_a_transport_it_wraps_httpxs_default_one() -> None:
    # respx patches httpcore, beneath httpx's default transport.
    breaker = make_breaker(FakeClock())
    with respx.mock(assert_all_called=True) as router:
        route = router.get(URL).mock(side_effect=httpx.ConnectError)
        with httpx.Client(transport=BreakerTransport(breaker=breaker)) as client:
            with pytest.raises(httpx.ConnectError):
                client.get(URL)
            with pytest.raises(HTTPCircuitOpenError):
                client.get(URL)
    assert route.call_count == 1
    assert counts(breaker) == (0, 1, 1, 0)


def test_the_async_transport_is_refused_as_the_wrapped_sync_transport() -> None:
    with pytest.raises(TypeError, match=r"transport must be an httpx\.BaseTransport"):
        BreakerTransport(httpx.AsyncHTTPTransport(), breaker=make_breaker(FakeClock()))  # type: ignore[arg-type]


def test_events_follow_the_engines_order() -> None:
    # A refused request emits what a refused breaker.call() emits, without the fallback.
    breaker = make_breaker(FakeClock())
    seen: list[str] = []

    def record(event: Event) -> None:
        seen.append(event.name)

    for name in ("fire", "success", "failure", "open", "reject"):
        breaker.on(name, record)  # type: ignore[arg-type]
    with client_for(Upstream(status(500)), breaker=breaker) as client:
        client.get(URL)
        with pytest.raises(HTTPCircuitOpenError):
            client.get(URL)
    assert seen == ["fire", "failure", "open", "fire", "reject"]
