"""The fleet script and its keys, against a real redis-server (tests/redis_server.py).

The script decides by the Redis server's clock, which no test can fake: the few tests about
time (buckets expiring, a lease running out) sleep for a few hundred milliseconds of real time,
bounded, and read the server's own answer for how long to wait.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastapi_breaker._redis_script import (
    SCRIPT,
    SCRIPT_SHA,
    FleetMessage,
    FleetReply,
    channel_for,
    keys_for,
    parse_message,
    parse_reply,
    script_args,
)
from tests.redis_server import RedisServer, find_redis_server

NAMESPACE = "user-service"
CHANNEL = channel_for(NAMESPACE)
KEYS = keys_for(NAMESPACE, "AuthService")
SETTINGS: dict[str, Any] = {
    "window_ms": 10_000,
    "buckets": 10,
    "threshold_pct": 50.0,
    "volume_threshold": 10,
    "reset_ms": 5_000,
    "lease_ms": 5_000,
    "max_trials": 1,
}
CLOSED = FleetReply("closed", 0, 0, 0, holder=False, repaired=False)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url, retry=None, socket_timeout=2) as connected:
        assert connected.script_load(SCRIPT) == SCRIPT_SHA
        yield connected


def arguments(**change: Any) -> dict[str, Any]:
    """script_args' keywords: a read by p1 of AuthService with SETTINGS, but for `change`."""
    return {
        "process_id": "p1", "successes": 0, "failures": 0, "rejections": 0, "want_trial": False,
        "trial_outcome": "", "channel": CHANNEL, "name": "AuthService", **SETTINGS, **change,
    }  # fmt: skip


def call(
    client: redis.Redis,
    *,
    pid: str = "p1",
    ok: int = 0,
    failed: int = 0,
    refused: int = 0,
    want: bool = False,
    outcome: str = "",
    keys: tuple[str, str] = KEYS,
    **change: Any,
) -> FleetReply:
    args = script_args(
        **arguments(
            process_id=pid,
            successes=ok,
            failures=failed,
            rejections=refused,
            want_trial=want,
            trial_outcome=outcome,
            **change,
        )
    )
    reply = parse_reply(client.evalsha(SCRIPT_SHA, 2, *keys, *args))
    assert reply is not None
    return reply


def open_fleet(client: redis.Redis, **overrides: Any) -> FleetReply:
    reply = call(client, failed=1, volume_threshold=0, **overrides)
    assert reply.state == "open"
    return reply


def state(client: redis.Redis) -> dict[bytes, bytes]:
    return client.hgetall(KEYS[1])  # type: ignore[return-value]


def buckets(client: redis.Redis, count: int = 10) -> list[tuple[int, int, int, int]]:
    """The window's buckets that were ever written: (epoch, successes, failures, rejections)."""
    window = client.get(KEYS[0])
    assert isinstance(window, bytes)
    assert len(window) == 20 * count
    return [bucket for bucket in struct.iter_unpack("<qIII", window) if bucket[0]]


# --- The open decision --------------------------------------------------------------------


def test_a_first_read_of_an_empty_fleet_is_closed_and_writes_nothing(
    client: redis.Redis,
) -> None:
    assert call(client) == CLOSED
    assert client.keys("*") == []


def test_the_fleet_opens_only_once_the_volume_threshold_is_reached(client: redis.Redis) -> None:
    assert call(client, ok=4, failed=5) == CLOSED  # 9 calls, 56 % failed: below the volume
    assert call(client, failed=1) == FleetReply("open", 5_000, 1, 0, holder=False, repaired=False)
    assert state(client) == {
        b"state": b"open",
        b"opened_until": state(client)[b"opened_until"],
        b"holder": b"",
        b"lease_until": b"0",
        b"generation": b"1",
        b"trials": b"0",
    }


def test_the_fleet_opens_only_past_the_threshold_percentage(client: redis.Redis) -> None:
    assert call(client, ok=5, failed=5) == CLOSED  # exactly 50 %: not past 50
    assert call(client, failed=1).state == "open"  # 6 of 11


def test_no_calls_never_open_even_with_no_volume_threshold(client: redis.Redis) -> None:
    assert call(client, volume_threshold=0, threshold_pct=0.0) == CLOSED
    assert call(client, ok=1, volume_threshold=0, threshold_pct=0.0) == CLOSED  # 0 % is not > 0
    assert call(client, failed=1, volume_threshold=0, threshold_pct=0.0).state == "open"


def test_rejections_are_kept_in_the_window_but_never_decide(client: redis.Redis) -> None:
    assert call(client, ok=2, failed=1, refused=1_000, volume_threshold=0) == CLOSED
    ((epoch, *counts),) = buckets(client)
    assert counts == [2, 1, 1_000]
    seconds, micros = client.time()
    assert epoch == (seconds * 1000 + micros // 1000) // 1000  # 1 s buckets, by the server


def test_a_count_saturates_at_the_largest_a_bucket_holds(client: redis.Redis) -> None:
    call(client, ok=2**32 + 5, failed=2**32 - 2, volume_threshold=2**40)
    call(client, failed=7, volume_threshold=2**40)
    assert [counts for _, *counts in buckets(client)] == [[2**32 - 1, 2**32 - 1, 0]]


def test_a_process_counts_into_the_same_window_as_the_others(client: redis.Redis) -> None:
    for pid in ("p1", "p2", "p3"):
        assert call(client, pid=pid, failed=3) == CLOSED
    assert call(client, pid="p4", failed=1).state == "open"  # 10 calls fleet-wide


# --- Time: the server's clock -------------------------------------------------------------


def test_counts_add_up_across_the_buckets_of_the_window(client: redis.Redis) -> None:
    window = {"window_ms": 400, "buckets": 4, "volume_threshold": 4}
    assert call(client, failed=2, **window) == CLOSED
    time.sleep(0.12)  # into a later bucket, still well inside the 300 ms every bucket lives
    assert call(client, failed=1, **window) == CLOSED
    assert [counts for _, *counts in sorted(buckets(client, 4))] == [[0, 2, 0], [0, 1, 0]]
    assert call(client, failed=1, **window).state == "open"


def test_buckets_older_than_the_window_stop_counting(client: redis.Redis) -> None:
    window = {"window_ms": 400, "buckets": 4, "volume_threshold": 4}
    assert call(client, failed=3, **window) == CLOSED
    # A bucket counts for at most the window (400 ms) after a call lands in it, and the key
    # expires a window and a bucket (500 ms) after its last write.
    assert 400 < client.pttl(KEYS[0]) <= 500
    time.sleep(0.42)
    assert call(client, failed=1, **window) == CLOSED  # 1 call in the window, not 4


# --- The trial's lease --------------------------------------------------------------------


def test_no_trial_before_the_reset_is_due(client: redis.Redis) -> None:
    open_fleet(client)
    reply = call(client, want=True)
    assert (reply.state, reply.generation, reply.trials, reply.holder) == ("open", 1, 0, False)
    assert 0 < reply.remaining_ms <= 5_000


def test_exactly_one_of_20_concurrent_callers_gets_the_trial(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url, retry=None) as setup:
        setup.script_load(SCRIPT)
        open_fleet(setup, reset_ms=0)
    clients = [redis.Redis.from_url(redis_url, retry=None, socket_timeout=5) for _ in range(20)]
    for each in clients:
        each.ping()  # connected before the race, so the race is the script's
    start = threading.Barrier(20)
    replies: list[FleetReply] = []

    def compete(number: int) -> None:
        start.wait(timeout=5)
        replies.append(call(clients[number], pid=f"p{number}", want=True, max_trials=3))

    threads = [threading.Thread(target=compete, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    for each in clients:
        each.close()
    winners = [reply for reply in replies if reply.holder]
    assert len(replies) == 20
    assert [(r.state, r.generation, r.trials) for r in winners] == [("half_open", 2, 3)]
    assert sorted((r.state, r.generation, r.trials, r.holder) for r in replies) == [
        *[("half_open", 2, 0, False)] * 19,
        ("half_open", 2, 3, True),
    ]


def test_a_lease_passes_to_another_process_only_once_it_ran_out(client: redis.Redis) -> None:
    open_fleet(client, reset_ms=0)
    first = call(client, pid="p1", want=True, lease_ms=300)
    assert (first.state, first.remaining_ms, first.trials, first.holder) == (
        "half_open",
        300,
        1,
        True,
    )
    early = call(client, pid="p2", want=True, lease_ms=300)
    assert (early.generation, early.trials, early.holder) == (2, 0, False)
    assert 0 < early.remaining_ms <= 300
    time.sleep(early.remaining_ms / 1000 + 0.02)  # the server said how long; plus a margin
    late = call(client, pid="p2", want=True, lease_ms=300)
    assert (late.state, late.generation, late.trials, late.holder) == ("half_open", 3, 1, True)
    # The first holder's late report no longer counts.
    stale = call(client, pid="p1", outcome="ok")
    assert (stale.state, stale.generation, stale.holder) == ("half_open", 3, False)


def test_the_holder_s_success_closes_the_fleet_and_clears_its_window(client: redis.Redis) -> None:
    open_fleet(client, reset_ms=0)
    assert call(client, want=True).holder
    assert call(client, ok=1, outcome="ok") == FleetReply("closed", 0, 3, 0, False, False)
    assert client.exists(KEYS[0]) == 0
    assert state(client)[b"state"] == b"closed"


def test_the_holder_s_failure_opens_the_fleet_for_a_new_reset_period(client: redis.Redis) -> None:
    open_fleet(client, reset_ms=0)
    assert call(client, want=True, max_trials=2).trials == 2
    assert call(client, failed=1, outcome="fail") == FleetReply("open", 5_000, 3, 0, False, False)


def test_an_outcome_from_a_process_that_holds_no_lease_is_ignored(client: redis.Redis) -> None:
    open_fleet(client, reset_ms=0)
    assert call(client, pid="p1", want=True).holder
    before = state(client)
    for outcome in ("ok", "fail"):
        reply = call(client, pid="p2", outcome=outcome)
        assert (reply.state, reply.generation, reply.holder) == ("half_open", 2, False)
    assert state(client) == before
    assert call(client, pid="p1").holder  # still p1's


# --- Propagation ---------------------------------------------------------------------------


def test_each_transition_is_published_once_with_its_state_generation_and_name(
    client: redis.Redis,
) -> None:
    with client.pubsub() as subscriber:
        subscriber.subscribe(CHANNEL)
        assert subscriber.get_message(timeout=1)["type"] == "subscribe"  # type: ignore[index]
        name = "Auth:{é}\udc80"
        open_fleet(client, reset_ms=0, name=name)
        call(client, name=name)  # a read publishes nothing
        call(client, want=True, name=name)
        call(client, outcome="ok", name=name)
        received = []
        for _ in range(4):
            message = subscriber.get_message(timeout=0.5)
            if message is not None:
                received.append(message["data"])
    assert [parse_message(data) for data in received] == [
        FleetMessage("open", 1, name),
        FleetMessage("half_open", 2, name),
        FleetMessage("closed", 3, name),
    ]
    assert received[0] == b"open:1:Auth:{\xc3\xa9}\xed\xb2\x80"


def test_a_read_writes_nothing(client: redis.Redis) -> None:
    call(client, failed=3)
    window, ttl = client.get(KEYS[0]), client.pttl(KEYS[0])
    time.sleep(0.01)  # so that a refreshed expiry would show
    assert call(client) == CLOSED
    assert (client.get(KEYS[0]), client.exists(KEYS[1])) == (window, 0)
    assert client.pttl(KEYS[0]) < ttl


# --- Garbage in the keys --------------------------------------------------------------------

GARBAGE_STATES = [
    {"state": "open"},  # fields missing
    {"state": "bogus", "opened_until": 0, "holder": "", "lease_until": 0, "generation": 0,
     "trials": 0},
    {"state": "open", "opened_until": "soon", "holder": "", "lease_until": 0, "generation": 1,
     "trials": 0},
    {"state": "open", "opened_until": 0, "holder": "", "lease_until": 0, "generation": -1,
     "trials": 0},
    {"state": "open", "opened_until": 1.5, "holder": "", "lease_until": 0, "generation": 1,
     "trials": 0},
    {"state": "open", "opened_until": "nan", "holder": "", "lease_until": 0, "generation": 1,
     "trials": 0},
    {"state": "open", "opened_until": "1e400", "holder": "", "lease_until": 0, "generation": 1,
     "trials": 0},
]  # fmt: skip


@pytest.mark.parametrize("garbage", GARBAGE_STATES)
def test_a_garbled_state_is_deleted_and_reported_as_repaired(
    client: redis.Redis, garbage: dict[str, Any]
) -> None:
    client.hset(KEYS[1], mapping=garbage)
    assert call(client) == FleetReply("closed", 0, 0, 0, holder=False, repaired=True)
    assert client.exists(KEYS[1]) == 0
    assert call(client) == CLOSED


@pytest.mark.parametrize(
    ("key", "kind"),
    [(KEYS[0], kind) for kind in ("hash", "list", "set", "zset")]
    + [(KEYS[1], kind) for kind in ("string", "list", "set", "zset")],
)
def test_a_key_of_the_wrong_type_is_deleted_and_reported_as_repaired(
    client: redis.Redis, key: str, kind: str
) -> None:
    {
        "string": lambda: client.set(key, "garbage"),
        "hash": lambda: client.hset(key, "f0", "1"),
        "list": lambda: client.rpush(key, "x"),
        "set": lambda: client.sadd(key, "x"),
        "zset": lambda: client.zadd(key, {"x": 1}),
    }[kind]()
    reply = call(client, failed=1, volume_threshold=0)
    assert (reply.state, reply.generation, reply.repaired) == ("open", 1, True)
    assert (client.type(KEYS[0]), client.type(KEYS[1])) == (b"string", b"hash")


@pytest.mark.parametrize("length", [0, 1, 199, 201, 400])
def test_a_window_of_another_length_is_reset_and_the_new_counts_still_land(
    client: redis.Redis, length: int
) -> None:
    client.set(KEYS[0], b"\x01" * length)
    assert call(client, failed=1) == FleetReply("closed", 0, 0, 0, holder=False, repaired=True)
    assert [counts for _, *counts in buckets(client)] == [[0, 1, 0]]


def test_any_bytes_of_the_right_length_decode_and_a_bucket_outside_the_window_is_ignored(
    client: redis.Redis,
) -> None:
    client.set(KEYS[0], bytes(range(200)))  # epochs that are no recent bucket's
    assert call(client, failed=9) == CLOSED  # the 9 alone: below the volume threshold
    assert call(client, failed=1).state == "open"


def test_a_recent_bucket_in_the_wrong_place_is_ignored(client: redis.Redis) -> None:
    seconds, micros = client.time()
    epoch = (seconds * 1000 + micros // 1000) // 1000
    misplaced = next(e for e in (epoch - 1, epoch - 2) if e % 10 != 0)  # stored at index 0
    client.set(KEYS[0], struct.pack("<qIII", misplaced, 0, 100, 0) + bytes(180))
    assert call(client, failed=1) == CLOSED  # 1 call counted, not 101


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fields=st.dictionaries(
        st.sampled_from(
            ["state", "opened_until", "holder", "lease_until", "generation", "trials", "junk"]
        ),
        st.one_of(
            st.sampled_from(["closed", "open", "half_open", "p1", "", "-0", "0x10", " 7 "]),
            st.integers(-(2**64), 2**64),
            st.floats(allow_nan=True),
            st.binary(max_size=8),
        ),
    ),
    where=st.sampled_from(KEYS),
    window=st.one_of(st.none(), st.binary(max_size=30), st.binary(min_size=200, max_size=200)),
    want=st.booleans(),
    outcome=st.sampled_from(["", "ok", "fail"]),
)
def test_any_value_in_either_key_never_makes_the_script_raise(
    client: redis.Redis,
    fields: dict[str, Any],
    where: str,
    window: bytes | None,
    want: bool,
    outcome: str,
) -> None:
    client.delete(*KEYS)
    if window is not None:
        client.set(KEYS[0], window)
    if fields:
        client.delete(where)
        client.hset(where, mapping=fields)
    reply = call(client, failed=1, want=want, outcome=outcome)
    assert reply.state in ("closed", "open", "half_open")
    # And what it leaves behind is well formed: a second call finds nothing to repair.
    assert not call(client).repaired


# --- NOSCRIPT after a restart ------------------------------------------------------------------


def test_after_script_flush_evalsha_fails_and_the_caller_loads_and_runs_again(
    client: redis.Redis,
) -> None:
    client.script_flush()
    args = script_args(**arguments(successes=1))
    with pytest.raises(redis.exceptions.NoScriptError):
        client.evalsha(SCRIPT_SHA, 2, *KEYS, *args)
    assert client.script_load(SCRIPT) == SCRIPT_SHA
    assert parse_reply(client.evalsha(SCRIPT_SHA, 2, *KEYS, *args)) == CLOSED


async def test_a_pipeline_returns_noscript_per_call_without_raising(redis_url: str) -> None:
    args = script_args(**arguments(failures=1))
    client = aioredis.Redis.from_url(redis_url, retry=None, socket_timeout=2)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.evalsha(SCRIPT_SHA, 2, *KEYS, *args)
        pipe.evalsha(SCRIPT_SHA, 2, *keys_for(NAMESPACE, "Other"), *args)
        replies = await pipe.execute(raise_on_error=False)
        assert [type(reply) for reply in replies] == [redis.exceptions.NoScriptError] * 2
        assert await client.exists(*KEYS) == 0  # nothing was counted
        assert await client.script_load(SCRIPT) == SCRIPT_SHA
        pipe = client.pipeline(transaction=False)
        pipe.evalsha(SCRIPT_SHA, 2, *KEYS, *args)
        pipe.evalsha(SCRIPT_SHA, 2, *keys_for(NAMESPACE, "Other"), *args)
        assert [parse_reply(raw) for raw in await pipe.execute()] == [CLOSED, CLOSED]
    finally:
        await client.aclose()
    await asyncio.sleep(0)


# --- Keys -----------------------------------------------------------------------------------

TRICKY_NAMES = [
    "", " ", ":", "{", "}", "{}", "}{", "a{b}c", "AuthService", "authservice", "é", "e\u0301",
    "\x00", "\ud800", "\udfff", "\ud800\udc00", "\U00010000", "名前", "a" * 150, "a" * 151,
    "é" * 75, "é" * 76, "a" * 10_000, "a" * 10_001, "b" + "A" * 20, "h" + "0" * 64,
]  # fmt: skip


def tag(key: str) -> str:
    start = key.index("{") + 1
    return key[start : key.index("}", start)]


def test_tricky_names_never_share_a_key_and_each_breaker_has_one_hash_tag() -> None:
    keys = [keys_for(NAMESPACE, name) for name in TRICKY_NAMES]
    every = [key for pair in keys for key in pair]
    assert len(set(every)) == 2 * len(TRICKY_NAMES)
    for window, state_key in keys:
        assert tag(window) == tag(state_key)
        assert window.count("{") == window.count("}") == 1
        assert window.isascii()
        assert len(window) < 250
        assert (window.removesuffix(":window"), state_key.removesuffix(":state")) == (
            window[: window.index("}") + 1],
        ) * 2
    assert len({tag(window) for window, _ in keys}) == len(TRICKY_NAMES)


@given(st.text(st.characters(codec=None, exclude_categories=()), max_size=60))
def test_a_short_name_is_its_own_key_decoded(name: str) -> None:
    part = tag(keys_for(NAMESPACE, name)[0]).split(":")[1]
    assert part.startswith("b")
    raw = base64.urlsafe_b64decode(part[1:] + "=" * (-len(part[1:]) % 4))
    assert raw.decode("utf-8", "surrogatepass") == name


def test_keys_and_channels_are_separate_per_namespace() -> None:
    assert keys_for("a", "AuthService") != keys_for("b", "AuthService")
    assert tag(keys_for("a", "x")[0]) != tag(keys_for("b", "x")[0])
    assert channel_for("a") != channel_for("b")
    assert channel_for("user-service") == "fastapi_breaker:bdXNlci1zZXJ2aWNl:transitions"
    assert keys_for("user-service", "AuthService") == (
        "fastapi_breaker:{bdXNlci1zZXJ2aWNl:bQXV0aFNlcnZpY2U}:window",
        "fastapi_breaker:{bdXNlci1zZXJ2aWNl:bQXV0aFNlcnZpY2U}:state",
    )


@pytest.mark.parametrize("namespace", ["", None, 5, b"user-service"])
def test_a_namespace_must_be_a_non_empty_string(namespace: Any) -> None:
    with pytest.raises(
        ValueError, match=rf"^namespace must be a non-empty string, got {namespace!r}$"
    ):
        keys_for(namespace, "AuthService")
    with pytest.raises(ValueError, match=r"^namespace must be a non-empty string"):
        channel_for(namespace)


def test_a_name_must_be_a_string() -> None:
    with pytest.raises(TypeError, match=r"^a breaker name must be a string, got b'x'$"):
        keys_for(NAMESPACE, b"x")  # type: ignore[arg-type]


def test_redis_cluster_puts_both_keys_of_a_breaker_in_one_slot(tmp_path: Path) -> None:
    executable = find_redis_server()
    assert executable is not None
    cluster = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
    with RedisServer(executable, extra_args=cluster) as server, server.client() as cluster_client:
        slots = set()
        for name in TRICKY_NAMES:
            window, state_key = keys_for(NAMESPACE, name)
            slot = cluster_client.cluster("KEYSLOT", window)
            assert cluster_client.cluster("KEYSLOT", state_key) == slot
            assert cluster_client.cluster("KEYSLOT", tag(window)) == slot
            slots.add(slot)
    assert len(slots) > len(TRICKY_NAMES) // 2  # breakers spread over the slots


# --- Arguments and replies -----------------------------------------------------------------


def test_script_args_are_in_the_script_s_order_and_text_is_bytes() -> None:
    args = script_args(
        process_id="p\udc80", successes=1, failures=2, rejections=3, want_trial=True,
        trial_outcome="ok", window_ms=10_000, buckets=10, threshold_pct=50, volume_threshold=10,
        reset_ms=30_000, lease_ms=11_000, max_trials=2, channel="ch", name="Auth",
    )  # fmt: skip
    assert args == [
        b"p\xed\xb2\x80", 1, 2, 3, 1, b"ok", 10_000, 10, 50.0, 10, 30_000, 11_000, 2, b"ch",
        b"Auth", 0,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"process_id": ""}, "process_id must be a non-empty string, got ''"),
        ({"successes": -1}, "successes must be an integer in 0..9007199254740991, got -1"),
        ({"failures": True}, "failures must be an integer in 0..9007199254740991, got True"),
        ({"trial_outcome": "maybe"}, "trial_outcome must be '', 'ok' or 'fail', got 'maybe'"),
        ({"threshold_pct": 101}, "threshold_pct must be a number in 0..100, got 101"),
        ({"threshold_pct": float("nan")}, "threshold_pct must be a number in 0..100, got nan"),
        ({"buckets": 1001}, "buckets must be an integer in 0..1000, got 1001"),
        ({"buckets": 0}, r"window_ms \(10000\) must be at least buckets \(0\) >= 1"),
        ({"window_ms": 9}, r"window_ms \(9\) must be at least buckets \(10\) >= 1"),
        ({"lease_ms": 0}, "lease_ms and max_trials must be >= 1, got 0, 1"),
    ],
)
def test_script_args_refuse_what_the_script_cannot_use(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        script_args(**arguments(**change))


@pytest.mark.parametrize(
    "raw",
    [
        None, b"open", [], [b"open", 1, 2, 3, 0], [b"open", 1, 2, 3, 0, 0, 0],
        [b"opened", 1, 2, 3, 0, 0], [b"open", -1, 2, 3, 0, 0], [b"open", 1, 2, 3, 2, 0],
        [b"open", 1, 2, 3, 0, 2], [b"open", True, 2, 3, 0, 0], [b"open", "1", 2, 3, 0, 0],
        [b"\xff", 1, 2, 3, 0, 0], [1, 1, 2, 3, 0, 0], [b"open", 1.0, 2, 3, 0, 0],
    ],
)  # fmt: skip
def test_a_malformed_reply_parses_as_none(raw: object) -> None:
    assert parse_reply(raw) is None


def test_a_reply_parses_from_bytes_or_text() -> None:
    expected = FleetReply("half_open", 250, 7, 2, holder=True, repaired=False)
    assert parse_reply([b"half_open", 250, 7, 2, 1, 0]) == expected
    assert parse_reply(("half_open", 250, 7, 2, 1, 0)) == expected


@pytest.mark.parametrize(
    "data", [None, 5, b"", b"open", b"open:1", b"opened:1:x", b"open:-1:x", b"open:\xd9\xa1:x",
             b"open:1:\xff", "open: 1:x"],
)  # fmt: skip
def test_a_malformed_message_parses_as_none(data: object) -> None:
    assert parse_message(data) is None


def test_a_message_keeps_colons_in_the_name() -> None:
    assert parse_message(b"closed:12:a:b:") == FleetMessage("closed", 12, "a:b:")


def test_a_flush_sent_again_with_its_number_is_counted_once(redis_url: str) -> None:
    """A flush whose answer was lost is sent again as it was: the fleet takes it once."""
    from fastapi_breaker._redis_script import sequence_key_for

    client = redis.Redis.from_url(redis_url)
    client.script_load(SCRIPT)

    def flush(pid: str, **change: Any) -> None:
        keys = (*KEYS, sequence_key_for(NAMESPACE, "AuthService", pid))
        client.evalsha(SCRIPT_SHA, 3, *keys, *script_args(**arguments(process_id=pid, **change)))

    def window() -> tuple[int, int]:
        raw = client.get(KEYS[0]) or b""
        buckets = [struct.unpack_from("<qIII", raw, at) for at in range(0, len(raw), 20)]
        return sum(b[1] for b in buckets), sum(b[2] for b in buckets)

    for _ in range(3):  # the same flush three times: its answer was lost twice
        flush("p1", successes=3, failures=1, sequence=1)
    flush("p1", successes=2, sequence=2)
    assert window() == (5, 1)
    flush("p1", successes=7, sequence=1)  # an old number, late: nothing
    assert window() == (5, 1)
    flush("p2", successes=4, sequence=1)  # another process's numbers are its own
    assert window() == (9, 1)
    client.close()
