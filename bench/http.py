"""HTTP-level benchmark: the breaker's overhead, and how fast it fails (issue 4, items 1 and 2).

    python -m bench.http [--seconds S] [--rounds N] [--generations G] [--connections C]
                         [--quick] [--pin]

Everything runs on 127.0.0.1; the harness starts every server and stops it in `finally`.
Servers are uvicorn subprocesses, one worker each (asyncio loop, h11, no access log). Load:
wrk `-t1 -c C` (default 32), closed loop: it reports the requests per second the server
sustains at that concurrency, and the latency at that concurrency. wrk must be on PATH; when
it is missing and we run as root, the harness installs it with apt-get, else it exits saying so.

1. Overhead. The example User Service's GET /login in two variants, each its own uvicorn
   process, both up at once: "breaker" (create_user_app as shipped: breaker,
   AsyncBreakerTransport, the 503 middleware, setup_breakers, /health) and "plain" (the same
   route with a plain httpx client on httpx's transport, with the example's pool limits,
   AUTH_SERVICE_LIMITS; no middleware, no setup_breakers). Two processes rather than one
   serving both routes: the middleware wraps a whole app, so one process could not serve the
   plain route without it, and each process is the app exactly as deployed; only one of them
   is under load at any moment. They share one minimal upstream (bench.apps:make_upstream_app,
   its own process). Rounds of S seconds alternate between the variants, the order swapped
   every round (B P, P B, ...), so drifts of the machine fall on both alike. A process may
   also keep its own speed for its whole life (its memory layout, its string hashes), so G
   generations of server pairs run one after the other, N rounds each. Ratios are taken per
   round (paired); the figure is their median over all rounds, with a 95% confidence interval
   for that median from a bootstrap that resamples generations, then rounds within each. A
   goal is settled when its bar lies outside the interval (never with fewer than 4 pairs or
   16 rounds in all). Beside wrk's figures: the server's CPU time per request (psutil), and
   `busy`, the CPU share it got (well under 1.0: something else on the machine competed).
   `--aa` serves the plain app in both places: the ratios of that A/A run are the differences
   this machine shows between two identical servers.

2. Fast failure. The upstream accepts connections and never answers (bench.hanging, in this
   process, counting connections and requests). The breaker is opened (timeout T, reset R,
   half_open_max_calls 1), then a run of D seconds: each trial hangs until T, reopens, and the
   next comes R later. The upstream must receive exactly the trials the breaker's own event log
   admitted (its `half_open` events), or the run fails. Two loads: "saturated" (wrk -c C flat
   out, as in item 1; sockets and tasks sampled every 0.25 s) and "paced" (the same C
   connections offering item 1's request rate with random pauses; not sampled, since the
   sampling shows in a p99). Closed-loop latency at saturation is queueing (C / rps) whatever
   each request costs, so the 503's latency "at the same load as item 1" is read at item 1's
   rate: the paced run. Its p99 covers every response, the trials' 502s included (well under
   1% of them), so it bounds the 503s' p99 from above. "floor" is a route answering the same
   503 at once through the same app: the framework's own cost. Every garbage collection in
   the server is timed (`gc ms`: the longest). Last, the plain variant (httpx timeout 5 s)
   takes the saturated load against the same upstream: latency, errors, sockets, tasks.

The table goes to stdout, the figures to bench/results/http-<date>.json. For where the
overhead goes, layer by layer and with far less noise, see bench.http_layers.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import psutil

from bench.hanging import HangingUpstream
from bench.processes import UvicornProcess, get
from bench.report import machine, save
from bench.wrk import WrkResult, find_wrk, run_wrk

LOGIN = "/login?token=valid-alice"
VARIANTS = ("breaker", "plain")
APPS = {"breaker": "bench.apps:make_breaker_app", "plain": "bench.apps:make_plain_app"}
_SAMPLE_EVERY = 0.25  # seconds between samples of sockets and tasks during a run
_SETTLE_POLLS = 100  # x 50 ms: the last trial of a fast-failure run must end within 5 s
_DEFAULT_RATE = 300.0  # requests per second for the paced runs when item 1 did not run
_MIN_GENERATIONS, _MIN_ROUNDS = 4, 16  # fewer never settle a goal of item 1


# ----------------------------------------------------------------------------------- setup


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.http", description=__doc__.split("\n")[0]
    )
    add = parser.add_argument
    # Short rounds, many of them: this machine's speed drifts over seconds, and a variant that
    # alternates quickly with the other samples the same drifts.
    add("--seconds", type=float, default=3.0, help="seconds per wrk round, item 1 (3)")
    add("--rounds", type=int, default=8, help="rounds per variant and generation, item 1 (8)")
    add("--generations", type=int, default=4, help="server pairs started in turn, item 1 (4)")
    add("--warmup", type=float, default=2.0, help="seconds of discarded load per variant (2)")
    add("--connections", type=int, default=32, help="wrk connections, both items (32)")
    add("--threads", type=int, default=1, help="wrk threads (1)")
    add("--open-seconds", type=float, default=10.0, help="length D of a fast-failure run (10)")
    add("--open-rounds", type=int, default=3, help="fast-failure rounds with the breaker (3)")
    add("--hang-seconds", type=float, default=12.0, help="the no-breaker run on the hang (12)")
    add("--trial-timeout", type=float, default=0.5, help="breaker timeout T, item 2 (0.5)")
    add("--reset-timeout", type=float, default=1.0, help="breaker reset_timeout R, item 2 (1)")
    add("--httpx-timeout", type=float, default=5.0, help="plain variant's httpx timeout (5)")
    add("--rate", type=float, help="paced runs' rate (default: item 1's plain rps, else 300)")
    add("--only", choices=("overhead", "failure"), help="run one item only")
    add(
        "--aa",
        action="store_true",
        help="item 1 with the plain app in both places: what this machine can resolve",
    )
    add("--pin", action="store_true", help="server under test on CPU 0; wrk, upstream on CPU 1")
    add("--quick", action="store_true", help="short runs: 2 x 2 rounds of 2 s, D 5 s, hang 7 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.generations, args.warmup = 2.0, 2, 2, 1.0
        args.open_seconds, args.open_rounds, args.hang_seconds = 5.0, 1, 7.0
    if min(args.seconds, args.open_seconds, args.hang_seconds) < 1:
        parser.error("every run must last at least 1 second")
    if min(args.rounds, args.generations) < 1:
        parser.error("--rounds and --generations must be at least 1")
    if args.connections < 1 or args.threads < 1 or args.open_rounds < 1:
        parser.error("--connections, --threads and --open-rounds must be at least 1")
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be > 0")
    if args.aa and args.only != "overhead":
        parser.error("--aa goes with --only overhead")
    if args.pin and (os.cpu_count() or 1) < 2:
        parser.error("--pin needs two CPUs")
    return args


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


class Load:
    """The fixed load of both items: wrk with the same threads and connections every time."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.wrk = find_wrk()
        self.connections = args.connections
        self.threads = args.threads
        self.cpus = (1,) if args.pin else None

    def run(
        self,
        url: str,
        seconds: float,
        *,
        count_statuses: bool = False,
        rate: float | None = None,
    ) -> WrkResult:
        return run_wrk(
            self.wrk,
            url,
            connections=self.connections,
            seconds=seconds,
            threads=self.threads,
            count_statuses=count_statuses,
            rate=rate,
            cpus=self.cpus,
        )

    def sampled(
        self,
        url: str,
        seconds: float,
        sample: Callable[[], dict[str, Any]],
        *,
        rate: float | None = None,
    ) -> tuple[WrkResult, list[dict[str, Any]]]:
        """Run wrk (statuses counted) and call `sample()` every 0.25 s while it runs."""
        samples: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds + 60.0
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(self.run, url, seconds, count_statuses=True, rate=rate)
            time.sleep(min(0.5, seconds / 4))  # let the load reach its level first
            for _ in range(int((seconds + 60.0) / _SAMPLE_EVERY)):
                if future.done() or time.monotonic() > deadline:
                    break
                samples.append(sample())
                with contextlib.suppress(concurrent.futures.TimeoutError):
                    future.result(timeout=_SAMPLE_EVERY)
            return future.result(timeout=max(1.0, deadline - time.monotonic())), samples


def server_cpus(args: argparse.Namespace) -> tuple[int, ...] | None:
    return (0,) if args.pin else None


# ----------------------------------------------------------------------------------- item 1


@dataclasses.dataclass(frozen=True)
class Round:
    wrk: WrkResult
    cpu_s: float  # the server process's CPU time (user + system) during the round
    generation: int  # which pair of server processes served it

    @property
    def rps(self) -> float:
        return self.wrk.rps

    @property
    def p50(self) -> float:
        return self.wrk.p50

    @property
    def p99(self) -> float:
        return self.wrk.p99

    @property
    def cpu_us(self) -> float:
        """Server CPU microseconds per request."""
        return self.cpu_s / self.wrk.requests * 1e6

    @property
    def busy(self) -> float:
        """The share of one CPU the server got: near 1.0 when nothing else competed."""
        return self.cpu_s / self.wrk.duration_s

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.wrk.to_dict(),
            "server_cpu_s": round(self.cpu_s, 3),
            "cpu_us": round(self.cpu_us, 1),
            "busy": round(self.busy, 3),
            "generation": self.generation,
        }


METRICS = ("rps", "p50", "p99", "cpu_us", "busy")


def overhead(args: argparse.Namespace, load: Load) -> dict[str, Any]:
    upstream = UvicornProcess(
        "bench.apps:make_upstream_app",
        ready_path="/verify?token=valid-alice",
        lifespan="off",
        cpus=(1,) if args.pin else None,
    )
    runs: dict[str, list[Round]] = {name: [] for name in VARIANTS}
    with upstream:
        for generation in range(args.generations):
            overhead_generation(args, load, upstream.url, generation, runs)
    return summarize_overhead(runs)


def overhead_generation(
    args: argparse.Namespace,
    load: Load,
    upstream_url: str,
    generation: int,
    runs: dict[str, list[Round]],
) -> None:
    """Start a fresh pair of servers, warm them up, and run `args.rounds` rounds on each."""
    env = {"BENCH_UPSTREAM_URL": upstream_url}
    with contextlib.ExitStack() as stack:
        servers = {
            name: stack.enter_context(UvicornProcess(app, env=env, cpus=server_cpus(args)))
            for name, app in overhead_apps(args).items()
        }
        processes = {name: psutil.Process(server.pid) for name, server in servers.items()}
        for name, server in servers.items():
            status, body = get(server.url + LOGIN)
            if status != 200 or body.get("user") != "alice":
                raise RuntimeError(f"{name}: GET /login answered {status} {body!r}")
            load.run(server.url + LOGIN, args.warmup)
        for index in range(args.rounds):
            order = VARIANTS if index % 2 == 0 else VARIANTS[::-1]
            for name in order:
                before = cpu_seconds(processes[name])
                result = load.run(servers[name].url + LOGIN, args.seconds)
                spent = cpu_seconds(processes[name]) - before
                bad = {k: v for k, v in result.errors.items() if v}
                if bad or not result.requests:
                    raise RuntimeError(f"{name}: wrk saw errors {bad} in round {index + 1}")
                runs[name].append(Round(result, spent, generation))
            b, p = runs["breaker"][-1], runs["plain"][-1]
            print(
                f"  generation {generation + 1}/{args.generations}, round {index + 1}/"
                f"{args.rounds}: breaker {b.rps:5.0f} rps p99 {b.p99:6.1f} ms"
                f" {b.cpu_us:5.0f} us/req | plain {p.rps:5.0f} rps p99 {p.p99:6.1f} ms"
                f" {p.cpu_us:5.0f} us/req",
                file=sys.stderr,
                flush=True,
            )
        if not args.aa:
            _, state = get(servers["breaker"].url + "/_bench/breaker")
            if state["state"] != "closed" or state["stats"]["failures"]:
                raise RuntimeError(f"the breaker did not stay closed and clean: {state}")


def overhead_apps(args: argparse.Namespace) -> dict[str, str]:
    """The app behind each variant's name; with --aa, the plain app behind both (an A/A test)."""
    if args.aa:
        return dict.fromkeys(VARIANTS, APPS["plain"])
    return APPS


def median_interval(
    groups: Sequence[Sequence[float]], *, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """A 95% bootstrap interval for the median of all values in `groups`.

    Each resample draws the groups with replacement, then the values within each drawn group:
    values of one group (rounds of one pair of processes) share that group's bias, so the
    interval widens with the differences between groups, as it should.
    """
    rng = random.Random(seed)  # the same run gives the same interval
    medians = []
    for _ in range(resamples):
        pooled: list[float] = []
        for group in rng.choices(groups, k=len(groups)):
            pooled.extend(rng.choices(group, k=len(group)))
        medians.append(statistics.median(pooled))
    medians.sort()
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def summarize_overhead(runs: dict[str, list[Round]]) -> dict[str, Any]:
    pairs = list(zip(runs["breaker"], runs["plain"], strict=True))
    medians = {
        name: {key: statistics.median(getattr(r, key) for r in runs[name]) for key in METRICS}
        for name in VARIANTS
    }
    paired = {key: [getattr(b, key) / getattr(p, key) for b, p in pairs] for key in METRICS}
    ratios = {key: statistics.median(values) for key, values in paired.items()}
    generations = sorted({b.generation for b, _ in pairs})
    by_generation = {
        key: [
            [ratio for ratio, (b, _) in zip(values, pairs, strict=True) if b.generation == g]
            for g in generations
        ]
        for key, values in paired.items()
    }
    interval = {key: median_interval(groups) for key, groups in by_generation.items()}
    # A bootstrap over two or three groups of a few rounds gives an interval too narrow to trust.
    enough = len(generations) >= _MIN_GENERATIONS and len(pairs) >= _MIN_ROUNDS
    # The middle half of the per-round ratios: how far apart two rounds of the same pair land.
    spread = {key: _quartiles(values) for key, values in paired.items()}
    return {
        "medians": medians,
        "paired_ratios": ratios,  # breaker / plain, per round, median over rounds
        "paired_ratio_interval": interval,  # 95%, bootstrap over generations and rounds
        "paired_ratio_quartiles": spread,
        "generation_ratios": {
            key: [statistics.median(group) for group in groups]
            for key, groups in by_generation.items()
        },
        "ratio_of_medians": {
            key: medians["breaker"][key] / medians["plain"][key] for key in METRICS
        },
        "verdicts": [
            {
                "goal": "breaker rps >= 97% of plain (median of paired ratios)",
                "met": ratios["rps"] >= 0.97,
                "value": ratios["rps"],
                "settled": enough and not interval["rps"][0] < 0.97 < interval["rps"][1],
            },
            {
                "goal": "p99 grows < 3% (median of paired ratios)",
                "met": ratios["p99"] < 1.03,
                "value": ratios["p99"],
                "settled": enough and not interval["p99"][0] < 1.03 < interval["p99"][1],
            },
        ],
        "rounds": {name: [r.to_dict() for r in runs[name]] for name in VARIANTS},
    }


# ----------------------------------------------------------------------------------- item 2


def sampler(server: UvicornProcess, upstream_port: int) -> Callable[[], dict[str, Any]]:
    process = psutil.Process(server.pid)

    def sample() -> dict[str, Any]:
        sockets = sum(
            1
            for c in process.net_connections(kind="tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port == upstream_port
        )
        try:
            _, body = get(server.url + "/_bench/tasks", timeout=2.0)
            tasks = body["tasks"]
        except (OSError, TypeError, KeyError):
            tasks = None  # the server did not answer in time: that is a finding too
        return {"sockets": sockets, "tasks": tasks}

    return sample


def describe_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {"count": len(samples)}
    for key in ("sockets", "tasks"):
        values = [s[key] for s in samples if s[key] is not None]
        found[key] = {
            "median": statistics.median(values) if values else None,
            "max": max(values) if values else None,
            "unanswered": sum(1 for s in samples if s[key] is None),
        }
    return found


def settle(server: UvicornProcess, base: dict[str, int]) -> dict[str, Any]:
    """The breaker's counts once every admitted trial has ended (each ends in a timeout)."""
    snap: dict[str, Any] = {}
    for _ in range(_SETTLE_POLLS):
        _, snap = get(server.url + "/_bench/breaker")
        events = snap["events"]
        if events["half_open"] - base["half_open"] == events["timeout"] - base["timeout"]:
            return snap
        time.sleep(0.05)
    raise RuntimeError(f"a trial did not end within its limit: {snap}")


def open_run(
    args: argparse.Namespace,
    load: Load,
    breaker: UvicornProcess,
    upstream: HangingUpstream,
    rate: float | None,
) -> dict[str, Any]:
    """One run of D seconds with the breaker opened at its start; checks the trial count."""
    T, R = args.trial_timeout, args.reset_timeout
    sample = sampler(breaker, upstream.port)
    idle = sample()
    _, before = get(breaker.url + "/_bench/open")
    if before["state"] != "open":
        raise RuntimeError(f"the breaker did not open: {before}")
    upstream.reset()
    get(breaker.url + "/_bench/gc?reset=true")
    opened = time.monotonic()
    if rate is None:
        result, samples = load.sampled(breaker.url + LOGIN, args.open_seconds, sample)
    else:
        # Not sampled: the sampler's work on this shared machine shows in a paced p99.
        result = load.run(breaker.url + LOGIN, args.open_seconds, count_statuses=True, rate=rate)
        samples = []
    _, collections = get(breaker.url + "/_bench/gc")
    after = settle(breaker, before["events"])
    span = time.monotonic() - opened
    delta = {k: after["events"][k] - before["events"][k] for k in before["events"]}
    trials = delta["half_open"]
    row = {
        "load": "saturated" if rate is None else f"paced {rate:.0f}/s",
        "wrk": result.to_dict(),
        "events": delta,
        "trials_by_event_log": trials,
        # Trials fit in the span from open() to the last trial's end: R, then T + R each.
        "trials_by_timing": 1 + int(max(0.0, span - R - T) // (T + R)),
        "upstream_requests": upstream.requests,
        "upstream_connections": upstream.accepted,
        "exact": upstream.requests == trials,
        "idle": idle,
        "during": describe_samples(samples),
        "gc": collections,
    }
    print(
        f"  breaker open, {row['load']}: {result.rps:.0f} rps, p99 {result.p99:.2f} ms, "
        f"trials {trials}, upstream saw {upstream.requests}",
        file=sys.stderr,
        flush=True,
    )
    if not row["exact"]:
        raise RuntimeError(
            f"the upstream received {upstream.requests} requests, the breaker admitted "
            f"{trials} trials: {row}"
        )
    return row


def fast_failure(args: argparse.Namespace, load: Load, rate: float) -> dict[str, Any]:
    with HangingUpstream() as upstream, contextlib.ExitStack() as stack:
        env = {
            "BENCH_UPSTREAM_URL": upstream.url,
            "BENCH_TIMEOUT": str(args.trial_timeout),
            "BENCH_RESET_TIMEOUT": str(args.reset_timeout),
            "BENCH_HTTPX_TIMEOUT": str(args.httpx_timeout),
            "BENCH_GC_STATS": "1",
        }
        cpus = server_cpus(args)
        breaker = stack.enter_context(UvicornProcess(APPS["breaker"], env=env, cpus=cpus))
        plain = stack.enter_context(UvicornProcess(APPS["plain"], env=env, cpus=cpus))
        load.run(breaker.url + "/_bench/floor", args.warmup)

        runs: dict[str, list[dict[str, Any]]] = {"saturated": [], "paced": []}
        floor: dict[str, list[dict[str, Any]]] = {"saturated": [], "paced": []}
        for _ in range(args.open_rounds):
            for mode, paced in (("saturated", None), ("paced", rate)):
                runs[mode].append(open_run(args, load, breaker, upstream, paced))
                get(breaker.url + "/_bench/gc?reset=true")
                result = load.run(
                    breaker.url + "/_bench/floor", args.seconds, count_statuses=True, rate=paced
                )
                _, collections = get(breaker.url + "/_bench/gc")
                floor[mode].append({**result.to_dict(), "gc": collections})

        # The same load with no breaker, against the same hanging upstream.
        sample = sampler(plain, upstream.port)
        idle = sample()
        upstream.reset()
        get(plain.url + "/_bench/gc?reset=true")
        print(f"  no breaker: {args.hang_seconds:g} s on the hang", file=sys.stderr, flush=True)
        result, samples = load.sampled(plain.url + LOGIN, args.hang_seconds, sample)
        unprotected = {
            "load": "saturated",
            "wrk": result.to_dict(),
            "upstream_requests": upstream.requests,
            "upstream_connections": upstream.accepted,
            "idle": idle,
            "during": describe_samples(samples),
            "gc": get(plain.url + "/_bench/gc")[1],
        }

    def medians(rows: list[dict[str, Any]]) -> dict[str, float]:
        found = {
            key: statistics.median(r["latency_ms"][key] for r in rows)
            for key in ("p50", "p99", "max")
        }
        found["rps"] = statistics.median(r["rps"] for r in rows)
        return found

    summary = {mode: medians([r["wrk"] for r in rows]) for mode, rows in runs.items()}
    floors = {mode: medians(rows) for mode, rows in floor.items()}
    every = runs["saturated"] + runs["paced"]
    return {
        "trial_timeout_s": args.trial_timeout,
        "reset_timeout_s": args.reset_timeout,
        "run_seconds": args.open_seconds,
        "half_open_max_calls": 1,
        "paced_rate": rate,
        "medians": summary,
        "floor_medians": floors,
        "runs": runs,
        "floor": floor,
        "no_breaker": unprotected,
        "verdicts": [
            {
                "goal": f"p99 of the 503s < 5 ms at item 1's rate ({rate:.0f}/s, paced)",
                "met": summary["paced"]["p99"] < 5.0,
                "value": summary["paced"]["p99"],
            },
            {
                "goal": "upstream received exactly the trials admitted (requests, trials)",
                "met": all(r["exact"] for r in every),
                "value": [(r["upstream_requests"], r["trials_by_event_log"]) for r in every],
            },
        ],
    }


# ----------------------------------------------------------------------------------- report


def versions(wrk: str) -> dict[str, str]:
    found = {}
    # sniffio: without it, httpcore retries a failed import on every request (a large part
    # of each request's cost), which dilutes any overhead measured on top of httpx.
    for name in (
        "fastapi_breaker",
        "fastapi",
        "starlette",
        "httpx",
        "httpcore",
        "anyio",
        "sniffio",
        "uvicorn",
        "h11",
    ):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    shown = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10, check=False)
    found["wrk"] = (shown.stdout or shown.stderr).split("[")[0].strip()
    return found


def render(report: dict[str, Any]) -> str:
    setup = report["setup"]
    lines = [
        f"fastapi_breaker HTTP benchmark, {report['date']}",
        f"machine: {report['machine']['nproc']} cores, {report['machine']['python']}; "
        f"load average at start {report['machine']['loadavg']}",
        f"load: wrk -t{setup['threads']} -c{setup['connections']}, closed loop, 127.0.0.1; "
        f"servers: uvicorn, 1 worker, asyncio + h11; pinned: {setup['pinned']}",
        f"command: {setup['command']}",
    ]
    if setup.get("aa"):
        lines.append(
            "A/A: both variants are the plain app; their ratios are what this machine can resolve"
        )
    item = report.get("overhead")
    if item:
        lines += [
            "",
            f"1. overhead: GET /login, {setup['generations']} server pairs x {setup['rounds']}"
            f" rounds x {setup['seconds']:g} s per variant, alternating; medians over rounds",
            f"  {'variant':<10}{'rps':>8}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/req':>12}{'busy':>7}",
        ]
        for name in VARIANTS:
            m = item["medians"][name]
            lines.append(
                f"  {name:<10}{m['rps']:8.0f}{m['p50']:9.2f}{m['p99']:9.2f}"
                f"{m['cpu_us']:12.0f}{m['busy']:7.2f}"
            )
        r = item["paired_ratios"]
        lines.append(
            f"  {'ratio':<10}{r['rps']:8.3f}{r['p50']:9.3f}{r['p99']:9.3f}{r['cpu_us']:12.3f}"
            f"{r['busy']:7.2f}   breaker / plain, median of per-round ratios"
        )
        shown_keys = ("rps", "p50", "p99", "cpu_us")
        ci = item["paired_ratio_interval"]
        lines.append(
            "  95% interval of the median ratio: "
            + ", ".join(f"{key} {_span(ci[key])}" for key in shown_keys)
        )
        per = item["generation_ratios"]
        lines.append(
            "  median ratio of each server pair: "
            + ", ".join(f"{key} " + " ".join(f"{v:.3f}" for v in per[key]) for key in shown_keys)
        )
        q = item["paired_ratio_quartiles"]
        lines.append(
            "  spread, quartiles of the per-round ratios: "
            + ", ".join(f"{key} {_span(q[key])}" for key in shown_keys)
        )
        lines.append("  busy: the server's CPU seconds per second of the round (1.0 = one core)")
    item = report.get("fast_failure")
    if item:
        lines += [
            "",
            f"2. fast failure: the upstream hangs; breaker open, T={item['trial_timeout_s']:g} s,"
            f" R={item['reset_timeout_s']:g} s, half_open_max_calls=1, runs of "
            f"{item['run_seconds']:g} s",
            f"  {'run':<26}{'rps':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
            f"{'statuses':>22}{'sockets':>8}{'tasks':>6}{'upstream':>9}{'gc ms':>7}",
        ]
        for rows in item["runs"].values():
            for index, row in enumerate(rows, 1):
                lines.append(_failure_line(f"breaker open, {row['load']} #{index}", row))
        for mode, rows in item["floor"].items():
            for index, row in enumerate(rows, 1):
                lines.append(_floor_line(f"floor 503, {mode} #{index}", row))
        nb = item["no_breaker"]
        lines.append(_failure_line("no breaker, saturated", nb))
        first = item["runs"]["saturated"][0]
        lines.append(
            "  floor: a route answering the same 503 at once, through the same app and middleware"
        )
        lines.append(
            "  statuses: 502 = a trial (or, without a breaker, a request) that timed out; "
            "to = wrk timeouts"
        )
        lines.append(
            "  sockets: max ESTABLISHED to the upstream; tasks: max asyncio tasks (idle before: "
            f"breaker {first['idle']['sockets']}/{first['idle']['tasks']}, no breaker "
            f"{nb['idle']['sockets']}/{nb['idle']['tasks']}); upstream: requests it received; "
            "gc ms: longest garbage collection"
        )
        for row in item["runs"]["saturated"] + item["runs"]["paced"]:
            lines.append(
                f"  {row['load']}: trials admitted (half_open events) "
                f"{row['trials_by_event_log']}, by timing {row['trials_by_timing']}; upstream "
                f"requests {row['upstream_requests']}, connections {row['upstream_connections']}"
            )
    lines += ["", "goals of issue 4:"]
    for key in ("overhead", "fast_failure"):
        for verdict in (report.get(key) or {}).get("verdicts", []):
            value = verdict["value"]
            shown = f"{value:.3f}" if isinstance(value, float) else str(value)
            if not verdict.get("settled", True):
                # Neither met nor missed: this run cannot tell which side of the bar it is on.
                leaning = "met" if verdict["met"] else "not met"
                found = f"UNSETTLED (leaning {leaning}; the bar lies inside the 95% interval)"
            else:
                found = "MET" if verdict["met"] else "NOT MET"
            lines.append(f"  {verdict['goal']}: {shown}, {found}")
    return "\n".join(lines)


def _failure_line(label: str, row: dict[str, Any]) -> str:
    wrk = row["wrk"]
    lat = wrk["latency_ms"]
    statuses = " ".join(f"{k}:{v}" for k, v in wrk["statuses"].items())
    timeouts = wrk["errors"]["timeout"]
    if timeouts:
        statuses += f" to:{timeouts}"
    during = row["during"]
    return (
        f"  {label:<26}{wrk['rps']:7.0f}{lat['p50']:9.2f}{lat['p99']:9.2f}{lat['max']:9.1f}"
        f"{statuses:>22}{_shown(during['sockets']['max']):>8}{_shown(during['tasks']['max']):>6}"
        f"{row['upstream_requests']:>9}{_gc_max(row):>7}"
    )


def _span(pair: Sequence[float]) -> str:
    return f"{pair[0]:.2f}-{pair[1]:.2f}"


def _shown(value: object) -> str:
    return "-" if value is None else str(value)


def _floor_line(label: str, row: dict[str, Any]) -> str:
    lat = row["latency_ms"]
    statuses = " ".join(f"{k}:{v}" for k, v in row["statuses"].items())
    return (
        f"  {label:<26}{row['rps']:7.0f}{lat['p50']:9.2f}{lat['p99']:9.2f}{lat['max']:9.1f}"
        f"{statuses:>22}{'':>8}{'':>6}{'':>9}{_gc_max(row):>7}"
    )


def _gc_max(row: dict[str, Any]) -> str:
    collections = row.get("gc")
    if not collections:
        return "-"
    return f"{max(gen['max_ms'] for gen in collections.values()):.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # A SIGTERM (make interrupted, a CI timeout) unwinds like Ctrl-C: every `finally` and
    # `with` stops the servers this run started, instead of leaving them behind.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    load = Load(args)
    now = dt.datetime.now(dt.UTC)
    started = time.monotonic()
    shown = sys.argv[1:] if argv is None else list(argv)
    report: dict[str, Any] = {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "versions": versions(load.wrk),
        "setup": {
            "connections": args.connections,
            "threads": args.threads,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "generations": args.generations,
            "warmup": args.warmup,
            "pinned": "server CPU 0, wrk + upstream CPU 1" if args.pin else "no",
            "aa": args.aa,
            "command": " ".join(["python -m bench.http", *shown]),
        },
    }
    rate = args.rate
    if args.only in (None, "overhead"):
        print("1. overhead", file=sys.stderr, flush=True)
        report["overhead"] = overhead(args, load)
        if args.aa:  # no goal to judge: the same app against itself
            report["overhead"]["verdicts"] = []
        rate = rate or report["overhead"]["medians"]["plain"]["rps"]
    if args.only in (None, "failure"):
        print("2. fast failure", file=sys.stderr, flush=True)
        report["fast_failure"] = fast_failure(args, load, rate or _DEFAULT_RATE)
    report["seconds"] = round(time.monotonic() - started, 1)
    print(render(report))
    path = save("http", report, now)
    print(f"\nwrote {path} ({report['seconds']} s)")
    # A goal missed is a finding, not a crash: only a broken check (an exception) fails.
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
