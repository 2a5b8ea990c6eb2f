"""The test suite on every CPython the package declares, and the built package: `make test-all`.

`tests-3.X`: one session per `Programming Language :: Python :: 3.X` classifier in
pyproject.toml, so the package declares exactly what this runs. Each installs the package (not
editable) with its fastapi and httpx extras and the `test` dependency group into a fresh venv
under `.nox/`, at the versions uv.lock pins, then runs pytest (arguments after `--` go to pytest:
`.venv/bin/nox -s tests-3.12 -- -x tests/test_x.py`).

`dist`: builds the sdist and the wheel with the locked build backend, checks them with `twine
check --strict` and for the LICENSE, installs the package from the sdist and the test group from
the sdist's own uv.lock, and runs pytest in the unpacked sdist.

Every install comes from uv.lock, with its hashes, through uv (the `uv` of the dev group, which
`make` installs): no session resolves anything against the index of the day.

A version with no interpreter on the machine is skipped with nox's "Python interpreter 3.X not
found" message; when the `CI` variable is set (CI sets `CI=true`) it fails the run instead,
because CI has every declared version and a green run must mean every one passed.
"""

from __future__ import annotations

import os
import re
import tarfile
import tempfile
import zipfile
from pathlib import Path

import nox

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHONS = nox.project.python_versions(PYPROJECT)

nox.needs_version = ">=2025.2.9"
nox.options.sessions = ["tests", "dist"]
nox.options.error_on_missing_interpreters = "CI" in os.environ
# Use the interpreters that are on the machine; never fetch one (the network may not allow it).
nox.options.download_python = "never"
nox.options.default_venv_backend = "uv"

# The sets of uv.lock the sessions install: the package's extras the suite imports, the tests'
# own dependencies, and the build backend the package is built with (no build isolation).
TEST_SET = ["--extra", "fastapi", "--extra", "httpx", "--group", "test", "--group", "build"]


def _pyenv_interpreter_dirs() -> list[str]:
    """The bin/ of the newest pyenv build of each declared version, when pyenv has one.

    pyenv's `python3.12` shim only answers for the versions pyenv has made active, so nox's
    search along PATH misses interpreters that pyenv has installed but not activated.
    """
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = []
    for version in PYTHONS:
        builds = [
            (int(match.group(1)), path)
            for path in root.glob(f"{version}.*")
            if (match := re.fullmatch(rf"{re.escape(version)}\.(\d+)", path.name))
            and (path / "bin" / f"python{version}").is_file()
        ]
        if builds:
            found.append(str(max(builds)[1] / "bin"))
    return found


# Appended, so an interpreter already on PATH comes first.
os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), *_pyenv_interpreter_dirs()])


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Install the package, its extras and the test group from uv.lock; run pytest."""
    _sync(session, "--no-editable", *TEST_SET)
    session.run("pytest", *session.posargs)


def _sync(session: nox.Session, *args: str) -> None:
    """`uv sync --locked` into the session's venv: exactly the lock's pins, hashes checked."""
    location = session.virtualenv.location
    session.run_install(
        "uv", "sync", "--locked", "--no-default-groups", *args,
        env={"UV_PROJECT_ENVIRONMENT": location},
    )  # fmt: skip


@nox.session(python=PYTHONS[0])
def dist(session: nox.Session) -> None:
    """Build and check the sdist and wheel; run the suite from the unpacked sdist."""
    _sync(session, "--no-install-project", "--group", "dist", "--group", "build")
    # Outside the checkout, so nothing from it (a conftest, the package source) leaks in.
    with tempfile.TemporaryDirectory(prefix="fastapi_breaker-dist-") as tmp:
        out = Path(tmp) / "dist"
        # The locked hatchling just installed, not the newest one in an isolated venv.
        session.run("python", "-m", "build", "--no-isolation", "--outdir", str(out))
        (sdist,) = out.glob("*.tar.gz")
        (wheel,) = out.glob("*.whl")
        session.run("twine", "check", "--strict", str(sdist), str(wheel))

        with tarfile.open(sdist) as archive:
            archive.extractall(tmp, filter="data")
            sdist_names = {name.split("/", 1)[-1] for name in archive.getnames()}
        with zipfile.ZipFile(wheel) as archive:
            wheel_names = {name.split("/", 1)[-1] for name in archive.namelist()}
        if "LICENSE" not in sdist_names or "licenses/LICENSE" not in wheel_names:
            session.error("LICENSE is missing from the sdist or from the wheel's dist-info")
        # The dashboard's page is package data: without it the router serves 404s. (Names lost
        # their first folder above: the sdist's root, the wheel's package.)
        page = "_dashboard/dashboard.html"
        if page not in wheel_names or f"fastapi_breaker/{page}" not in sdist_names:
            session.error(f"fastapi_breaker/{page} is missing from the wheel or from the sdist")

        # The sdist carries uv.lock: its tests run against the versions it pins, and `--locked`
        # fails if the sdist's pyproject.toml and lock disagree.
        source = Path(tmp) / sdist.name.removesuffix(".tar.gz")
        pins = Path(tmp) / "pins.txt"
        session.run_install(
            "uv", "export", "--quiet", "--locked", "--no-default-groups", *TEST_SET,
            "--no-emit-project", "--format", "requirements-txt", "--output-file", str(pins),
            "--project", str(source),
        )  # fmt: skip
        session.install("--require-hashes", "-r", str(pins))
        session.install("--no-deps", "--no-build-isolation", str(sdist))
        with session.chdir(source):
            session.run("pytest", "-p", "no:cacheprovider", *session.posargs)
