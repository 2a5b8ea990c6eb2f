"""Bounds against untrusted input: what a hostile caller can make the library hold or spend.

    python -m bench.bounds [--quick] [--only SECTION ...] [--names N] [--calls N] [--requests N]

1. registry: N distinct names asked of a registry with the default bound and of an unbounded
   one: breakers and bytes held (tracemalloc), time per new name;
2. `/health` (in process, every detail) over a registry full at the bound, and unbounded;
3. deadlines: bytes held by `--calls` timed calls behind one hung call, minus the same with
   `timeout=None` (which queues no deadline);
4. handlers: one handler subscribed 20,000 times: calls per event, and the time to emit;
5. buckets: one `stats` read with the largest `rolling_count_buckets` allowed, against 10;
6. names: a registry full at its bound (1,000) of breakers named at the longest length it
   takes (`max_name_length`, 300 characters: random host names), with history, served by
   uvicorn in a subprocess, then the same with ordinary names (`svc-0000000`) for the
   baseline: `/metrics` (gzipped and plain) and `/health` (every detail) over HTTP, from the
   request to the last byte, and three snapshots of the dashboard's event stream: their bytes,
   their times, and the longest the server's event loop went without running a task that asks
   for a turn every millisecond (watched inside the server); the server's peak resident memory
   (VmHWM) once started, and after all of it.
Results: bench/results/bounds-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import statistics
import string
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
from fastapi import FastAPI

from bench.apps import HEALTH_OPTIONS, make_health_app, populate
from bench.processes import UvicornProcess
from bench.report import Run, heading
from fastapi_breaker import BreakerOptions, BreakerRegistry, CircuitBreaker
from fastapi_breaker._registry import DEFAULT_MAX_NAME_LENGTH
from fastapi_breaker.dashboard import dashboard_router
from fastapi_breaker.fastapi import setup_breakers
from fastapi_breaker.health import health_router
from fastapi_breaker.prometheus import mount_metrics
from fastapi_breaker.testing import FakeClock

HANDLER_SUBSCRIPTIONS = 20_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bounds", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    parser.add_argument("--only", nargs="+", help="run these sections only")
    parser.add_argument("--names", type=int, default=100_000, help="hostile breaker names")
    parser.add_argument("--calls", type=int, default=200_000, help="calls behind a hung one")
    parser.add_argument("--requests", type=int, default=50, help="/health requests at the bound")
    args = parser.parse_args(argv)
    if args.quick:
        args.names, args.calls, args.requests = 10_000, 20_000, 10
    return args


@contextlib.contextmanager
def traced() -> Iterator[dict[str, float]]:
    """Fills in the bytes still allocated at the end of the block, and its seconds."""
    found: dict[str, float] = {}
    gc.collect()
    tracemalloc.start(1)
    before, start = tracemalloc.get_traced_memory()[0], time.perf_counter()
    try:
        yield found
    finally:
        found["seconds"] = time.perf_counter() - start
        gc.collect()
        found["bytes"] = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()


# ---------------------------------------------------------------------------------- 1. registry


def _fill(registry: BreakerRegistry, names: int) -> BreakerRegistry:
    for index in range(names):
        registry.get(f"tenant-{index:07d}")
    return registry


def measure_registry(names: int) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for label, registry in (
        ("default bound", BreakerRegistry()),
        ("max_breakers=None", BreakerRegistry(max_breakers=None)),
    ):
        with traced() as cost:
            _fill(registry, names)
        held = len(registry.breakers())
        rows[label] = {
            "names": names,
            "breakers_held": held,
            "bytes_held": cost["bytes"],
            "bytes_per_breaker": round(cost["bytes"] / held) if held else 0,
            "us_per_new_name": round(cost["seconds"] / names * 1e6, 2),
        }
        registry.shutdown()
        del registry
    bounded, unbounded = rows["default bound"], rows["max_breakers=None"]
    rows["ratio_bytes_unbounded_to_bounded"] = round(
        unbounded["bytes_held"] / max(1, bounded["bytes_held"]), 1
    )
    return rows


# ---------------------------------------------------------------------------------- 2. /health


async def _health_timings(registry: BreakerRegistry, requests: int) -> dict[str, Any]:
    app = make_health_app(registry)
    timings: list[float] = []
    size = 0
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://bench"
    ) as client:
        for _ in range(requests):
            start = time.perf_counter()
            response = await client.get("/health")
            timings.append(time.perf_counter() - start)
            if response.status_code != 200:
                raise RuntimeError(f"/health answered {response.status_code}")
            size = len(response.content)
    return {
        "breakers": len(registry.breakers()),
        "requests": requests,
        "p50_ms": round(statistics.median(timings) * 1e3, 2),
        "max_ms": round(max(timings) * 1e3, 2),
        "body_bytes": size,
    }


def measure_health(names: int, requests: int) -> dict[str, Any]:
    # Full to the bound, each with failures in its window (which also makes none evictable).
    bounded = BreakerRegistry(HEALTH_OPTIONS)
    populate(bounded, min(names, bounded.max_breakers or names))
    unbounded = BreakerRegistry(HEALTH_OPTIONS, max_breakers=None)
    populate(unbounded, names)
    rows = {
        "at the default bound": asyncio.run(_health_timings(bounded, requests)),
        "unbounded": asyncio.run(_health_timings(unbounded, max(3, requests // 10))),
    }
    rows["ratio_p50_unbounded_to_bound"] = round(
        rows["unbounded"]["p50_ms"] / rows["at the default bound"]["p50_ms"], 1
    )
    return rows


# ---------------------------------------------------------------------------------- 3. deadlines


async def _behind_a_hung_call(calls: int, limit: float | None) -> dict[str, Any]:
    breaker = CircuitBreaker(timeout=limit)
    hung = asyncio.Event()

    async def hang() -> None:
        await hung.wait()

    async def quick() -> None:
        return None

    hung_task = asyncio.ensure_future(breaker.call(hang))
    await asyncio.sleep(0)  # the hung call is now first in the breaker's deadline queue
    with traced() as cost:
        for _ in range(calls):
            await breaker.call(quick)
    hung.set()
    await hung_task
    return {"calls_behind": calls, "bytes_held": cost["bytes"]}


async def measure_deadlines(calls: int) -> dict[str, Any]:
    """With a timeout, and without one (no deadlines at all: the window's latencies alone)."""
    timed = await _behind_a_hung_call(calls, 3600.0)
    untimed = await _behind_a_hung_call(calls, None)
    return {
        "timeout=3600": timed,
        "timeout=None": untimed,
        "bytes_for_deadlines": timed["bytes_held"] - untimed["bytes_held"],
    }


# ---------------------------------------------------------------------------------- 4. handlers


def measure_handlers() -> dict[str, Any]:
    breaker = CircuitBreaker()
    seen: list[object] = []

    def handler(event: object) -> None:
        seen.append(event)

    for _ in range(HANDLER_SUBSCRIPTIONS):
        breaker.on("open", handler)
    start = time.perf_counter()
    breaker.open()
    emit_us = (time.perf_counter() - start) * 1e6
    return {
        "subscriptions": HANDLER_SUBSCRIPTIONS,
        "calls_per_event": len(seen),
        "open_with_emit_us": round(emit_us, 1),
    }


# ---------------------------------------------------------------------------------- 5. buckets


def _largest_bucket_count() -> int:
    """The largest `rolling_count_buckets` BreakerOptions accepts (found by bisection)."""
    low, high = 10, 10**12
    while low < high:
        middle = (low + high + 1) // 2
        try:
            BreakerOptions(rolling_count_buckets=middle, rolling_count_timeout=3600.0)
        except ValueError:
            high = middle - 1
        else:
            low = middle
    return low


def _stats_read_us(buckets: int, reads: int) -> float:
    clock = FakeClock()
    breaker = CircuitBreaker(
        rolling_count_buckets=buckets,
        rolling_count_timeout=3600.0,
        volume_threshold=10**6,  # never opens: every bucket fills
        clock=clock,
    )
    width = 3600.0 / buckets

    def fail() -> None:
        raise ValueError("upstream said no")

    for _ in range(buckets):
        breaker.call_sync(lambda: None)
        with contextlib.suppress(ValueError):
            breaker.call_sync(fail)
        clock.advance(width)
    timings = []
    for _ in range(reads):
        start = time.perf_counter()
        _ = breaker.stats
        timings.append(time.perf_counter() - start)
    return statistics.median(timings) * 1e6


def measure_buckets() -> dict[str, Any]:
    largest = _largest_bucket_count()
    default_us = _stats_read_us(10, 200)
    largest_us = _stats_read_us(largest, 200)
    return {
        "largest_allowed": largest,
        "stats_read_us_default_10": round(default_us, 1),
        f"stats_read_us_{largest}": round(largest_us, 1),
        "ratio": round(largest_us / default_us, 1),
    }


# ---------------------------------------------------------------------------------- report


# ---------------------------------------------------------------------------------- 6. names


class _StallWatch:
    """In the server's own event loop: the longest it went without giving a task its turn,
    the task asking every millisecond. `GET /_bench/stall` answers it in ms, and starts over."""

    def __init__(self) -> None:
        self.worst = 0.0

    async def watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, loop.time() - asked - 0.001)

    def read(self) -> float:
        worst, self.worst = self.worst, 0.0
        return round(worst * 1e3, 1)


def host_names(length: int) -> Callable[[int], str]:
    """Names as a hostile caller would pick them: host names of `length` characters, random
    (seeded) letters, digits, dots and hyphens, which compress as little as host names do. A
    name padded with one letter repeated would flatter gzip several times over."""
    pick = random.Random(length)
    alphabet = string.ascii_lowercase + string.digits + ".-"

    def name(index: int) -> str:
        head = f"h{index:07d}."
        return head + "".join(pick.choice(alphabet) for _ in range(length - len(head)))

    return name


def make_names_app() -> FastAPI:
    """uvicorn --factory: a registry full at its bound (1,000) of breakers with history, named
    at BENCH_NAME_LENGTH characters (`svc-0000000`, 11, when unset), behind /metrics, /health
    (every detail) and the dashboard, as an app would mount them; /_bench/stall reads the
    loop's longest stall."""
    registry = BreakerRegistry(HEALTH_OPTIONS)
    length = int(os.environ.get("BENCH_NAME_LENGTH", "0"))
    populate(registry, 1000, host_names(length) if length else None)
    stall = _StallWatch()

    @contextlib.asynccontextmanager
    async def watching(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(stall.watch())
        yield
        task.cancel()

    app = FastAPI(lifespan=watching)
    setup_breakers(app, registry)
    app.include_router(health_router(detail="always"))
    mount_metrics(app)
    app.include_router(dashboard_router())
    app.add_api_route("/_bench/stall", stall.read)
    return app


def _timed(client: httpx.Client, path: str, encoding: str, requests: int) -> dict[str, Any]:
    """`requests` GETs (after 3 that warm up), each from the request to the last byte over
    the wire; the bytes sent, and the server loop's longest stall meanwhile."""
    timings: list[float] = []
    size = 0
    client.get("/_bench/stall")
    for index in range(requests + 3):
        start = time.perf_counter()
        with client.stream("GET", path, headers={"Accept-Encoding": encoding}) as response:
            size = sum(len(chunk) for chunk in response.iter_raw())
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}")
        if index >= 3:
            timings.append(time.perf_counter() - start)
    return {
        "bytes": size,
        "p50_ms": round(statistics.median(timings) * 1e3, 1),
        "max_ms": round(max(timings) * 1e3, 1),
        "stall_ms": client.get("/_bench/stall").json(),
    }


def _snapshots(client: httpx.Client, count: int) -> dict[str, Any]:
    """The dashboard's event stream: the first `count` snapshots, their largest size, and the
    server loop's longest stall while it sent them."""
    client.get("/_bench/stall")
    sizes: list[int] = []
    start = time.perf_counter()
    with client.stream("GET", "/breakers/events") as response:
        for line in response.iter_lines():
            if line.startswith('data: {"dropped"'):
                sizes.append(len(line.encode()))
                if len(sizes) == count:
                    break
    return {
        "snapshots": len(sizes),
        "bytes": max(sizes),
        "seconds_for_all": round(time.perf_counter() - start, 2),
        "stall_ms": client.get("/_bench/stall").json(),
    }


def _served(name_length: int, requests: int) -> dict[str, Any]:
    env = {"BENCH_NAME_LENGTH": str(name_length)}
    report: dict[str, Any] = {}
    target = "bench.bounds:make_names_app"
    with (
        UvicornProcess(target, env=env, ready_path="/_bench/stall") as server,
        httpx.Client(base_url=server.url, trust_env=False, timeout=30.0) as client,
    ):
        started_mb = _peak_mb(server.pid)
        report["/metrics, gzipped"] = _timed(client, "/metrics", "gzip", requests)
        report["/metrics, plain"] = _timed(client, "/metrics", "identity", requests)
        report["/health, plain"] = _timed(client, "/health", "identity", requests)
        report["dashboard stream"] = _snapshots(client, 3)
        report["idle, no request"] = {"stall_ms": client.get("/_bench/stall").json()}
        report["server memory"] = {"started_mb": started_mb, "peak_mb": _peak_mb(server.pid)}
    return report


def _peak_mb(pid: int) -> float:
    """The process's peak resident memory so far (Linux's VmHWM), in MB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc/<pid>/status")


def measure_names(requests: int) -> dict[str, Any]:
    """The longest names against ordinary ones (`svc-0000000`), one server after the other."""
    longest = _served(DEFAULT_MAX_NAME_LENGTH, requests)
    ordinary = _served(0, requests)
    report: dict[str, Any] = {"breakers": 1000, "name_length": DEFAULT_MAX_NAME_LENGTH}
    for key, row in longest.items():
        report[key] = {"longest names": row, "svc-0000000": ordinary[key]}
    return report


def render(report: dict[str, Any]) -> str:
    lines = heading(report)
    for section in ("registry", "health", "deadlines", "handlers", "buckets", "names"):
        if section not in report:
            continue
        lines.append(f"\n[{section}]")
        lines += [f"  {key}: {row}" for key, row in report[section].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run("bench.bounds", argv)
    report = dict(run.header)
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "registry": lambda: measure_registry(args.names),
        "health": lambda: measure_health(args.names, args.requests),
        "deadlines": lambda: asyncio.run(measure_deadlines(args.calls)),
        "handlers": measure_handlers,
        "buckets": measure_buckets,
        "names": lambda: measure_names(args.requests),
    }
    for name, measure in sections.items():
        if args.only and name not in args.only:
            continue
        print(f"{name} ...", file=sys.stderr, flush=True)
        report[name] = measure()
    run.finish("bounds", report, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
