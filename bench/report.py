"""What every harness shares once it has measured: statistics, the machine, the results file.

Results go to bench/results/<name>-<date>.json (git-ignored). A harness opens a `Run` when it
starts and calls `finish()` with its report: the date, machine and command are filled in the
same way for all of them.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "RESULTS",
    "Run",
    "goal",
    "heading",
    "interleaved",
    "machine",
    "median_interval",
    "save",
    "verdict_lines",
    "versions",
]

RESULTS = Path(__file__).resolve().parent / "results"

Loop = Callable[[int], Awaitable[None]]


def machine() -> dict[str, Any]:
    """The facts that say how far a figure can be compared: cores, Python, load."""
    return {
        "nproc": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def versions(*names: str) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def save(name: str, report: Any, when: datetime.date) -> Path:
    """Write `report` as indented JSON to bench/results/<name>-<YYYY-MM-DD>.json."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{when:%Y-%m-%d}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


class Run:
    """One run of a harness: `header` opens its report, `finish()` prints and saves it."""

    def __init__(self, module: str, argv: Sequence[str] | None) -> None:
        self.now = datetime.datetime.now(datetime.UTC)
        self._started = time.monotonic()
        shown = sys.argv[1:] if argv is None else list(argv)
        self.header: dict[str, Any] = {
            "date": self.now.strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "command": " ".join([f"python -m {module}", *shown]),
        }

    def finish(
        self, name: str, report: dict[str, Any], render: Callable[[dict[str, Any]], str]
    ) -> Path:
        """Record the run's seconds, print `render(report)` and save `report`."""
        report["seconds"] = round(time.monotonic() - self._started, 1)
        print(render(report))
        path = save(name, report, self.now)
        print(f"\nwrote {path} ({report['seconds']} s)")
        return path


def goal(goal: str, met: bool, text: str, *, settled: bool = True) -> dict[str, Any]:
    """One verdict: the goal, whether this run met it, the figures that say so."""
    return {"goal": goal, "met": met, "text": text, "settled": settled}


def heading(report: dict[str, Any]) -> list[str]:
    """The first lines of every printed report: the command, when, and on what."""
    m = report["machine"]
    return [
        f"{report['command']}, {report['date']}",
        f"machine: {m['nproc']} cores, {m['python']}; load average at start {m['loadavg']}",
    ]


def verdict_lines(verdicts: Sequence[dict[str, Any]]) -> list[str]:
    """`MET`/`NOT MET` and each goal; a verdict whose `settled` is false says so instead."""
    lines = ["", "goals:"]
    for verdict in verdicts:
        if not verdict.get("settled", True):
            # The bar lies inside the run's interval: it cannot tell which side it is on.
            found = f"UNSETTLED (leaning {'met' if verdict['met'] else 'not met'})"
        else:
            found = "MET" if verdict["met"] else "NOT MET"
        lines.append(f"  {found:<7} {verdict['goal']}: {verdict['text']}")
    return lines


# ---------------------------------------------------------------------------------- statistics


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


async def timed(loop: Loop, calls: int) -> float:
    """Nanoseconds per call of one timed loop, with the garbage collector off."""
    gc.collect()
    await asyncio.sleep(0)  # let the event loop drop the timer handles cancelled so far
    gc.disable()
    try:
        start = time.perf_counter_ns()
        await loop(calls)
        elapsed = time.perf_counter_ns() - start
    finally:
        gc.enable()
    return elapsed / calls


async def interleaved(loops: dict[str, Loop], calls: int, rounds: int) -> dict[str, list[float]]:
    """One sample of each loop per round, round-robin, starting one further along each round.

    Short samples over many rounds: a burst of load from another process falls on every loop
    alike instead of on whichever was running.
    """
    keys = list(loops)
    for key in keys:
        await timed(loops[key], min(calls, 1_000))  # warm-up
    samples: dict[str, list[float]] = {key: [] for key in keys}
    for index in range(rounds):
        shift = index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            samples[key].append(await timed(loops[key], calls))
    return samples
