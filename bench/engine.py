"""Time fastapi_breaker's engine against its Python peers, in one process, interleaved.

    python -m bench.engine [--calls N] [--rounds R] [--quick]

Each sample times N calls of one contender in a plain loop, with the garbage collector off,
and divides by N. A round takes one sample of every contender, round-robin, starting one
place further along each round so that no contender always runs first or last. The report
gives the median over the rounds, and the fastest sample. Defaults: 2,000 calls x 150 rounds.

A breaker's *overhead* is its time per protected call minus the time per bare `await noop()`
taken in the same round. Rejections are reported as the whole cost of one rejected call,
raise and catch included, next to the floor of raising from a coroutine and catching.

The results go to stdout as a table and to bench/results/engine-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from bench.peers import CLOSED, REJECT, TIMEOUT, Contender, build_contenders
from bench.report import Run

SECTIONS = {
    CLOSED: "(a) closed, success: overhead over a bare `await noop()`, ns per call",
    TIMEOUT: "(b) timeout on: overhead over a bare `await noop()`, ns per call",
    REJECT: "(c) open, rejected: whole cost of one rejected call (raise + catch), ns per call",
}
# The row every other row of a section is compared with.
REFERENCE = {CLOSED: "ours.call.closed", TIMEOUT: "ours.call.timeout", REJECT: "ours.call.reject"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.engine", description=__doc__.split("\n")[0]
    )
    # Short samples, many rounds: a round then takes well under a second, so a burst of load
    # from another process (this machine is shared) falls on every contender alike instead
    # of on whichever few were running at the time.
    parser.add_argument("--calls", type=int, default=2_000, help="calls per sample (2,000)")
    parser.add_argument("--rounds", type=int, default=150, help="samples per contender (150)")
    parser.add_argument("--quick", action="store_true", help="a short run: 2,000 calls x 10 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.rounds = 2_000, 10
    if args.calls < 1 or args.rounds < 1:
        parser.error("--calls and --rounds must be at least 1")
    return args


async def sample(contender: Contender, calls: int) -> float:
    """Nanoseconds per call of one timed loop, after asserting the breaker's state."""
    contender.check()
    gc.collect()
    # Let the event loop run once: it drops the timer handles asyncio.timeout() cancelled.
    await asyncio.sleep(0)
    loop = contender.loop
    gc.disable()
    try:
        start = time.perf_counter_ns()
        await loop(calls)
        elapsed = time.perf_counter_ns() - start
    finally:
        gc.enable()
    contender.check()
    contender.after()
    return elapsed / calls


async def measure(
    calls: int, rounds: int
) -> tuple[list[Contender], dict[str, list[float]], dict[str, str]]:
    contenders, missing = await build_contenders()
    warmup = min(calls, 2_000)
    for contender in contenders:
        await sample(contender, warmup)
    samples: dict[str, list[float]] = {c.key: [] for c in contenders}
    for index in range(rounds):
        if index % 10 == 0:
            print(f"  round {index + 1}/{rounds}", file=sys.stderr, flush=True)
        shift = index % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            samples[contender.key].append(await sample(contender, calls))
    return contenders, samples, missing


def summarize(contenders: list[Contender], samples: dict[str, list[float]]) -> list[dict[str, Any]]:
    bare = samples["bare"]
    rows: list[dict[str, Any]] = []
    for contender in contenders:
        raw = samples[contender.key]
        if contender.group in (CLOSED, TIMEOUT):
            # Paired with the bare await of the same round, so slow drifts of the machine cancel.
            values = [total - base for total, base in zip(raw, bare, strict=True)]
            # Best case: the fastest sample of each. (The smallest paired difference is not:
            # it comes from a round where the bare loop happened to run slowly.)
            least = min(raw) - min(bare)
        else:
            values = raw
            least = min(raw)
        rows.append(
            {
                "key": contender.key,
                "group": contender.group,
                "label": contender.label,
                "ours": contender.ours,
                "peer": contender.peer,
                "median_ns": statistics.median(values),
                "min_ns": least,
                "raw_median_ns": statistics.median(raw),
                "samples_ns": [round(value, 1) for value in raw],
            }
        )
    by_key = {row["key"]: row for row in rows}
    for row in rows:
        reference = REFERENCE.get(row["group"])
        if reference is not None:
            row["ratio_to_ours"] = row["median_ns"] / by_key[reference]["median_ns"]
    return rows


def verdicts(rows: list[dict[str, Any]], missing: dict[str, str]) -> list[dict[str, Any]]:
    """One verdict per goal of issue 2, item 15, and per calling form of ours (call, fire)."""
    by_key = {row["key"]: row for row in rows}
    found: list[dict[str, Any]] = []

    def judge(goal: str, group: str, bar: float, against: str) -> None:
        for form in ("call", "fire"):
            ours = by_key[f"ours.{form}.{group}"]["median_ns"]
            found.append(
                {
                    "goal": goal,
                    "form": f"{form}()",
                    "met": ours < bar,
                    "ours_ns": ours,
                    "bar_ns": bar,
                    "text": f"ours {form}() {ours:.0f} ns vs {against}",
                }
            )

    peers = [row for row in rows if row["group"] == CLOSED and not row["ours"]]
    if peers:
        fastest = min(peers, key=lambda row: row["median_ns"])
        bar = fastest["median_ns"]
        judge("closed overhead below every peer", CLOSED, bar, f"{fastest['label']} {bar:.0f} ns")

    limit = by_key["asyncio.timeout"]["median_ns"]
    judge(
        "timeout on: below half of asyncio.timeout",
        TIMEOUT,
        limit / 2,
        f"half of asyncio.timeout's {limit:.0f} ns = {limit / 2:.0f} ns",
    )

    if "circuitbreaker.reject" in by_key:
        theirs = by_key["circuitbreaker.reject"]["median_ns"]
        judge("rejection below circuitbreaker", REJECT, theirs, f"circuitbreaker {theirs:.0f} ns")

    for row in found:
        if missing and row["goal"].startswith("closed"):
            # A peer that was not measured cannot have been beaten.
            row["met"] = False
            row["text"] += f"; not measured: {', '.join(missing)}"
    return found


def versions() -> dict[str, str]:
    found = {}
    for name in (
        "fastapi_breaker",
        "purgatory",
        "circuitbreaker",
        "aiobreaker",
        "pybreaker",
        "interlock-cb",
    ):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def render(report: dict[str, Any]) -> str:
    lines = [
        f"fastapi_breaker engine benchmark, {report['date']}",
        f"machine: {report['machine']['nproc']} cores, {report['machine']['python']}, "
        f"{report['machine']['platform']}; load average at start {report['machine']['loadavg']}",
        f"versions: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}",
        f"{report['calls']:,} calls per sample x {report['rounds']} rounds, round-robin; "
        "median (and min) over the rounds",
    ]
    rows = report["results"]
    bare = next(row for row in rows if row["key"] == "bare")
    lines.append(
        f"bare `await noop()`: {bare['median_ns']:.0f} ns per call (min {bare['min_ns']:.0f})"
    )
    width = max(len(row["label"]) for row in rows) + 2
    for group, title in SECTIONS.items():
        lines += ["", title]
        lines.append(f"  {'contender':<{width}}{'median':>8}{'min':>8}{'x ours':>9}")
        section = sorted((r for r in rows if r["group"] == group), key=lambda r: r["median_ns"])
        for row in section:
            ratio = row.get("ratio_to_ours")
            shown = f"{ratio:9.2f}" if ratio is not None else f"{'':>9}"
            lines.append(
                f"  {row['label']:<{width}}{row['median_ns']:8.0f}{row['min_ns']:8.0f}{shown}"
            )
    lines += ["", "goals of issue 2, item 15:"]
    for verdict in report["verdicts"]:
        met = "MET    " if verdict["met"] else "NOT MET"
        lines.append(f"  {met} {verdict['goal']}: {verdict['text']}")
    for name, reason in report["missing"].items():
        lines.append(f"  skipped {name}: {reason}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run("bench.engine", argv)
    contenders, samples, missing = asyncio.run(measure(args.calls, args.rounds))
    rows = summarize(contenders, samples)
    report = {
        **run.header,
        "versions": versions(),
        "calls": args.calls,
        "rounds": args.rounds,
        "results": rows,
        "verdicts": verdicts(rows, missing),
        "missing": missing,
    }
    run.finish("engine", report, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
