"""Scale: a registry of 10,000 breakers (issue 4, item 4).

    python -m bench.scale [--quick] [--breakers N] [--health-breakers N] [--rounds R]
                          [--calls N] [--requests N] [--no-http]

Four measurements, each printed as a table and written to bench/results/scale-<date>.json:

1. memory: bytes per breaker for 10,000 registry breakers with default options, idle and after
   one call each. tracemalloc counts the Python allocations; the RSS delta (psutil) is the
   cross-check. Each is taken in a fresh subprocess, so nothing else in the heap blurs it.
2. call time: `await registry.get(name).call(noop)` and `await breaker.call(noop)` with 10 and
   with 10,000 breakers in the registry, in interleaved rounds; medians and the ratio.
3. `/health` with 1,000 used breakers (some open), detail on: real HTTP to a uvicorn subprocess
   on 127.0.0.1 (one worker, sequential keep-alive requests), then in-process over
   `httpx.ASGITransport` with a breakdown of where the time goes.
4. window rotation with most breakers idle: 10 active breakers among 10,000, a FakeClock moved
   one bucket per tick. Time per call against a registry of only those 10, plus exact counts
   showing that no idle breaker was touched.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import http.client
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from bench.report import Run
from fastapi_breaker import BreakerRegistry, CircuitBreaker, CircuitOpenError, State
from fastapi_breaker._window import Bucket, RollingWindow
from fastapi_breaker.testing import FakeClock

ROOT = Path(__file__).resolve().parent.parent

# The /health app's breakers keep their stats and their open state for the whole run.
HEALTH_DEFAULTS = {
    "reset_timeout": 3600.0,
    "rolling_count_timeout": 3600.0,
    "volume_threshold": 0,  # populate() opens every 10th breaker after 5 calls
}
HEALTH_ENV = "FB_BENCH_HEALTH_BREAKERS"
SERVER_START_SECONDS = 30.0
HTTP_DEADLINE_SECONDS = 120.0


async def noop() -> None:
    return None


class Boom(Exception):
    """The failure the /health app's breakers record."""


def _fail() -> None:
    raise Boom


def _nothing() -> None:
    return None


def _names(count: int) -> list[str]:
    return [f"svc-{index:05d}" for index in range(count)]


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _percentile(values: Sequence[float], p: float) -> float:
    """Nearest rank, as the engine's stats do: sorted[ceil(p*n) - 1]."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p * len(ordered))) - 1]


# ---------------------------------------------------------------------------------- 1. memory


def _probe_memory(count: int, how: str) -> dict[str, Any]:
    """Run in a fresh process: bytes for `count` breakers, idle, then after one call each."""
    import psutil  # type: ignore[import-untyped]

    registry = BreakerRegistry(max_breakers=None)  # measures `count` breakers, past any bound

    async def call_each(breakers: Sequence[CircuitBreaker]) -> None:
        for breaker in breakers:
            await breaker.call(noop)

    # Warm everything that is allocated once per process (imports, the loop's first use, the
    # registry's dict growth is per breaker and stays in): one breaker, called once.
    loop = asyncio.new_event_loop()
    loop.run_until_complete(call_each([registry.get("warm-up")]))
    process = psutil.Process()
    gc.collect()
    if how == "tracemalloc":
        tracemalloc.start(1)
    before_snapshot = tracemalloc.take_snapshot() if how == "tracemalloc" else None

    def reading() -> int:
        gc.collect()
        if how == "tracemalloc":
            return tracemalloc.get_traced_memory()[0]
        return int(process.memory_info().rss)

    start = reading()
    breakers = [registry.get(name) for name in _names(count)]
    idle = reading()
    idle_snapshot = tracemalloc.take_snapshot() if how == "tracemalloc" else None
    loop.run_until_complete(call_each(breakers))
    called = reading()
    result: dict[str, Any] = {
        "how": how,
        "breakers": count,
        "idle_bytes_per_breaker": (idle - start) / count,
        "called_bytes_per_breaker": (called - start) / count,
        "first_call_adds_bytes_per_breaker": (called - idle) / count,
    }
    if how == "tracemalloc":
        assert before_snapshot is not None
        assert idle_snapshot is not None
        after_snapshot = tracemalloc.take_snapshot()

        def top(new: Any, old: Any) -> list[dict[str, Any]]:
            rows = []
            for stat in new.compare_to(old, "lineno")[:8]:
                frame = stat.traceback[0]
                where = (
                    os.path.relpath(frame.filename, ROOT)
                    if ROOT.as_posix() in frame.filename
                    else frame.filename
                )
                rows.append(
                    {
                        "where": f"{where}:{frame.lineno}",
                        "bytes_per_breaker": round(stat.size_diff / count, 1),
                        "blocks_per_breaker": round(stat.count_diff / count, 2),
                    }
                )
            return rows

        result["top_idle"] = top(idle_snapshot, before_snapshot)
        result["top_first_call"] = top(after_snapshot, idle_snapshot)
        tracemalloc.stop()
    loop.close()
    return result


def measure_memory(count: int) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for how in ("tracemalloc", "rss"):
        command = [
            sys.executable,
            "-m",
            "bench.scale",
            "--probe-memory",
            how,
            "--breakers",
            str(count),
        ]
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True
        )
        found[how] = json.loads(done.stdout)
    return found


# ---------------------------------------------------------------------------------- 2. call time


async def timed(loop: Callable[[int], Awaitable[None]], calls: int) -> float:
    """Nanoseconds per call of one timed loop, with the garbage collector off."""
    gc.collect()
    await asyncio.sleep(0)  # let the loop drop cancelled timer handles first
    gc.disable()
    try:
        start = time.perf_counter_ns()
        await loop(calls)
        elapsed = time.perf_counter_ns() - start
    finally:
        gc.enable()
    return elapsed / calls


async def interleaved(
    loops: dict[str, Callable[[int], Awaitable[None]]], calls: int, rounds: int
) -> dict[str, list[float]]:
    """One sample of each loop per round, round-robin, starting one further along each round."""
    keys = list(loops)
    for key in keys:
        await timed(loops[key], min(calls, 1_000))  # warm-up
    samples: dict[str, list[float]] = {key: [] for key in keys}
    for index in range(rounds):
        shift = index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            samples[key].append(await timed(loops[key], calls))
    return samples


async def measure_call_time(small: int, big: int, calls: int, rounds: int) -> dict[str, Any]:
    registries = {  # no bound: the big registry holds every one of its names
        "small": BreakerRegistry(max_breakers=None),
        "big": BreakerRegistry(max_breakers=None),
    }
    for size, registry in zip((small, big), registries.values(), strict=True):
        for name in _names(size):
            await registry.get(name).call(noop)  # every breaker used once, as in a live app
    hot = _names(small)[small // 2]  # present in both registries

    def via_get(registry: BreakerRegistry) -> Callable[[int], Awaitable[None]]:
        async def run(n: int) -> None:
            for _ in range(n):
                await registry.get(hot).call(noop)

        return run

    def direct(breaker: CircuitBreaker) -> Callable[[int], Awaitable[None]]:
        async def run(n: int) -> None:
            for _ in range(n):
                await breaker.call(noop)

        return run

    async def bare(n: int) -> None:
        for _ in range(n):
            await noop()

    loops: dict[str, Callable[[int], Awaitable[None]]] = {"bare": bare}
    for label, registry in registries.items():
        loops[f"get.{label}"] = via_get(registry)
        loops[f"direct.{label}"] = direct(registry.get(hot))
    samples = await interleaved(loops, calls, rounds)
    for label, registry in registries.items():
        breaker = registry.get(hot)
        if breaker.state is not State.CLOSED or breaker.stats.failures:
            raise RuntimeError(f"{label} registry's breaker is not a clean closed one")
        if len(registry.breakers()) != (small if label == "small" else big):
            raise RuntimeError(f"{label} registry changed size during the run")
    rows: dict[str, Any] = {"hot_breaker": hot, "small": small, "big": big}
    for key, values in samples.items():
        rows[key] = {"median_ns": _median(values), "min_ns": min(values)}
    for form in ("get", "direct"):
        ratios = [
            b / s for b, s in zip(samples[f"{form}.big"], samples[f"{form}.small"], strict=True)
        ]
        rows[f"{form}.ratio_big_to_small"] = _median(ratios)
    return rows


# ---------------------------------------------------------------------------------- 3. /health


def populate(registry: BreakerRegistry, count: int) -> None:
    """`count` breakers with real history: mostly closed with some failures, every 10th open."""
    for index, name in enumerate(_names(count)):
        breaker = registry.get(name)
        if index % 10 == 9:
            # 2 successes then 3 failures: 33%, 50% (not above), 60% opens it; then 2 rejected.
            plan = [_nothing] * 2 + [_fail] * 3 + [_nothing] * 2
        else:
            plan = [_nothing] * 8 + [_fail] * 2  # 20% errors: stays closed
        for fn in plan:
            with contextlib.suppress(Boom, CircuitOpenError):
                breaker.call_sync(fn)


def make_health_app(count: int | None = None) -> Any:
    """The /health app: `uvicorn --factory bench.scale:make_health_app` (count from env)."""
    from fastapi import FastAPI

    from fastapi_breaker.fastapi import setup_breakers
    from fastapi_breaker.health import health_router

    if count is None:
        count = int(os.environ.get(HEALTH_ENV, "1000"))
    app = FastAPI()
    registry = setup_breakers(app, BreakerRegistry(HEALTH_DEFAULTS, max_breakers=None))
    app.include_router(health_router(detail="always"))
    populate(registry, count)
    return app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(connection: http.client.HTTPConnection, path: str) -> tuple[float, int, bytes]:
    start = time.perf_counter()
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    return time.perf_counter() - start, response.status, body


def _check_health(status: int, body: bytes, count: int) -> dict[str, Any]:
    report = json.loads(body)
    opened = sum(1 for d in report["details"].values() if d["state"] == "open")
    if status != 200 or report["status"] != "degraded" or len(report["details"]) != count:
        raise RuntimeError(f"unexpected /health answer: {status} {report['status']}")
    if opened != count // 10:
        raise RuntimeError(f"expected {count // 10} open breakers, /health shows {opened}")
    return {"bytes": len(body), "open": opened, "status": report["status"]}


def measure_health_http(count: int, requests: int, app_dir: Path | None = None) -> dict[str, Any]:
    """Sequential keep-alive GETs to a uvicorn subprocess, /health and /health/live alternating.

    `app_dir`: a directory holding a copy of fastapi_breaker to serve instead of this
    checkout's (uvicorn puts it first on sys.path), to measure a suggested change.
    """
    port = _free_port()
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "bench.scale:make_health_app",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    if app_dir is not None:
        command += ["--app-dir", str(app_dir)]
    env = {**os.environ, HEALTH_ENV: str(count)}
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {server.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("uvicorn did not start in time") from None
                time.sleep(0.05)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        _, status, body = _get(connection, "/health")
        shape = _check_health(status, body, count)
        for _ in range(10):  # warm-up
            _get(connection, "/health")
            _get(connection, "/health/live")
        health: list[float] = []
        live: list[float] = []
        stop = time.monotonic() + HTTP_DEADLINE_SECONDS
        for _ in range(requests):
            if time.monotonic() > stop:
                break
            seconds, status, _ = _get(connection, "/health")
            if status != 200:
                raise RuntimeError(f"/health answered {status}")
            health.append(seconds)
            seconds, status, _ = _get(connection, "/health/live")
            live.append(seconds)
        connection.close()
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return {
        "requests": len(health),
        "response": shape,
        "health_ms": _latency_ms(health),
        "live_ms": _latency_ms(live),
        "server": "uvicorn subprocess, 1 worker, 127.0.0.1; client: http.client keep-alive",
    }


def _latency_ms(seconds: Sequence[float]) -> dict[str, float]:
    return {
        "p50": round(_percentile(seconds, 0.5) * 1e3, 3),
        "p99": round(_percentile(seconds, 0.99) * 1e3, 3),
        "max": round(max(seconds) * 1e3, 3),
    }


async def measure_health_inprocess(count: int, requests: int) -> dict[str, Any]:
    """The same app over httpx.ASGITransport, and its parts timed one by one."""
    import httpx
    from starlette.responses import JSONResponse

    from fastapi_breaker.health import _health

    app = make_health_app(count)
    registry: BreakerRegistry = app.state.breaker_registry
    breakers = registry.breakers()
    critical: frozenset[str] = frozenset()

    def states() -> None:
        for breaker in breakers.values():
            _ = breaker.state

    def stats() -> None:
        for breaker in breakers.values():
            breaker.stats.to_dict()

    def retry_after() -> None:
        for breaker in breakers.values():
            _ = breaker.retry_after

    body = {"status": "degraded", "details": json.loads(_health(breakers, critical, True)[1])}
    parts: dict[str, Callable[[], object]] = {
        "registry.breakers() (copy)": registry.breakers,
        "state of each": states,
        "stats.to_dict() of each": stats,
        "retry_after of each": retry_after,
        "_health(): the whole loop": lambda: _health(registry.breakers(), critical, True),
        "JSONResponse(body): json.dumps": lambda: JSONResponse(body),
    }
    repeats = max(5, requests // 4)
    timings: dict[str, list[float]] = {label: [] for label in parts}
    for _ in range(repeats):
        for label, part in parts.items():
            start = time.perf_counter()
            part()
            timings[label].append(time.perf_counter() - start)

    transport = httpx.ASGITransport(app=app)
    asgi: list[float] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        response = await client.get("/health")
        shape = _check_health(response.status_code, response.content, count)
        for _ in range(requests):
            start = time.perf_counter()
            response = await client.get("/health")
            asgi.append(time.perf_counter() - start)
            if response.status_code != 200:
                raise RuntimeError(f"/health answered {response.status_code}")
    breakdown = {label: round(_median(v) * 1e3, 3) for label, v in timings.items()}
    return {
        "requests": requests,
        "response": shape,
        "asgi_ms": _latency_ms(asgi),
        "breakdown_median_ms": breakdown,
    }


# ---------------------------------------------------------------------------------- 4. rotation


async def measure_rotation(
    total: int, active: int, ticks: int, rounds: int, count_ticks: int
) -> dict[str, Any]:
    """10 active breakers among `total` vs a registry of only those 10, one bucket per tick."""
    crowd_clock, alone_clock = FakeClock(), FakeClock()
    crowd = BreakerRegistry(clock=crowd_clock, max_breakers=None)
    alone = BreakerRegistry(clock=alone_clock, max_breakers=None)
    names = _names(total)
    busy = names[:: total // active][:active]
    for name in names:
        # Every breaker records one success at t=0, so an idle window is not empty either.
        await crowd.get(name).call(noop)
    for name in busy:
        await alone.get(name).call(noop)
    width = crowd.get(busy[0])._window.width

    def ticking(registry: BreakerRegistry, clock: FakeClock) -> Callable[[int], Awaitable[None]]:
        breakers = [registry.get(name) for name in busy]

        async def run(n: int) -> None:
            # n calls: n // active ticks; each tick moves the clock one bucket, then every
            # active breaker is called once, so every call rotates its window.
            for _ in range(n // len(breakers)):
                clock.advance(width)
                for breaker in breakers:
                    await breaker.call(noop)

        return run

    calls = ticks * active
    samples = await interleaved(
        {"crowd": ticking(crowd, crowd_clock), "alone": ticking(alone, alone_clock)}, calls, rounds
    )
    ratios = [c / a for c, a in zip(samples["crowd"], samples["alone"], strict=True)]

    # The counting pass: which windows rotate, and how many buckets exist, over many buckets.
    idle = [crowd.get(name) for name in names if name not in set(busy)]
    before = {
        id(b): (id(b._window.current), b._window.current.epoch, b._window.current_end) for b in idle
    }
    gc.collect()
    buckets_before = sum(1 for o in gc.get_objects() if type(o) is Bucket)
    rotations = 0
    original = RollingWindow.rotate

    def counting_rotate(window: RollingWindow, now: float) -> bool:
        nonlocal rotations
        rotations += 1
        return original(window, now)

    RollingWindow.rotate = counting_rotate  # type: ignore[method-assign,assignment]
    try:
        started = time.perf_counter()
        await ticking(crowd, crowd_clock)(count_ticks * active)
        counted_seconds = time.perf_counter() - started
    finally:
        RollingWindow.rotate = original  # type: ignore[method-assign]
    gc.collect()
    buckets_after = sum(1 for o in gc.get_objects() if type(o) is Bucket)
    untouched = sum(
        1
        for b in idle
        if before[id(b)] == (id(b._window.current), b._window.current.epoch, b._window.current_end)
    )
    # Reading an idle breaker's stats after all that time: the t=0 success has left the window,
    # found by comparing epochs; the read allocates no bucket.
    idle_stats = [b.stats for b in idle]
    gc.collect()
    buckets_after_reads = sum(1 for o in gc.get_objects() if type(o) is Bucket)
    stale = sum(1 for s in idle_stats if s.successes)
    # Each idle window holds its one bucket; each active one, here and in the registry of 10,
    # is full (`size` buckets, the oldest dropped as a new one starts): > `size` ticks passed.
    expected_buckets = len(idle) + 2 * active * crowd.get(busy[0])._window.size
    checks = {
        "rotations": rotations,
        "rotations_expected": active * count_ticks,
        "idle_breakers": len(idle),
        "idle_windows_untouched": untouched,
        "buckets_before": buckets_before,
        "buckets_after": buckets_after,
        "buckets_after_reading_idle_stats": buckets_after_reads,
        "buckets_expected": expected_buckets,
        "idle_stats_still_counting_t0_success": stale,
        "clock_advanced_seconds": crowd_clock.now,
    }
    ok = (
        rotations == active * count_ticks
        and untouched == len(idle)
        and buckets_after == buckets_after_reads == expected_buckets
        and stale == 0
    )
    return {
        "total": total,
        "active": active,
        "bucket_seconds": width,
        "calls_per_sample": calls,
        "crowd_ns_per_call": _median(samples["crowd"]),
        "alone_ns_per_call": _median(samples["alone"]),
        "ratio_crowd_to_alone": _median(ratios),
        "counting_pass": {
            **checks,
            "ticks": count_ticks,
            "seconds": round(counted_seconds, 3),
            "all_checks_pass": ok,
        },
    }


# ---------------------------------------------------------------------------------- report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--breakers", type=int, default=10_000, help="registry size (10,000)")
    parser.add_argument("--health-breakers", type=int, default=1_000, help="for /health (1,000)")
    parser.add_argument("--calls", type=int, default=2_000, help="calls per timed sample (2,000)")
    parser.add_argument("--rounds", type=int, default=60, help="interleaved rounds (60)")
    parser.add_argument("--requests", type=int, default=300, help="/health requests (300)")
    parser.add_argument("--no-http", action="store_true", help="skip the uvicorn subprocess")
    parser.add_argument("--quick", action="store_true", help="short run while developing")
    parser.add_argument("--probe-memory", choices=("tracemalloc", "rss"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.rounds, args.requests = 1_000, 8, 60
    if min(args.breakers, args.health_breakers, args.calls, args.rounds, args.requests) < 1:
        parser.error("counts must be at least 1")
    if args.breakers < 100 or args.health_breakers < 10:
        parser.error("--breakers must be at least 100 and --health-breakers at least 10")
    return args


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    memory, call, rotation = report["memory"], report["call_time"], report["rotation"]
    lines = [
        f"fastapi_breaker scale benchmark, {report['date']}",
        f"machine: {m['nproc']} cores, {m['python']}; load average at start {m['loadavg']}",
        "",
        f"1. memory, {memory['tracemalloc']['breakers']:,} registry breakers, default options"
        " (bytes per breaker)",
        f"  {'':<34}{'idle':>10}{'1 call each':>14}{'1st call adds':>15}",
    ]
    for how in ("tracemalloc", "rss"):
        r = memory[how]
        lines.append(
            f"  {how:<34}{r['idle_bytes_per_breaker']:>10,.0f}"
            f"{r['called_bytes_per_breaker']:>14,.0f}{r['first_call_adds_bytes_per_breaker']:>15,.0f}"
        )
    lines += ["  largest allocation sites, idle (tracemalloc):"]
    for row in memory["tracemalloc"]["top_idle"][:5]:
        lines.append(f"    {row['bytes_per_breaker']:>7,.0f} B  {row['where']}")
    lines += ["  largest added by the first call:"]
    for row in memory["tracemalloc"]["top_first_call"][:4]:
        lines.append(f"    {row['bytes_per_breaker']:>7,.0f} B  {row['where']}")
    lines += [
        "",
        f"2. time per call, {call['small']} vs {call['big']:,} breakers in the registry"
        f" ({report['calls']:,} calls x {report['rounds']} rounds, median ns)",
        f"  bare await noop(): {call['bare']['median_ns']:.0f} ns",
        f"  {'':<40}{call['small']:>8}{call['big']:>10,}{'ratio':>8}",
    ]
    for form, label in (
        ("get", "await registry.get(name).call(noop)"),
        ("direct", "await breaker.call(noop)"),
    ):
        lines.append(
            f"  {label:<40}{call[f'{form}.small']['median_ns']:>8.0f}"
            f"{call[f'{form}.big']['median_ns']:>10.0f}{call[f'{form}.ratio_big_to_small']:>8.3f}"
        )
    health = report.get("health_http")
    inproc = report["health_inprocess"]
    lines += ["", f"3. /health, {report['health_breakers']:,} used breakers (10% open), detail on"]
    if health:
        lines.append(
            f"  HTTP (uvicorn, 1 worker, {health['requests']} sequential requests,"
            f" {health['response']['bytes']:,} B): /health p50 {health['health_ms']['p50']:.2f} ms,"
            f" p99 {health['health_ms']['p99']:.2f} ms; /health/live p50"
            f" {health['live_ms']['p50']:.2f} ms, p99 {health['live_ms']['p99']:.2f} ms"
        )
    lines.append(
        f"  in-process ASGITransport ({inproc['requests']} requests): p50"
        f" {inproc['asgi_ms']['p50']:.2f} ms, p99 {inproc['asgi_ms']['p99']:.2f} ms;"
        " breakdown (median):"
    )
    for label, ms in inproc["breakdown_median_ms"].items():
        lines.append(f"    {ms:>8.2f} ms  {label}")
    cp = rotation["counting_pass"]
    lines += [
        "",
        f"4. rotation: {rotation['active']} active of {rotation['total']:,} breakers,"
        " clock +1 bucket per tick, every call rotates",
        f"  ns per call: {rotation['crowd_ns_per_call']:.0f} among {rotation['total']:,},"
        f" {rotation['alone_ns_per_call']:.0f} alone; ratio {rotation['ratio_crowd_to_alone']:.3f}",
        f"  counting pass, {cp['ticks']:,} ticks ({cp['clock_advanced_seconds']:,.0f} s of clock):"
        f" rotate() ran {cp['rotations']:,} times (expected {cp['rotations_expected']:,});"
        f" idle windows untouched {cp['idle_windows_untouched']:,}/{cp['idle_breakers']:,};",
        f"  Bucket objects {cp['buckets_before']:,} -> {cp['buckets_after']:,} after the ticks"
        f" (expected {cp['buckets_expected']:,}) ->"
        f" {cp['buckets_after_reading_idle_stats']:,} after reading every idle breaker's stats;"
        f" idle stats still counting the t=0 call: {cp['idle_stats_still_counting_t0_success']}",
        "",
        "verdicts:",
    ]
    for verdict in report["verdicts"]:
        lines.append(f"  {'MET    ' if verdict['met'] else 'NOT MET'} {verdict['text']}")
    return "\n".join(lines)


def verdicts(report: dict[str, Any]) -> list[dict[str, Any]]:
    call, rotation = report["call_time"], report["rotation"]
    found = []
    for form in ("get", "direct"):
        ratio = call[f"{form}.ratio_big_to_small"]
        found.append(
            {
                "goal": f"call time independent of registry size ({form})",
                "met": 0.9 <= ratio <= 1.1,
                "text": f"{form}: {call['big']:,} vs {call['small']} breakers, ratio {ratio:.3f}"
                " (goal ~1.0, within +-10%)",
            }
        )
    health = report.get("health_http")
    if health:
        p99 = health["health_ms"]["p99"]
        found.append(
            {
                "goal": "/health under 50 ms with 1,000 breakers",
                "met": p99 < 50.0,
                "text": f"/health p99 {p99:.2f} ms over HTTP (goal < 50 ms)",
            }
        )
    ratio = rotation["ratio_crowd_to_alone"]
    ok = rotation["counting_pass"]["all_checks_pass"]
    found.append(
        {
            "goal": "idle breakers cost nothing per tick",
            "met": ok and 0.9 <= ratio <= 1.1,
            "text": f"rotation ratio {ratio:.3f}; counts {'exact' if ok else 'WRONG'}",
        }
    )
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe_memory:
        print(json.dumps(_probe_memory(args.breakers, args.probe_memory)))
        return 0
    run = Run("bench.scale", argv)
    report: dict[str, Any] = {
        **run.header,
        "breakers": args.breakers,
        "health_breakers": args.health_breakers,
        "calls": args.calls,
        "rounds": args.rounds,
    }
    print("memory ...", file=sys.stderr, flush=True)
    report["memory"] = measure_memory(args.breakers)
    print("call time ...", file=sys.stderr, flush=True)
    report["call_time"] = asyncio.run(measure_call_time(10, args.breakers, args.calls, args.rounds))
    if not args.no_http:
        print("/health over HTTP ...", file=sys.stderr, flush=True)
        report["health_http"] = measure_health_http(args.health_breakers, args.requests)
    print("/health in process ...", file=sys.stderr, flush=True)
    report["health_inprocess"] = asyncio.run(
        measure_health_inprocess(args.health_breakers, args.requests)
    )
    print("rotation ...", file=sys.stderr, flush=True)
    report["rotation"] = asyncio.run(
        measure_rotation(args.breakers, 10, max(1, args.calls // 10), args.rounds, 1_000)
    )
    report["verdicts"] = verdicts(report)
    run.finish("scale", report, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
