"""Bounds against untrusted input: what a hostile caller can make the library hold or spend.

    python -m bench.bounds [--quick] [--names N] [--calls N]

Five measurements, printed as a table and written to bench/results/bounds-<date>.json:

1. registry: N distinct breaker names (a tenant id or a host taken from requests) asked of a
   registry with the default `max_breakers`, and of one built with `max_breakers=None`
   (unbounded). Breakers held, bytes held (tracemalloc), bytes per breaker, time per new name
   (under tracemalloc, so slower than without it; the two rows are comparable).
2. `/health` at the bound: a registry full at its default `max_breakers`, every breaker with
   calls and failures in its window, `detail="always"`, over `httpx.ASGITransport`: latency
   and body size. The same for an unbounded registry of N such breakers, for contrast (fewer
   requests: each is slow).
3. deadlines: one call that hangs and `--calls` short timed calls behind it on one breaker:
   deadlines still queued and bytes held while the hung call is pending (the window's 8 bytes
   of latency per call, which the window drops as it rolls, included), against the same
   calls with `timeout=None`, which queue no deadline: the difference is the queue's.
4. handlers: one handler subscribed 20,000 times: handlers kept, and the cost of one emit.
5. buckets: one `stats` read with the largest allowed `rolling_count_buckets`, every bucket
   holding calls, against the default 10 buckets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from bench.report import Run
from fastapi_breaker import BreakerOptions, BreakerRegistry, CircuitBreaker
from fastapi_breaker.testing import FakeClock

HANDLER_SUBSCRIPTIONS = 20_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bounds", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    parser.add_argument("--names", type=int, default=100_000, help="hostile breaker names")
    parser.add_argument("--calls", type=int, default=200_000, help="calls behind a hung one")
    parser.add_argument("--requests", type=int, default=50, help="/health requests at the bound")
    args = parser.parse_args(argv)
    if args.quick:
        args.names, args.calls, args.requests = 10_000, 20_000, 10
    return args


def _traced(action: Callable[[], object]) -> tuple[int, float, object]:
    """(bytes still allocated after `action`, seconds it took, its result)."""
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - start
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, seconds, result


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
        held_bytes, seconds, _ = _traced(lambda registry=registry: _fill(registry, names))
        held = len(registry.breakers())
        rows[label] = {
            "names": names,
            "breakers_held": held,
            "bytes_held": held_bytes,
            "bytes_per_breaker": round(held_bytes / held) if held else 0,
            "us_per_new_name": round(seconds / names * 1e6, 2),
        }
        registry.shutdown()
        del registry
    bounded, unbounded = rows["default bound"], rows["max_breakers=None"]
    rows["ratio_bytes_unbounded_to_bounded"] = round(
        unbounded["bytes_held"] / max(1, bounded["bytes_held"]), 1
    )
    return rows


# ---------------------------------------------------------------------------------- 2. /health


def _health_app(registry: BreakerRegistry) -> Any:
    from fastapi import FastAPI

    from fastapi_breaker.fastapi import setup_breakers
    from fastapi_breaker.health import health_router

    app = FastAPI()
    setup_breakers(app, registry)
    app.include_router(health_router(detail="always"))
    return app


def _with_history(registry: BreakerRegistry, count: int) -> None:
    """`count` breakers, each with 8 successes and 2 failures in its window (20%: closed)."""

    def ok() -> None:
        return None

    def fail() -> None:
        raise ValueError("upstream said no")

    for index in range(count):
        breaker = registry.get(f"tenant-{index:07d}")
        for fn in [ok] * 8 + [fail] * 2:
            with contextlib.suppress(ValueError):
                breaker.call_sync(fn)


async def _health_timings(registry: BreakerRegistry, requests: int) -> dict[str, Any]:
    import httpx

    app = _health_app(registry)
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
    ordered = sorted(timings)
    return {
        "breakers": len(registry.breakers()),
        "requests": requests,
        "p50_ms": round(statistics.median(ordered) * 1e3, 2),
        "max_ms": round(ordered[-1] * 1e3, 2),
        "body_bytes": size,
    }


def measure_health(names: int, requests: int) -> dict[str, Any]:
    bounded = BreakerRegistry(
        {"rolling_count_timeout": 3600.0, "reset_timeout": 3600.0, "volume_threshold": 0}
    )
    # Full to the bound, each with failures in its window (which also makes none evictable).
    _with_history(bounded, min(names, bounded.max_breakers or names))
    unbounded = BreakerRegistry(
        {"rolling_count_timeout": 3600.0, "reset_timeout": 3600.0, "volume_threshold": 0},
        max_breakers=None,
    )
    _with_history(unbounded, names)
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
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(calls):
        await breaker.call(quick)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    queue = breaker._queue
    queued = len(queue._pending) if queue is not None else 0
    hung.set()
    await hung_task
    return {"calls_behind": calls, "deadlines_queued": queued, "bytes_held": held}


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
    kept = len(breaker._emitter._handlers.get("open", ()))
    start = time.perf_counter()
    breaker.open()
    emit_us = (time.perf_counter() - start) * 1e6
    return {
        "subscriptions": HANDLER_SUBSCRIPTIONS,
        "handlers_kept": kept,
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


def render(report: dict[str, Any]) -> str:
    lines = [f"bench.bounds, {report['date']}, {report['machine']['python']}"]
    for section in ("registry", "health", "deadlines", "handlers", "buckets"):
        lines.append(f"\n[{section}]")
        value = report[section]
        for key, row in value.items():
            lines.append(f"  {key}: {row}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run("bench.bounds", argv)
    report = dict(run.header)
    print("registry ...", file=sys.stderr, flush=True)
    report["registry"] = measure_registry(args.names)
    print("/health ...", file=sys.stderr, flush=True)
    report["health"] = measure_health(args.names, args.requests)
    print("deadlines ...", file=sys.stderr, flush=True)
    report["deadlines"] = asyncio.run(measure_deadlines(args.calls))
    print("handlers ...", file=sys.stderr, flush=True)
    report["handlers"] = measure_handlers()
    print("buckets ...", file=sys.stderr, flush=True)
    report["buckets"] = measure_buckets()
    run.finish("bounds", report, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
