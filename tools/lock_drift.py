"""Print how the running environment's packages differ from the versions uv.lock pins.

`make test-latest` runs it with the interpreter of the venv it filled with the newest releases,
so its output is the list of pins `make lock-upgrade` would move (and the packages the newest
releases pull in that the lock does not have), before the checks say whether that breaks
anything. Standard library only.

    python tools/lock_drift.py [uv.lock]
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

__all__ = ["drift", "normalize"]


def normalize(name: str) -> str:
    """A distribution name as package indexes compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def drift(locked: dict[str, str], installed: dict[str, str]) -> list[str]:
    """One line per package whose installed version is not the locked one, sorted by name."""
    lines = []
    for name in sorted(locked.keys() | installed.keys()):
        pinned, newest = locked.get(name), installed.get(name)
        if pinned == newest or newest is None:
            continue  # the same, or not part of this install (another platform, an unused extra)
        was = f"locked {pinned}" if pinned is not None else "not in the lock"
        lines.append(f"  {name}: {was}, newest {newest}")
    return lines


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "uv.lock")
    with path.open("rb") as file:
        lock = tomllib.load(file)
    # The project itself is in both, as an editable install: its version is no drift.
    project = {
        normalize(package["name"])
        for package in lock["package"]
        if "editable" in package.get("source", {}) or "virtual" in package.get("source", {})
    }
    locked = {
        normalize(package["name"]): package["version"]
        for package in lock["package"]
        if normalize(package["name"]) not in project
    }
    installed = {
        normalize(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions()
        if normalize(dist.metadata["Name"]) not in project
    }
    lines = drift(locked, installed)
    if lines:
        print(f"test-latest: {len(lines)} package(s) newer than {path} (or not in it):")
        print("\n".join(lines))
    else:
        print(f"test-latest: the newest releases are the versions {path} pins")


if __name__ == "__main__":
    main()
