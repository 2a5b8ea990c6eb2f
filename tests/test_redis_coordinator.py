"""RedisCoordinator against a real redis-server: the fleet decides, off the call path.

Two coordinators in one event loop stand for two processes here (the spawned-process tests are
in test_fleet_processes.py). The fleet's decisions run on the Redis server's clock, so these
tests wait for them, polling with a bound, instead of driving a fake clock.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import redis

from fastapi_breaker import BreakerRegistry, CircuitBreaker, CircuitOpenError, State
from fastapi_breaker._redis_script import SCRIPT_SHA, keys_for
from fastapi_breaker.redis import RedisCoordinator, RedisLostData
from tests.redis_server import RedisServer

FLUSH = 0.05
OPTIONS = {"volume_threshold": 10, "error_threshold_percentage": 50.0, "timeout": None}


class Boom(Exception):
    pass


async def ok() -> str:
    return "ok"


async def fail() -> None:
    raise Boom


async def eventually(
    check: Callable[[], bool], within: float = 3.0, what: Callable[[], object] | None = None
) -> None:
    """Wait until `check()` holds, polling every 10 ms, for `within` seconds at most. `what()`
    says what was seen instead, in the failure."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            seen = f"; seen {what()!r}" if what is not None else ""
            raise AssertionError(f"not within {within} s: {check.__doc__ or check}{seen}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def fleet(
    redis_url: str, count: int, *, repair_interval: float = 1.0, **options: Any
) -> AsyncIterator[list[CircuitBreaker]]:
    """`count` registries, each with its own coordinator: one breaker "svc" per process."""
    registries = [
        BreakerRegistry(
            {**OPTIONS, **options},
            coordinator=RedisCoordinator(
                redis_url,
                namespace="tests",
                flush_interval=FLUSH,
                repair_interval=repair_interval,
            ),
        )
        for _ in range(count)
    ]
    for registry in registries:
        await registry.start()
    try:
        yield [registry.get("svc") for registry in registries]
    finally:
        for registry in registries:
            await registry.stop()
            registry.shutdown()


OUTAGE = ["coordinator_degraded", "coordinator_recovered"]


def link_events(breaker: CircuitBreaker) -> list[str]:
    """The names of the breaker's coordinator events from now on, in order."""
    seen: list[str] = []
    breaker.on("coordinator_degraded", lambda event: seen.append(event.name))
    breaker.on("coordinator_recovered", lambda event: seen.append(event.name))
    return seen


async def open_the_fleet(a: CircuitBreaker, b: CircuitBreaker) -> None:
    """Five failures in each of two processes: the fleet opens, and both know it."""
    await failures(a, 5)
    await failures(b, 5)
    await eventually(lambda: a.state is State.OPEN and b.state is State.OPEN)
    await eventually(lambda: a.fleet_state is State.OPEN and b.fleet_state is State.OPEN)


async def failures(breaker: CircuitBreaker, count: int) -> None:
    for _ in range(count):
        with pytest.raises(Boom):
            await breaker.call(fail)


async def test_the_fleet_opens_on_the_counts_of_all_its_processes(redis_url: str) -> None:
    async with fleet(redis_url, 2, reset_timeout=30.0) as (a, b):
        await failures(a, 5)
        await failures(b, 5)  # five each: neither reaches volume_threshold=10 alone
        assert (a.state, b.state) == (State.CLOSED, State.CLOSED)
        await eventually(lambda: a.state is State.OPEN and b.state is State.OPEN)
        assert (a.fleet_state, b.fleet_state) == (State.OPEN, State.OPEN)
        with pytest.raises(CircuitOpenError) as refused:
            await a.call(ok)
        assert 28.0 < refused.value.retry_after <= 30.0  # the fleet's deadline, read locally


async def test_one_trial_for_the_fleet_and_its_success_closes_every_process(
    redis_url: str,
) -> None:
    async with fleet(redis_url, 3, reset_timeout=0.5) as breakers:
        await failures(breakers[0], 10)
        await eventually(lambda: all(b.state is State.OPEN for b in breakers))
        await asyncio.sleep(0.5)
        # Every process refuses past the deadline, and asks the fleet for the trial.
        for breaker in breakers:
            with pytest.raises(CircuitOpenError):
                await breaker.call(ok)
        await eventually(lambda: any(b.state is State.HALF_OPEN for b in breakers))
        await asyncio.sleep(3 * FLUSH)  # every other answer from the fleet has arrived
        trials = [b for b in breakers if b.state is State.HALF_OPEN]
        assert len(trials) == 1
        assert await trials[0].call(ok) == "ok"
        await eventually(lambda: all(b.state is State.CLOSED for b in breakers), within=1.0)
        assert all(b.fleet_state is State.CLOSED for b in breakers)


async def test_a_local_open_stays_local(redis_url: str) -> None:
    async with fleet(redis_url, 2, reset_timeout=30.0, volume_threshold=0) as (a, b):
        # volume_threshold=0 locally opens on one failure; the fleet opens too: one failure in
        # one call is over 50% of the fleet's calls. So give the fleet successes first.
        for _ in range(20):
            await b.call(ok)
        await asyncio.sleep(3 * FLUSH)
        await failures(a, 1)
        assert a.state is State.OPEN
        await asyncio.sleep(3 * FLUSH)
        assert b.state is State.CLOSED
        assert b.fleet_state is State.CLOSED


async def test_redis_paused_never_fails_a_call_and_reports_one_outage(
    redis_url: str, redis_server: RedisServer
) -> None:
    async with fleet(redis_url, 1, reset_timeout=30.0) as (breaker,):
        seen: list[str] = []
        breaker.on("coordinator_degraded", lambda event: seen.append(event.name))
        breaker.on("coordinator_recovered", lambda event: seen.append(event.name))
        assert await breaker.call(ok) == "ok"
        await eventually(lambda: breaker.fleet_state is State.CLOSED)
        redis_server.pause()
        try:
            started = time.monotonic()
            for _ in range(50):
                assert await breaker.call(ok) == "ok"  # never waits on Redis
                await asyncio.sleep(0.02)
            assert time.monotonic() - started < 2.0
            await eventually(lambda: seen == ["coordinator_degraded"])
            assert breaker.fleet_state is None
        finally:
            redis_server.resume()
        await eventually(lambda: seen == ["coordinator_degraded", "coordinator_recovered"])
        assert breaker.stats.successes == 51  # every outcome counted, once


async def test_redis_restarted_empty_loads_the_script_again_and_decides(
    redis_url: str, redis_server: RedisServer
) -> None:
    async with fleet(redis_url, 2, reset_timeout=30.0) as (a, b):
        assert await a.call(ok) == "ok"
        await eventually(lambda: a.fleet_state is State.CLOSED)
        redis_server.restart()  # no keys, no scripts
        await failures(a, 5)
        await failures(b, 5)
        await eventually(lambda: a.state is State.OPEN and b.state is State.OPEN, within=8.0)


async def test_garbage_in_the_breakers_keys_is_no_fleet_state_and_never_raises(
    redis_url: str,
) -> None:
    from fastapi_breaker._redis_script import keys_for

    client = redis.Redis.from_url(redis_url)
    for key in keys_for("tests", "svc"):
        client.set(key, b"\x80 not what was written")
    async with fleet(redis_url, 2, reset_timeout=30.0) as (a, b):
        assert await a.call(ok) == "ok"
        await failures(a, 5)
        await failures(b, 5)
        await eventually(lambda: a.state is State.OPEN and b.state is State.OPEN)
    client.close()


def test_without_redis_py_the_import_names_the_extra() -> None:
    code = textwrap.dedent(
        """
        import sys

        class Blocker:
            def find_spec(self, fullname, path=None, target=None):
                if fullname.split(".")[0] == "redis":
                    raise ImportError(f"blocked: {fullname}")
                return None

        sys.meta_path.insert(0, Blocker())
        try:
            import fastapi_breaker.redis
        except ImportError as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == (
        "fastapi_breaker.redis needs redis-py: pip install 'fastapi_breaker[redis]'"
    )


def test_bad_arguments_are_refused_naming_them() -> None:
    with pytest.raises(ValueError, match=r"^url must be a redis://, rediss:// or unix:// URL"):
        RedisCoordinator("http://127.0.0.1", namespace="x")
    with pytest.raises(ValueError, match=r"^namespace must be a non-empty string"):
        RedisCoordinator("redis://127.0.0.1", namespace="")
    with pytest.raises(ValueError, match=r"^flush_interval must be"):
        RedisCoordinator("redis://127.0.0.1", namespace="x", flush_interval=0)
    with pytest.raises(TypeError, match=r"^RedisCoordinator needs a url or a client"):
        RedisCoordinator(namespace="x")


def test_a_handler_may_subscribe_to_the_coordinators_events() -> None:
    breaker = CircuitBreaker(name="svc")
    breaker.on("coordinator_degraded", print).on("coordinator_recovered", print)
    assert {"coordinator_degraded", "coordinator_recovered"} <= breaker.listening


async def test_a_breaker_made_before_the_start_follows_the_fleet_once_it_answers(
    redis_url: str,
) -> None:
    coordinator = RedisCoordinator(redis_url, namespace="tests", flush_interval=FLUSH)
    registry = BreakerRegistry(OPTIONS, coordinator=coordinator)
    early = registry.get("svc")  # made before the coordinator starts
    assert early.fleet_state is None
    async with registry:
        await eventually(lambda: early.fleet_state is State.CLOSED)


async def test_garbage_found_is_logged_and_the_fleet_carries_on(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi_breaker._redis_script import keys_for

    client = redis.Redis.from_url(redis_url)
    client.set(keys_for("tests", "svc")[1], b"not a hash")
    async with fleet(redis_url, 1, reset_timeout=30.0) as (breaker,):
        await eventually(lambda: breaker.fleet_state is State.CLOSED)
    client.close()
    assert any(
        "malformed values in the fleet keys of 'svc' were deleted" in record.getMessage()
        for record in caplog.records
    )


async def test_successes_go_every_second_flush_and_a_failure_at_the_next(
    redis_url: str,
) -> None:
    client = redis.Redis.from_url(redis_url)
    client.config_resetstat()
    async with fleet(redis_url, 1, reset_timeout=30.0) as (breaker,):
        await eventually(lambda: breaker.fleet_state is State.CLOSED)
        client.config_resetstat()
        started = time.monotonic()
        calls = 0
        while time.monotonic() - started < 2.0:
            for _ in range(10):
                await breaker.call(ok)
                calls += 1
            await asyncio.sleep(0.01)
        scripts = client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        # One report every second flush (2 s / 100 ms), not one per 50 ms flush.
        assert scripts <= 2.0 / (2 * FLUSH) + 2, (scripts, calls)
        assert calls >= 1000
        with pytest.raises(Boom):
            await breaker.call(fail)
        sent_at = time.monotonic()
        await eventually(
            lambda: client.info("commandstats")["cmdstat_evalsha"]["calls"] > scripts, 1.0
        )
        assert time.monotonic() - sent_at < 3 * FLUSH  # the failure went with the next flush
    client.close()


async def test_one_process_failing_does_not_open_the_fleet_others_succeed_in(
    redis_url: str,
) -> None:
    async with fleet(redis_url, 2, reset_timeout=30.0) as (a, b):
        for _ in range(50):
            await b.call(ok)
        # Successes are reported within two flushes, even with no failure to go with.
        await asyncio.sleep(2.5 * FLUSH)
        await failures(a, 6)
        for _ in range(4):
            await a.call(ok)
        await asyncio.sleep(4 * FLUSH)
        # 6 failures in 60 calls fleet-wide: 10%, far under the 50% threshold.
        assert (a.state, b.state) == (State.CLOSED, State.CLOSED)
        assert (a.fleet_state, b.fleet_state) == (State.CLOSED, State.CLOSED)


async def test_a_redis_that_answers_errors_is_one_outage_until_it_answers(
    redis_url: str,
) -> None:
    admin = redis.Redis.from_url(redis_url)
    # A user that may connect and subscribe but not run the fleet's script.
    admin.execute_command(
        "ACL", "SETUSER", "fleet", "on", ">secret", "~*", "&*", "+@all", "-evalsha", "-script"
    )
    host_port = redis_url.split("://", 1)[1]
    url = f"redis://fleet:secret@{host_port}"
    registry = BreakerRegistry(
        OPTIONS,
        coordinator=RedisCoordinator(url, namespace="tests", flush_interval=FLUSH),
    )
    seen: list[str] = []
    breaker = registry.get("svc")
    breaker.on("coordinator_degraded", lambda event: seen.append(event.name))
    breaker.on("coordinator_recovered", lambda event: seen.append(event.name))
    try:
        async with registry:
            for _ in range(20):
                assert await breaker.call(ok) == "ok"
                await asyncio.sleep(FLUSH / 2)
            assert seen == ["coordinator_degraded"]  # once, however many flushes fail
            admin.execute_command("ACL", "SETUSER", "fleet", "+evalsha", "+script")
            await eventually(lambda: seen == ["coordinator_degraded", "coordinator_recovered"])
            await eventually(lambda: breaker.fleet_state is State.CLOSED)
    finally:
        admin.execute_command("ACL", "DELUSER", "fleet")
        admin.close()


def fleet_open_until(redis_url: str, ahead_ms: int | None, generation: int) -> None:
    """Write the fleet state of "svc" as open until `ahead_ms` past the Redis server's clock,
    or (None) until the largest deadline the script reads, 2**53 - 1 ms: what a Redis clock that
    stepped back, or garbage, would make the script answer."""
    from fastapi_breaker._redis_script import keys_for

    admin = redis.Redis.from_url(redis_url)
    try:
        seconds, micros = admin.time()
        fields = {
            "state": "open",
            "opened_until": (
                2**53 - 1 if ahead_ms is None else seconds * 1000 + micros // 1000 + ahead_ms
            ),
            "holder": "",
            "lease_until": 0,
            "generation": generation,
            "trials": 0,
        }
        admin.hset(keys_for("tests", "svc")[1], mapping=fields)
    finally:
        admin.close()


@pytest.mark.parametrize("ahead_ms", [86_400_000, None])
async def test_a_fleet_deadline_is_believed_no_further_than_the_reset_timeout(
    redis_url: str, ahead_ms: int | None
) -> None:
    async with fleet(redis_url, 1, reset_timeout=0.5, repair_interval=0.1) as (a,):
        await a.call(ok)
        await eventually(lambda: a.fleet_state is State.CLOSED)
        fleet_open_until(redis_url, ahead_ms, generation=5)
        await eventually(lambda: a.state is State.OPEN)  # read at the next repair
        with pytest.raises(CircuitOpenError) as refused:
            await a.call(ok)
        assert 0 < refused.value.retry_after <= 0.5
        # The fleet forgets it (keys deleted, FLUSHALL): the hold ends at its capped deadline,
        # with a trial by this process's clock, which closes it.
        admin = redis.Redis.from_url(redis_url)
        try:
            admin.flushall()
        finally:
            admin.close()
        await eventually(lambda: a.fleet_state is State.CLOSED)
        await asyncio.sleep(0.5)
        assert await a.call(ok) == "ok"
        assert a.state is State.CLOSED


async def test_a_fleet_open_whose_state_turns_to_garbage_holds_then_tries_locally(
    redis_url: str,
) -> None:
    # Garbage keeps landing in the keys of an open fleet: each read finds the state unreadable
    # (the script deletes it: a closed fleet, its window empty). Each process keeps the open it
    # knew until its deadline, then lets one trial through by its own clock, as in an outage;
    # it must not close on the word of a fleet that forgot, letting every call through.
    reset = 0.5
    async with fleet(redis_url, 2, reset_timeout=reset) as (a, b):
        await open_the_fleet(a, b)
        window, state = keys_for("tests", "svc")
        client = redis.Redis.from_url(redis_url)
        admitted = 0
        started = time.monotonic()
        try:
            while time.monotonic() - started < 3.0:
                client.set(window, b"\xff" * 7)
                client.hset(state, mapping={"state": "sideways", "generation": "-3"})
                for breaker in (a, b):
                    with suppress(CircuitOpenError):
                        with pytest.raises(Boom):
                            await breaker.call(fail)
                        admitted += 1
                await asyncio.sleep(0.01)
        finally:
            client.close()
    # One trial per reset and process at the most: 3 s / 0.5 s, plus one, for each of two.
    assert admitted <= 2 * (3.0 / reset + 1), admitted


def documented_acl() -> list[str]:
    """The narrowest ACL rule docs/fleet.md gives, for the namespace "user-service"."""
    text = (Path(__file__).parent.parent / "docs" / "fleet.md").read_text(encoding="utf-8")
    (line,) = [line for line in text.splitlines() if line.startswith("ACL SETUSER breakers ")]
    narrow = re.search(r"`(~fastapi_breaker:\{bdXNlci1zZXJ2aWNl:\* &[^`]+)`", text)
    assert narrow is not None, "docs/fleet.md no longer narrows the rule to one namespace"
    words = line.split()
    # The documented rule with its key and channel patterns narrowed as the docs say.
    return [*words[:-2], *narrow.group(1).split()]


async def test_the_documented_acl_lets_a_fleet_open_try_and_close(
    redis_url: str, redis_server: RedisServer
) -> None:
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command(*documented_acl())
    admin.acl_log_reset()
    url = f"redis://breakers:change-me@{redis_url.split('://', 1)[1]}"
    registries = [
        BreakerRegistry(
            {**OPTIONS, "volume_threshold": 0, "reset_timeout": 0.3},
            coordinator=RedisCoordinator(url, namespace="user-service", flush_interval=FLUSH),
        )
        for _ in range(2)
    ]
    try:
        for registry in registries:
            await registry.start()
        a, b = (registry.get("svc") for registry in registries)
        seen_a = link_events(a)
        await failures(a, 1)
        await eventually(lambda: b.state is State.OPEN)  # the fleet's open reached b
        await asyncio.sleep(0.4)  # past the reset timeout
        with pytest.raises(CircuitOpenError):
            await a.call(ok)  # asks the fleet for the trial
        await eventually(lambda: a.state is State.HALF_OPEN)
        assert await a.call(ok) == "ok"  # the trial; the fleet closes
        await eventually(lambda: b.fleet_state is State.CLOSED and a.state is State.CLOSED)
        redis_server.restart()  # and a restart, found through the process key
        admin.close()
        admin = redis.Redis.from_url(redis_url)
        admin.execute_command(*documented_acl())
        await eventually(lambda: seen_a == OUTAGE, within=8.0, what=lambda: seen_a)
        assert seen_a == OUTAGE
        # Nothing refused, but redis-py's CLIENT SETINFO at connect (logged as "client" by
        # Redis 6.2, which has no such subcommand; redis-py ignores the refusal).
        refused = [entry["object"] for entry in admin.acl_log()]
        assert set(refused) <= {"client", "client|setinfo"}, refused
    finally:
        for registry in registries:
            await registry.stop()
            registry.shutdown()
        admin.execute_command("ACL", "DELUSER", "breakers")
        admin.close()


async def test_a_known_fleet_open_holds_after_redis_restarts_empty(
    redis_url: str, redis_server: RedisServer
) -> None:
    async with fleet(redis_url, 2, reset_timeout=30.0) as (a, b):
        await open_the_fleet(a, b)
        seen_a, seen_b = link_events(a), link_events(b)
        redis_server.restart()  # the fleet's state is gone
        # However fast the restart, so that no flush failed: one outage, seen by each process.
        await eventually(
            lambda: seen_a == seen_b == OUTAGE, within=8.0, what=lambda: (seen_a, seen_b)
        )
        await asyncio.sleep(5 * FLUSH)  # several answers from the empty fleet
        assert seen_a == seen_b == OUTAGE
        assert (a.state, b.state) == (State.OPEN, State.OPEN)
        with pytest.raises(CircuitOpenError) as refused:
            await a.call(ok)
        assert refused.value.retry_after > 20.0  # the deadline known before the restart


async def test_a_restart_after_a_failed_flush_is_still_one_outage(
    redis_url: str, redis_server: RedisServer
) -> None:
    async with fleet(redis_url, 1, reset_timeout=30.0) as (a,):
        await a.call(ok)
        await eventually(lambda: a.fleet_state is State.CLOSED)
        seen = link_events(a)
        redis_server.kill()
        await failures(a, 1)  # something to flush, which fails
        await eventually(lambda: seen == ["coordinator_degraded"], what=lambda: seen)
        redis_server.start()  # empty: its data is gone too, and that is no second outage
        await eventually(lambda: seen == OUTAGE, within=8.0, what=lambda: seen)
        await failures(a, 1)
        await asyncio.sleep(5 * FLUSH)
        assert seen == OUTAGE


async def test_scripts_flushed_under_a_running_fleet_are_loaded_again_without_an_outage(
    redis_url: str,
) -> None:
    async with fleet(redis_url, 2, reset_timeout=30.0) as (a, b):
        await open_the_fleet(a, b)
        seen_a, seen_b = link_events(a), link_events(b)
        admin = redis.Redis.from_url(redis_url)
        try:
            admin.script_flush()  # the fleet's keys stay: its state is intact
            # The next repairing read (open breakers are read every second) loads it again.
            await eventually(lambda: admin.script_exists(SCRIPT_SHA) == [True])
        finally:
            admin.close()
        await asyncio.sleep(5 * FLUSH)
        assert seen_a == seen_b == []
        assert (a.fleet_state, b.fleet_state) == (State.OPEN, State.OPEN)


async def test_a_flushed_redis_is_one_outage_for_every_process(redis_url: str) -> None:
    # A FLUSHALL breaks no connection: each process finds it at its periodic check of its
    # key, every 10 repair intervals (1 s here).
    async with fleet(redis_url, 2, reset_timeout=30.0, repair_interval=0.1) as (a, b):
        await open_the_fleet(a, b)
        seen_a, seen_b = link_events(a), link_events(b)
        errors: list[BaseException | None] = []
        a.on("coordinator_degraded", lambda event: errors.append(event.error))
        admin = redis.Redis.from_url(redis_url)
        try:
            admin.flushall()  # the keys go, the script stays: no flush fails
        finally:
            admin.close()
        await eventually(lambda: seen_a == seen_b == OUTAGE, what=lambda: (seen_a, seen_b))
        assert [type(error) for error in errors] == [RedisLostData]
        assert str(errors[0]) == "Redis lost its data (restarted empty or flushed)"
        await asyncio.sleep(5 * FLUSH)
        assert seen_a == seen_b == OUTAGE
        # What each knew of the fleet's open holds, as after a restart.
        assert (a.state, b.state) == (State.OPEN, State.OPEN)


def test_a_bad_url_is_refused_without_echoing_its_password() -> None:
    with pytest.raises(ValueError, match=r"got 'http'$") as refused:
        RedisCoordinator("http://app:s3cret@redis:6379", namespace="x")
    assert "s3cret" not in str(refused.value)


ENCODE = (
    "percent-encode the characters of the user name and password that a URL reserves: "
    "'#' as %23, '/' as %2F, '?' as %3F, '@' as %40"
)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://app:Pa55#s3cret@redis:6379/0", f"url's host and port cannot be read: {ENCODE}"),
        ("redis://app:Pa55/s3cret@redis:6379/0", f"url's host and port cannot be read: {ENCODE}"),
        ("redis://app:Pa55?s3cret@redis:6379/0", f"url's host and port cannot be read: {ENCODE}"),
        (
            "redis://app:1234/s3cret@redis/0",
            f"url's host, port or database cannot be read: {ENCODE}",
        ),
        (
            "redis://app:s3cret@redis:6379/zero",
            "url's database (its path) must be a whole number, as in redis://host:6379/0, "
            "or absent (0)",
        ),
        ("rediss://app:s3cret@redis:6379?db=zero", "url's db= must be a whole number, as in ?db=0"),
        ("unix:///run/redis.sock?db=one", "url's db= must be a whole number, as in ?db=0"),
    ],
)
def test_a_url_redis_py_would_misread_is_refused_without_echoing_it(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        RedisCoordinator(url, namespace="x")


@pytest.mark.parametrize(
    "url",
    [
        "redis://redis",
        "redis://redis:6379/",
        "redis://app:p%23ss%2F%3F%40@redis:6379/15",
        "rediss://redis:6380?db=2",
        "unix:///run/redis.sock?db=3",
    ],
)
def test_urls_redis_py_reads_are_accepted(url: str) -> None:
    assert RedisCoordinator(url, namespace="x").namespace == "x"


async def test_stop_returns_promptly_right_after_a_transition_woke_the_flusher(
    redis_url: str,
) -> None:
    # A published transition wakes the background flush at the moment stop() cancels it: the
    # stop must still end (it once waited for ever on that task).
    coordinator = RedisCoordinator(
        redis_url, namespace="tests", flush_interval=600.0, repair_interval=600.0
    )
    registry = BreakerRegistry({**OPTIONS, "volume_threshold": 0}, coordinator=coordinator)
    async with asyncio.timeout(10.0):
        async with registry:
            breaker = registry.get("svc")
            await asyncio.sleep(0.2)
            for _ in range(20):
                with suppress(Boom, CircuitOpenError):
                    await breaker.call(fail)
                await coordinator.flush()  # by hand, beside the background one
            assert breaker.state is State.OPEN
