"""One process of a fleet, for test_fleet_processes.py: spawned, one event loop each.

It calls a shared downstream at a steady rate through its own breaker "AuthService", with or
without a RedisCoordinator, and reports the breaker's state as it changes. The downstream is a
counter shared by every process (a `multiprocessing.Value`), failing while `down` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from fastapi_breaker import BreakerRegistry, CircuitOpenError
from fastapi_breaker.redis import RedisCoordinator


class Down(Exception):
    """The downstream is down."""


def run(*args: Any) -> None:
    """The process's main, with `_main`'s arguments: call until `stop` is set, putting
    (index, state, monotonic time) on `states` at every change of the breaker's state."""
    asyncio.run(_main(*args))


async def _main(
    redis_url: str | None,
    options: dict[str, Any],
    received: Synchronized[int],
    down: Synchronized[int],
    stop: Any,
    states: Any,
    index: int,
    rate: float,
    flush_interval: float,
    hits: Any,
) -> None:
    coordinator = (
        None
        if redis_url is None
        else RedisCoordinator(redis_url, namespace="fleet-test", flush_interval=flush_interval)
    )
    registry = BreakerRegistry(breakers={"AuthService": options}, coordinator=coordinator)

    def downstream() -> str:
        with received.get_lock():
            if hits is not None and received.value < len(hits):
                hits[received.value] = time.monotonic()  # one clock for every process here
            received.value += 1
        if down.value:
            raise Down
        return "ok"

    async with registry:
        breaker = registry.get("AuthService")
        last = None
        states.put((index, "ready", time.monotonic()))
        next_call = time.monotonic()
        deadline = time.monotonic() + 120.0  # a bound, whatever the test does
        while not stop.is_set() and time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_call:
                next_call += 1.0 / rate
                with contextlib.suppress(Down, CircuitOpenError):
                    await breaker.call(downstream)
            state = breaker.state.value
            if state != last:
                states.put((index, state, time.monotonic()))
                last = state
            await asyncio.sleep(0.005)
