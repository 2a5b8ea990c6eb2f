"""Profile the hot paths (issue 4, item 5): what each layer costs, and where that time goes.

    python -m bench.profile [--quick] [--scenario NAME ...] [--no-spy] [--rounds R]
    python -m bench.profile --ab /tmp/fb_try [--label NAME] [--ab-runs K]

Scenarios, each a loop of `ops` operations "with" the breaker layer and the same loop without it:

- closed: `await breaker.call(noop)`, default options (timeout=10); without: `await noop()`.
- closed-no-timeout: the same with `timeout=None`.
- reject: an open breaker refusing `await breaker.call(noop)`, caught; without: an `await`
  of a coroutine that raises, caught.
- transport-mock: `AsyncBreakerTransport(httpx.MockTransport(...))`, one request sent straight
  to `handle_async_request` and its body read; without: the MockTransport alone.
- transport-asgi: the same around `httpx.ASGITransport` and a raw ASGI app.
- middleware: `CircuitBreakerMiddleware` around a raw ASGI app answering 200; without: the app.
- middleware-open: the app raises `CircuitOpenError` and the middleware answers the 503;
  without: an app that sends the same 503 itself.
- health-1000 (only when named): GET /health of bench.scale's app with 1,000 used breakers,
  the ASGI app called in-process; without: GET /health/live of the same app.

For each: interleaved timing rounds (median ns per op, with and without, and the difference),
then a pyinstrument profile of the "with" loop in this process and a py-spy profile of it in a
child process (speedscope format). The report lists the frames with the most self time.
Files go to bench/results/profile-<date>/ and bench/results/profile-<date>.json.

`--ab DIR` times the scenarios in child processes that alternate between this checkout's
package and the copy of `fastapi_breaker` under DIR (a trial of a suggested change), and
reports the difference: never edit the package to try a change, copy it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

import fastapi_breaker
from bench.engine import machine
from bench.report import RESULTS
from bench.scale import interleaved, noop
from fastapi_breaker import CircuitBreaker, CircuitOpenError, State
from fastapi_breaker.httpx import AsyncBreakerTransport
from fastapi_breaker.middleware import CircuitBreakerMiddleware

ROOT = Path(__file__).resolve().parent.parent
OPEN_FOR = 3600.0  # the open breakers stay open for the whole run
SPY_SECONDS = 3.0
SPY_RATE = 1000  # samples per second
TOP = 12


class Boom(Exception):
    pass


async def fail() -> None:
    raise Boom


@dataclass
class Scenario:
    name: str
    ops: int  # operations per timed sample: a sample takes a few milliseconds
    with_layer: Callable[[int], Awaitable[None]]
    without: Callable[[int], Awaitable[None]]
    check: Callable[[], None]


def _expect(what: str, actual: object, wanted: object) -> None:
    if actual != wanted:
        raise RuntimeError(f"{what}: expected {wanted!r}, found {actual!r}")


# ---------------------------------------------------------------------------------- scenarios


def _closed(name: str, timeout: float | None) -> Scenario:
    breaker = CircuitBreaker(name=name, timeout=timeout)

    async def with_layer(n: int) -> None:
        b = breaker
        for _ in range(n):
            await b.call(noop)

    async def without(n: int) -> None:
        for _ in range(n):
            await noop()

    return Scenario(
        name, 2_000, with_layer, without, lambda: _expect(name, breaker.state, State.CLOSED)
    )


async def _reject() -> Scenario:
    breaker = CircuitBreaker(name="reject", reset_timeout=OPEN_FOR)
    with contextlib.suppress(Boom):
        await breaker.call(fail)
    _expect("reject: breaker state after one failure", breaker.state, State.OPEN)

    async def with_layer(n: int) -> None:
        b = breaker
        for _ in range(n):
            try:  # noqa: SIM105 - contextlib.suppress would add its own cost to the timing
                await b.call(noop)
            except CircuitOpenError:
                pass

    async def without(n: int) -> None:
        for _ in range(n):
            try:  # noqa: SIM105
                await fail()
            except Boom:
                pass

    return Scenario(
        "reject", 2_000, with_layer, without, lambda: _expect("reject", breaker.state, State.OPEN)
    )


async def _raw_app(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def _transport(name: str, inner: Callable[[], httpx.AsyncBaseTransport]) -> Scenario:
    breaker = CircuitBreaker(name=name)
    wrapped = AsyncBreakerTransport(inner(), breaker=breaker)
    bare = inner()
    request = httpx.Request("GET", "http://upstream:8000/users/1")

    def loop(transport: httpx.AsyncBaseTransport) -> Callable[[int], Awaitable[None]]:
        async def run(n: int) -> None:
            send = transport.handle_async_request
            for _ in range(n):
                response = await send(request)
                await response.aread()

        return run

    def check() -> None:
        _expect(name, breaker.state, State.CLOSED)
        _expect(f"{name} failures", breaker.stats.failures, 0)

    return Scenario(name, 200, loop(wrapped), loop(bare), check)


def _asgi_messages() -> tuple[dict[str, Any], Callable[[], Awaitable[Any]], Any]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": [],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: collections.Counter[int] = collections.Counter()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            sent[message["status"]] += 1

    return scope, receive, (send, sent)


def _middleware(name: str, opened: bool) -> Scenario:
    scope, receive, (send, sent) = _asgi_messages()
    breaker = CircuitBreaker(name="upstream", reset_timeout=OPEN_FOR)
    if opened:
        breaker.open()

    async def raising_app(scope: Any, receive: Any, send: Any) -> None:
        # What a route does when its breaker refuses: the refusal escapes the app.
        raise CircuitOpenError("upstream", OPEN_FOR)

    async def self_503_app(scope: Any, receive: Any, send: Any) -> None:
        headers = [
            (b"content-length", b"120"),
            (b"content-type", b"application/problem+json"),
            (b"retry-after", b"3600"),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": b"x" * 120})

    inner = raising_app if opened else _raw_app
    wrapped = CircuitBreakerMiddleware(inner)
    bare = self_503_app if opened else _raw_app

    def loop(app: Callable[..., Awaitable[None]]) -> Callable[[int], Awaitable[None]]:
        async def run(n: int) -> None:
            for _ in range(n):
                await app(scope, receive, send)

        return run

    def check() -> None:
        # Every response so far had the expected status (none before the first sample).
        _expect(name, set(sent) - {503 if opened else 200}, set())

    return Scenario(name, 1_000, loop(wrapped), loop(bare), check)


def _health(count: int) -> Scenario:
    """GET /health with `count` used breakers (10% open), the app called in-process."""
    from bench.scale import make_health_app

    app = make_health_app(count)
    _, receive, (send, sent) = _asgi_messages()

    def loop(path: str) -> Callable[[int], Awaitable[None]]:
        scope = {**_asgi_messages()[0], "path": path, "raw_path": path.encode()}

        async def run(n: int) -> None:
            for _ in range(n):
                await app(scope, receive, send)

        return run

    def check() -> None:
        _expect("health statuses", set(sent) - {200}, set())

    # "without": /health/live of the same app, so the difference is building the report.
    return Scenario("health-1000", 2, loop("/health"), loop("/health/live"), check)


async def build(names: Sequence[str] | None) -> list[Scenario]:
    async def asgi_handler(scope: Any, receive: Any, send: Any) -> None:
        await _raw_app(scope, receive, send)

    scenarios = [
        _closed("closed", 10.0),
        _closed("closed-no-timeout", None),
        await _reject(),
        _transport(
            "transport-mock",
            # A streamed body, as a real transport returns: the breaker settles when it ends.
            lambda: httpx.MockTransport(
                lambda request: httpx.Response(200, stream=httpx.ByteStream(b"ok"))
            ),
        ),
        _transport("transport-asgi", lambda: httpx.ASGITransport(app=asgi_handler)),
        _middleware("middleware", opened=False),
        _middleware("middleware-open", opened=True),
    ]
    if names and "health-1000" in names:  # not by default: it needs FastAPI and takes a while
        scenarios.append(_health(1_000))
    if names:
        unknown = set(names) - {s.name for s in scenarios}
        if unknown:
            raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
        scenarios = [s for s in scenarios if s.name in names]
    return scenarios


# ---------------------------------------------------------------------------------- timing


async def time_scenarios(scenarios: list[Scenario], rounds: int) -> dict[str, dict[str, float]]:
    timings: dict[str, dict[str, float]] = {}
    for scenario in scenarios:
        scenario.check()
        samples = await interleaved(
            {"with": scenario.with_layer, "without": scenario.without}, scenario.ops, rounds
        )
        scenario.check()
        diffs = [w - b for w, b in zip(samples["with"], samples["without"], strict=True)]
        timings[scenario.name] = {
            "with_ns": statistics.median(samples["with"]),
            "without_ns": statistics.median(samples["without"]),
            "layer_ns": statistics.median(diffs),
            "ops_per_sample": scenario.ops,
        }
    return timings


# ---------------------------------------------------------------------------------- profiles


def _short(path: str) -> str:
    for prefix, label in ((str(ROOT) + os.sep, ""), (sys.prefix + os.sep, "")):
        if path.startswith(prefix):
            return label + path[len(prefix) :]
    return path.replace(sys.base_prefix + os.sep, "")


def _top(counts: dict[str, float], total: float) -> list[dict[str, Any]]:
    rows = sorted(counts.items(), key=lambda item: -item[1])[:TOP]
    return [{"frame": frame, "self_pct": round(100.0 * value / total, 1)} for frame, value in rows]


async def pyinstrument_profile(scenario: Scenario, seconds: float, out: Path) -> dict[str, Any]:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    deadline = time.monotonic() + seconds
    batches = 0
    profiler.start()
    while time.monotonic() < deadline and batches < 10_000:
        await scenario.with_layer(scenario.ops)
        batches += 1
    profiler.stop()
    scenario.check()
    (out / f"{scenario.name}.pyinstrument.html").write_text(profiler.output_html())
    text = profiler.output_text(unicode=False, color=False, show_all=True)
    (out / f"{scenario.name}.pyinstrument.txt").write_text(text)
    session = profiler.last_session
    root = session.root_frame() if session is not None else None
    counts: dict[str, float] = collections.defaultdict(float)
    stack = [root] if root is not None else []
    while stack:
        frame = stack.pop()
        stack.extend(frame.children)
        if frame.is_synthetic:
            continue
        where = f"{frame.function} ({_short(frame.file_path or '?')}:{frame.line_no})"
        counts[where] += frame.total_self_time
    total = root.time if root is not None else 0.0
    return {
        "seconds": round(total, 3),
        "ops": batches * scenario.ops,
        "top": _top(counts, total or 1),
    }


def spy_profile(scenario: str, seconds: float, out: Path) -> dict[str, Any]:
    """py-spy in a child process that runs the scenario's "with" loop for `seconds`."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        return {"skipped": "py-spy not found (pip install '.[bench]')"}
    target = out / f"{scenario}.speedscope.json"
    command = [
        spy, "record", "--rate", str(SPY_RATE), "--format", "speedscope", "--output", str(target),
        "--", sys.executable, "-m", "bench.profile", "--spy-target", scenario,
        "--seconds", str(seconds),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0 or not target.exists():
        return {"skipped": f"py-spy failed ({done.returncode}): {done.stderr.strip()[-300:]}"}
    data = json.loads(target.read_text())
    frames = data["shared"]["frames"]
    by_line: dict[str, float] = collections.defaultdict(float)
    by_function: dict[str, float] = collections.defaultdict(float)
    # Only the samples taken inside the timed loop: not the child's imports and set-up.
    inside = {i for i, frame in enumerate(frames) if frame["name"] == spy_loop.__name__}
    total = 0.0
    samples = 0
    for profile in data["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            if not inside.intersection(stack):
                continue
            total += weight
            samples += 1
            leaf = frames[stack[-1]]
            file = _short(leaf.get("file", "?"))
            by_line[f"{leaf['name']} ({file}:{leaf.get('line', '?')})"] += weight
            by_function[f"{leaf['name']} ({file})"] += weight
    return {
        "samples": samples,
        "top_lines": _top(by_line, total or 1),
        "top_functions": _top(by_function, total or 1),
        "file": str(target.relative_to(ROOT)),
    }


async def spy_loop(scenario: Scenario, seconds: float) -> None:
    """The loop py-spy samples; its name marks the samples that count."""
    deadline = time.monotonic() + seconds
    for _ in range(1_000_000):
        if time.monotonic() >= deadline:
            break
        await scenario.with_layer(scenario.ops)


async def spy_target(name: str, seconds: float) -> None:
    (scenario,) = await build([name])
    await scenario.with_layer(scenario.ops)  # warm-up, outside the sampled loop
    await spy_loop(scenario, seconds)
    scenario.check()


# ---------------------------------------------------------------------------------- A/B


def run_ab(
    directory: Path, runs: int, rounds: int, names: Sequence[str] | None, base: Path = ROOT
) -> dict[str, Any]:
    """Alternate child processes on the package under `base` (this checkout) and the copy
    under `directory`."""
    for where in (directory, base):
        if not (where / "fastapi_breaker" / "__init__.py").exists():
            raise SystemExit(f"{where} holds no fastapi_breaker/ package to try")
    variants = {"repo": base.resolve(), "try": directory.resolve()}
    medians: dict[str, dict[str, list[float]]] = {
        v: collections.defaultdict(list) for v in variants
    }
    for index in range(runs):
        order = list(variants) if index % 2 == 0 else list(variants)[::-1]
        for variant in order:
            argv = ["--timing-only", "--rounds", str(rounds)]
            for name in names or ():
                argv += ["--scenario", name]
            code = (
                "import sys; sys.path.insert(0, sys.argv[1]); from bench.profile import main; "
                "raise SystemExit(main(sys.argv[2:]))"
            )
            command = [sys.executable, "-c", code, str(variants[variant]), *argv]
            done = subprocess.run(
                command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=True
            )
            found = json.loads(done.stdout)
            expected = str(variants[variant] / "fastapi_breaker")
            if not found["package"].startswith(expected):
                raise RuntimeError(f"{variant}: imported {found['package']}, not {expected}")
            for scenario, row in found["timings"].items():
                medians[variant][scenario].append(row["with_ns"])
                medians[variant][f"{scenario}.layer"].append(row["layer_ns"])
        print(f"  a/b run {index + 1}/{runs}", file=sys.stderr, flush=True)
    rows = {}
    for key in medians["repo"]:
        repo, tried = (
            statistics.median(medians["repo"][key]),
            statistics.median(medians["try"][key]),
        )
        rows[key] = {
            "repo_ns": round(repo, 1),
            "try_ns": round(tried, 1),
            "delta_ns": round(tried - repo, 1),
            "delta_pct": round(100.0 * (tried - repo) / repo, 1) if repo else None,
        }
    return {"runs": runs, "rounds": rounds, "base": str(base), "try": str(directory), "rows": rows}


# ---------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--scenario", action="append", help="only this scenario (repeatable)")
    parser.add_argument("--rounds", type=int, default=40, help="interleaved timing rounds (40)")
    parser.add_argument("--seconds", type=float, default=SPY_SECONDS, help="per profile (3)")
    parser.add_argument("--no-spy", action="store_true", help="skip py-spy")
    parser.add_argument("--quick", action="store_true", help="short run while developing")
    parser.add_argument("--ab", type=Path, help="try the fastapi_breaker copy under this dir")
    parser.add_argument("--ab-base", type=Path, default=ROOT, help="compare with this copy")
    parser.add_argument("--ab-runs", type=int, default=6, help="child processes per variant (6)")
    parser.add_argument("--label", default="try", help="name of the A/B trial, for its file")
    parser.add_argument("--timing-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spy-target", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.ab_runs = 8, 1.0, 2
    if args.rounds < 1 or args.ab_runs < 1 or not 0 < args.seconds <= 60:
        parser.error("--rounds and --ab-runs must be at least 1, --seconds in (0, 60]")
    return args


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"fastapi_breaker hot-path profile, {report['date']}",
        f"machine: {m['nproc']} cores, {m['python']}; load average at start {m['loadavg']}",
        f"timing: {report['rounds']} interleaved rounds, median ns per op",
        "",
        f"  {'scenario':<20}{'with':>10}{'without':>10}{'layer':>10}",
    ]
    for name, row in report["timings"].items():
        lines.append(
            f"  {name:<20}{row['with_ns']:>10.0f}{row['without_ns']:>10.0f}{row['layer_ns']:>10.0f}"
        )
    for name, found in report["profiles"].items():
        lines += ["", f"{name}: top self time"]
        pyi = found["pyinstrument"]
        lines.append(f"  pyinstrument ({pyi['ops']:,} ops, {pyi['seconds']} s sampled):")
        lines += [f"    {r['self_pct']:5.1f}%  {r['frame']}" for r in pyi["top"][:8]]
        spy = found.get("py-spy")
        if spy and "skipped" not in spy:
            lines.append(f"  py-spy ({spy['samples']:,} samples), by line:")
            lines += [f"    {r['self_pct']:5.1f}%  {r['frame']}" for r in spy["top_lines"][:8]]
        elif spy:
            lines.append(f"  py-spy skipped: {spy['skipped']}")
    return "\n".join(lines)


def render_ab(report: dict[str, Any]) -> str:
    lines = [
        f"A/B: {report['base']} (repo) vs {report['try']} (try), {report['runs']} child runs"
        " each, alternating,"
        f" {report['rounds']} rounds per run; median of the runs' medians, ns per op",
        f"  {'':<28}{'repo':>10}{'try':>10}{'delta':>10}{'%':>8}",
    ]
    for key, row in report["rows"].items():
        lines.append(
            f"  {key:<28}{row['repo_ns']:>10.0f}{row['try_ns']:>10.0f}"
            f"{row['delta_ns']:>10.0f}{row['delta_pct']:>8.1f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.spy_target:
        asyncio.run(spy_target(args.spy_target, args.seconds))
        return 0
    if args.timing_only:
        scenarios = asyncio.run(build(args.scenario))
        timings = asyncio.run(time_scenarios(scenarios, args.rounds))
        print(json.dumps({"package": fastapi_breaker.__file__, "timings": timings}))
        return 0
    now = dt.datetime.now(dt.UTC)
    RESULTS.mkdir(exist_ok=True)
    if args.ab:
        report = run_ab(args.ab, args.ab_runs, args.rounds, args.scenario, args.ab_base)
        report.update(date=now.strftime("%Y-%m-%d %H:%M UTC"), machine=machine())
        print(render_ab(report))
        path = RESULTS / f"profile-ab-{args.label}-{now:%Y-%m-%d}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {path}")
        return 0

    out = RESULTS / f"profile-{now:%Y-%m-%d}"
    out.mkdir(exist_ok=True)

    async def measure() -> tuple[dict[str, Any], dict[str, Any]]:
        scenarios = await build(args.scenario)
        print("timing ...", file=sys.stderr, flush=True)
        timings = await time_scenarios(scenarios, args.rounds)
        profiles: dict[str, Any] = {}
        for scenario in scenarios:
            print(f"profiling {scenario.name} ...", file=sys.stderr, flush=True)
            profiles[scenario.name] = {
                "pyinstrument": await pyinstrument_profile(scenario, args.seconds, out)
            }
        return timings, profiles

    info = machine()
    timings, profiles = asyncio.run(measure())
    if not args.no_spy:
        for name in profiles:
            print(f"py-spy {name} ...", file=sys.stderr, flush=True)
            profiles[name]["py-spy"] = spy_profile(name, args.seconds, out)
    report = {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": info,
        "command": "python -m bench.profile " + " ".join(sys.argv[1:] if argv is None else argv),
        "rounds": args.rounds,
        "timings": timings,
        "profiles": profiles,
        "files": str(out.relative_to(ROOT)),
    }
    print(render(report))
    path = RESULTS / f"profile-{now:%Y-%m-%d}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path} and {out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
