"""/health with a fleet: the status follows the worse of the fleet's state, shown beside the
local one, and the local one, so that every worker answers the same for the fleet's decisions
and none that refuses is called healthy; without the fleet, the local state decides."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from fastapi_breaker import BreakerRegistry, State
from fastapi_breaker.health import health_router
from fastapi_breaker.testing import FakeClock


def linked_registry(clock: FakeClock) -> BreakerRegistry:
    registry = BreakerRegistry(clock=clock)
    for name in ("AuthService", "Payments"):
        registry.get(name).core.link_fleet().healthy = True
    return registry


async def health(registry: BreakerRegistry, critical: tuple[str, ...] = ()) -> httpx.Response:
    app = FastAPI()
    app.include_router(health_router(registry=registry, critical=critical, detail="always"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.get("/health")


async def test_a_fleet_open_shows_beside_the_local_state_and_decides_the_status() -> None:
    clock = FakeClock()
    registry = linked_registry(clock)
    auth = registry.get("AuthService")
    # This worker has not opened AuthService itself: the fleet has, and the fleet decides.
    auth.core.fleet.state = "open"  # type: ignore[union-attr]
    assert auth.state is State.CLOSED
    assert auth.fleet_state is State.OPEN
    response = await health(registry, critical=("AuthService",))
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["details"]["AuthService"]["state"] == "closed"
    assert body["details"]["AuthService"]["fleet"] == "open"
    assert body["details"]["Payments"]["fleet"] is None  # nothing heard from the fleet yet


async def test_a_process_that_refuses_is_not_healthy_while_the_fleet_is_closed() -> None:
    clock = FakeClock()
    registry = linked_registry(clock)
    auth = registry.get("AuthService")
    auth.core.fleet.state = "closed"  # type: ignore[union-attr]
    auth.open()  # this process refuses, on its own evidence
    assert (auth.state, auth.fleet_state) == (State.OPEN, State.CLOSED)
    response = await health(registry, critical=("AuthService",))
    assert (response.status_code, response.json()["status"]) == (503, "unhealthy")
    details = response.json()["details"]["AuthService"]
    assert (details["state"], details["fleet"]) == ("open", "closed")
    response = await health(registry)  # not critical: degraded
    assert (response.status_code, response.json()["status"]) == (200, "degraded")


async def test_without_the_fleet_the_local_state_decides() -> None:
    clock = FakeClock()
    registry = linked_registry(clock)
    auth = registry.get("AuthService")
    link = auth.core.fleet
    assert link is not None
    link.state = "open"
    link.healthy = False  # the coordinator cannot reach the fleet
    assert auth.fleet_state is None
    response = await health(registry, critical=("AuthService",))
    assert response.status_code == 200
    assert response.json()["status"] == "healthy"
    assert response.json()["details"]["AuthService"]["fleet"] is None


async def test_a_breaker_with_no_coordinator_has_no_fleet_entry() -> None:
    registry = BreakerRegistry(clock=FakeClock())
    registry.get("AuthService")
    response = await health(registry)
    assert "fleet" not in response.json()["details"]["AuthService"]
