"""The fleet demo in example_app: four uvicorn workers share one breaker through Redis.

The demo tests run the real thing (a redis-server, `uvicorn --workers 4`, the Auth Service on
127.0.0.1), so they take seconds: about 16 s for the whole demo, 5 s for the failing one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from example_app import fleet_demo
from example_app.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_shows_four_workers_behaving_as_one_breaker() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "example_app.fleet_demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stderr == ""
    out = run.stdout
    for number in range(1, 7):
        assert f"== Step {number}: " in out
    assert len(re.findall(r"worker \d+ answers", out)) == fleet_demo.WORKERS
    # The fleet opened after at most twice the volume threshold of failing calls in all.
    received = re.search(r"the Auth Service received (\d+) failing calls in all", out)
    assert received is not None, out
    assert int(received.group(1)) <= 2 * fleet_demo.SETTINGS.volume_threshold
    # One trial per reset period, four periods, then the trial that closes the fleet.
    assert "calls the Auth Service received per reset period: 1, 1, 1, 1 " in out
    assert out.count("trial: login -> 502") == fleet_demo.PERIODS
    assert out.count("trial: login -> 200") == 1
    # /health from every worker, twice: while the fleet is open, and once it has closed.
    assert len(re.findall(r"answers, all 200 degraded \(fleet open\)\n", out)) == 4
    assert len(re.findall(r"answers, all 200 healthy \(fleet closed\)\n", out)) == 4
    # The workers' own warnings, which operators watch, are printed after the timeline: every
    # worker logs the fleet's opening (it learns of it from Redis).
    logged = out[out.index("== What the workers logged") :]
    opened = "circuit breaker 'AuthService' opened (closed -> open) as its fleet decided"
    assert logged.count(opened) + logged.count("opened (closed -> open) at ") == 4, logged
    assert out.endswith("fleet demo finished: the four workers behaved as one breaker\n")


class _Uncoordinated(fleet_demo.UvicornWorkers):
    """The same workers with no Redis URL: each keeps a breaker of its own."""

    def start(self, auth_url: str, redis_url: str) -> None:
        super().start(auth_url, redis_url=None)  # no FASTAPI_BREAKER_REDIS_* variables


def test_without_the_coordinator_the_demo_fails_at_the_opening_step(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(fleet_demo, "UvicornWorkers", _Uncoordinated)

    assert fleet_demo.main() == 1

    captured = capsys.readouterr()
    # Each worker let about 10 failing calls through before it opened: about 4 x 10 in all.
    received = re.search(r"the Auth Service received (\d+) failing calls in all", captured.out)
    assert received is not None, captured.out
    assert int(received.group(1)) > 2 * fleet_demo.SETTINGS.volume_threshold
    assert captured.err == (
        "fleet demo failed at step 3 (the Auth Service fails: the fleet opens after about 10 "
        f"calls in all): {received.group(1)} failing calls, more than 2 x 10\n"
    )
    assert "== Step 4" not in captured.out


# The commands example_app/README.md gives to run the example as a fleet, with their ports.
DOCUMENTED = (
    ".venv/bin/python -m example_app.embedded_redis 6379 &",
    ".venv/bin/uvicorn --factory example_app.auth_service:create_auth_app --port 8001 &",
    "FASTAPI_BREAKER_REDIS_URL=redis://127.0.0.1:6379/0"
    " FASTAPI_BREAKER_REDIS_NAMESPACE=user-service"
    " .venv/bin/uvicorn example_app.user_service:app --workers 4 --port 8000",
)


def test_the_documented_commands_run_the_example_as_a_fleet() -> None:
    readme = (ROOT / "example_app" / "README.md").read_text()
    for command in DOCUMENTED:
        assert command in " ".join(readme.replace("\\\n", " ").split()), command
    # The same commands, on free ports, with two workers, and a setting from the environment.
    redis_port, auth_port, user_port = free_port(), free_port(), free_port()
    python = sys.executable
    started: list[subprocess.Popen[bytes]] = []
    environ = {
        **os.environ,
        "FASTAPI_BREAKER_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "FASTAPI_BREAKER_REDIS_NAMESPACE": "user-service",
        "EXAMPLE_AUTH_URL": f"http://127.0.0.1:{auth_port}",
        "FASTAPI_BREAKER_BREAKERS__AuthService__RESET_TIMEOUT": "2",
    }
    uvicorn = [python, "-m", "uvicorn", "--log-level", "warning", "--no-access-log"]
    auth_app = "example_app.auth_service:create_auth_app"
    commands = [
        [python, "-m", "example_app.embedded_redis", str(redis_port)],
        [*uvicorn, "--factory", auth_app, "--port", str(auth_port)],
        [*uvicorn, "example_app.user_service:app", "--workers", "2", "--port", str(user_port)],
    ]
    try:
        for command in commands:
            started.append(
                subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=environ,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            )
            if len(started) == 1:  # Redis answers before the workers start
                assert started[0].stdout is not None
                assert started[0].stdout.readline().startswith(b"redis-server on redis://")
        with httpx.Client(base_url=f"http://127.0.0.1:{user_port}", timeout=5.0) as client:
            answered(client, "/health/live", within=30.0)
            # The workers reach Redis: the fleet's state shows (after a worker's first flush).
            for _ in range(100):
                health = client.get("/health")
                if health.json()["details"]["AuthService"]["fleet"] == "closed":
                    break
                time.sleep(0.05)
            assert health.status_code == 200
            assert health.json()["details"]["AuthService"]["fleet"] == "closed"
            login = answered(client, "/login?token=valid-alice", within=10.0)
            assert (login.status_code, login.json()) == (200, {"user": "alice"})
            status = client.get("/auth-status").json()
            assert status == {"state": "closed", "retry_after": None}
    finally:
        for process in reversed(started):
            os.killpg(process.pid, signal.SIGTERM)
        errors = [process.communicate(timeout=15)[1].decode() for process in started]
    # Each stopped on SIGTERM, cleanly (a single uvicorn server re-raises the signal it stopped on).
    assert all(process.returncode in (0, -signal.SIGTERM) for process in started), errors
    assert errors[2] == "", errors[2]  # no warning from the workers: Redis was reached


def answered(client: httpx.Client, path: str, within: float) -> httpx.Response:
    """The first answer to `path` once the server listens (polled, with a bound)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return client.get(path)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
