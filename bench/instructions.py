"""Instructions per request, counted by valgrind: the HTTP overhead without the noise.

`python -m bench.instructions [--requests N] [--repeats K] [--concurrency C ...] [--cache-model]`
`python -m bench.instructions --refused [--requests N] [--repeats K]`

Wall-clock load on a shared machine swings by more than the few percent a breaker may cost
(bench/http.py shows the spread). Instructions do not: callgrind counts what the server's
process executes, whatever else the machine is doing. Each variant of bench/http.py's overhead
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

`--refused` counts the other side: what a request costs while the circuit is open. The app is
README.md's "Use it in FastAPI" example, read from the README and run as it is shown, with its
breaker forced open (a forced open stays open however slowly valgrind runs). Variants:
"readme", the route as shown; "opt-out", the same route with
`get_breaker("AuthService", refuse_early=False)`, where the dependency hands over the breaker
without checking it, so the route builds the request and the transport refuses it (what every
route did before the dependency refused early); "check", the opt-out route calling
`auth.check()` first; and "floor", the same app with `/login` answering the same 503 at once,
in the same place among the routes. Each variant is counted twice: in process, its ASGI app
called directly after its lifespan started (the framework and the library alone: the ratio
that shows the most), and over HTTP under uvicorn as above. The goal: the route as shown
costs at most 1.2 times the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.processes import ROOT, UvicornProcess, free_port
from bench.report import machine, save
from bench.wrk import find_or_install

__all__ = [
    "CallgrindWorker",
    "Server",
    "callgrind_worker",
    "count_instructions",
    "main",
    "make_refused_app",
    "readme_source",
]

_READY_POLLS = 240  # x 0.5 s
_WARMUP = 100
_SLOW = "600"  # seconds: the breaker's and httpx's timeouts for a server under valgrind
_LOGIN = "/login?token=valid-alice"

# What the refused variants change in the README's example, each found exactly once.
_DEPENDS = 'Depends(get_breaker("AuthService"))'
_OPT_OUT = 'Depends(get_breaker("AuthService", refuse_early=False))'
_BODY = "    try:\n        response = await request.app.state.auth.get("
REFUSED_VARIANTS = ("readme", "opt-out", "check", "floor")


@dataclasses.dataclass(frozen=True)
class Server:
    """A uvicorn app factory to count, the request it is counted on and the answer expected."""

    factory: str
    env: dict[str, str]
    status: int
    ready: str = "/_bench/tasks"


def count_instructions(
    server: Server,
    requests: int,
    concurrency: int,
    valgrind: str,
    *,
    cache_model: bool = False,
) -> float:
    """Instructions the server executes per `GET /login?token=valid-alice`.

    With `cache_model`, the estimated cycles per request instead (see the module's text).
    """
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as folder:
        out = Path(folder) / "callgrind.out"
        port = free_port()
        argv = [
            valgrind, "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
            sys.executable, "-m", "uvicorn", "--factory", server.factory,
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--loop", "asyncio",
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        if cache_model:
            argv.insert(2, "--cache-sim=yes")
        env = {**os.environ, **server.env}
        quiet = subprocess.DEVNULL
        process = subprocess.Popen(argv, env=env, stdout=quiet, stderr=quiet)

        def control(*words: str) -> None:
            subprocess.run(
                ["callgrind_control", *words, str(process.pid)], check=True, capture_output=True
            )

        base_url = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base_url, timeout=60.0) as client:
                _wait_ready(client, process, server.ready)
            asyncio.run(_logins(base_url, server.status, _WARMUP, concurrency))
            control("--instr=on")
            asyncio.run(_logins(base_url, server.status, requests, concurrency))
            control("--instr=off")
            control("--dump")
        finally:
            process.terminate()
            process.wait(timeout=60)
        dumps = sorted(Path(folder).glob("callgrind.out*"))
        counted = max((_totals(dump) for dump in dumps), key=lambda totals: totals.get("Ir", 0))
        return (_estimated_cycles(counted) if cache_model else counted["Ir"]) / requests


def _wait_ready(client: httpx.Client, process: subprocess.Popen[bytes], path: str) -> None:
    for _ in range(_READY_POLLS):
        if process.poll() is not None:
            raise SystemExit(f"the server under valgrind exited with {process.returncode}")
        try:
            client.get(path)
            return
        except httpx.TransportError:
            time.sleep(0.5)
    raise SystemExit("the server under valgrind did not start in 120 s")


async def _logins(base_url: str, status: int, requests: int, concurrency: int) -> None:
    """Send exactly `requests` GET /login, `concurrency` at a time, each on its connection."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = float(_SLOW) + 60.0
    left = requests

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal left
        while left > 0:  # bounded: every pass takes one of the `requests`
            left -= 1
            response = await client.get(_LOGIN)
            if response.status_code != status:
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


# ------------------------------------------------------------------ the README's route, refused


def _once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise SystemExit(f"README.md's FastAPI example no longer has {old!r} exactly once")
    return text.replace(old, new)


def readme_source(variant: str) -> str:
    """The code of README.md's "Use it in FastAPI" example, changed as `variant` says."""
    section = (ROOT / "README.md").read_text().partition("## Use it in FastAPI\n")[2]
    source = section.partition("```python\n")[2].partition("```")[0]
    if not source:
        raise SystemExit('README.md has no python block under "## Use it in FastAPI"')
    if variant in ("opt-out", "check"):
        source = _once(source, _DEPENDS, _OPT_OUT)
    if variant == "check":
        source = _once(source, _BODY, "    auth.check()\n" + _BODY)
    return source


def make_refused_app() -> Any:
    """README.md's example app, its breaker forced open (`BENCH_REFUSED_VARIANT` picks how)."""
    from fastapi import FastAPI, Response

    from fastapi_breaker import CircuitOpenError
    from fastapi_breaker.middleware import problem_response

    variant = os.environ.get("BENCH_REFUSED_VARIANT", "")
    if variant not in REFUSED_VARIANTS:
        raise RuntimeError(f"BENCH_REFUSED_VARIANT must be one of {REFUSED_VARIANTS}")
    example: dict[str, Any] = {"__name__": "readme_example"}
    # The README's code, run as it is shown.
    exec(compile(readme_source(variant), "<README.md example>", "exec"), example)
    app: FastAPI = example["app"]
    breaker = example["registry"].get("AuthService")
    breaker.force_open()
    if variant == "floor":
        routes = app.router.routes
        index = next(i for i, route in enumerate(routes) if getattr(route, "path", "") == "/login")
        del routes[index]
        retry_after = (
            breaker.retry_after
        )  # the open breaker's answer, fixed: no breaker per request

        @app.get("/login")
        async def floor() -> Response:
            return problem_response(CircuitOpenError(breaker.name, retry_after))

        routes.insert(index, routes.pop())  # where the example's /login was
    return app


def _in_process_worker() -> None:
    """Serve `/login` to the ASGI app itself, no server, on the parent's word (stdin, stdout).

    Runs under valgrind: "ready" after the lifespan and the warm-up, then the parent switches
    counting on and sends the number of requests; "done" after them, and the parent switches
    counting off and closes stdin.
    """
    app = make_refused_app()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/login", "raw_path": b"/login",
        "query_string": _LOGIN.partition("?")[2].encode(), "root_path": "",
        "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    statuses: set[int] = set()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.add(message["status"])

    async def logins(requests: int) -> None:
        for _ in range(requests):
            await app(dict(scope), receive, send)

    async def serve() -> None:
        async with app.router.lifespan_context(app):  # the README's lifespan: its httpx client
            await logins(_WARMUP)
            print("ready", flush=True)
            await logins(int(sys.stdin.readline()))
            print("done", flush=True)
            sys.stdin.readline()
        if statuses != {503}:
            raise SystemExit(f"/login answered {sorted(statuses)}, not only 503")

    asyncio.run(serve())


class CallgrindWorker:
    """`python -c code` under callgrind with counting off, spoken to line by line over its
    stdin and stdout, so that the parent switches counting on for exactly what it asks for.
    Made by `callgrind_worker()`, which also kills it if it is still running."""

    def __init__(self, valgrind: str, code: str, env: dict[str, str], folder: Path) -> None:
        self.out = folder / "callgrind.out"
        self.log = folder / "worker.log"  # valgrind's banner, and the traceback if it fails
        argv = [
            valgrind, "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={self.out}",
            sys.executable, "-c", code,
        ]  # fmt: skip
        with self.log.open("w") as errors:
            self.process = subprocess.Popen(
                argv, env=env, cwd=ROOT, text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
            )  # fmt: skip

    def say(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{line}\n")
        self.process.stdin.flush()

    def hear(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def control(self, *words: str) -> None:
        """callgrind_control: `--instr=on`, `--instr=off`, `--dump` (to out.1, out.2, ...)."""
        subprocess.run(
            ["callgrind_control", *words, str(self.process.pid)], check=True, capture_output=True
        )

    def counted(self, dump: int) -> int:
        """Instructions in the `dump`-th dump: what was counted since the one before."""
        return _totals(Path(f"{self.out}.{dump}"))["Ir"]

    def failed(self, what: str) -> SystemExit:
        return SystemExit(f"{what}:\n{self.log.read_text()[-2000:]}")

    def finish(self) -> None:
        """Close its stdin and wait for it to exit."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        if self.process.wait(timeout=120):
            raise self.failed(f"the worker exited with {self.process.returncode}")


@contextlib.contextmanager
def callgrind_worker(valgrind: str, code: str, env: dict[str, str]) -> Iterator[CallgrindWorker]:
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as folder:
        worker = CallgrindWorker(valgrind, code, env, Path(folder))
        try:
            yield worker
        finally:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()


def count_in_process(variant: str, requests: int, valgrind: str) -> float:
    """Instructions per refused `/login` of `variant`, the app called directly (no server)."""
    code = "from bench.instructions import _in_process_worker as w; w()"
    env = {**os.environ, "BENCH_REFUSED_VARIANT": variant}
    with callgrind_worker(valgrind, code, env) as worker:
        if worker.hear() != "ready":
            raise worker.failed(f"the in-process {variant} worker did not start")
        worker.control("--instr=on")
        worker.say(str(requests))
        if worker.hear() != "done":
            raise worker.failed(f"the in-process {variant} worker failed")
        worker.control("--instr=off")
        worker.control("--dump")
        worker.finish()
        dumps = sorted(worker.out.parent.glob("callgrind.out*"))
        return max(_totals(dump).get("Ir", 0) for dump in dumps) / requests


def _login_servers(upstream_url: str) -> dict[str, Server]:
    env = {
        "BENCH_UPSTREAM_URL": upstream_url,
        "BENCH_TIMEOUT": _SLOW,
        "BENCH_HTTPX_TIMEOUT": _SLOW,
    }
    return {
        variant: Server(f"bench.apps:make_{variant}_app", env, 200)
        for variant in ("breaker", "plain")
    }


# ------------------------------------------------------------------------------------ the run


def _measure_logins(
    upstream_url: str, levels: list[int], args: argparse.Namespace, valgrind: str
) -> dict[str, dict[str, list[float]]]:
    servers = _login_servers(upstream_url)
    results: dict[str, dict[str, list[float]]] = {
        f"concurrency {c}": {v: [] for v in servers} for c in levels
    }
    for _ in range(args.repeats):
        for concurrency, counts in zip(levels, results.values(), strict=True):
            for variant, server in servers.items():  # alternate, though order hardly matters
                counts[variant].append(
                    count_instructions(
                        server, args.requests, concurrency, valgrind, cache_model=args.cache_model
                    )
                )
    return results


def _measure_refused(
    levels: list[int], args: argparse.Namespace, valgrind: str
) -> dict[str, dict[str, list[float]]]:
    """In process (the framework and the library alone), then over HTTP at each concurrency."""
    factory = "bench.instructions:make_refused_app"
    results: dict[str, dict[str, list[float]]] = {"in process": {}}
    results.update({f"over HTTP, concurrency {c}": {} for c in levels})
    for _ in range(args.repeats):
        for variant in REFUSED_VARIANTS:
            found = count_in_process(variant, args.requests, valgrind)
            results["in process"].setdefault(variant, []).append(found)
            server = Server(factory, {"BENCH_REFUSED_VARIANT": variant}, 503, "/health/live")
            for concurrency in levels:
                found = count_instructions(server, args.requests, concurrency, valgrind)
                results[f"over HTTP, concurrency {concurrency}"].setdefault(variant, []).append(
                    found
                )
    return results


def _report_logins(results: dict[str, dict[str, list[float]]], report: dict[str, Any]) -> None:
    for level, counts in results.items():
        breaker, plain = min(counts["breaker"]), min(counts["plain"])
        ratio = breaker / plain
        print(f"{level}:")
        for variant, found in counts.items():
            print(f"  {variant:<8} " + "  ".join(f"{c:,.0f}" for c in found))
        print(f"  ratio breaker / plain: {ratio:.4f} ({breaker - plain:+,.0f} per request)")
        verdict = "MET" if 1 / ratio >= 0.97 else "NOT MET"
        print(f"  {verdict:<7} implied throughput ratio {1 / ratio:.4f} (goal >= 0.97)")
        report["levels"][level] = {"counts": counts, "ratio": ratio}


def _report_refused(results: dict[str, dict[str, list[float]]], report: dict[str, Any]) -> None:
    for level, counts in results.items():
        floor = min(counts["floor"])
        ratios = {variant: min(found) / floor for variant, found in counts.items()}
        print(f"{level}:")
        for variant, found in counts.items():
            print(
                f"  {variant:<8}" + "".join(f"{c:>12,.0f}" for c in found)
                + f"   x{ratios[variant]:.3f} the floor ({min(found) - floor:+,.0f})"
            )  # fmt: skip
        verdict = "MET" if ratios["readme"] <= 1.2 else "NOT MET"
        print(f"  {verdict:<7} the README's route: x{ratios['readme']:.3f} the floor (goal <= 1.2)")
        report["levels"][level] = {"counts": counts, "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=300, help="counted requests (300)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant (2)")
    parser.add_argument(
        "--concurrency",
        type=int,
        action="append",
        help="requests in flight (repeatable; default: 1 and 32, 1 with --refused)",
    )
    parser.add_argument(
        "--cache-model", action="store_true", help="estimated cycles from the cache simulation"
    )
    parser.add_argument(
        "--refused", action="store_true", help="the README's route refused, against a bare 503"
    )
    args = parser.parse_args()
    levels = args.concurrency or ([1] if args.refused else [1, 32])
    what = "estimated cycles" if args.cache_model else "instructions"
    if args.requests < 1 or args.repeats < 1 or min(levels) < 1:
        parser.error("--requests, --repeats and --concurrency must be at least 1")
    if args.refused and args.cache_model:
        parser.error("--cache-model is for the /login runs, not --refused")
    valgrind = find_or_install("valgrind", "valgrind", needed_by="bench.instructions")
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python -m bench.instructions", *sys.argv[1:]]),
        "requests": args.requests,
        "measure": what,
        "levels": {},
    }
    if args.refused:
        results = _measure_refused(levels, args, valgrind)
        print(f"{what} per refused /login (503), {args.requests} requests x {args.repeats} runs")
    else:
        upstream = UvicornProcess(
            "bench.apps:make_upstream_app", lifespan="off", ready_path="/verify?token=valid-a"
        )
        upstream.start()
        try:
            results = _measure_logins(upstream.url, levels, args, valgrind)
        finally:
            upstream.stop()
        print(f"{what} per /login, {args.requests} requests x {args.repeats} runs")
    print(f"{report['date']}; machine: {machine()}")
    (_report_refused if args.refused else _report_logins)(results, report)
    name = "refused" if args.refused else "cycles-model" if args.cache_model else "instructions"
    out = save(f"instructions-{name}" if args.refused else name, report, datetime.date.today())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
