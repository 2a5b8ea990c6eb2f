"""Scale: does a breaker cost more when its registry holds 10,000?

    python -m bench.scale [--quick] [--breakers N] [--health-breakers N] [--rounds R]

1. time per call with 10 and with 10,000 breakers in the registry, interleaved rounds;
2. `/health` over HTTP with 1,000 used breakers (10% open), every detail shown;
3. 10 active breakers among 10,000, a fake clock moved one bucket per tick, against those 10
   alone; then whether every idle breaker's window has rolled past its one call.
Results: bench/results/scale-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bench.processes import UvicornProcess, get
from bench.report import Run, goal, heading, interleaved, verdict_lines
from bench.wrk import find_wrk, run_wrk
from fastapi_breaker import BreakerOptions, BreakerRegistry, State
from fastapi_breaker.testing import FakeClock


async def noop() -> None:
    return None


def _names(count: int) -> list[str]:
    return [f"svc-{index:05d}" for index in range(count)]


async def _used(registry: BreakerRegistry, names: Sequence[str]) -> BreakerRegistry:
    for name in names:
        await registry.get(name).call(noop)  # every breaker used once, as in a live app
    return registry


# ---------------------------------------------------------------------------------- 1. call time


async def measure_call_time(small: int, big: int, calls: int, rounds: int) -> dict[str, Any]:
    # No bound: the big registry holds every one of its names.
    registries = {
        size: await _used(BreakerRegistry(max_breakers=None), _names(size)) for size in (small, big)
    }
    hot = _names(small)[small // 2]  # present in both registries

    def via_get(registry: BreakerRegistry) -> Callable[[int], Awaitable[None]]:
        async def run(n: int) -> None:
            for _ in range(n):
                await registry.get(hot).call(noop)

        return run

    def direct(registry: BreakerRegistry) -> Callable[[int], Awaitable[None]]:
        breaker = registry.get(hot)

        async def run(n: int) -> None:
            for _ in range(n):
                await breaker.call(noop)

        return run

    loops = {f"{form}.{size}": make(registries[size]) for size in (small, big)
             for form, make in (("get", via_get), ("direct", direct))}  # fmt: skip
    samples = await interleaved(loops, calls, rounds)
    for size, registry in registries.items():
        breaker = registry.get(hot)
        if breaker.state is not State.CLOSED or breaker.stats.failures:
            raise RuntimeError(f"the {size} registry's breaker is not a clean closed one")
        if len(registry.breakers()) != size:
            raise RuntimeError(f"the {size} registry changed size during the run")
    rows: dict[str, Any] = {key: statistics.median(values) for key, values in samples.items()}
    for form in ("get", "direct"):
        ratios = [
            b / s for b, s in zip(samples[f"{form}.{big}"], samples[f"{form}.{small}"], strict=True)
        ]
        rows[f"{form}.ratio"] = statistics.median(ratios)
    return rows


# ---------------------------------------------------------------------------------- 2. /health


def measure_health(count: int, seconds: float) -> dict[str, Any]:
    """wrk with one connection (one request at a time) on /health, then on /health/live."""
    wrk = find_wrk()
    env = {"BENCH_BREAKERS": str(count)}
    found: dict[str, Any] = {}
    with UvicornProcess("bench.apps:make_health_app", env=env, ready_path="/health/live") as server:
        details = get(server.url + "/health", timeout=30.0)[1]["details"]
        opened = sum(1 for d in details.values() if d["state"] == "open")
        if len(details) != count or opened != count // 10:
            raise RuntimeError(f"/health shows {len(details)} breakers, {opened} open")
        for path in ("/health", "/health/live"):
            run_wrk(wrk, server.url + path, connections=1, seconds=1.0)  # warm-up
            result = run_wrk(wrk, server.url + path, connections=1, seconds=seconds, counted=True)
            if result.counts != {"200": result.requests}:
                raise RuntimeError(f"{path} answered {result.counts}")
            found[path] = {"requests": result.requests, **result.latency_ms}
    return found


# ---------------------------------------------------------------------------------- 3. idle


async def measure_idle(total: int, active: int, ticks: int, rounds: int) -> dict[str, Any]:
    """10 active breakers among `total` vs a registry of only those 10, one bucket per tick."""
    defaults = BreakerOptions()
    width = defaults.rolling_count_timeout / defaults.rolling_count_buckets
    names = _names(total)
    busy = names[:: total // active][:active]
    clocks = {"crowd": FakeClock(), "alone": FakeClock()}
    # Every breaker records one success at t=0, so an idle window is not empty either.
    crowd = await _used(BreakerRegistry(clock=clocks["crowd"], max_breakers=None), names)
    alone = await _used(BreakerRegistry(clock=clocks["alone"], max_breakers=None), busy)

    def ticking(registry: BreakerRegistry, clock: FakeClock) -> Callable[[int], Awaitable[None]]:
        breakers = [registry.get(name) for name in busy]

        async def run(n: int) -> None:
            # n calls: each tick moves the clock one bucket, then calls every active breaker.
            for _ in range(n // len(breakers)):
                clock.advance(width)
                for breaker in breakers:
                    await breaker.call(noop)

        return run

    loops = {"crowd": ticking(crowd, clocks["crowd"]), "alone": ticking(alone, clocks["alone"])}
    samples = await interleaved(loops, ticks * active, rounds)
    ratios = [c / a for c, a in zip(samples["crowd"], samples["alone"], strict=True)]
    idle = [crowd.get(name) for name in names if name not in set(busy)]
    return {
        "crowd_ns": statistics.median(samples["crowd"]),
        "alone_ns": statistics.median(samples["alone"]),
        "ratio": statistics.median(ratios),
        "clock_seconds": clocks["crowd"].now,
        "idle_breakers": len(idle),
        "idle_still_counting_t0": sum(1 for b in idle if b.stats.successes),
    }


# ---------------------------------------------------------------------------------- report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--breakers", type=int, default=10_000, help="registry size (10,000)")
    parser.add_argument("--health-breakers", type=int, default=1_000, help="for /health (1,000)")
    parser.add_argument("--calls", type=int, default=2_000, help="calls per timed sample (2,000)")
    parser.add_argument("--rounds", type=int, default=60, help="interleaved rounds (60)")
    parser.add_argument("--health-seconds", type=float, default=5.0, help="/health load (5 s)")
    parser.add_argument("--quick", action="store_true", help="short run while developing")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.rounds, args.health_seconds = 1_000, 8, 2.0
    if min(args.calls, args.rounds, args.health_seconds) < 1:
        parser.error("counts must be at least 1")
    if args.breakers < 100 or args.health_breakers < 10:
        parser.error("--breakers must be at least 100 and --health-breakers at least 10")
    return args


def verdicts(report: dict[str, Any]) -> list[dict[str, Any]]:
    call, idle = report["call_time"], report["idle"]
    p99, still = report["health"]["/health"]["p99"], idle["idle_still_counting_t0"]
    return [
        *(
            goal(
                f"call time independent of the registry's size ({form})",
                0.9 <= call[f"{form}.ratio"] <= 1.1,
                f"{report['breakers']:,} vs 10 breakers: {call[f'{form}.ratio']:.3f}",
            )
            for form in ("get", "direct")
        ),
        goal(
            f"/health under 50 ms, {report['health_breakers']:,} breakers",
            p99 < 50.0,
            f"p99 {p99:.2f} ms",
        ),
        goal(
            "idle breakers cost nothing per tick, and their stats still roll",
            still == 0 and 0.9 <= idle["ratio"] <= 1.1,
            f"ratio {idle['ratio']:.3f}; idle stats still counting t=0: {still}",
        ),
    ]


def render(report: dict[str, Any]) -> str:
    call, idle = report["call_time"], report["idle"]
    big = report["breakers"]
    lines = [
        *heading(report),
        "",
        f"1. time per call, median ns ({report['calls']:,} calls x {report['rounds']} rounds)",
        f"  {'':<40}{10:>8}{big:>10,}{'ratio':>8}",
    ]
    for form, label in (("get", "await registry.get(name).call(noop)"),
                        ("direct", "await breaker.call(noop)")):  # fmt: skip
        lines.append(
            f"  {label:<40}{call[f'{form}.10']:>8.0f}{call[f'{form}.{big}']:>10.0f}"
            f"{call[f'{form}.ratio']:>8.3f}"
        )
    lines += ["", f"2. {report['health_breakers']:,} used breakers (10% open), detail on, HTTP"]
    for path, row in report["health"].items():
        lines.append(
            f"  {path:<14} p50 {row['p50']:.2f} ms, p99 {row['p99']:.2f} ms"
            f" ({row['requests']} requests, one at a time)"
        )
    lines += [
        "",
        f"3. 10 active breakers among {big:,}, the clock +1 bucket per tick: {idle['crowd_ns']:.0f}"
        f" ns per call; alone {idle['alone_ns']:.0f} ns; ratio {idle['ratio']:.3f}",
        f"  after {idle['clock_seconds']:,.0f} s of clock, idle breakers whose stats still count"
        f" their t=0 call: {idle['idle_still_counting_t0']} of {idle['idle_breakers']:,}",
    ]
    return "\n".join(lines + verdict_lines(report["verdicts"]))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run("bench.scale", argv)
    report: dict[str, Any] = {
        **run.header,
        **{key: getattr(args, key) for key in ("breakers", "health_breakers", "calls", "rounds")},
    }
    print("call time ...", file=sys.stderr, flush=True)
    report["call_time"] = asyncio.run(measure_call_time(10, args.breakers, args.calls, args.rounds))
    print("/health over HTTP ...", file=sys.stderr, flush=True)
    report["health"] = measure_health(args.health_breakers, args.health_seconds)
    print("idle breakers ...", file=sys.stderr, flush=True)
    report["idle"] = asyncio.run(
        measure_idle(args.breakers, 10, max(1, args.calls // 10), args.rounds)
    )
    report["verdicts"] = verdicts(report)
    run.finish("scale", report, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
