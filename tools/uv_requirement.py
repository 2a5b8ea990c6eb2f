"""Print uv's pinned requirement, with the hash of every file uv.lock records for it.

`make` installs uv with `pip install --require-hashes` from this line before anything else, so
the installer that reads the lock is itself locked: one version, one source of truth. Standard
library only: it runs on the bare interpreter, before any venv exists.

    python3 tools/uv_requirement.py [uv.lock]
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

__all__ = ["requirement"]


def requirement(lock: dict[str, object]) -> str:
    """`uv==X --hash=sha256:...` for every wheel and sdist of uv in the lock."""
    packages = lock.get("package", [])
    assert isinstance(packages, list)
    found = [package for package in packages if package.get("name") == "uv"]
    if len(found) != 1:
        raise SystemExit("uv.lock has no single `uv` package: add uv to the dev group and lock")
    (uv,) = found
    files = [*uv.get("wheels", []), *([uv["sdist"]] if "sdist" in uv else [])]
    hashes = sorted({file["hash"] for file in files})
    if not hashes:
        raise SystemExit("uv.lock records no file hash for uv")
    return " ".join([f"uv=={uv['version']}", *(f"--hash={digest}" for digest in hashes)])


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "uv.lock")
    with path.open("rb") as file:
        print(requirement(tomllib.load(file)))


if __name__ == "__main__":
    main()
