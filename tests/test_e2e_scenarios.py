"""End to end: the design note's two scenarios against real uvicorn servers on 127.0.0.1.

The User Service and the Auth Service run under uvicorn, and they talk over real HTTP on
loopback. The breaker reads a `FakeClock`, so the 20 s reset timeouts pass at once: nothing
here sleeps to wait for a state change. The steps are those `make demo` shows.
"""

from __future__ import annotations

from example_app.scenario import run_scenario
from example_app.user_service import AuthSettings
from fastapi_breaker.testing import FakeClock

# (status, Retry-After, breaker state, /health status) seen by a client, step by step.
EXPECTED_STEPS = [
    # Scenario 1, Service Down. Three logins while the Auth Service is up.
    (200, None, "closed", "healthy"),
    (200, None, "closed", "healthy"),
    (200, None, "closed", "healthy"),
    # It goes down: 502s until the 7th failure makes 7 of 10 calls (70% > 50%, volume 10).
    *[(502, None, "closed", "healthy")] * 6,
    (502, None, "open", "degraded"),
    # Fast failure: 503 with the whole reset timeout left.
    (503, "20", "open", "degraded"),
    (503, "20", "open", "degraded"),
    # After 20 s, the trial finds it still down, and the breaker opens again for 20 s.
    (502, None, "open", "degraded"),
    (503, "20", "open", "degraded"),
    # Scenario 2, Service Recovery: after 20 s the trial succeeds and the breaker closes.
    (200, None, "closed", "healthy"),
    (200, None, "closed", "healthy"),
]


async def test_service_down_then_recovery_over_real_http() -> None:
    clock = FakeClock()

    async def wait(seconds: float) -> None:
        clock.advance(seconds)

    outcome = await run_scenario(settings=AuthSettings(), clock=clock, wait=wait, echo=_quiet)

    seen = [(s.status, s.retry_after, s.state, s.health) for s in outcome.steps]
    assert seen == EXPECTED_STEPS
    assert outcome.transitions == ["open", "half_open", "open", "half_open", "close"]


async def test_health_shows_the_half_open_breaker_before_each_trial() -> None:
    clock = FakeClock()

    async def wait(seconds: float) -> None:
        clock.advance(seconds)

    outcome = await run_scenario(settings=AuthSettings(), clock=clock, wait=wait, echo=_quiet)

    assert len(outcome.health_bodies) == 2
    first, second = outcome.health_bodies
    for body in (first, second):
        assert body["status"] == "degraded"
        auth = body["details"]["AuthService"]
        assert auth["state"] == "half_open"
        assert auth["retry_after"] == 0.0
    # 20 s later the 10 s window has emptied: the calls that opened the breaker are gone.
    assert first["details"]["AuthService"]["stats"]["fires"] == 0
    assert first["details"]["AuthService"]["stats"]["error_percentage"] == 0.0
    # Likewise 20 s after the failed trial: it and the rejection after it have aged out.
    assert second["details"]["AuthService"]["stats"]["failures"] == 0
    assert second["details"]["AuthService"]["stats"]["rejects"] == 0


def _quiet(line: str) -> None:
    pass
