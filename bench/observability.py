"""Observability costs: a call with the Prometheus collector, `stats` at any traffic, a scrape,
OpenTelemetry.

    python -m bench.observability [--quick] [--rounds R] [--breakers N] [--scrapes S]

(a) `await breaker.call(noop)` on a closed breaker whose registry has the Prometheus collector
    registered (scraped once per round, outside the timed loop) and the engine's transition
    logging (on by default), against the same breaker in a registry without the collector, and
    a bare `await noop()`: interleaved rounds of 2,000 calls. The figure is the ratio of the
    overheads over the bare call (median of the per-round ratios, with a 95% interval).
(b) `breaker.stats` and `breaker.metrics()` with 10 and with 1,000,000 calls in the rolling
    window (10 s in 10 buckets; a fake clock spreads the calls over 9.9 s, each taking 1-9 us
    by that clock). The first read after filling folds the window's latencies into bins and
    is reported apart; then interleaved rounds of 200 reads of each.
(c) One scrape of 1,000 breakers with history (80% successes; every 10th opened): the
    collector's `render()` (and apart, the `metrics()` reads it starts with) and
    prometheus_client's `generate_latest` in this process, then
    `GET /metrics` over HTTP from a uvicorn subprocess (`mount_metrics`), gzipped as
    Prometheus asks for it and plain, one request at a time, until the body's last byte;
    and in this process, the longest the event loop waited for a turn during a GET (a scrape
    reads the breakers in slices, letting other requests run between them).
(d) OpenTelemetry: `await breaker.call(noop)` closed, and refused (open), through a registry
    with `fastapi_breaker.otel.instrument(registry)` (metrics and every span event) against
    one without, with no span current and in a recording span (one per 100 calls), in the
    interleaved rounds of (a): the ratio of the closed calls' overheads over the bare call,
    and of the refusals' whole cost. Then one collection of the breakers of (c) through the
    SDK's `InMemoryMetricReader` (its cardinality limit raised to hold them all), beside
    their `metrics()` reads and the Prometheus collector's `render()`.
Results: bench/results/observability-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import gzip
import logging
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
from fastapi import FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, generate_latest

from bench.apps import HEALTH_OPTIONS, populate
from bench.processes import UvicornProcess
from bench.report import (
    Run,
    goal,
    heading,
    interleaved,
    median_interval,
    timed,
    verdict_lines,
    versions,
)
from fastapi_breaker import BreakerRegistry, CircuitBreaker, CircuitOpenError, State
from fastapi_breaker.fastapi import setup_breakers
from fastapi_breaker.otel import instrument
from fastapi_breaker.prometheus import BreakerCollector, mount_metrics
from fastapi_breaker.testing import FakeClock

CALLS = 2_000  # per timed sample in (a)
READS = 200  # per timed sample in (b)
FULL = 1_000_000  # calls in the full window of (b)
SPAN_CALLS = 100  # calls per span in (d): under the SDK's default limit of 128 events per span
OPEN_OPTIONS = {"reset_timeout": 3600.0, "volume_threshold": 0}  # (d): one failure opens


async def noop() -> None:
    return None


async def fail() -> None:
    raise ValueError("upstream said no")


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


# ------------------------------------------------------------------- (a) the call overhead


async def call_overhead(rounds: int) -> dict[str, Any]:
    scraped = BreakerRegistry()
    collector = BreakerCollector(scraped)
    CollectorRegistry().register(collector)
    breakers = {
        "collector": scraped.get("downstream"),
        "plain": BreakerRegistry().get("downstream"),
    }

    def calling(breaker: CircuitBreaker) -> Callable[[int], Awaitable[None]]:
        async def run(n: int) -> None:
            for _ in range(n):
                await breaker.call(noop)

        return run

    async def bare(n: int) -> None:
        for _ in range(n):
            await noop()

    loops = {"bare": bare, **{key: calling(breaker) for key, breaker in breakers.items()}}
    keys = list(loops)
    for key in keys:
        await timed(loops[key], 1_000)  # warm-up
    samples: dict[str, list[float]] = {key: [] for key in keys}
    for index in range(rounds):
        collector.render()  # a scrape between samples, as Prometheus would make
        shift = index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            samples[key].append(await timed(loops[key], CALLS))
    for key, breaker in breakers.items():
        if breaker.state is not State.CLOSED or breaker.stats.failures or breaker.listening:
            raise RuntimeError(f"the {key} breaker is not a clean closed one: {breaker!r}")
    over = {
        key: [s - b for s, b in zip(samples[key], samples["bare"], strict=True)] for key in breakers
    }
    ratios = [c / p for c, p in zip(over["collector"], over["plain"], strict=True)]
    low, high = median_interval([ratios])
    return {
        "calls_per_sample": CALLS,
        "rounds": rounds,
        "bare_ns": statistics.median(samples["bare"]),
        "call_ns": {key: statistics.median(samples[key]) for key in breakers},
        "overhead_ns": {key: statistics.median(values) for key, values in over.items()},
        "ratio": statistics.median(ratios),
        "ratio_95": [low, high],
    }


# ---------------------------------------------------------------- (b) stats at any traffic


async def filled(calls: int) -> CircuitBreaker:
    """A breaker whose window holds `calls` successes spread over 9.9 s of its 10 s."""
    clock = FakeClock()
    breaker = CircuitBreaker(name=f"window-{calls}", clock=clock, timeout=None)
    step = 9.9 / calls
    rng = random.Random(calls)
    latencies = [rng.uniform(1e-6, min(9e-6, step)) for _ in range(min(calls, 10_000))]

    latency = 0.0

    async def action() -> None:
        clock.advance(latency)

    for index in range(calls):
        latency = latencies[index % len(latencies)]
        await breaker.call(action)
        clock.advance(step - latency)
    return breaker


def read_once(read: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    read()
    return (time.perf_counter_ns() - start) / 1000


def interleaved_once(ways: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Milliseconds of one run of each way per round, starting one further along each round."""
    keys = list(ways)
    samples: dict[str, list[float]] = {key: [] for key in keys}
    for index in range(rounds):
        shift = index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            samples[key].append(read_once(ways[key]) / 1000)
    return samples


def read_loop(read: Callable[[], object]) -> Callable[[int], Awaitable[None]]:
    async def run(n: int) -> None:
        for _ in range(n):
            read()

    return run


async def stats_cost(rounds: int) -> dict[str, Any]:
    breakers = {"10": await filled(10), "1000000": await filled(FULL)}
    found: dict[str, Any] = {"reads_per_sample": READS, "rounds": rounds}
    for size, breaker in breakers.items():
        gc.collect()
        # The first read folds the latencies of the window's buckets into bins: once.
        found[f"first_read_us.{size}"] = read_once(lambda b=breaker: b.stats)
        if breaker.stats.fires != int(size):
            raise RuntimeError(f"the window holds {breaker.stats.fires} calls, not {size}")
    loops = {
        f"{what}.{size}": read_loop(
            (lambda b=breaker: b.stats) if what == "stats" else breaker.metrics
        )
        for size, breaker in breakers.items()
        for what in ("stats", "metrics")
    }
    keys = list(loops)
    samples: dict[str, list[float]] = {key: [] for key in keys}
    for index in range(rounds):
        shift = index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            samples[key].append(await timed(loops[key], READS) / 1000)  # us per read
    for what in ("stats", "metrics"):
        for size in breakers:
            found[f"{what}_us.{size}"] = statistics.median(samples[f"{what}.{size}"])
        ratios = [
            big / small
            for big, small in zip(samples[f"{what}.1000000"], samples[f"{what}.10"], strict=True)
        ]
        found[f"{what}_ratio"] = statistics.median(ratios)
        found[f"{what}_ratio_95"] = list(median_interval([ratios]))
    return found


# ------------------------------------------------------------------------- (c) one scrape


def make_metrics_app(count: int | None = None) -> FastAPI:
    """`/metrics` over `count` breakers with history; uvicorn --factory: BENCH_BREAKERS."""
    registry = BreakerRegistry(HEALTH_OPTIONS, max_breakers=None)
    populate(registry, int(os.environ.get("BENCH_BREAKERS", "1000")) if count is None else count)
    app = FastAPI()
    setup_breakers(app, registry)
    mount_metrics(app)
    return app


def scrape_in_process(count: int, reads: int) -> dict[str, Any]:
    registry = BreakerRegistry(HEALTH_OPTIONS, max_breakers=None)
    populate(registry, count)
    collector = BreakerCollector(registry)
    prometheus = CollectorRegistry()
    prometheus.register(collector)
    body = collector.render()
    if body != generate_latest(prometheus):
        raise RuntimeError("render() and generate_latest() wrote different texts")
    breakers = list(registry.breakers().values())
    ways: dict[str, Callable[[], object]] = {
        "read": lambda: [breaker.metrics() for breaker in breakers],
        "render": collector.render,
        "generate_latest": lambda: generate_latest(prometheus),
        "gzip": lambda: gzip.compress(body, compresslevel=1),
    }
    samples = interleaved_once(ways, reads)
    found: dict[str, Any] = {
        "bytes": len(body),
        "gzip_bytes": len(gzip.compress(body, compresslevel=1)),
        "samples": body.count(b"\n") - body.count(b"\n#"),
    }
    for key, values in samples.items():
        found[key] = {"p50": statistics.median(values), "p99": percentile(values, 0.99)}
    return found


async def loop_stall(count: int, scrapes: int) -> dict[str, Any]:
    """The longest the event loop waited for a turn during each `GET /metrics` (in process,
    through httpx's ASGI transport): how long the scrape held up the app's other requests."""
    app = make_metrics_app(count)
    longest = 0.0

    async def watch() -> None:
        nonlocal longest
        before = time.perf_counter()
        while True:
            await asyncio.sleep(0)
            now = time.perf_counter()
            longest = max(longest, now - before)
            before = now

    stalls: list[float] = []
    transport = httpx.ASGITransport(app=app)
    watching = asyncio.create_task(watch())
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for index in range(scrapes + 2):
                await asyncio.sleep(0.005)  # the watcher's first turns
                longest = 0.0
                response = await client.get("/metrics", headers={"Accept-Encoding": "gzip"})
                if response.status_code != 200:
                    raise RuntimeError(f"/metrics answered {response.status_code}")
                if index >= 2:
                    stalls.append(longest * 1000)
    finally:
        watching.cancel()
    return {"p50": statistics.median(stalls), "max": max(stalls)}


def scrape_over_http(count: int, requests: int) -> dict[str, Any]:
    """From the request to the body's last byte, as it came over the wire: Prometheus's own
    time to decompress and parse it is not the app's."""
    env = {"BENCH_BREAKERS": str(count)}
    found: dict[str, Any] = {}
    with (
        UvicornProcess("bench.observability:make_metrics_app", env=env, ready_path="/metrics") as s,
        httpx.Client(base_url=s.url, trust_env=False, timeout=30.0) as client,
    ):
        shown = client.get("/metrics").text  # gzipped and decoded by httpx
        if shown.count("circuit_breaker_state{") != 5 * count:
            raise RuntimeError("/metrics does not show every breaker")
        encodings = {"gzip": "gzip", "plain": "identity"}
        times: dict[str, list[float]] = {key: [] for key in encodings}
        sizes: dict[str, int] = {}
        for index in range(requests + 5):
            for key, encoding in encodings.items():
                start = time.perf_counter()
                with client.stream("GET", "/metrics", headers={"Accept-Encoding": encoding}) as r:
                    size = sum(len(chunk) for chunk in r.iter_raw())
                elapsed = (time.perf_counter() - start) * 1000
                if r.status_code != 200:
                    raise RuntimeError(f"/metrics answered {r.status_code}")
                sizes[key] = size
                if index >= 5:  # the first five warm up
                    times[key].append(elapsed)
        for key, values in times.items():
            found[key] = {
                "p50": statistics.median(values),
                "p99": percentile(values, 0.99),
                "bytes": sizes[key],
            }
        found["requests"] = requests
    return found


# --------------------------------------------------------------------------- (d) OpenTelemetry


async def otel_call_cost(rounds: int) -> dict[str, Any]:
    """Closed and refused calls through a registry with `instrument()` and one without, alone
    and in a recording span (a span per 100 calls, under the SDK's 128 events per span)."""
    tracer = TracerProvider().get_tracer("bench")
    registries = {"plain": BreakerRegistry(OPEN_OPTIONS), "otel": BreakerRegistry(OPEN_OPTIONS)}
    instrument(registries["otel"], meter_provider=MeterProvider())  # metrics, every span event
    for registry in registries.values():
        with contextlib.suppress(ValueError):
            await registry.get("open").call(fail)  # opens it: volume_threshold is 0

    def calling(breaker: CircuitBreaker) -> Callable[[int], Awaitable[None]]:
        async def run(n: int) -> None:
            for _ in range(n):
                try:  # noqa: SIM105 - contextlib.suppress would add its own cost to the timing
                    await breaker.call(noop)
                except CircuitOpenError:
                    pass

        return run

    def in_spans(loop: Callable[[int], Awaitable[None]]) -> Callable[[int], Awaitable[None]]:
        async def run(n: int) -> None:
            for done in range(0, n, SPAN_CALLS):
                with tracer.start_as_current_span("request"):
                    await loop(min(SPAN_CALLS, n - done))

        return run

    async def bare(n: int) -> None:
        for _ in range(n):
            await noop()

    loops: dict[str, Callable[[int], Awaitable[None]]] = {"bare": bare}
    for state in ("closed", "open"):
        for key, registry in registries.items():
            loop = calling(registry.get(state))
            loops[f"{state}.{key}"] = loop
            loops[f"{state}.{key}.span"] = in_spans(loop)
    samples = await interleaved(loops, CALLS, rounds)
    for key, registry in registries.items():
        states = (registry.get("closed").state, registry.get("open").state)
        if states != (State.CLOSED, State.OPEN):
            raise RuntimeError(f"the {key} registry's breakers left their states: {states}")
    found: dict[str, Any] = {
        "calls_per_sample": CALLS,
        "calls_per_span": SPAN_CALLS,
        "rounds": rounds,
        "ns": {key: statistics.median(values) for key, values in samples.items()},
    }
    for state in ("closed", "open"):
        for span in ("", ".span"):
            otel, plain = samples[f"{state}.otel{span}"], samples[f"{state}.plain{span}"]
            # A closed call is compared by its overhead over the bare await, as in (a); a
            # refusal by its whole cost, as it never awaits the action.
            floor = samples["bare"] if state == "closed" else [0.0] * rounds
            ratios = [(o - f) / (p - f) for o, p, f in zip(otel, plain, floor, strict=True)]
            found[f"ratio.{state}{span}"] = statistics.median(ratios)
            found[f"ratio_95.{state}{span}"] = list(median_interval([ratios]))
    return found


def data_points(reader: InMemoryMetricReader) -> int:
    data = reader.get_metrics_data()
    return sum(
        len(metric.data.data_points)
        for resource in (data.resource_metrics if data else [])
        for scope in resource.scope_metrics
        for metric in scope.metrics
    )


def otel_collection(count: int, collections: int) -> dict[str, Any]:
    """One collection of `count` breakers with history through the SDK's in-memory reader,
    beside the `metrics()` reads it starts with and the Prometheus collector's `render()`."""
    registry = BreakerRegistry(HEALTH_OPTIONS, max_breakers=None)
    populate(registry, count)
    # The SDK folds an instrument's attribute sets past 2,000 (the calls of 333 breakers) into
    # one overflow point: counted apart, then the limit raised so that every breaker is collected.
    reader = InMemoryMetricReader()
    capped = instrument(
        registry, meter_provider=MeterProvider(metric_readers=[reader]), span_events=False
    )
    default_limit = data_points(reader)
    capped.uninstrument()
    reader = InMemoryMetricReader()
    views = [View(instrument_name="circuit_breaker.*", aggregation_cardinality_limit=10 * count)]
    provider = MeterProvider(metric_readers=[reader], views=views)
    instrument(registry, meter_provider=provider, span_events=False)
    points = data_points(reader)
    breakers = list(registry.breakers().values())
    collector = BreakerCollector(registry)
    samples = interleaved_once(
        {
            "read": lambda: [breaker.metrics() for breaker in breakers],
            "collect": reader.get_metrics_data,
            "render": collector.render,
        },
        collections,
    )
    found: dict[str, Any] = {
        "data_points": points,
        "data_points_default_limit": default_limit,
        "collections": collections,
    }
    for key, values in samples.items():
        found[key] = {"p50": statistics.median(values), "p99": percentile(values, 0.99)}
    ratios = [c / r for c, r in zip(samples["collect"], samples["render"], strict=True)]
    found["ratio_to_render"] = statistics.median(ratios)
    found["ratio_to_render_95"] = list(median_interval([ratios]))
    return found


# -------------------------------------------------------------------------------- report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.observability", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=150, help="rounds in (a), (b), (d) (150)")
    parser.add_argument("--breakers", type=int, default=1_000, help="breakers in (c), (d) (1,000)")
    parser.add_argument("--scrapes", type=int, default=50, help="scrapes in (c) and (d) (50)")
    parser.add_argument("--quick", action="store_true", help="a short run: 10 rounds, 10 scrapes")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.scrapes = 10, 10
    if min(args.rounds, args.breakers, args.scrapes) < 1:
        parser.error("--rounds, --breakers and --scrapes must be at least 1")
    return args


def verdicts(report: dict[str, Any]) -> list[dict[str, Any]]:
    call, stats, http = report["call"], report["stats"], report["scrape_http"]
    low, high = call["ratio_95"]
    s_low, s_high = stats["stats_ratio_95"]
    scrape = http["gzip"]["p50"]
    otel = report["otel_call"]
    o_low, o_high = otel["ratio_95.closed"]
    return [
        goal(
            "closed-call overhead with the collector and logging: ratio at most 1.03",
            call["ratio"] <= 1.03,
            f"{call['overhead_ns']['collector']:.0f} vs {call['overhead_ns']['plain']:.0f} ns: "
            f"{call['ratio']:.3f} (95% {low:.3f}-{high:.3f})",
            settled=not low <= 1.03 <= high,
        ),
        goal(
            "stats with 1,000,000 vs 10 calls in the window: ratio at most 1.5",
            stats["stats_ratio"] <= 1.5,
            f"{stats['stats_us.1000000']:.1f} vs {stats['stats_us.10']:.1f} us: "
            f"{stats['stats_ratio']:.2f} (95% {s_low:.2f}-{s_high:.2f})",
            settled=not s_low <= 1.5 <= s_high,
        ),
        goal(
            f"/metrics with {report['breakers']:,} breakers under 50 ms",
            scrape < 50.0,
            f"GET, gzipped: p50 {scrape:.1f} ms, p99 {http['gzip']['p99']:.1f} ms",
        ),
        goal(
            "closed-call overhead with OpenTelemetry instrument(): ratio at most 1.03",
            otel["ratio.closed"] <= 1.03,
            f"{otel['ns']['closed.otel'] - otel['ns']['bare']:.0f} vs "
            f"{otel['ns']['closed.plain'] - otel['ns']['bare']:.0f} ns: "
            f"{otel['ratio.closed']:.3f} (95% {o_low:.3f}-{o_high:.3f})",
            settled=not o_low <= 1.03 <= o_high,
        ),
    ]


def render(report: dict[str, Any]) -> str:
    call, stats = report["call"], report["stats"]
    local, http = report["scrape_local"], report["scrape_http"]
    lines = [
        *heading(report),
        "",
        f"(a) await breaker.call(noop), closed, {call['calls_per_sample']:,} calls x "
        f"{call['rounds']} rounds; bare await noop() {call['bare_ns']:.0f} ns",
    ]
    for key, label in (("plain", "registry without the collector"),
                       ("collector", "registry with the collector")):  # fmt: skip
        lines.append(
            f"  {label:<34}{call['call_ns'][key]:8.0f} ns per call, "
            f"overhead {call['overhead_ns'][key]:6.0f} ns"
        )
    lines += [
        f"  overhead ratio {call['ratio']:.3f} (95% {call['ratio_95'][0]:.3f}-"
        f"{call['ratio_95'][1]:.3f})",
        "",
        f"(b) reads of one breaker, us ({stats['reads_per_sample']} reads x {stats['rounds']} "
        "rounds)",
        f"  {'calls in the window':<22}{'10':>10}{'1,000,000':>12}{'ratio':>8}",
    ]
    for what in ("stats", "metrics"):
        lines.append(
            f"  {what:<22}{stats[f'{what}_us.10']:10.1f}{stats[f'{what}_us.1000000']:12.1f}"
            f"{stats[f'{what}_ratio']:8.2f}"
        )
    lines.append(
        f"  the first stats read after filling: {stats['first_read_us.10']:.1f} us with 10, "
        f"{stats['first_read_us.1000000']:.1f} us with 1,000,000"
    )
    lines += [
        "",
        f"(c) one scrape of {report['breakers']:,} breakers: {local['samples']:,} samples, "
        f"{local['bytes'] / 1e6:.2f} MB ({local['gzip_bytes'] / 1e3:.0f} kB gzipped), ms",
    ]
    for key, label in (("read", "breaker.metrics() of each, alone"),
                       ("render", "collector.render(), reads included"),
                       ("generate_latest", "generate_latest(registry)"),
                       ("gzip", "gzip level 1 of the text")):  # fmt: skip
        row = local[key]
        lines.append(f"  {label:<36}p50 {row['p50']:7.1f}   p99 {row['p99']:7.1f}")
    for key in ("gzip", "plain"):
        row = http[key]
        label = f"GET /metrics over HTTP, {key}"
        lines.append(f"  {label:<36}p50 {row['p50']:7.1f}   p99 {row['p99']:7.1f}")
    stall = report["loop_stall"]
    label = "longest event-loop stall in a GET"
    lines.append(f"  {label:<36}p50 {stall['p50']:7.1f}   max {stall['max']:7.1f}")
    otel, collection = report["otel_call"], report["otel_collection"]
    lines += [
        "",
        f"(d) OpenTelemetry: await breaker.call(noop), ns per call ({otel['calls_per_sample']:,}"
        f" calls x {otel['rounds']} rounds); bare await noop() {otel['ns']['bare']:.0f} ns",
        "  the ratio: of the overheads over the bare await when closed, of the whole call refused",
        f"  {'':<30}{'without':>9}{'instrument()':>14}{'ratio':>8}{'95%':>14}",
    ]
    for state, label in (("closed", "closed"), ("open", "refused (open)")):
        for span, where in (("", ""), (".span", f", spans of {otel['calls_per_span']}")):
            low, high = otel[f"ratio_95.{state}{span}"]
            lines.append(
                f"  {label + where:<30}{otel['ns'][f'{state}.plain{span}']:9.0f}"
                f"{otel['ns'][f'{state}.otel{span}']:14.0f}{otel[f'ratio.{state}{span}']:8.3f}"
                f"{f'{low:.3f}-{high:.3f}':>14}"
            )
    lines.append(
        f"  one collection of {report['breakers']:,} breakers, {collection['data_points']:,} "
        f"data points, ms ({collection['collections']} of each)",
    )
    lines.append(
        f"  (the SDK's default cardinality limit would keep "
        f"{collection['data_points_default_limit']:,} of them, overflow points included)"
    )
    for key, label in (("collect", "InMemoryMetricReader, collect"),
                       ("read", "breaker.metrics() of each, alone"),
                       ("render", "Prometheus collector.render()")):  # fmt: skip
        row = collection[key]
        lines.append(f"  {label:<36}p50 {row['p50']:7.1f}   p99 {row['p99']:7.1f}")
    low, high = collection["ratio_to_render_95"]
    lines.append(
        f"  collect / render: {collection['ratio_to_render']:.2f} (95% {low:.2f}-{high:.2f})"
    )
    return "\n".join(lines + verdict_lines(report["verdicts"]))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # The engine logs each state change; (c)'s 100 openings would flood the terminal. The
    # records are still made and handled, as in an app whose handler drops them.
    logging.getLogger("fastapi_breaker").addHandler(logging.NullHandler())
    run = Run("bench.observability", argv)
    report: dict[str, Any] = {
        **run.header,
        "versions": versions(
            "fastapi_breaker", "prometheus_client", "opentelemetry-sdk", "fastapi", "uvicorn"
        ),
        "breakers": args.breakers,
    }
    print("(a) call overhead ...", file=sys.stderr, flush=True)
    report["call"] = asyncio.run(call_overhead(args.rounds))
    print("(b) stats with 10 and 1,000,000 calls ...", file=sys.stderr, flush=True)
    report["stats"] = asyncio.run(stats_cost(args.rounds))
    print("(c) one scrape ...", file=sys.stderr, flush=True)
    report["scrape_local"] = scrape_in_process(args.breakers, args.scrapes)
    report["scrape_http"] = scrape_over_http(args.breakers, args.scrapes)
    report["loop_stall"] = asyncio.run(loop_stall(args.breakers, args.scrapes))
    print("(d) OpenTelemetry ...", file=sys.stderr, flush=True)
    report["otel_call"] = asyncio.run(otel_call_cost(args.rounds))
    report["otel_collection"] = otel_collection(args.breakers, args.scrapes)
    report["verdicts"] = verdicts(report)
    run.finish("observability", report, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
