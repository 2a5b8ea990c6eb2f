"""The engine demo in example_app plays the design note's two scenarios, exactly and at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from example_app.engine_demo import Transition, main
from fastapi_breaker.testing import FakeClock

ROOT = Path(__file__).resolve().parent.parent


def test_demo_moves_through_both_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    # Start the clock away from zero: the demo must measure from its own start.
    result = main(FakeClock(start=1000.0))

    # Down: the 7th failure (7 of 13 > 50%) opens at 6 s; the trial 20 s later fails and
    # reopens; recovery: the trial 20 s after that succeeds and closes after 0.125 s of work.
    assert result.transitions == [
        Transition(0.0, "closed"),
        Transition(6.0, "open"),
        Transition(26.0, "half_open"),
        Transition(26.0, "open"),
        Transition(46.0, "half_open"),
        Transition(46.125, "closed"),
    ]
    assert result.statuses == [200] * 6 + [502] * 7 + [503] * 4 + [502, 503, 503] + [200] * 4
    # Every 503 was answered by the breaker: the Auth Service never saw those logins.
    assert result.auth_calls == result.statuses.count(200) + result.statuses.count(502) == 18

    out = capsys.readouterr().out
    assert "Time is simulated" in out
    assert "States: closed -> open -> half_open -> open -> half_open -> closed" in out


def test_demo_runs_as_a_module() -> None:
    # A FakeClock is the default, so the run ends at once instead of waiting 46 s.
    run = subprocess.run(
        [sys.executable, "-m", "example_app.engine_demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "== Scenario 2: Service Recovery ==" in run.stdout
    assert run.stderr == ""
