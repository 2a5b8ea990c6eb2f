"""Redis faults under load: a stalled, paused, restarted or garbled Redis never fails or holds
up a call, every call is counted once, each outage is reported once, and the fleet decides
again afterwards.

Two registries with their own coordinators stand for two processes, each calling at about 100
calls a second while the fault lasts. The fleet's decisions run on the Redis server's clock:
the tests wait for them, polling with a bound.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import redis

from fastapi_breaker import BreakerRegistry, CircuitBreaker, State
from fastapi_breaker._redis_script import channel_for, keys_for
from fastapi_breaker.redis import RedisCoordinator
from tests.redis_server import RedisServer

FLUSH = 0.05
NAMESPACE = "faults"
# A window long enough to hold every call of a test: the fleet's counts can then be checked.
OPTIONS = {
    "volume_threshold": 10,
    "error_threshold_percentage": 50.0,
    "timeout": None,
    "rolling_count_timeout": 60.0,
    "rolling_count_buckets": 60,
    "reset_timeout": 30.0,
}
SLOWEST_CALL = 0.2  # seconds: a local call, on a busy machine; one that waited on Redis: 250 ms+


class Boom(Exception):
    pass


async def ok() -> str:
    return "ok"


async def fail() -> None:
    raise Boom


async def eventually(check: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s")
        await asyncio.sleep(0.01)


class Load:
    """Calls `breaker` about every 10 ms until stopped, timing each call."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self.calls = 0
        self.slowest = 0.0
        self.failed: list[BaseException] = []
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                assert await self.breaker.call(ok) == "ok"
            except BaseException as exc:  # any failure at all is the test's failure
                self.failed.append(exc)
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.calls += 1
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._stop.set()
        await self._task


@asynccontextmanager
async def two_processes(
    redis_url: str,
) -> AsyncIterator[tuple[list[CircuitBreaker], list[str], list[BreakerRegistry]]]:
    """Two breakers "svc", each with its coordinator, the log of their outage events, and the
    two registries."""
    events: list[str] = []
    registries = [
        BreakerRegistry(
            OPTIONS,
            coordinator=RedisCoordinator(redis_url, namespace=NAMESPACE, flush_interval=FLUSH),
        )
        for _ in range(2)
    ]
    breakers = []
    for index, registry in enumerate(registries):
        await registry.start()
        breaker = registry.get("svc")
        for name in ("coordinator_degraded", "coordinator_recovered"):
            breaker.on(name, lambda event, i=index: events.append(f"{i}:{event.name}"))
        breakers.append(breaker)
    try:
        yield breakers, events, registries
    finally:
        for registry in registries:
            await registry.stop()
            registry.shutdown()


def fleet_successes(redis_url: str) -> int:
    """The successes in the fleet's window, read from its key (20-byte buckets)."""
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.get(keys_for(NAMESPACE, "svc")[0]) or b""
    finally:
        client.close()
    return sum(struct.unpack_from("<qIII", raw, at)[1] for at in range(0, len(raw), 20))


async def decides_again(registries: list[BreakerRegistry]) -> None:
    """The fleet decides again: a breaker "other" of each process opens on five failures in
    each (its window holds no successes: "svc"'s load would keep it below 50%)."""
    others = [registry.get("other") for registry in registries]
    for other in others:
        for _ in range(5):
            with pytest.raises(Boom):
                await other.call(fail)
    await eventually(lambda: all(o.state is State.OPEN for o in others), 3.0)
    assert all(o.fleet_state is State.OPEN for o in others)


async def outage(
    redis_url: str, fault: Callable[[], None], heal: Callable[[], None], seconds: float
) -> None:
    async with two_processes(redis_url) as (breakers, events, registries):
        await eventually(lambda: all(b.fleet_state is State.CLOSED for b in breakers), 3.0)
        loads = [Load(breaker) for breaker in breakers]
        await asyncio.sleep(0.3)
        fault()
        try:
            await asyncio.sleep(seconds)
            assert sorted(events) == ["0:coordinator_degraded", "1:coordinator_degraded"]
            assert all(breaker.fleet_state is None for breaker in breakers)
        finally:
            heal()
        await eventually(lambda: len(events) == 4, 10.0)
        await asyncio.sleep(0.3)
        for load in loads:
            await load.stop()
        # One outage: one degraded and one recovered event per breaker, nothing more.
        assert sorted(events) == [
            "0:coordinator_degraded",
            "0:coordinator_recovered",
            "1:coordinator_degraded",
            "1:coordinator_recovered",
        ]
        for load, breaker in zip(loads, breakers, strict=True):
            assert load.failed == []
            assert load.slowest < SLOWEST_CALL, f"a call waited {load.slowest:.3f} s"
            assert breaker.stats.successes == load.calls  # counted once, locally
        # And once in the fleet: what failed to go during the outage went after it.
        total = sum(load.calls for load in loads)
        # Successes go at the latest a second after the last report (they cannot open).
        await eventually(lambda: fleet_successes(redis_url) == total, 3.0)
        await asyncio.sleep(3 * FLUSH)
        assert fleet_successes(redis_url) == total  # and not once more
        await decides_again(registries)


async def test_redis_stopped_by_sigstop_for_5_seconds(
    redis_url: str, redis_server: RedisServer
) -> None:
    await outage(redis_url, redis_server.pause, redis_server.resume, 5.0)


async def test_redis_pausing_every_client_for_5_seconds(
    redis_url: str, redis_server: RedisServer
) -> None:
    await outage(redis_url, lambda: redis_server.client_pause(5000), lambda: None, 5.0)


async def test_redis_killed_and_restarted_empty(redis_url: str, redis_server: RedisServer) -> None:
    async with two_processes(redis_url) as (breakers, events, registries):
        await eventually(lambda: all(b.fleet_state is State.CLOSED for b in breakers), 3.0)
        loads = [Load(breaker) for breaker in breakers]
        await asyncio.sleep(0.3)
        redis_server.kill()
        await asyncio.sleep(1.0)
        assert sorted(events) == ["0:coordinator_degraded", "1:coordinator_degraded"]
        redis_server.start()  # empty: no keys, no scripts
        await eventually(lambda: len(events) == 4, 10.0)
        for load in loads:
            await load.stop()
        for load, breaker in zip(loads, breakers, strict=True):
            assert load.failed == []
            assert load.slowest < SLOWEST_CALL
            assert breaker.stats.successes == load.calls
        await decides_again(registries)


async def test_garbage_in_the_keys_under_load_is_repaired_without_an_outage(
    redis_url: str,
) -> None:
    async with two_processes(redis_url) as (breakers, events, registries):
        await eventually(lambda: all(b.fleet_state is State.CLOSED for b in breakers), 3.0)
        loads = [Load(breaker) for breaker in breakers]
        client = redis.Redis.from_url(redis_url)
        for _ in range(10):
            window, state = keys_for(NAMESPACE, "svc")
            client.set(window, b"\xff" * 7)
            client.delete(state)
            client.hset(state, mapping={"state": "sideways", "generation": "-3"})
            await asyncio.sleep(0.05)
        client.close()
        for load in loads:
            await load.stop()
        assert events == []  # garbage is no outage: it is deleted, and the fleet starts afresh
        for load, breaker in zip(loads, breakers, strict=True):
            assert load.failed == []
            assert load.slowest < SLOWEST_CALL
            assert breaker.stats.successes == load.calls
        await decides_again(registries)


async def test_each_process_subscribes_again_as_soon_as_redis_answers_after_a_long_outage(
    redis_url: str, redis_server: RedisServer
) -> None:
    # Five seconds down: the retries have backed off to their longest, seconds apart. The
    # subscription must not sleep through the recovery a flush found: until it is back, a
    # transition another process publishes is not heard, and the repairing read waits with it.
    async with two_processes(redis_url) as (breakers, events, registries):
        await eventually(lambda: all(b.fleet_state is State.CLOSED for b in breakers), 3.0)
        channel = channel_for(NAMESPACE)
        client = redis.Redis.from_url(redis_url)
        try:
            assert client.pubsub_numsub(channel) == [(channel.encode(), 2)]
            client.close()
            loads = [Load(breaker) for breaker in breakers]
            redis_server.kill()
            await asyncio.sleep(5.0)
            redis_server.start()
            await eventually(lambda: len(events) == 4, 10.0)
            recovered = time.monotonic()
            client = redis.Redis.from_url(redis_url)
            await eventually(lambda: client.pubsub_numsub(channel) == [(channel.encode(), 2)], 0.5)
            assert time.monotonic() - recovered < 0.5
            for load in loads:
                await load.stop()
            await decides_again(registries)
        finally:
            client.close()
