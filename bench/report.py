"""Where the benchmarks write their results: bench/results/<name>-<date>.json (git-ignored)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

__all__ = ["RESULTS", "save"]

RESULTS = Path(__file__).resolve().parent / "results"


def save(name: str, report: Any, when: datetime.date) -> Path:
    """Write `report` as indented JSON to bench/results/<name>-<YYYY-MM-DD>.json."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{when:%Y-%m-%d}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
