"""Instructions per request, counted by valgrind: the HTTP overhead without the noise.

`python -m bench.instructions [--requests N] [--repeats K] [--concurrency C ...] [--cache-model]`

Wall-clock load on a shared machine swings by more than the few percent a breaker may cost
(bench/http.py shows the spread). Instructions do not: callgrind counts what the server's
process executes, whatever else the machine is doing. Each variant of bench/http.py's item 1
(the example User Service with the breaker, transport and middleware; the same route without
them) runs under `valgrind --tool=callgrind` with counting off; after a warm-up, counting is
switched on for exactly N `/login` requests, then off, and the count is read from the dump.
The upstream runs outside valgrind.

Each concurrency C (default: 1, and 32 as in bench/http.py's wrk load) keeps C requests in
flight over C connections until N have been sent. Under valgrind the server runs some fifty
times slower, so the breaker's and httpx's timeouts are raised to 600 s: a request that waits
its turn behind 31 others must not time out. One request at a time, the count repeats to
within 0.2%; with 32 in flight it varies with how the requests interleave, by about 1% from
run to run, so the minimum of the repeats is compared.

`--cache-model` turns on valgrind's cache simulation and reports, instead of instructions, its
usual estimate of cycles: instructions + 10 x first-level misses + 100 x last-level misses. It
shows whether the breaker's code or data cost more in cache misses than their instructions
suggest (a model of this machine's caches, not a measurement of them).

For a server bound by its CPU, as these are under load, requests per second go as the inverse
of the instructions per request, so the ratio of the counts stands for the throughput ratio.
It says nothing of latency tails: bench/http.py measures those.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.processes import UvicornProcess, free_port
from bench.report import machine, save
from bench.wrk import find_or_install

__all__ = ["count_instructions", "main"]

_READY_POLLS = 240  # x 0.5 s
_WARMUP = 100
_SLOW = "600"  # seconds: the breaker's and httpx's timeouts for a server under valgrind


def count_instructions(
    variant: str,
    upstream_url: str,
    requests: int,
    concurrency: int,
    valgrind: str,
    *,
    cache_model: bool = False,
) -> float:
    """Instructions the server executes per `/login`, for `variant` "breaker" or "plain".

    With `cache_model`, the estimated cycles per `/login` instead (see the module's text).
    """
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as folder:
        out = Path(folder) / "callgrind.out"
        port = free_port()
        argv = [
            valgrind, "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
            sys.executable, "-m", "uvicorn", "--factory", f"bench.apps:make_{variant}_app",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--loop", "asyncio",
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        if cache_model:
            argv.insert(2, "--cache-sim=yes")
        env = {
            **os.environ,
            "BENCH_UPSTREAM_URL": upstream_url,
            "BENCH_TIMEOUT": _SLOW,
            "BENCH_HTTPX_TIMEOUT": _SLOW,
        }
        quiet = subprocess.DEVNULL
        server = subprocess.Popen(argv, env=env, stdout=quiet, stderr=quiet)

        def control(*words: str) -> None:
            subprocess.run(
                ["callgrind_control", *words, str(server.pid)], check=True, capture_output=True
            )

        base_url = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base_url, timeout=60.0) as client:
                _wait_ready(client, server)
            asyncio.run(_logins(base_url, _WARMUP, concurrency))
            control("--instr=on")
            asyncio.run(_logins(base_url, requests, concurrency))
            control("--instr=off")
            control("--dump")
        finally:
            server.terminate()
            server.wait(timeout=60)
        dumps = sorted(Path(folder).glob("callgrind.out*"))
        counted = max((_totals(dump) for dump in dumps), key=lambda totals: totals.get("Ir", 0))
        return (_estimated_cycles(counted) if cache_model else counted["Ir"]) / requests


def _wait_ready(client: httpx.Client, server: subprocess.Popen[bytes]) -> None:
    for _ in range(_READY_POLLS):
        if server.poll() is not None:
            raise SystemExit(f"the server under valgrind exited with {server.returncode}")
        try:
            client.get("/_bench/tasks")
            return
        except httpx.TransportError:
            time.sleep(0.5)
    raise SystemExit("the server under valgrind did not start in 120 s")


async def _logins(base_url: str, requests: int, concurrency: int) -> None:
    """Send exactly `requests` GET /login, `concurrency` at a time, each on its connection."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = float(_SLOW) + 60.0
    left = requests

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal left
        while left > 0:  # bounded: every pass takes one of the `requests`
            left -= 1
            response = await client.get("/login", params={"token": "valid-alice"})
            if response.status_code != 200:
                raise SystemExit(f"/login answered {response.status_code}: {response.text[:200]}")

    client = httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout)
    async with client, asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(client_loop(client))


def _totals(dump: Path) -> dict[str, int]:
    """The dump's event totals by name ("Ir", and the cache misses when simulated)."""
    names: list[str] = []
    found: dict[str, int] = {}
    # A dump may say "summary: 0" in its header and give the counts in "totals:" at the end.
    for line in dump.read_text().splitlines():
        if line.startswith("events:"):
            names = line.split()[1:]
        elif line.startswith(("summary:", "totals:")):
            values = [int(word) for word in line.split()[1:]]
            if sum(values) > sum(found.values()):
                found = dict(zip(names, values, strict=False))
    return found


def _estimated_cycles(totals: dict[str, int]) -> int:
    first_level = sum(totals.get(name, 0) for name in ("I1mr", "D1mr", "D1mw"))
    last_level = sum(totals.get(name, 0) for name in ("ILmr", "DLmr", "DLmw"))
    return totals["Ir"] + 10 * first_level + 100 * last_level


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--requests", type=int, default=300, help="counted requests (300)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant (2)")
    parser.add_argument(
        "--concurrency",
        type=int,
        action="append",
        help="requests in flight (repeatable; default: 1 and 32)",
    )
    parser.add_argument(
        "--cache-model", action="store_true", help="estimated cycles from the cache simulation"
    )
    args = parser.parse_args()
    levels = args.concurrency or [1, 32]
    what = "estimated cycles" if args.cache_model else "instructions"
    if args.requests < 1 or args.repeats < 1 or min(levels) < 1:
        parser.error("--requests, --repeats and --concurrency must be at least 1")
    valgrind = find_or_install("valgrind", "valgrind", needed_by="bench.instructions")
    upstream = UvicornProcess(
        "bench.apps:make_upstream_app", lifespan="off", ready_path="/verify?token=valid-a"
    )
    upstream.start()
    results: dict[int, dict[str, list[float]]] = {c: {"breaker": [], "plain": []} for c in levels}
    try:
        for _ in range(args.repeats):
            for concurrency, counts in results.items():
                for variant in counts:  # alternate, though the counts hardly depend on the order
                    counts[variant].append(
                        count_instructions(
                            variant,
                            upstream.url,
                            args.requests,
                            concurrency,
                            valgrind,
                            cache_model=args.cache_model,
                        )
                    )
    finally:
        upstream.stop()
    print(f"{what} per /login, {args.requests} requests x {args.repeats} runs")
    print(f"machine: {machine()}")
    report: dict[str, Any] = {"requests": args.requests, "measure": what, "levels": {}}
    for concurrency, counts in results.items():
        breaker, plain = min(counts["breaker"]), min(counts["plain"])
        ratio = breaker / plain
        print(f"concurrency {concurrency}:")
        for variant, found in counts.items():
            print(f"  {variant:<8} " + "  ".join(f"{c:,.0f}" for c in found))
        print(f"  ratio breaker / plain: {ratio:.4f} ({breaker - plain:+,.0f} per request)")
        verdict = "MET" if 1 / ratio >= 0.97 else "NOT MET"
        print(f"  {verdict:<7} implied throughput ratio {1 / ratio:.4f} (goal >= 0.97)")
        report["levels"][str(concurrency)] = {"counts": counts, "ratio": ratio}
    name = "cycles-model" if args.cache_model else "instructions"
    out = save(name, report, datetime.date.today())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
