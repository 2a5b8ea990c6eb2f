"""What the example shows of its breaker: the transition log lines of `make demo`, and the
`/metrics` and dashboard that `make run` serves and prints the addresses of."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from example_app import __main__ as run
from example_app.logs import transition_logs
from example_app.scenario import run_scenario
from example_app.servers import LoopbackServer
from example_app.user_service import AuthSettings, create_user_app
from fastapi_breaker.testing import FakeClock

ROOT = Path(__file__).resolve().parent.parent
DEMO = AuthSettings().scaled(0.1)  # what `make demo` runs: reset timeout 2 s
PREFIX = " " * 10 + "log "
# The engine's line for each state change of the demo, then the record's fields.
DEMO_LOG_LINES = [
    "WARNING circuit breaker 'AuthService' opened (closed -> open) at 70.0% errors; next trial "
    "in 2 s [breaker=AuthService from_state=closed to_state=open error_percentage=70 "
    "retry_after=2]",
    "WARNING circuit breaker 'AuthService' is half-open (open -> half_open); a trial call may "
    "pass [breaker=AuthService from_state=open to_state=half_open error_percentage=70 "
    "retry_after=0]",
    # The failed trial makes 8 failures of 11 calls.
    "WARNING circuit breaker 'AuthService' opened (half_open -> open) at 72.7% errors; next "
    "trial in 2 s [breaker=AuthService from_state=half_open to_state=open "
    "error_percentage=72.73 retry_after=2]",
    "WARNING circuit breaker 'AuthService' is half-open (open -> half_open); a trial call may "
    "pass [breaker=AuthService from_state=open to_state=half_open error_percentage=72.73 "
    "retry_after=0]",
    "INFO circuit breaker 'AuthService' closed (half_open -> closed) [breaker=AuthService "
    "from_state=half_open to_state=closed error_percentage=0 retry_after=None]",
]


async def test_the_demo_prints_each_transition_where_it_happens() -> None:
    clock = FakeClock()
    out = io.StringIO()

    async def wait(seconds: float) -> None:
        clock.advance(seconds)

    with transition_logs(out):
        await run_scenario(
            settings=DEMO, clock=clock, wait=wait, echo=lambda line: print(line, file=out)
        )

    lines = out.getvalue().splitlines()
    logged = [line.removeprefix(PREFIX) for line in lines if line.startswith(PREFIX)]
    assert logged == DEMO_LOG_LINES
    # Each right under the timeline's own mark of that change.
    marks = [
        lines[n - 1].split("** breaker -> ")[-1]
        for n, line in enumerate(lines)
        if line.startswith(PREFIX)
    ]
    assert marks == ["open", "half_open", "open", "half_open", "close"]


def test_make_demo_shows_the_transition_log_lines() -> None:
    # The real thing: real time, so the two 2 s reset timeouts pass for real.
    demo = subprocess.run(
        [sys.executable, "-m", "example_app.demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert demo.stderr == ""
    moves = re.findall(
        rf"^{PREFIX}(\w+) circuit breaker 'AuthService' .*"
        r"\[breaker=AuthService from_state=(\w+) to_state=(\w+) ",
        demo.stdout,
        re.MULTILINE,
    )
    assert moves == [
        ("WARNING", "closed", "open"),
        ("WARNING", "open", "half_open"),
        ("WARNING", "half_open", "open"),
        ("WARNING", "open", "half_open"),
        ("INFO", "half_open", "closed"),
    ]
    assert demo.stdout.endswith(
        "demo finished: both scenarios behaved as the design note describes\n"
    )


async def test_the_user_service_serves_metrics_of_its_open_breaker() -> None:
    # Port 1 refuses connections: the Auth Service is down from the start.
    user = LoopbackServer(create_user_app("http://127.0.0.1:1", clock=FakeClock()))
    await user.start()
    try:
        async with httpx.AsyncClient(base_url=user.url) as client:
            logins = [
                (await client.get("/login", params={"token": "valid-alice"})).status_code
                for _ in range(11)
            ]
            metrics = await client.get("/metrics")
    finally:
        await user.stop()

    # 10 failures of 10 calls open it (volume threshold 10); the 11th is refused.
    assert logins == [502] * 10 + [503]
    assert metrics.status_code == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.text)
        for sample in family.samples
        if "le" not in sample.labels
    }
    name = ("name", "AuthService")
    states = {
        state: samples["circuit_breaker_state", (name, ("state", state))]
        for state in ("closed", "open", "half_open", "forced_open", "disabled")
    }
    assert states == {"closed": 0, "open": 1, "half_open": 0, "forced_open": 0, "disabled": 0}
    outcomes = ("success", "failure", "timeout", "rejected", "capacity_rejected", "fallback")
    calls = {o: samples["circuit_breaker_calls_total", (name, ("outcome", o))] for o in outcomes}
    assert calls == {
        "success": 0,
        "failure": 10,
        "timeout": 0,
        "rejected": 1,
        "capacity_rejected": 0,
        "fallback": 0,
    }
    opened = (("from_state", "closed"), name, ("to_state", "open"))
    assert samples["circuit_breaker_transitions_total", opened] == 1
    assert samples["circuit_breaker_failure_rate", (name,)] == 100.0
    assert samples["circuit_breaker_failure_rate_threshold", (name,)] == 50.0


async def test_make_run_prints_the_addresses_of_metrics_and_the_dashboard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FASTAPI_BREAKER_REDIS_URL", raising=False)
    auth, user, lines = await run.start(user_port=0, auth_port=0)
    try:
        assert lines == [
            f"User Service: {user.url}/docs  {user.url}/login?token=valid-alice",
            f"  health:     {user.url}/health",
            f"  metrics:    {user.url}/metrics  (Prometheus)",
            f"  dashboard:  {user.url}/breakers/dashboard",
            f"Auth Service: {auth.url}/docs   (Ctrl-C stops both)",
        ]
        async with httpx.AsyncClient() as client:
            metrics = await client.get(f"{user.url}/metrics")
            page = await client.get(f"{user.url}/breakers/dashboard")
    finally:
        await user.stop()
        await auth.stop()

    assert metrics.status_code == 200
    assert metrics.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert 'circuit_breaker_state{name="AuthService",state="closed"} 1.0\n' in metrics.text
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
