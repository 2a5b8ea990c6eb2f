"""HTTP overhead and fast failure: the example User Service under wrk, breaker against plain.

    python -m bench.http [--quick] [--only overhead|failure] [--aa] [--generations G] ...

Overhead: GET /login with the breaker (transport, `setup_breakers`, middleware) and without,
in two uvicorn processes taking turns in rounds, over G pairs of fresh processes; the median of
the per-round ratios with a bootstrap interval (a goal whose bar lies inside it is UNSETTLED).
`--aa` serves the plain app in both places: its ratios are the machine's own noise.
Fast failure: the upstream hangs; with the breaker open, the upstream must receive exactly the
trials the breaker admitted; the 503's latency flat out and paced at the overhead run's rate,
beside a route answering the same 503 at once, and the plain app on the same hang.
The method in full: docs/benchmarks.md. Results: bench/results/http-<date>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import psutil

from bench.processes import HANG, Upstream, UvicornProcess, get
from bench.report import Run, goal, heading, median_interval, verdict_lines, versions
from bench.wrk import WrkResult, find_wrk, run_wrk, sampled

LOGIN = "/login?token=valid-alice"
VARIANTS = ("breaker", "plain")
APPS = {"breaker": "bench.apps:make_breaker_app", "plain": "bench.apps:make_plain_app"}
METRICS = ("rps", "p50", "p99", "cpu_us", "busy")
# sniffio: without it, httpcore retries a failed import on every request (a large part of each
# request's cost), which dilutes any overhead measured on top of httpx.
PACKAGES = ("fastapi_breaker", "fastapi", "starlette", "httpx", "httpcore", "sniffio", "uvicorn")
_SETTLE_POLLS = 100  # x 50 ms: the last trial of a fast-failure run must end within 5 s
_DEFAULT_RATE = 300.0  # requests per second for the paced runs when the overhead did not run
_MIN_GENERATIONS, _MIN_ROUNDS = 4, 16  # fewer never settle an overhead goal

Load = Callable[..., WrkResult]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.http", description=__doc__)
    add = parser.add_argument
    # Short rounds, many of them: this machine's speed drifts over seconds, and a variant that
    # alternates quickly with the other samples the same drifts.
    add("--seconds", type=float, default=3.0, help="seconds per overhead round (3)")
    add("--rounds", type=int, default=8, help="overhead rounds per variant and pair (8)")
    add("--generations", type=int, default=4, help="server pairs started in turn (4)")
    add("--warmup", type=float, default=2.0, help="seconds of discarded load per server (2)")
    add("--connections", type=int, default=32, help="wrk connections (32)")
    add("--open-seconds", type=float, default=10.0, help="length D of a fast-failure run (10)")
    add("--open-rounds", type=int, default=3, help="fast-failure rounds (3)")
    add("--hang-seconds", type=float, default=12.0, help="the plain app on the hang (12)")
    add("--trial-timeout", type=float, default=0.5, help="breaker timeout T (0.5)")
    add("--reset-timeout", type=float, default=1.0, help="breaker reset_timeout R (1)")
    add("--rate", type=float, help="paced runs' rate (default: the plain app's rps, else 300)")
    add("--only", choices=("overhead", "failure"), help="run one part only")
    add("--aa", action="store_true", help="overhead with the plain app in both places")
    add("--quick", action="store_true", help="short runs: 2 x 2 rounds of 2 s, D 5 s, hang 7 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.generations, args.warmup = 2.0, 2, 2, 1.0
        args.open_seconds, args.open_rounds, args.hang_seconds = 5.0, 1, 7.0
    if min(args.seconds, args.open_seconds, args.hang_seconds) < 1:
        parser.error("every run must last at least 1 second")
    if min(args.rounds, args.generations, args.connections, args.open_rounds) < 1:
        parser.error("counts must be at least 1")
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be > 0")
    if args.aa and args.only != "overhead":
        parser.error("--aa goes with --only overhead")
    return args


# ---------------------------------------------------------------------------------- overhead


def one_round(load: Load, server: UvicornProcess, seconds: float) -> dict[str, float]:
    """wrk on /login flat out, with the server's CPU time (user + system) per request."""
    process = psutil.Process(server.pid)
    before = sum(process.cpu_times()[:2])
    result = load(server.url + LOGIN, seconds=seconds)
    spent = sum(process.cpu_times()[:2]) - before
    if any(result.errors.values()) or not result.requests:
        raise RuntimeError(f"{server.target}: wrk saw errors {result.errors}")
    return {
        "rps": result.rps,
        "p50": result.latency_ms["p50"],
        "p99": result.latency_ms["p99"],
        "cpu_us": spent / result.requests * 1e6,
        "busy": spent / result.duration_s,  # the share of one core the server got
    }


def overhead(args: argparse.Namespace, load: Load) -> dict[str, Any]:
    apps = dict.fromkeys(VARIANTS, APPS["plain"]) if args.aa else APPS
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    upstream = UvicornProcess(
        "bench.apps:make_upstream_app", ready_path="/verify?token=valid-a", lifespan="off"
    )
    with upstream, contextlib.ExitStack() as stack:
        env = {"BENCH_UPSTREAM_URL": upstream.url}
        for generation in range(args.generations):
            stack.close()  # the last pair of servers
            servers = {n: stack.enter_context(UvicornProcess(a, env=env)) for n, a in apps.items()}
            for name, server in servers.items():
                status, body = get(server.url + LOGIN)
                if status != 200 or body != {"user": "alice"}:
                    raise RuntimeError(f"{name}: GET /login answered {status} {body!r}")
                load(server.url + LOGIN, seconds=args.warmup)
            for index in range(args.rounds):
                for name in VARIANTS if index % 2 == 0 else VARIANTS[::-1]:
                    row = one_round(load, servers[name], args.seconds)
                    runs[name].append({**row, "generation": generation})
                shown = " | ".join(f"{n} {runs[n][-1]['rps']:.0f} rps" for n in VARIANTS)
                print(f"  pair {generation + 1}, round {index + 1}: {shown}", file=sys.stderr)
            state = {} if args.aa else get(servers["breaker"].url + "/_bench/breaker")[1]
            if state and (state["state"] != "closed" or state["failures"]):
                raise RuntimeError(f"the breaker did not stay closed and clean: {state}")
    return summarize_overhead(runs)


def summarize_overhead(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    pairs = list(zip(runs["breaker"], runs["plain"], strict=True))
    generations = sorted({b["generation"] for b, _ in pairs})
    medians = {
        name: {key: statistics.median(r[key] for r in runs[name]) for key in METRICS}
        for name in VARIANTS
    }
    paired = {key: [b[key] / p[key] for b, p in pairs] for key in METRICS}
    ratios = {key: statistics.median(values) for key, values in paired.items()}
    interval = {
        key: median_interval(
            [
                [r for r, (b, _) in zip(values, pairs, strict=True) if b["generation"] == g]
                for g in generations
            ]
        )
        for key, values in paired.items()
    }
    # A bootstrap over two or three groups of a few rounds gives an interval too narrow to trust.
    enough = len(generations) >= _MIN_GENERATIONS and len(pairs) >= _MIN_ROUNDS

    def verdict(text: str, key: str, bar: float, met: bool) -> dict[str, Any]:
        low, high = interval[key]
        shown = f"{ratios[key]:.3f} (95% interval {low:.2f}-{high:.2f})"
        return goal(text, met, shown, settled=enough and not low < bar < high)

    return {
        "medians": medians,
        "paired_ratios": ratios,  # breaker / plain, per round, median over rounds
        "paired_ratio_interval": interval,  # 95%, bootstrap over generations and rounds
        "verdicts": [
            verdict("breaker rps >= 97% of plain", "rps", 0.97, ratios["rps"] >= 0.97),
            verdict("p99 grows < 3%", "p99", 1.03, ratios["p99"] < 1.03),
        ],
        "rounds": runs,
    }


# ---------------------------------------------------------------------------------- fast failure


def loaded(
    load: Load, server: UvicornProcess, upstream: Upstream, seconds: float, rate: float | None
) -> dict[str, Any]:
    """wrk on the server's /login; flat out, sockets to the upstream and tasks are sampled."""
    process = psutil.Process(server.pid)

    def sample() -> dict[str, Any]:
        sockets = sum(
            1
            for c in process.net_connections(kind="tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port == upstream.port
        )
        try:
            tasks = get(server.url + "/_bench/tasks", timeout=2.0)[1]["tasks"]
        except (httpx.TransportError, TypeError, KeyError):
            tasks = None  # the server did not answer in time: that is a finding too
        return {"sockets": sockets, "tasks": tasks}

    idle = sample()
    upstream.reset()
    run = functools.partial(load, server.url + LOGIN, seconds=seconds, counted=True)
    if rate is None:
        result, samples = sampled(run, sample, seconds, 0.25)
    else:  # not sampled: the sampler's work on this shared machine shows in a paced p99
        result, samples = run(rate=rate), []
    peaks = {k: max((s[k] for s in samples if s[k] is not None), default=None) for k in idle}
    return {"wrk": result.to_dict(), "idle": idle, **peaks}


def open_run(
    args: argparse.Namespace,
    load: Load,
    server: UvicornProcess,
    upstream: Upstream,
    rate: float | None,
) -> dict[str, Any]:
    """One run of D seconds with the breaker opened at its start; checks the trial count."""
    _, before = get(server.url + "/_bench/open")
    if before["state"] != "open":
        raise RuntimeError(f"the breaker did not open: {before}")
    row = loaded(load, server, upstream, args.open_seconds, rate)
    # Once every admitted trial has ended (each in a timeout), compare with the upstream.
    for _ in range(_SETTLE_POLLS):
        after = get(server.url + "/_bench/breaker")[1]["events"]
        trials = after["half_open"] - before["events"]["half_open"]
        if trials == after["timeout"] - before["events"]["timeout"]:
            break
        time.sleep(0.05)
    else:
        raise RuntimeError(f"a trial did not end within its limit: {after}")
    row |= {"trials": trials, "upstream_requests": upstream.received}
    row["label"] = "breaker open, " + ("saturated" if rate is None else "paced")
    print(f"  {row['label']}: trials {trials}, upstream saw {upstream.received}", file=sys.stderr)
    if upstream.received != trials:
        raise RuntimeError(f"the upstream received {upstream.received}, trials {trials}: {row}")
    return row


def fast_failure(args: argparse.Namespace, load: Load, rate: float) -> dict[str, Any]:
    with Upstream(HANG) as upstream, contextlib.ExitStack() as stack:
        env = {
            "BENCH_UPSTREAM_URL": upstream.url,
            "BENCH_TIMEOUT": str(args.trial_timeout),
            "BENCH_RESET_TIMEOUT": str(args.reset_timeout),
        }
        breaker = stack.enter_context(UvicornProcess(APPS["breaker"], env=env))
        plain = stack.enter_context(UvicornProcess(APPS["plain"], env=env))
        floor_url = breaker.url + "/_bench/floor"
        load(floor_url, seconds=args.warmup)
        runs: list[dict[str, Any]] = []
        for _ in range(args.open_rounds):
            for paced in (None, rate):
                runs.append(open_run(args, load, breaker, upstream, paced))
                floor = load(floor_url, seconds=args.seconds, counted=True, rate=paced)
                label = "floor 503, " + ("saturated" if paced is None else "paced")
                runs.append({"label": label, "wrk": floor.to_dict()})
        # The same load with no breaker, against the same hanging upstream.
        row = loaded(load, plain, upstream, args.hang_seconds, None)
        runs.append(
            {**row, "label": "no breaker, saturated", "upstream_requests": upstream.received}
        )
    paced_p99 = [r["wrk"]["latency_ms"]["p99"] for r in runs if r["label"] == "breaker open, paced"]
    p99 = statistics.median(paced_p99)
    return {
        "trial_timeout_s": args.trial_timeout,
        "reset_timeout_s": args.reset_timeout,
        "run_seconds": args.open_seconds,
        "paced_rate": rate,
        "runs": runs,
        "verdicts": [
            goal(
                f"p99 of the 503s < 5 ms at the overhead run's rate ({rate:.0f}/s)",
                p99 < 5.0,
                f"{p99:.2f} ms, median of the paced runs",
            ),
            goal(
                "the upstream received exactly the trials admitted",
                True,  # open_run raises otherwise
                " ".join(f"{r['upstream_requests']}/{r['trials']}" for r in runs if "trials" in r),
            ),
        ],
    }


# ---------------------------------------------------------------------------------- report


def render(report: dict[str, Any]) -> str:
    setup = report["setup"]
    lines = [
        *heading(report),
        f"versions: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}",
    ]
    item = report.get("overhead")
    if item:
        lines += [
            "",
            f"overhead: GET /login, {setup['generations']} server pairs x {setup['rounds']} rounds"
            f" x {setup['seconds']:g} s, wrk -c{setup['connections']}; medians over rounds"
            + (" (A/A: plain against plain)" if setup["aa"] else ""),
            f"  {'':<10}{'rps':>8}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/req':>12}{'busy':>7}",
        ]
        rows = {**item["medians"], "ratio": item["paired_ratios"]}
        for name, m in rows.items():
            f = ".3f" if name == "ratio" else ".0f"
            lines.append(
                f"  {name:<10}{m['rps']:8{f}}{m['p50']:9.2f}{m['p99']:9.2f}"
                f"{m['cpu_us']:12{f}}{m['busy']:7.2f}"
            )
        ci = item["paired_ratio_interval"]
        shown = ", ".join(f"{k} {ci[k][0]:.2f}-{ci[k][1]:.2f}" for k in METRICS[:4])
        lines.append(f"  ratio: breaker / plain, median of per-round ratios; 95% interval {shown}")
    item = report.get("fast_failure")
    if item:
        lines += [
            "",
            f"fast failure: the upstream hangs; T={item['trial_timeout_s']:g} s, "
            f"R={item['reset_timeout_s']:g} s, runs of {item['run_seconds']:g} s",
            f"  {'run':<24}{'rps':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
            f"{'responses':>22}{'sockets':>8}{'tasks':>6}{'upstream':>9}",
        ]
        lines += [_failure_line(row) for row in item["runs"]]
        lines.append(
            "  responses: by status (to = wrk timeouts); sockets, tasks: max to the upstream and"
            " of asyncio tasks; upstream: requests it received (breaker open: = trials)"
        )
    verdicts = [
        v for key in ("overhead", "fast_failure") for v in report.get(key, {}).get("verdicts", [])
    ]
    return "\n".join(lines + verdict_lines(verdicts))


def _failure_line(row: dict[str, Any]) -> str:
    wrk, label = row["wrk"], row["label"]
    lat = wrk["latency_ms"]
    counts = " ".join(f"{k}:{v}" for k, v in sorted(wrk["counts"].items()))
    if wrk["errors"]["timeout"]:
        counts += f" to:{wrk['errors']['timeout']}"
    extra = [
        "-" if row.get(k) is None else row[k] for k in ("sockets", "tasks", "upstream_requests")
    ]
    return (
        f"  {label:<24}{wrk['rps']:7.0f}{lat['p50']:9.2f}{lat['p99']:9.2f}{lat['max']:9.1f}"
        f"{counts:>22}{extra[0]!s:>8}{extra[1]!s:>6}{extra[2]!s:>9}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # A SIGTERM (make interrupted, a CI timeout) unwinds like Ctrl-C: every `finally` and
    # `with` stops the servers this run started, instead of leaving them behind.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    wrk = find_wrk()
    load = functools.partial(run_wrk, wrk, connections=args.connections)
    run = Run("bench.http", argv)
    shown = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10, check=False)
    wrk_version = shown.stdout or shown.stderr
    report: dict[str, Any] = {
        **run.header,
        "versions": {**versions(*PACKAGES), "wrk": wrk_version.split("[")[0].strip()},
        "setup": {
            key: getattr(args, key)
            for key in ("connections", "seconds", "rounds", "generations", "warmup", "aa")
        },
    }
    rate = args.rate
    if args.only in (None, "overhead"):
        print("overhead", file=sys.stderr, flush=True)
        report["overhead"] = overhead(args, load)
        if args.aa:  # no goal to judge: the same app against itself
            report["overhead"]["verdicts"] = []
        rate = rate or report["overhead"]["medians"]["plain"]["rps"]
    if args.only in (None, "failure"):
        print("fast failure", file=sys.stderr, flush=True)
        report["fast_failure"] = fast_failure(args, load, rate or _DEFAULT_RATE)
    run.finish("http", report, render)
    # A goal missed is a finding, not a crash: only a broken check (an exception) fails.
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
