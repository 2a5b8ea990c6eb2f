"""The engine needs only the standard library: it imports and runs with the web stack blocked.

Each check runs in a fresh interpreter, because this test process has long since imported
fastapi, starlette and httpx through pytest plugins and other tests.
"""

import subprocess
import sys
import textwrap

BLOCKED = ("fastapi", "starlette", "httpx", "pydantic", "pydantic_settings")

ENGINE_MODULES = (
    "fastapi_breaker",
    "fastapi_breaker._breaker",
    "fastapi_breaker._window",
    "fastapi_breaker._errors",
    "fastapi_breaker._clock",
    "fastapi_breaker._options",
    "fastapi_breaker._events",
    "fastapi_breaker._stats",
    "fastapi_breaker._state",
    "fastapi_breaker._deadlines",
    "fastapi_breaker._attempt",
    "fastapi_breaker._registry",
    "fastapi_breaker.testing",
)

# Installed first in the child: any import of a blocked package (or a submodule) fails loudly
# with a message of our own, so a failure can be told apart from "not installed".
BLOCKER = textwrap.dedent(
    f"""
    import sys

    BLOCKED = {BLOCKED!r}

    class Blocker:
        def find_spec(self, fullname, path=None, target=None):
            if fullname.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked by test: {{fullname}}")
            return None

    sys.meta_path.insert(0, Blocker())
    already = [m for m in sys.modules if m.split(".")[0] in BLOCKED]
    assert not already, f"imported before the blocker was installed: {{already}}"
    """
)


def run_blocked(body: str) -> subprocess.CompletedProcess[str]:
    code = BLOCKER + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_engine_imports_and_runs_without_fastapi_starlette_httpx() -> None:
    result = run_blocked(
        f"""
        import asyncio
        import importlib

        for module in {ENGINE_MODULES!r}:
            importlib.import_module(module)

        from fastapi_breaker import CircuitBreaker
        from fastapi_breaker.testing import FakeClock

        async def double(x):
            return 2 * x

        breaker = CircuitBreaker(double, clock=FakeClock())
        assert asyncio.run(breaker.fire(21)) == 42
        assert breaker.stats.successes == 1

        leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert leaked == [], leaked
        print("engine ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "engine ok"


def test_the_blocker_really_blocks() -> None:
    # Without this, a broken blocker would let the test above pass for the wrong reason.
    for module in ("fastapi", "starlette.responses", "httpx"):
        result = run_blocked(f"import {module}")
        assert result.returncode != 0, module
        # The parent package is looked up first, so that is the name the blocker reports.
        top = module.split(".")[0]
        assert f"ImportError: blocked by test: {top}" in result.stderr
