"""Each integration, imported without its optional package, names the extra to install.

Run in a fresh interpreter: in this one the packages are imported already. A finder at the
front of `sys.meta_path` refuses the blocked packages with a message of its own, so a test
cannot pass on some other ImportError.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CASES = [
    # (module, blocked top-level packages, the first line of the error)
    (
        "fastapi_breaker.fastapi",
        ("fastapi",),
        "fastapi_breaker.fastapi needs FastAPI: pip install 'fastapi_breaker[fastapi]'",
    ),
    (
        "fastapi_breaker.middleware",
        ("starlette", "fastapi"),
        "fastapi_breaker.middleware needs Starlette: pip install 'fastapi_breaker[fastapi]'",
    ),
    (
        "fastapi_breaker.health",
        ("fastapi", "starlette", "pydantic"),
        "fastapi_breaker.health needs FastAPI: pip install 'fastapi_breaker[fastapi]'",
    ),
    (
        "fastapi_breaker.dashboard",
        ("fastapi", "starlette", "pydantic", "pydantic_core"),
        "fastapi_breaker.dashboard needs FastAPI: pip install 'fastapi_breaker[fastapi]'",
    ),
    (
        "fastapi_breaker.settings",
        ("pydantic_settings",),
        "fastapi_breaker.settings needs pydantic-settings: pip install 'fastapi_breaker[fastapi]'",
    ),
    (
        "fastapi_breaker.httpx",
        ("httpx",),
        "fastapi_breaker.httpx needs httpx: pip install 'fastapi_breaker[httpx]'",
    ),
    (
        "fastapi_breaker.grpc",
        ("grpc",),
        "fastapi_breaker.grpc needs grpcio: pip install 'fastapi_breaker[grpc]'",
    ),
]


@pytest.mark.parametrize(("module", "blocked", "message"), CASES, ids=[c[0] for c in CASES])
def test_missing_package_names_the_extra(
    module: str, blocked: tuple[str, ...], message: str
) -> None:
    code = textwrap.dedent(
        f"""
        import sys

        class Blocker:
            def find_spec(self, fullname, path=None, target=None):
                if fullname.split(".")[0] in {blocked!r}:
                    raise ImportError(f"blocked by test: {{fullname}}")
                return None

        sys.meta_path.insert(0, Blocker())
        try:
            import {module}
        except ImportError as exc:
            print(exc)
            print(type(exc.__cause__).__name__, exc.__cause__)
        else:
            raise SystemExit("imported with its package blocked")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    first, cause = result.stdout.splitlines()
    assert first == message
    assert cause.startswith("ImportError blocked by test: ")
