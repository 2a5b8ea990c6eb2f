"""Instructions per request, counted by valgrind: the HTTP overhead without the noise.

`python -m bench.instructions [--requests N]`

Wall-clock load on a shared machine swings by more than the few percent a breaker may cost
(bench/http.py shows the spread). Instructions do not: callgrind counts what the server's
process executes, the same from run to run whatever else the machine is doing. Each variant of
bench/http.py's item 1 (the example User Service with the breaker, transport and middleware;
the same route without them) runs under `valgrind --tool=callgrind` with counting off; after
a warm-up, counting is switched on for exactly N sequential `/login` requests, then off, and
the count is read from the dump. The upstream runs outside valgrind.

For a server bound by its CPU, as these are under load, requests per second go as the inverse
of the instructions per request, so the ratio of the counts stands for the throughput ratio.
It says nothing of latency tails: bench/http.py measures those.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.engine import machine
from bench.processes import UvicornProcess, free_port
from bench.report import save
from bench.wrk import find_or_install

__all__ = ["count_instructions", "main"]

_READY_POLLS = 240  # x 0.5 s
_WARMUP = 50


def count_instructions(variant: str, upstream_url: str, requests: int, valgrind: str) -> float:
    """Instructions the server executes per `/login`, for `variant` "breaker" or "plain"."""
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as folder:
        out = Path(folder) / "callgrind.out"
        port = free_port()
        argv = [
            valgrind, "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
            sys.executable, "-m", "uvicorn", "--factory", f"bench.apps:make_{variant}_app",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--loop", "asyncio",
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        env = {**os.environ, "BENCH_UPSTREAM_URL": upstream_url}
        quiet = subprocess.DEVNULL
        server = subprocess.Popen(argv, env=env, stdout=quiet, stderr=quiet)

        def control(*words: str) -> None:
            subprocess.run(
                ["callgrind_control", *words, str(server.pid)], check=True, capture_output=True
            )

        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60.0) as client:
                _wait_ready(client, server)
                for _ in range(_WARMUP):
                    _login(client)
                control("--instr=on")
                for _ in range(requests):
                    _login(client)
                control("--instr=off")
                control("--dump")
        finally:
            server.terminate()
            server.wait(timeout=60)
        dumps = sorted(Path(folder).glob("callgrind.out*"))
        counted = max(_total(dump) for dump in dumps)
        return counted / requests


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


def _login(client: httpx.Client) -> None:
    response = client.get("/login", params={"token": "valid-alice"})
    if response.status_code != 200:
        raise SystemExit(f"/login answered {response.status_code}: {response.text[:200]}")


def _total(dump: Path) -> int:
    # A dump may say "summary: 0" in its header and give the count in "totals:" at the end.
    counts = [
        int(line.split()[1])
        for line in dump.read_text().splitlines()
        if line.startswith(("summary:", "totals:"))
    ]
    return max(counts, default=0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--requests", type=int, default=300, help="counted requests (300)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant (2)")
    args = parser.parse_args()
    valgrind = find_or_install("valgrind", "valgrind", needed_by="bench.instructions")
    upstream = UvicornProcess(
        "bench.apps:make_upstream_app", lifespan="off", ready_path="/verify?token=valid-a"
    )
    upstream.start()
    results: dict[str, list[float]] = {"breaker": [], "plain": []}
    try:
        for _ in range(args.repeats):
            for variant in results:  # alternate, though the counts do not depend on the order
                results[variant].append(
                    count_instructions(variant, upstream.url, args.requests, valgrind)
                )
    finally:
        upstream.stop()
    breaker, plain = min(results["breaker"]), min(results["plain"])
    print(f"instructions per /login, {args.requests} requests x {args.repeats} runs")
    print(f"machine: {machine()}")
    for variant, counts in results.items():
        print(f"  {variant:<8} " + "  ".join(f"{c:,.0f}" for c in counts))
    ratio = breaker / plain
    print(f"  ratio breaker / plain: {ratio:.4f} (+{breaker - plain:,.0f} per request)")
    verdict = "MET" if 1 / ratio >= 0.97 else "NOT MET"
    print(f"  {verdict:<7} implied throughput ratio {1 / ratio:.4f} (goal >= 0.97)")
    report = {"requests": args.requests, "counts": results, "ratio": ratio}
    out = save("instructions", report, datetime.date.today())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
