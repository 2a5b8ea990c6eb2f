"""A registry hands every breaker to its coordinator, and starts and stops it with its life."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

from fastapi_breaker import BreakerRegistry, CircuitBreaker
from fastapi_breaker.fastapi import setup_breakers


class Recorder:
    """A coordinator that only records what the registry asks of it."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []

    def attach(self, breaker: CircuitBreaker) -> None:
        self.log.append(("attach", breaker.name))

    def detach(self, breaker: CircuitBreaker) -> None:
        self.log.append(("detach", breaker.name))

    async def start(self) -> None:
        self.log.append(("start", ""))

    async def stop(self) -> None:
        self.log.append(("stop", ""))


def test_every_breaker_made_is_attached_and_every_one_forgotten_is_detached() -> None:
    recorder = Recorder()
    registry = BreakerRegistry(max_breakers=2, coordinator=recorder)
    assert registry.coordinator is recorder
    registry.get("a")
    registry.get("a")  # already attached: once
    registry.get("b")
    registry.get("c")  # full: the oldest idle one, "a", is forgotten
    assert registry.remove("b") is True
    registry.shutdown()
    assert recorder.log == [
        ("attach", "a"),
        ("attach", "b"),
        ("detach", "a"),
        ("attach", "c"),
        ("detach", "b"),
        ("detach", "c"),
    ]


async def test_async_with_starts_and_stops_the_coordinator_then_shuts_breakers_down() -> None:
    recorder = Recorder()
    registry = BreakerRegistry(coordinator=recorder)
    made: list[CircuitBreaker] = []

    async def use() -> None:
        async with registry as entered:
            assert entered is registry
            made.append(registry.get("a"))
            raise RuntimeError("inside")

    with pytest.raises(RuntimeError, match=r"^inside$"):
        await use()
    (breaker,) = made
    assert recorder.log == [("start", ""), ("attach", "a"), ("stop", ""), ("detach", "a")]
    assert breaker.is_shutdown


async def test_setup_breakers_starts_the_coordinator_with_the_app_and_stops_it_after() -> None:
    recorder = Recorder()
    app = FastAPI()
    setup_breakers(app, BreakerRegistry(coordinator=recorder))
    events: list[dict[str, Any]] = []
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        events.append(message)
        if message["type"] == "lifespan.startup.complete":
            assert recorder.log == [("start", "")]

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert [event["type"] for event in events] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert recorder.log == [("start", ""), ("stop", "")]


@pytest.mark.parametrize("bad", [object(), "redis://127.0.0.1"])
def test_a_coordinator_without_the_four_methods_is_refused(bad: object) -> None:
    with pytest.raises(TypeError, match=r"^coordinator must have attach\(\), detach\(\)"):
        BreakerRegistry(coordinator=bad)  # type: ignore[arg-type]


async def test_without_a_coordinator_start_and_stop_do_nothing() -> None:
    registry = BreakerRegistry()
    assert registry.coordinator is None
    async with registry:
        breaker = registry.get("a")
    assert breaker.is_shutdown
