"""What every harness shares: the machine it ran on, and where its results go.

Results go to bench/results/<name>-<date>.json (git-ignored). A harness opens a `Run` when it
starts and calls `finish()` with its report: the date, machine and command are filled in the
same way for all of them.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["RESULTS", "Run", "machine", "save"]

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """The facts that say how far a figure can be compared: cores, Python, load."""
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "machine": platform.machine(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


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
