"""The per-host breaker's name, and the registry's refusals, through both httpx transports.

One upstream address is one breaker, however the URL spells it: otherwise anyone who can pick
a URL could step around an open breaker by respelling its host.
"""

from __future__ import annotations

import pickle
import socket
import sys
from typing import Any

import httpx
import pytest

from fastapi_breaker import (
    BreakerError,
    BreakerRegistry,
    RegistryFullError,
    State,
    UnknownBreakerError,
)
from fastapi_breaker.httpx import (
    AsyncBreakerTransport,
    BreakerTransport,
    HTTPCircuitOpenError,
    HTTPRegistryFullError,
    HTTPUnknownBreakerError,
)
from fastapi_breaker.testing import FakeClock

# Every spelling of http://127.0.0.1:8000 that a resolver reads as that address.
LOOPBACK_8000 = [
    "http://127.0.0.1:8000/",
    "http://127.1:8000/",  # inet_aton's short forms
    "http://127.0.1:8000/",
    "http://2130706433:8000/",  # one 32-bit number
    "http://0x7f000001:8000/",
    "http://0X7F.1:8000/",  # hex parts
    "http://0x7f.0.0.1:8000/",
    "http://0177.1:8000/",  # an octal part
    "http://017700000001:8000/",
    "http://[::ffff:127.0.0.1]:8000/",  # IPv4-mapped IPv6
    "http://[::FFFF:7f00:1]:8000/",
    "http://[0:0:0:0:0:ffff:7f00:0001]:8000/",
    "http://127.0.0.1.:8000/",  # an absolute name: trailing dot
    "https://user:secret@127.0.0.1:8000/?q=1",  # scheme, user info and query are not the host
]


def name_of(url: str) -> str:
    registry = BreakerRegistry(clock=FakeClock())
    transport = BreakerTransport(
        httpx.MockTransport(lambda r: httpx.Response(200)), registry=registry
    )
    with httpx.Client(transport=transport) as client:
        client.get(url)
    [name] = registry.breakers()
    return name


@pytest.mark.parametrize("url", LOOPBACK_8000)
def test_every_spelling_of_an_address_names_one_breaker(url: str) -> None:
    assert name_of(url) == "127.0.0.1:8000"


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("http://127.0.0.1:80/", "127.0.0.1"),  # the scheme's default port is left out
        ("https://127.1:443/", "127.0.0.1"),
        ("http://LOCALHOST./", "localhost"),
        ("http://LocalHost:80/", "localhost"),
        ("http://Auth.Example.COM.:8443/", "auth.example.com:8443"),
        ("http://auth:8000/", "auth:8000"),
        ("http://[::1]/", "[::1]"),
        ("http://[0:0:0:0:0:0:0:1]:8000/", "[::1]:8000"),
        ("http://[2001:DB8:0:0::1]/", "[2001:db8::1]"),
        ("http://[::1.2.3.4]/", "[::102:304]"),  # IPv4-compatible, not mapped: an IPv6 address
        ("http://Bücher.de/", "xn--bcher-kva.de"),  # IDNA, as httpx encodes it
        ("http://xn--bcher-kva.de./", "xn--bcher-kva.de"),
        ("http://1.2.3/", "1.2.0.3"),
        ("http://0/", "0.0.0.0"),
        # Names a resolver does not read as an IPv4 address stay names.
        ("http://4294967296/", "4294967296"),  # more than 32 bits
        ("http://1.2.3.4.5/", "1.2.3.4.5"),
        ("http://0x/", "0x"),
        ("http://08/", "08"),  # not octal
        ("http://123.example/", "123.example"),
        ("http://auth../", "auth."),  # one trailing dot is the root; two are another name
        ("http://1_0/", "1_0"),
    ],
)
def test_the_per_host_name(url: str, name: str) -> None:
    assert name_of(url) == name


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's inet_aton")
@pytest.mark.parametrize(
    "text",
    [
        "127.1", "2130706433", "0x7f.1", "0X7F.0.0.1", "0177.1", "017700000001", "0", "00",
        "0xffffffff", "0x100000000", "4294967295", "4294967296", "1.16777215", "1.16777216",
        "255.255.65535", "255.255.65536", "256.1", "1.256.1", "0x", "0x.1", "08", "0x0x1", "1.",
        "1..2", "1.2.3.4.5", "00000000000177.1", "0xg", "1_0", "+1", "-1", "",
    ],
)  # fmt: skip
def test_ipv4_forms_match_the_resolvers(text: str) -> None:
    from fastapi_breaker.httpx import _legacy_ipv4  # the parser itself, against the C library's

    try:
        expected: str | None = socket.inet_ntoa(socket.inet_aton(text))
    except OSError:
        expected = None
    assert _legacy_ipv4(text.lower()) == expected


async def send(transport: Any, request: httpx.Request) -> httpx.Response:
    if isinstance(transport, AsyncBreakerTransport):
        return await transport.handle_async_request(request)
    response: httpx.Response = transport.handle_request(request)
    return response


def respellings_client(
    transport_class: type[Any], registry: BreakerRegistry, calls: list[str]
) -> Any:
    def upstream(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(500)

    inner = httpx.MockTransport(upstream)
    client_class = httpx.AsyncClient if transport_class is AsyncBreakerTransport else httpx.Client
    return client_class(transport=transport_class(inner, registry=registry))


async def test_respelling_the_host_does_not_step_around_an_open_breaker() -> None:
    registry = BreakerRegistry({"timeout": None, "volume_threshold": 0}, clock=FakeClock())
    calls: list[str] = []
    async with respellings_client(AsyncBreakerTransport, registry, calls) as client:
        assert (await client.get(LOOPBACK_8000[0])).status_code == 500  # opens the breaker
        for url in LOOPBACK_8000:
            with pytest.raises(HTTPCircuitOpenError) as raised:
                await client.get(url)
            assert raised.value.name == "127.0.0.1:8000", url
    assert calls == [LOOPBACK_8000[0]]
    assert list(registry.breakers()) == ["127.0.0.1:8000"]
    stats = registry.get("127.0.0.1:8000").stats
    assert (stats.failures, stats.rejects) == (1, len(LOOPBACK_8000))


def test_respelling_the_host_does_not_step_around_an_open_breaker_sync() -> None:
    registry = BreakerRegistry({"timeout": None, "volume_threshold": 0}, clock=FakeClock())
    calls: list[str] = []
    with respellings_client(BreakerTransport, registry, calls) as client:
        assert client.get("http://LOCALHOST./").status_code == 500
        for url in ("http://localhost/", "http://localhost:80/", "https://LocalHost./"):
            with pytest.raises(HTTPCircuitOpenError):
                client.get(url)
    assert calls == ["http://localhost./"]
    assert registry.get("localhost").state is State.OPEN
    assert list(registry.breakers()) == ["localhost"]


@pytest.mark.parametrize("transport_class", [AsyncBreakerTransport, BreakerTransport])
async def test_a_url_without_a_host_is_httpxs_error_and_makes_no_breaker(
    transport_class: type[Any],
) -> None:
    registry = BreakerRegistry(clock=FakeClock())
    calls: list[str] = []
    request = httpx.Request("GET", "http:///path")
    transport = transport_class(httpx.MockTransport(calls.append), registry=registry)
    with pytest.raises(httpx.UnsupportedProtocol, match="Request URL has no host") as raised:
        await send(transport, request)
    assert raised.value.request is request
    assert registry.breakers() == {}
    assert calls == []


# ------------------------------------------------------------------ the registry's refusals


def test_registry_refusal_errors_are_the_engines_and_httpxs() -> None:
    request = httpx.Request("GET", "http://billing/")
    unknown = HTTPUnknownBreakerError("billing", ("auth", "users"), request=request)
    full = HTTPRegistryFullError("billing", 2, request=request)
    for error, engine_error in ((unknown, UnknownBreakerError), (full, RegistryFullError)):
        for base in (engine_error, BreakerError, LookupError, httpx.TransportError):
            assert isinstance(error, base)
        assert error.request is request
    assert (unknown.name, unknown.known) == ("billing", ("auth", "users"))
    assert str(unknown) == str(UnknownBreakerError("billing", ("auth", "users")))
    assert (full.name, full.max_breakers) == ("billing", 2)
    assert str(full) == str(RegistryFullError("billing", 2))
    for error in (unknown, full):
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), copy.args) == (type(error), error.args)


@pytest.mark.parametrize("transport_class", [AsyncBreakerTransport, BreakerTransport])
async def test_a_strict_registrys_refusal_is_an_httpx_error(transport_class: type[Any]) -> None:
    registry = BreakerRegistry(breakers={"auth": {}}, strict=True, clock=FakeClock())
    calls: list[str] = []
    transport = transport_class(
        httpx.MockTransport(calls.append), registry=registry, key=lambda r: r.url.host
    )
    request = httpx.Request("GET", "http://billing/invoices?token=abc")
    with pytest.raises(httpx.HTTPError) as raised:  # what an "upstream error" handler catches
        await send(transport, request)
    error = raised.value
    assert type(error) is HTTPUnknownBreakerError
    assert isinstance(error, UnknownBreakerError)
    assert error.request is request
    assert str(error) == (
        "unknown circuit breaker 'billing' in a strict registry; known breakers: 'auth'"
    )
    assert error.__cause__ is None
    assert error.__suppress_context__
    assert calls == []


@pytest.mark.parametrize("transport_class", [AsyncBreakerTransport, BreakerTransport])
async def test_a_full_registrys_refusal_is_an_httpx_error(transport_class: type[Any]) -> None:
    registry = BreakerRegistry(
        {"timeout": None, "volume_threshold": 0}, max_breakers=1, clock=FakeClock()
    )
    calls: list[str] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(503)

    transport = transport_class(httpx.MockTransport(upstream), registry=registry)
    first = httpx.Request("GET", "http://a/")
    second = httpx.Request("GET", "http://b/")
    await send(transport, first)  # opens "a", which may not be forgotten then
    with pytest.raises(HTTPRegistryFullError) as raised:
        await send(transport, second)
    error = raised.value
    assert isinstance(error, RegistryFullError)
    assert isinstance(error, httpx.TransportError)
    assert (error.name, error.max_breakers, error.request) == ("b", 1, second)
    assert calls == ["http://a/"]
    assert list(registry.breakers()) == ["a"]
