"""How many failing calls a fleet lets through before it opens, under steady traffic.

The fleet opens as one breaker fed every process's calls: over `error_threshold_percentage` of
the calls in its window, once `volume_threshold` calls are there. Under steady traffic the
window is full of the successes from before the downstream failed, so the failing calls before
opening are about threshold x calls in the window, with the coordinator or without it
(test_opening.py counts them exactly on one breaker). Two registries with their coordinators
stand for two processes, each calling 50 times a second, in real time against a real Redis.
"""

from __future__ import annotations

import asyncio
import time

from fastapi_breaker import BreakerRegistry, CircuitBreaker, CircuitOpenError, State
from fastapi_breaker.redis import RedisCoordinator

WINDOW = 2.0
OPTIONS = {
    "volume_threshold": 10,
    "error_threshold_percentage": 50.0,
    "timeout": None,
    "rolling_count_timeout": WINDOW,
    "rolling_count_buckets": 20,
    "reset_timeout": 30.0,
}
PACE = 0.02  # seconds between two calls of one process: 50 a second


class Boom(Exception):
    pass


async def ok() -> None:
    pass


async def fail() -> None:
    raise Boom


async def calls(breaker: CircuitBreaker, action: object, until: float) -> int:
    """Call every PACE seconds until `until` (the monotonic clock) or until refused: the number
    of calls made (a refused one is not)."""
    made = 0
    while time.monotonic() < until:
        try:
            await breaker.call(action)  # type: ignore[arg-type]
        except Boom:
            pass
        except CircuitOpenError:
            break
        made += 1
        await asyncio.sleep(PACE)
    return made


async def failing_calls_before_every_process_refuses(redis_url: str | None) -> tuple[int, int]:
    """(successes in the window before the downstream failed, failing calls until every
    process refused)."""
    registries = [
        BreakerRegistry(
            OPTIONS,
            coordinator=(
                RedisCoordinator(redis_url, namespace="opening", flush_interval=0.05)
                if redis_url is not None
                else None
            ),
        )
        for _ in range(2)
    ]
    for registry in registries:
        await registry.start()
    try:
        breakers = [registry.get("svc") for registry in registries]
        warm_until = time.monotonic() + WINDOW
        successes = await asyncio.gather(*(calls(b, ok, warm_until) for b in breakers))
        fail_until = time.monotonic() + 2 * WINDOW  # bounded: it opens within a window
        failures = await asyncio.gather(*(calls(b, fail, fail_until) for b in breakers))
        assert all(b.state is State.OPEN for b in breakers)
        return sum(successes), sum(failures)
    finally:
        for registry in registries:
            await registry.stop()
            registry.shutdown()


def near_half_of(window_calls: int, failed: int) -> bool:
    # Half the calls in the window (50%), give or take what a loaded machine's pacing and one
    # flush interval move: far from the volume threshold's 10.
    return 0.3 * window_calls <= failed <= 0.8 * window_calls


async def test_the_fleet_opens_at_about_the_threshold_times_the_calls_in_its_window(
    redis_url: str,
) -> None:
    in_window, failed = await failing_calls_before_every_process_refuses(redis_url)
    assert in_window >= 60  # about 200: two processes, 50 a second, a 2 s window
    assert near_half_of(in_window, failed), (in_window, failed)


async def test_separate_breakers_open_at_about_the_same_count() -> None:
    in_window, failed = await failing_calls_before_every_process_refuses(None)
    assert in_window >= 60
    assert near_half_of(in_window, failed), (in_window, failed)
