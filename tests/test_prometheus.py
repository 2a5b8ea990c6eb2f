"""fastapi_breaker.prometheus: every series' exact value, the /metrics endpoint, and a real scrape.

Series are compared whole: `series()` parses a scrape with prometheus_client's own parser into
{(sample name, labels): value}, and `breaker_series()` writes out every sample one breaker must
have, so that a missing, extra or wrong sample fails the comparison.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from example_app.servers import LoopbackServer
from fastapi_breaker import (
    LATENCY_BOUNDS,
    BreakerMetrics,
    BreakerOptions,
    BreakerRegistry,
    CapacityExceededError,
    CircuitBreaker,
    LatencyHistogram,
)
from fastapi_breaker.fastapi import get_registry, setup_breakers
from fastapi_breaker.prometheus import (
    CONTENT_TYPE,
    DEFAULT_BUCKETS,
    BreakerCollector,
    _accepts_gzip,
    mount_metrics,
)
from fastapi_breaker.testing import FakeClock
from tests.test_health import raw_asgi

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]

STATES = ("closed", "open", "half_open", "forced_open", "disabled")
OUTCOMES = ("success", "failure", "timeout", "rejected", "capacity_rejected", "fallback")
TRANSITIONS = (
    ("closed", "open"),
    ("open", "half_open"),
    ("half_open", "closed"),
    ("half_open", "open"),
    ("open", "closed"),
)
# Latencies that are exact binary fractions, so that sums compare exactly.
FAST = 3 * 2**-10  # 0.0029296875: in the 2**-8 bucket
SLOW = 3 * 2**-5  # 0.09375: in the 2**-3 bucket
# The default buckets, 2**-10 .. 2**5, by their exponents.
EXPONENTS = range(-10, 6)


def series(text: str) -> Series:
    found: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in found, f"{key} twice"
            found[key] = sample.value
    return found


def cumulative(latencies: Iterable[float], bounds: Iterable[float] = DEFAULT_BUCKETS) -> list[int]:
    """How many of `latencies` are <= each bound: written out here, not taken from the engine."""
    values = list(latencies)
    return [sum(1 for value in values if value <= bound) for bound in bounds]


def breaker_series(
    name: str,
    *,
    state: str = "closed",
    calls: dict[str, int] | None = None,
    latencies: Iterable[float] = (),
    failure_rate: float = 0.0,
    transitions: dict[tuple[str, str], int] | None = None,
    threshold: float = 50.0,
    volume: float = 10.0,
    window: float = 10.0,
    reset: float = 30.0,
    timeout: float = 10.0,
    buckets: Iterable[float] = DEFAULT_BUCKETS,
) -> Series:
    """Every sample one breaker has, with these values (the others at their defaults)."""
    latencies = list(latencies)
    bounds = list(buckets)
    n = (("name", name),)
    out: Series = {}
    for one in STATES:
        out[("circuit_breaker_state", (("name", name), ("state", one)))] = float(one == state)
    for outcome in OUTCOMES:
        key = ("circuit_breaker_calls_total", (("name", name), ("outcome", outcome)))
        out[key] = float((calls or {}).get(outcome, 0))
    family = "circuit_breaker_call_duration_seconds"
    for bound, count in zip(bounds, cumulative(latencies, bounds), strict=True):
        out[(f"{family}_bucket", (("le", repr(float(bound))), ("name", name)))] = float(count)
    out[(f"{family}_bucket", (("le", "+Inf"), ("name", name)))] = float(len(latencies))
    out[(f"{family}_count", n)] = float(len(latencies))
    out[(f"{family}_sum", n)] = math.fsum(latencies)
    out[("circuit_breaker_failure_rate", n)] = failure_rate
    for source, target in TRANSITIONS:
        labels = (("from_state", source), ("name", name), ("to_state", target))
        count = (transitions or {}).get((source, target), 0)
        out[("circuit_breaker_transitions_total", labels)] = float(count)
    out[("circuit_breaker_failure_rate_threshold", n)] = threshold
    out[("circuit_breaker_volume_threshold", n)] = volume
    out[("circuit_breaker_window_seconds", n)] = window
    out[("circuit_breaker_reset_timeout_seconds", n)] = reset
    out[("circuit_breaker_call_timeout_seconds", n)] = timeout
    return out


def scrape(collector: BreakerCollector) -> Series:
    """Through prometheus_client: the collector in a registry of its own, generate_latest."""
    registry = CollectorRegistry()
    registry.register(collector)
    return series(generate_latest(registry).decode())


def taking(clock: FakeClock, seconds: float, error: Exception | None = None) -> Any:
    """An action that takes `seconds` by the breaker's clock, then returns or raises `error`."""

    async def action() -> str:
        clock.advance(seconds)
        if error is not None:
            raise error
        return "ok"

    return action


async def fail_with(breaker: CircuitBreaker, clock: FakeClock, seconds: float) -> None:
    with pytest.raises(ConnectionError):
        await breaker.call(taking(clock, seconds, ConnectionError("down")))


# ------------------------------------------------------------------------ series, one by one


def test_a_new_breaker_has_every_series_at_zero_and_its_settings() -> None:
    registry = BreakerRegistry(clock=FakeClock())
    registry.get("auth")

    assert scrape(BreakerCollector(registry)) == breaker_series("auth")


def test_an_empty_registry_has_no_samples_but_every_family() -> None:
    registry = CollectorRegistry()
    registry.register(BreakerCollector(BreakerRegistry()))
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))

    assert [(f.name, f.type, f.samples) for f in families] == [
        ("circuit_breaker_state", "gauge", []),
        ("circuit_breaker_calls", "counter", []),
        ("circuit_breaker_call_duration_seconds", "histogram", []),
        ("circuit_breaker_failure_rate", "gauge", []),
        ("circuit_breaker_transitions", "counter", []),
        ("circuit_breaker_failure_rate_threshold", "gauge", []),
        ("circuit_breaker_volume_threshold", "gauge", []),
        ("circuit_breaker_window_seconds", "gauge", []),
        ("circuit_breaker_reset_timeout_seconds", "gauge", []),
        ("circuit_breaker_call_timeout_seconds", "gauge", []),
    ]


async def test_calls_latencies_and_failure_rate_after_successes_and_failures() -> None:
    clock = FakeClock()
    registry = BreakerRegistry({"volume_threshold": 100}, clock=clock)
    breaker = registry.get("auth")
    for _ in range(3):
        await breaker.call(taking(clock, FAST))
    await fail_with(breaker, clock, SLOW)

    assert scrape(BreakerCollector(registry)) == breaker_series(
        "auth",
        calls={"success": 3, "failure": 1},
        latencies=[FAST, FAST, FAST, SLOW],
        failure_rate=25.0,
        volume=100,
    )


async def test_a_timeout_counts_once_as_timeout_with_its_latency() -> None:
    clock = FakeClock()
    registry = BreakerRegistry({"volume_threshold": 100}, clock=clock)
    breaker = registry.get("auth")
    attempt = breaker.begin()
    clock.advance(0.75)
    attempt.timed_out()

    assert scrape(BreakerCollector(registry)) == breaker_series(
        "auth", calls={"timeout": 1}, latencies=[0.75], failure_rate=100.0, volume=100
    )


async def test_open_half_open_closed_and_rejections_with_a_fallback() -> None:
    clock = FakeClock()
    registry = BreakerRegistry({"volume_threshold": 0, "reset_timeout": 5}, clock=clock)
    breaker = registry.get("auth").fallback(lambda *args: "cached")
    collector = BreakerCollector(registry)
    # Answered by the fallback: a failure that opens, then a refusal.
    assert await breaker.call(taking(clock, SLOW, ConnectionError("down"))) == "cached"
    assert await breaker.call(taking(clock, FAST)) == "cached"
    refused: dict[str, Any] = {
        "calls": {"failure": 1, "rejected": 1, "fallback": 2},
        "latencies": [SLOW],
        "failure_rate": 100.0,
        "volume": 0,
        "reset": 5,
    }
    opened = {("closed", "open"): 1}
    assert scrape(collector) == breaker_series("auth", state="open", transitions=opened, **refused)

    clock.advance(5)
    # Read at scrape time: the reset timeout passed, so the scrape itself finds it half-open.
    # The failure is 5 s old, still in the 10 s window.
    trial = {**opened, ("open", "half_open"): 1}
    assert scrape(collector) == breaker_series(
        "auth", state="half_open", transitions=trial, **refused
    )

    assert await breaker.call(taking(clock, FAST)) == "ok"
    assert scrape(collector) == breaker_series(
        "auth",
        calls={"success": 1, "failure": 1, "rejected": 1, "fallback": 2},
        latencies=[SLOW, FAST],
        transitions={**trial, ("half_open", "closed"): 1},
        volume=0,
        reset=5,
    )


async def test_capacity_rejections_are_counted_apart() -> None:
    clock = FakeClock()
    registry = BreakerRegistry({"capacity": 1}, clock=clock)
    breaker = registry.get("auth")
    release = asyncio.Event()
    held = asyncio.create_task(breaker.call(release.wait))
    await asyncio.sleep(0)  # the held call is running now
    with pytest.raises(CapacityExceededError):
        await breaker.call(taking(clock, FAST))
    release.set()
    await held

    assert scrape(BreakerCollector(registry)) == breaker_series(
        "auth", calls={"success": 1, "capacity_rejected": 1}, latencies=[0.0]
    )


@pytest.mark.parametrize(
    ("act", "state"),
    [
        (CircuitBreaker.open, "open"),
        (CircuitBreaker.force_open, "forced_open"),
        (CircuitBreaker.disable, "disabled"),
    ],
)
def test_states_set_by_hand(act: Any, state: str) -> None:
    registry = BreakerRegistry(clock=FakeClock())
    act(registry.get("auth"))
    opened = {("closed", "open"): 1} if state != "disabled" else {}

    assert scrape(BreakerCollector(registry)) == breaker_series(
        "auth", state=state, transitions=opened
    )


def test_disabled_wins_over_forced_open_and_a_close_by_hand_is_counted() -> None:
    registry = BreakerRegistry(clock=FakeClock())
    breaker = registry.get("auth")
    breaker.force_open()
    breaker.disable()
    assert scrape(BreakerCollector(registry)) == breaker_series(
        "auth", state="disabled", transitions={("closed", "open"): 1}
    )

    breaker.enable()
    breaker.close()
    assert scrape(BreakerCollector(registry)) == breaker_series(
        "auth", transitions={("closed", "open"): 1, ("open", "closed"): 1}
    )


def test_settings_and_no_time_limit_as_infinity() -> None:
    registry = BreakerRegistry(
        {"timeout": None},
        {"slow": {"error_threshold_percentage": 12.5, "volume_threshold": 3, "timeout": 2.5}},
        clock=FakeClock(),
    )
    registry.get("slow")
    registry.get("free")
    registry.get("windowed")  # made with the defaults, like "free"

    assert scrape(BreakerCollector(registry)) == {
        **breaker_series("slow", threshold=12.5, volume=3, timeout=2.5),
        **breaker_series("free", timeout=math.inf),
        **breaker_series("windowed", timeout=math.inf),
    }


def test_breakers_made_later_appear_and_removed_ones_leave() -> None:
    registry = BreakerRegistry(clock=FakeClock())
    collector = BreakerCollector(registry)
    assert scrape(collector) == {}

    registry.get("a")
    registry.get("b")
    assert scrape(collector) == {**breaker_series("a"), **breaker_series("b")}

    registry.remove("a")
    assert scrape(collector) == breaker_series("b")


async def test_scraping_subscribes_to_nothing() -> None:
    # Nothing per call: a listener would take the breaker off its fast paths.
    registry = BreakerRegistry(clock=FakeClock())
    breaker = registry.get("auth")
    collector = BreakerCollector(registry)
    scrape(collector)
    collector.render()
    await breaker.call(taking(FakeClock(), 0))

    assert not breaker.listening


def test_custom_buckets() -> None:
    clock = FakeClock()
    registry = BreakerRegistry(clock=clock)
    breaker = registry.get("auth")
    for seconds in (0.0, FAST, 1.25, 2000.0):
        attempt = breaker.begin()
        clock.advance(seconds)
        attempt.succeeded()
    buckets = (2**-10, 1.25, 1024.0)

    assert scrape(BreakerCollector(registry, buckets=buckets)) == breaker_series(
        "auth",
        calls={"success": 4},
        latencies=[0.0, FAST, 1.25, 2000.0],
        buckets=buckets,
    )


# ------------------------------------------------------------- the text, byte for byte


NAMES = [
    "plain",
    'quote"d',
    "back\\slash",
    "new\nline",
    "ünïcødé ✓",
    "lone\udc80surrogate",
    "tab\tand space",
    "per%cent %s %(name)s",
]


async def test_render_writes_what_generate_latest_writes() -> None:
    clock = FakeClock()
    registry = BreakerRegistry({"volume_threshold": 0}, max_breakers=None, clock=clock)
    for index, name in enumerate(NAMES):
        breaker = registry.get(name)
        for _ in range(index):
            await breaker.call(taking(clock, FAST * index))
        if index % 2:
            await fail_with(breaker, clock, SLOW)
    registry.get(NAMES[3]).force_open()
    registry.get(NAMES[4]).disable()
    for buckets in (DEFAULT_BUCKETS, (1.0,), (2**-20, 0.09375, 1024.0)):
        collector = BreakerCollector(registry, buckets=buckets)
        prometheus = CollectorRegistry()
        prometheus.register(collector)

        assert collector.render() == generate_latest(prometheus)


class StandIn:
    """A breaker as the collector sees it: only `metrics()`, here with made-up values."""

    def __init__(self, metrics: BreakerMetrics) -> None:
        self.metrics = lambda: metrics


def test_render_writes_what_generate_latest_writes_past_a_million() -> None:
    # Counts from a million up are written with exponents (1.234567e+06), and a transition
    # outside the usual five gets a series of its own.
    stats = BreakerRegistry().get("x").stats
    many = {outcome: 1_234_567 + index for index, outcome in enumerate(OUTCOMES)}
    counts = [0] * (len(LATENCY_BOUNDS) + 1)
    counts[5], counts[60], counts[-1] = 999_999, 3_000_000, 7
    transitions = {("closed", "open"): 2_000_000, ("closed", "half_open"): 1}
    big = BreakerMetrics(
        name="big",
        state="half_open",
        calls=many,
        latency=LatencyHistogram(tuple(counts), 123456.789),
        transitions=transitions,
        error_percentage=stats.error_percentage,
        retry_after=None,
        options=BreakerOptions(timeout=None, volume_threshold=1_000_000),
    )
    small = dataclasses.replace(big, name="small", calls=dict.fromkeys(OUTCOMES, 999_999))
    source = {"big": StandIn(big), "small": StandIn(small)}
    collector = BreakerCollector(SimpleNamespace(breakers=lambda: source))
    prometheus = CollectorRegistry()
    prometheus.register(collector)
    text = collector.render()

    assert text == generate_latest(prometheus)
    assert b'circuit_breaker_calls_total{name="big",outcome="success"} 1.234567e+06\n' in text
    assert b'circuit_breaker_calls_total{name="small",outcome="success"} 999999.0\n' in text
    assert b'_count{name="big"} 4.000006e+06\n' in text
    assert (
        b'circuit_breaker_transitions_total{from_state="closed",name="big",to_state="half_open"}'
        b" 1.0\n" in text
    )


def test_names_are_label_values_as_they_are_surrogates_as_text() -> None:
    registry = BreakerRegistry(max_breakers=None, clock=FakeClock())
    for name in NAMES:
        registry.get(name)
    found = series(BreakerCollector(registry).render().decode())
    names = {dict(labels)["name"] for _, labels in found}

    # One-to-one: a backslash doubled, a lone surrogate written as text.
    assert names == {*NAMES[:2], "back\\\\slash", *NAMES[3:5], "lone\\udc80surrogate", *NAMES[6:]}


# ------------------------------------------------------------------------- bad buckets


@pytest.mark.parametrize(
    ("buckets", "error", "message"),
    [
        ((), ValueError, "buckets must hold at least one bound; each must be one of"),
        (
            (0.1,),
            ValueError,
            "buckets: 0.1 is not allowed (nearest: 0.09375 and 0.109375); each must be one of",
        ),
        ((2000.0,), ValueError, "buckets: 2000.0 is not allowed (nearest: 1024.0); each must"),
        ((-1,), ValueError, "buckets: -1 is not allowed (nearest: 9.5367431640625e-07); each"),
        ((1.0, 0.5), ValueError, "buckets must be strictly ascending: 0.5 follows 1.0"),
        ((1.0, 1.0), ValueError, "buckets must be strictly ascending: 1.0 follows 1.0"),
        ("1.0", TypeError, "buckets must be a sequence of seconds, got '1.0'"),
        (1.0, TypeError, "buckets must be a sequence of seconds, got 1.0"),
        ((True,), TypeError, "buckets must hold numbers of seconds, got True"),
        ((math.nan,), ValueError, "buckets: nan is not allowed (nearest: ); each must be one"),
    ],
)
def test_bad_buckets_fail_at_construction(buckets: Any, error: type, message: str) -> None:
    with pytest.raises(error) as raised:
        BreakerCollector(BreakerRegistry(), buckets=buckets)

    assert str(raised.value).startswith(message)


def test_the_bucket_error_names_the_allowed_set() -> None:
    message = (
        "buckets: 0.1 is not allowed (nearest: 0.09375 and 0.109375); each must be one of "
        "fastapi_breaker.LATENCY_BOUNDS: 2**-20 s, then four per power of two, "
        "2**k * (1 + j/4) for k = -20..9 and j = 1..4, up to 1024 s"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        BreakerCollector(BreakerRegistry(), buckets=[0.1])


def test_int_buckets_equal_to_a_bound_are_taken_as_floats() -> None:
    collector = BreakerCollector(BreakerRegistry(), buckets=[1, 2, 1024])

    assert collector.buckets == (1.0, 2.0, 1024.0)


def test_a_registry_without_breakers_is_refused() -> None:
    with pytest.raises(TypeError) as raised:
        BreakerCollector(object())  # type: ignore[arg-type]

    assert str(raised.value).startswith("registry must have a breakers() method, got <object")


# --------------------------------------------------------------- in a CollectorRegistry


def test_describe_lets_a_registry_refuse_a_second_collector() -> None:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(BreakerCollector(BreakerRegistry()))

    with pytest.raises(ValueError, match=r"^Duplicated timeseries in CollectorRegistry: \{") as e:
        registry.register(BreakerCollector(BreakerRegistry()))

    assert "circuit_breaker_state" in str(e.value)


# --------------------------------------------------------------------------- /metrics


async def get(
    app: FastAPI, path: str = "/metrics", method: str = "GET", **kwargs: Any
) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.request(method, path, **kwargs)


def app_with(apps: BreakerRegistry | None = None, **options: Any) -> FastAPI:
    """An app whose registry is `apps`, with /metrics mounted with `options`."""
    app = FastAPI()
    setup_breakers(app, apps or BreakerRegistry(clock=FakeClock()))
    mount_metrics(app, **options)
    return app


async def test_metrics_of_the_apps_registry_in_plain_text() -> None:
    registry = BreakerRegistry(clock=FakeClock())
    registry.get("auth")
    response = await get(app_with(registry), headers={"Accept-Encoding": "identity"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response.headers["content-type"] == CONTENT_TYPE
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["vary"] == "Accept-Encoding"
    assert "content-encoding" not in response.headers
    assert response.headers["content-length"] == str(len(response.content))
    assert series(response.text) == breaker_series("auth")


async def test_metrics_gzipped_when_the_client_accepts_it() -> None:
    registry = BreakerRegistry(clock=FakeClock())
    registry.get("auth")
    app = app_with(registry)
    response = await get(app, headers={"Accept-Encoding": "gzip"})
    plain = await get(app, headers={"Accept-Encoding": "identity"})

    assert response.headers["content-encoding"] == "gzip"
    assert response.content == plain.content  # httpx decoded it
    assert series(response.text) == breaker_series("auth")


@pytest.mark.parametrize(
    ("header", "gzipped"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("deflate, GZIP;q=0.5", True),
        ("*", True),
        ("", False),
        ("identity", False),
        ("br", False),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("gzip;q=bad", False),
        ("gzip;q=0, *", False),
        ("*;q=0, gzip", True),
    ],
)
def test_accept_encoding(header: str, gzipped: bool) -> None:
    assert _accepts_gzip(header) is gzipped


async def test_head_has_the_headers_of_get_and_no_body() -> None:
    registry = BreakerRegistry(clock=FakeClock())
    registry.get("auth")
    app = app_with(registry)
    get_status, get_headers, get_body = await raw_asgi(app, "/metrics", "GET")
    head_status, head_headers, head_body = await raw_asgi(app, "/metrics", "HEAD")

    assert (head_status, head_headers, head_body) == (get_status, get_headers, b"")
    assert get_headers["content-length"] == str(len(get_body))
    assert series(get_body.decode()) == breaker_series("auth")
    # Gzipped, HEAD gives the compressed length.
    zipped = {"Accept-Encoding": "gzip"}
    get_zipped = await get(app, headers=zipped)
    head_zipped = await get(app, method="HEAD", headers=zipped)
    assert head_zipped.headers == get_zipped.headers
    assert head_zipped.headers["content-encoding"] == "gzip"


async def test_a_scrape_lets_the_event_loop_run_between_slices_of_64_breakers() -> None:
    registry = BreakerRegistry(max_breakers=None, clock=FakeClock())
    for index in range(150):
        registry.get(f"b{index:03d}")
    turns = 0
    seen: list[int] = []  # the loop's turns when each breaker was read

    class Watched:
        def __init__(self, breaker: CircuitBreaker) -> None:
            self.breaker = breaker

        def metrics(self) -> BreakerMetrics:
            seen.append(turns)
            return self.breaker.metrics()

    source = SimpleNamespace(
        breakers=lambda: {n: Watched(b) for n, b in registry.breakers().items()}
    )
    app = FastAPI()
    collector = mount_metrics(app, registry=source)

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    counting = asyncio.create_task(count_turns())
    try:
        response = await get(app, headers={"Accept-Encoding": "identity"})
    finally:
        counting.cancel()

    slices = [seen[:64], seen[64:128], seen[128:]]
    assert [len(part) for part in slices] == [64, 64, 22]
    assert [len(set(part)) for part in slices] == [1, 1, 1]  # no turn within a slice
    assert slices[0][0] < slices[1][0] < slices[2][0]  # and some between them
    assert response.content == collector.render(registry)


async def test_an_explicit_registry_is_served_instead_of_the_apps() -> None:
    mine = BreakerRegistry(clock=FakeClock())
    mine.get("mine")
    apps = BreakerRegistry(clock=FakeClock())
    apps.get("the app's")
    app = app_with(apps, registry=mine)

    assert series((await get(app)).text) == breaker_series("mine")


async def test_the_apps_registry_is_read_at_request_time_from_the_lifespan_state() -> None:
    registry = BreakerRegistry(clock=FakeClock())
    registry.get("from lifespan")
    app = FastAPI()
    mount_metrics(app)

    async def with_lifespan_state(scope: Any, receive: Any, send: Any) -> None:
        # What a server puts in each request's scope after a lifespan yields its state.
        await app({**scope, "state": {"breaker_registry": registry}}, receive, send)

    transport = httpx.ASGITransport(app=with_lifespan_state)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/metrics")

    assert series(response.text) == breaker_series("from lifespan")


async def test_no_registry_anywhere_is_a_clear_error() -> None:
    app = FastAPI()
    mount_metrics(app)

    with pytest.raises(RuntimeError) as raised:
        await get(app)

    assert str(raised.value) == (
        "this app has no breaker registry: call fastapi_breaker.fastapi.setup_breakers(app) "
        "or set app.state.breaker_registry to a BreakerRegistry"
    )


async def test_dependencies_guard_the_endpoint() -> None:
    def token(request: Request) -> None:
        if request.headers.get("authorization") != "Bearer scraper":
            raise HTTPException(401, "who are you?")

    app = app_with(dependencies=[Depends(token)])

    assert (await get(app)).status_code == 401
    assert (await get(app, method="HEAD")).status_code == 401
    allowed = await get(app, headers={"Authorization": "Bearer scraper"})
    assert allowed.status_code == 200


async def test_path_and_schema() -> None:
    hidden = app_with(path="/internal/metrics")
    shown = app_with(include_in_schema=True)

    assert (await get(hidden, "/internal/metrics")).status_code == 200
    assert (await get(hidden)).status_code == 404
    assert "/internal/metrics" not in hidden.openapi()["paths"]
    operation = shown.openapi()["paths"]["/metrics"]
    assert list(operation) == ["get"]
    assert list(operation["get"]["responses"]["200"]["content"]) == ["text/plain"]


@pytest.mark.parametrize("path", ["metrics", "/metrics/{name}", "/metrics?x", "/me trics", 7])
def test_bad_paths_fail_at_mount(path: Any) -> None:
    message = (
        "path must start with '/' and hold no '{', '}', '?', '#', whitespace or control "
        f"characters, got {path!r}"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        mount_metrics(FastAPI(), path=path)


def test_bad_arguments_fail_at_mount() -> None:
    with pytest.raises(TypeError) as registry:
        mount_metrics(FastAPI(), registry=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError) as prometheus:
        mount_metrics(FastAPI(), prometheus_registry=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^buckets: 0\.3 is not allowed \(nearest: 0\.25 and"):
        mount_metrics(FastAPI(), buckets=[0.3])

    assert str(registry.value).startswith("registry must have a breakers() method, got <object")
    assert str(prometheus.value).startswith(
        "prometheus_registry must be a prometheus_client CollectorRegistry or None, got <object"
    )


async def test_a_prometheus_registry_of_yours_is_served_whole() -> None:
    prometheus = CollectorRegistry()
    Counter("app_requests", "Requests.", registry=prometheus).inc(7)
    registry = BreakerRegistry(clock=FakeClock())
    registry.get("auth")
    app = FastAPI()
    setup_breakers(app, registry)
    collector = mount_metrics(app, prometheus_registry=prometheus)

    found = series((await get(app)).text)
    # The collector sits in your registry: generate_latest of it, anywhere, shows the breakers.
    assert series(generate_latest(prometheus).decode()) == found
    assert collector.registry is not registry  # it reads app.state.breaker_registry when asked
    apps = {key: value for key, value in found.items() if key[0].startswith("app_")}
    assert sorted(apps) == [("app_requests_created", ()), ("app_requests_total", ())]
    assert apps[("app_requests_total", ())] == 7.0
    assert {k: v for k, v in found.items() if k not in apps} == breaker_series("auth")


def test_mount_returns_the_collector_with_its_buckets() -> None:
    collector = mount_metrics(FastAPI(), buckets=[0.25, 1])

    assert isinstance(collector, BreakerCollector)
    assert collector.buckets == (0.25, 1.0)


# ------------------------------------------------------------------- without the extras


def run_blocked(blocked: tuple[str, ...], code: str) -> list[str]:
    """Run `code` in a fresh interpreter where importing `blocked` fails; its output's lines.

    A None in sys.modules makes Python refuse that import with a message of its own, so a test
    cannot pass on some other ImportError.
    """
    program = f"import sys\nsys.modules.update(dict.fromkeys({blocked!r}))\n"
    result = subprocess.run(
        [sys.executable, "-c", program + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_without_prometheus_client_the_error_names_the_extra() -> None:
    lines = run_blocked(
        ("prometheus_client", "prometheus_client.core"),
        """
        try:
            import fastapi_breaker.prometheus
        except ImportError as exc:
            print(exc)
            print(type(exc.__cause__).__name__, exc.__cause__)
        """,
    )

    assert lines == [
        "fastapi_breaker.prometheus needs prometheus_client: "
        "pip install 'fastapi_breaker[prometheus]'",
        "ModuleNotFoundError import of prometheus_client.core halted; None in sys.modules",
    ]


def test_the_collector_works_without_fastapi_and_mounting_names_the_extra() -> None:
    lines = run_blocked(
        ("fastapi", "fastapi.responses", "starlette"),
        """
        from fastapi_breaker import BreakerRegistry
        from fastapi_breaker.prometheus import BreakerCollector, mount_metrics

        registry = BreakerRegistry()
        registry.get("auth")
        print(len(BreakerCollector(registry).render().splitlines()))
        try:
            mount_metrics(object())
        except ImportError as exc:
            print(exc)
        """,
    )

    assert lines == ["61", "mount_metrics needs FastAPI: pip install 'fastapi_breaker[fastapi]'"]


# ----------------------------------------------------- acceptance: a real server, scraped


async def test_a_real_scrape_after_closed_open_half_open_closed() -> None:
    """A uvicorn server on loopback whose breaker goes closed -> open -> half_open -> closed,
    driven by HTTP requests and a fake clock (the server runs in this event loop), then one
    scrape of /metrics through httpx, parsed by prometheus_client: every series exact."""
    clock = FakeClock()
    registry = BreakerRegistry(
        {"volume_threshold": 0, "reset_timeout": 30, "capacity": 1},
        clock=clock,
    )
    registry.get("idle")  # a second breaker, never called
    app = FastAPI()
    setup_breakers(app, registry)
    mount_metrics(app)
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> str:
        held.set()
        await release.wait()
        return "held"

    @app.get("/upstream/{kind}")
    async def upstream(kind: str, request: Request) -> dict[str, str]:
        breaker = get_registry(request).get("upstream")
        if kind == "timeout":
            attempt = breaker.begin()
            clock.advance(0.75)
            attempt.timed_out()
            return {"answer": "timed out"}
        action = {
            "ok": taking(clock, FAST),
            "fail": taking(clock, SLOW, ConnectionError("down")),
            "hold": hold,
        }[kind]
        return {"answer": await breaker.call(action)}

    registry.get("upstream").fallback(lambda *args: "fallback")
    server = LoopbackServer(app)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:

            async def answer(kind: str) -> str:
                response = await client.get(f"/upstream/{kind}")
                assert response.status_code == 200
                answer: str = response.json()["answer"]
                return answer

            assert [await answer("ok"), await answer("ok")] == ["ok", "ok"]
            assert await answer("timeout") == "timed out"  # 1 failure in 3: closed
            holding = asyncio.create_task(answer("hold"))
            await held.wait()
            assert await answer("ok") == "fallback"  # capacity 1 is taken
            release.set()
            assert await holding == "held"
            assert await answer("fail") == "fallback"  # 2 failures in 5: closed
            assert await answer("fail") == "fallback"  # 3 in 6, 50%: not above 50%, closed
            assert await answer("fail") == "fallback"  # 4 in 7: open
            assert await answer("ok") == "fallback"  # refused while open
            clock.advance(30)  # the reset timeout: half-open when next looked at
            assert await answer("ok") == "ok"  # the trial closes it

            response = await client.get("/metrics")
    finally:
        await server.stop()

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response.headers["content-encoding"] == "gzip"  # httpx asks for it, and decodes
    assert response.headers["cache-control"] == "no-store"
    assert series(response.text) == {
        **breaker_series(
            "upstream",
            state="closed",
            calls={
                "success": 4,  # ok, ok, the held call, the trial
                "failure": 3,
                "timeout": 1,
                "rejected": 1,
                "capacity_rejected": 1,
                "fallback": 5,  # the capacity refusal, the three failures, the open refusal
            },
            latencies=[FAST, FAST, 0.75, 0.0, SLOW, SLOW, SLOW, FAST],
            failure_rate=0.0,  # the window holds the trial alone: 30 s passed
            transitions={
                ("closed", "open"): 1,
                ("open", "half_open"): 1,
                ("half_open", "closed"): 1,
            },
            volume=0,
            reset=30,
        ),
        **breaker_series("idle", volume=0, reset=30),
    }
