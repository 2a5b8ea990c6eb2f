"""Time fastapi_breaker's engine against its Python peers, in one process, interleaved.

    python -m bench.engine [--calls N] [--rounds R] [--quick]

Each sample times N calls of one contender in a plain loop, with the garbage collector off,
and divides by N. A round takes one sample of every contender, round-robin, starting one
place further along each round so that no contender always runs first or last. The report
gives the median over the rounds, and the fastest sample. Defaults: 2,000 calls x 150 rounds.

A breaker's *overhead* is its time per protected call minus the time per bare `await noop()`
(a bare `noop_sync()` for the sync calls) taken in the same round. Rejections are reported as
the whole cost of one rejected call, raise and catch included, next to the floor of raising
from a coroutine and catching.

Memory per breaker is measured first, with tracemalloc: the bytes that 10,000 breakers of one
library hold once made (idle), and after one successful call through each (ours with its
default 10 s time limit). Each breaker's name is a new string: the same for every library.

The results go to stdout as a table and to bench/results/engine-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tracemalloc
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from bench.peers import CLOSED, REJECT, SYNC, TIMEOUT, Contender, build_contenders, footprints
from bench.report import Run, timed

SECTIONS = {
    CLOSED: "(a) closed, success: overhead over a bare `await noop()`, ns per call",
    TIMEOUT: "(b) timeout on: overhead over a bare `await noop()`, ns per call",
    REJECT: "(c) open, rejected: whole cost of one rejected call (raise + catch), ns per call",
    SYNC: "(d) sync, closed: overhead over a bare `noop_sync()`, ns per call",
}
# The row every other row of a section is compared with.
REFERENCE = {
    CLOSED: "ours.call.closed",
    TIMEOUT: "ours.call.timeout",
    REJECT: "ours.call.reject",
    SYNC: "ours.call_sync",
}
# The bare loop each section's overhead is taken over.
BARE = {CLOSED: "bare", TIMEOUT: "bare", SYNC: "bare.sync"}
BREAKERS = 10_000  # per library, for the memory figures


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
    elapsed = await timed(contender.loop, calls)
    contender.check()
    contender.after()
    return elapsed


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


def footprint(make: Any, use: Any) -> tuple[float, float]:
    """Bytes per breaker held by `BREAKERS` breakers: idle, and after one call through each."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = [make(i) for i in range(BREAKERS)]
        idle = tracemalloc.get_traced_memory()[0] - before

        asyncio.run(use_each(held, use))
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return idle / BREAKERS, used / BREAKERS


async def use_each(breakers: list[Any], use: Any) -> None:
    for breaker in breakers:
        await use(breaker)


def memory() -> list[dict[str, Any]]:
    rows = []
    for library, (make, use) in footprints().items():
        idle, used = footprint(make, use)
        rows.append({"library": library, "idle_bytes": idle, "after_call_bytes": used})
    return rows


def summarize(contenders: list[Contender], samples: dict[str, list[float]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for contender in contenders:
        raw = samples[contender.key]
        if contender.group in BARE:
            bare = samples[BARE[contender.group]]
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


def verdicts(
    rows: list[dict[str, Any]], missing: dict[str, str], footprints: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One verdict per goal the benchmarks page states, per calling form of ours (call, fire)."""
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

    default, unlimited = by_key["ours.call.timeout"], by_key["ours.call.closed"]
    ratio = default["median_ns"] / unlimited["median_ns"]
    found.append(
        {
            "goal": "default 10 s limit within 1.5x of timeout=None",
            "form": "call()",
            "met": ratio <= 1.5,
            "text": f"ours call() {default['median_ns']:.0f} ns vs "
            f"{unlimited['median_ns']:.0f} ns: {ratio:.2f}x",
        }
    )

    sync_peers = [row for row in rows if row["group"] == SYNC and not row["ours"]]
    if sync_peers:
        fastest = min(sync_peers, key=lambda row: row["median_ns"])
        ours = by_key["ours.call_sync"]["median_ns"]
        found.append(
            {
                "goal": "sync call below every peer's sync call",
                "form": "call_sync()",
                "met": ours < fastest["median_ns"],
                "text": f"ours {ours:.0f} ns vs {fastest['label']} {fastest['median_ns']:.0f} ns",
            }
        )

    theirs_memory = [row for row in footprints if row["library"] != "fastapi_breaker"]
    ours_memory = next(row for row in footprints if row["library"] == "fastapi_breaker")
    if theirs_memory:
        lightest = min(theirs_memory, key=lambda row: row["idle_bytes"])
        found.append(
            {
                "goal": "memory per idle breaker at or below the lightest peer",
                "form": "breaker",
                "met": ours_memory["idle_bytes"] <= lightest["idle_bytes"],
                "text": f"ours {ours_memory['idle_bytes']:.0f} B vs {lightest['library']} "
                f"{lightest['idle_bytes']:.0f} B",
            }
        )
    found.append(
        {
            "goal": "memory per breaker after one call under 1,000 B",
            "form": "breaker",
            "met": ours_memory["after_call_bytes"] < 1000,
            "text": f"ours {ours_memory['after_call_bytes']:.0f} B",
        }
    )

    for row in found:
        if missing and row["goal"].startswith(("closed", "sync")):
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
    lines += ["", f"memory per breaker, {BREAKERS:,} breakers (tracemalloc), bytes"]
    lines.append(f"  {'library':<18}{'idle':>8}{'after one call':>16}")
    for row in sorted(report["memory"], key=lambda row: row["idle_bytes"]):
        lines.append(
            f"  {row['library']:<18}{row['idle_bytes']:8.0f}{row['after_call_bytes']:16.0f}"
        )
    lines += ["", "goals:"]
    for verdict in report["verdicts"]:
        met = "MET    " if verdict["met"] else "NOT MET"
        lines.append(f"  {met} {verdict['goal']}: {verdict['text']}")
    for name, reason in report["missing"].items():
        lines.append(f"  skipped {name}: {reason}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run("bench.engine", argv)
    footprints_found = memory()
    contenders, samples, missing = asyncio.run(measure(args.calls, args.rounds))
    rows = summarize(contenders, samples)
    report = {
        **run.header,
        "versions": versions(),
        "calls": args.calls,
        "rounds": args.rounds,
        "results": rows,
        "memory": footprints_found,
        "verdicts": verdicts(rows, missing, footprints_found),
        "missing": missing,
    }
    run.finish("engine", report, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
