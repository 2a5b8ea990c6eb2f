"""The fleet demo in example_app: four uvicorn workers share one breaker through Redis.

The demo tests run the real thing (a redis-server, `uvicorn --workers 4`, the Auth Service on
127.0.0.1), so they take seconds: about 16 s for the whole demo, 5 s for the failing one.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from example_app import fleet_demo
from example_app.user_service import coordinator_from_env, create_user_app
from fastapi_breaker.redis import RedisCoordinator

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
    assert out.endswith("fleet demo finished: the four workers behaved as one breaker\n")


class _Uncoordinated(fleet_demo.UvicornWorkers):
    """The same workers with no Redis URL: each keeps a breaker of its own."""

    def start(self, auth_url: str, redis_url: str) -> None:
        super().start(auth_url, redis_url="")  # the User Service's coordinator_from_env: None


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


def test_the_user_service_shares_its_breaker_when_a_redis_url_is_set() -> None:
    assert coordinator_from_env({}) is None
    assert coordinator_from_env({"FASTAPI_BREAKER_REDIS_URL": ""}) is None

    url = "redis://127.0.0.1:6379/0"
    default = coordinator_from_env({"FASTAPI_BREAKER_REDIS_URL": url})
    named = coordinator_from_env(
        {"FASTAPI_BREAKER_REDIS_URL": url, "FASTAPI_BREAKER_REDIS_NAMESPACE": "login"}
    )
    assert isinstance(default, RedisCoordinator)
    assert default.namespace == "user-service"
    assert isinstance(named, RedisCoordinator)
    assert named.namespace == "login"

    app = create_user_app("http://127.0.0.1:1", coordinator=named)
    assert app.state.breaker_registry.coordinator is named
