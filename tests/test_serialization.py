"""to_dict() / from_dict(): a breaker's picture is JSON, and rebuilds an equivalent breaker."""

import json
import math
import re
import tracemalloc
from typing import Any

import pytest

from fastapi_breaker import CircuitBreaker, CircuitOpenError, State
from fastapi_breaker.testing import FakeClock


async def ok() -> str:
    return "ok"


async def boom() -> None:
    raise RuntimeError("down")


def through_json(data: dict[str, Any]) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(json.dumps(data))
    return decoded


async def test_to_dict_is_json_serialisable() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, name="payments", timeout=None)
    await breaker.call(ok)
    data = breaker.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["name"] == "payments"
    assert data["state"] == "closed"
    assert data["retry_after"] is None
    assert data["options"]["timeout"] is None
    assert "error_filter" not in data["options"]  # code, not data


def test_name_and_options_are_restored() -> None:
    breaker = CircuitBreaker(
        clock=FakeClock(),
        name="payments",
        timeout=2.5,
        reset_timeout=12.0,
        error_threshold_percentage=25.0,
        rolling_count_timeout=20.0,
        rolling_count_buckets=4,
        volume_threshold=3,
        allow_warm_up=True,
        capacity=7,
        half_open_max_calls=2,
        half_open_timeout=1.5,
    )
    restored = CircuitBreaker.from_dict(through_json(breaker.to_dict()), clock=FakeClock())
    assert restored.name == "payments"
    assert restored.options == breaker.options


def test_error_filter_and_action_are_passed_again() -> None:
    def excuse(exc: BaseException) -> bool:
        return isinstance(exc, KeyError)

    breaker = CircuitBreaker(ok, clock=FakeClock(), error_filter=excuse)
    restored = CircuitBreaker.from_dict(
        through_json(breaker.to_dict()), ok, error_filter=excuse, clock=FakeClock()
    )
    assert restored.options.error_filter is excuse
    assert restored.options == breaker.options


async def test_closed_breaker_round_trip() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    restored = CircuitBreaker.from_dict(through_json(breaker.to_dict()), clock=FakeClock())
    assert restored.state is State.CLOSED
    assert restored.retry_after is None
    assert await restored.call(ok) == "ok"


async def test_open_breaker_keeps_its_remaining_time_on_the_new_clock() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, reset_timeout=30.0)
    breaker.open()
    clock.advance(10.0)
    data = through_json(breaker.to_dict())
    assert data["state"] == "open"
    assert data["retry_after"] == 20.0

    # Another process, whose monotonic clock reads something unrelated.
    new_clock = FakeClock(start=5000.0)
    restored = CircuitBreaker.from_dict(data, clock=new_clock)
    assert restored.state is State.OPEN
    assert not restored.forced_open
    assert restored.retry_after == 20.0
    with pytest.raises(CircuitOpenError) as rejected:
        await restored.call(ok)
    assert rejected.value.retry_after == 20.0

    new_clock.advance(19.5)
    assert restored.state is State.OPEN
    assert restored.retry_after == 0.5
    new_clock.advance(0.5)
    assert restored.state is State.HALF_OPEN
    assert await restored.call(ok) == "ok"
    assert restored.state is State.CLOSED


async def test_forced_open_breaker_stays_forced() -> None:
    breaker = CircuitBreaker(clock=FakeClock(), reset_timeout=30.0)
    breaker.force_open()
    new_clock = FakeClock(start=123.0)
    restored = CircuitBreaker.from_dict(through_json(breaker.to_dict()), clock=new_clock)
    assert restored.state is State.OPEN
    assert restored.forced_open
    new_clock.advance(1000.0)  # far past any reset timeout: forced open does not time out
    assert restored.state is State.OPEN
    with pytest.raises(CircuitOpenError):
        await restored.call(ok)
    restored.close()
    assert await restored.call(ok) == "ok"


async def test_half_open_breaker_round_trip() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, reset_timeout=30.0)
    breaker.open()
    clock.advance(30.0)
    data = through_json(breaker.to_dict())
    assert data["state"] == "half_open"
    assert data["retry_after"] == 0.0

    restored = CircuitBreaker.from_dict(data, clock=FakeClock(start=42.0))
    assert restored.state is State.HALF_OPEN
    assert restored.retry_after == 0.0
    # One trial, as half_open_max_calls says; its failure reopens the circuit.
    with pytest.raises(RuntimeError):
        await restored.call(boom)
    assert restored.state is State.OPEN
    assert restored.retry_after == 30.0


async def test_window_counts_are_restored() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        clock=clock,
        error_threshold_percentage=100,  # keep it closed while failures accumulate
        rolling_count_timeout=10.0,
        rolling_count_buckets=10,
    )

    async def take(seconds: float) -> None:
        clock.advance(seconds)

    # Calls spread over several buckets, with latencies to restore too.
    await breaker.call(take, 1.0)
    with pytest.raises(RuntimeError):
        await breaker.call(boom)
    await breaker.call(take, 2.0)
    with pytest.raises(RuntimeError):
        await breaker.call(boom)
    await breaker.call(take, 0.5)
    before = breaker.stats
    assert (before.successes, before.failures, before.fires) == (3, 2, 5)

    restored = CircuitBreaker.from_dict(
        through_json(breaker.to_dict()), clock=FakeClock(start=77.0)
    )
    assert restored.stats == before


def test_a_window_written_with_one_latency_per_call_is_still_read() -> None:
    data = snapshot()
    data["window"] = [
        {"age": 0, "succeeded": [0.5, 2.0], "failed": [4.0], "rejects": 1, "timeouts": 1},
        {"age": 1, "successes": 1, "latencies": {"1.0": 1}, "latency_sum": 1.0},
    ]
    restored = CircuitBreaker.from_dict(data, clock=FakeClock())
    stats = restored.stats
    assert (stats.successes, stats.failures, stats.timeouts, stats.rejects) == (3, 1, 1, 1)
    assert stats.latency_mean == 7.5 / 4
    # Read back in the form written now: the four latencies in their bins.
    assert restored.to_dict()["window"][0]["latencies"] == {"0.5": 1, "2.0": 1, "4.0": 1}
    assert restored.to_dict()["window"][1]["latencies"] == {"1.0": 1}


async def test_restored_window_still_ages_out() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, error_threshold_percentage=100)
    with pytest.raises(RuntimeError):
        await breaker.call(boom)
    new_clock = FakeClock()
    restored = CircuitBreaker.from_dict(through_json(breaker.to_dict()), clock=new_clock)
    assert restored.stats.failures == 1
    new_clock.advance(restored.options.rolling_count_timeout)
    assert restored.stats.failures == 0


async def test_disabled_flag_is_restored() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    breaker.disable()
    restored = CircuitBreaker.from_dict(through_json(breaker.to_dict()), clock=FakeClock())
    assert not restored.enabled
    # Disabled: calls pass straight through, uncounted.
    with pytest.raises(RuntimeError):
        await restored.call(boom)
    assert restored.stats.fires == 0
    assert restored.closed


def test_enabled_flag_is_restored() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    restored = CircuitBreaker.from_dict(through_json(breaker.to_dict()), clock=FakeClock())
    assert restored.enabled


async def test_round_trip_is_stable() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, name="stable", reset_timeout=30.0)
    with pytest.raises(RuntimeError):
        await breaker.call(boom)  # opens
    clock.advance(5.0)
    first = through_json(breaker.to_dict())
    second = through_json(CircuitBreaker.from_dict(first, clock=FakeClock()).to_dict())
    # The bucket layout may differ by empty buckets; what it adds up to may not.
    first.pop("window")
    second.pop("window")
    assert second == first


# ------------------------------------------------------------------ untrusted snapshots
# A snapshot may come from another process, a cache, a file: from_dict checks it as strictly
# as the options, and names the path of what is wrong.

MAX_EXACT = 2**53


def snapshot() -> dict[str, Any]:
    """An open breaker's picture, with a window of three buckets, as JSON gives it back."""
    clock = FakeClock()
    breaker = CircuitBreaker(name="payments", clock=clock, volume_threshold=3, reset_timeout=30.0)
    breaker.call_sync(lambda: None)
    clock.advance(1.0)
    breaker.call_sync(lambda: None)
    clock.advance(1.0)
    for _ in range(3):
        with pytest.raises(RuntimeError):
            breaker.call_sync(_fail)
    with pytest.raises(CircuitOpenError):
        breaker.call_sync(lambda: None)
    data = through_json(breaker.to_dict())
    assert data["state"] == "open"
    assert [b["age"] for b in data["window"]] == [0, 1, 2]
    return data


def _fail() -> None:
    raise RuntimeError("down")


def set_path(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target: Any = data
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value


BAD_SNAPSHOTS: list[tuple[tuple[Any, ...], Any, str]] = [
    # (where, the value put there, the whole error message)
    (
        ("retry_after",),
        math.nan,
        "retry_after must be None or a number of seconds >= 0 and <= 31536000 (365 days), got nan",
    ),
    (
        ("retry_after",),
        -1.0,
        "retry_after must be None or a number of seconds >= 0 and <= 31536000 (365 days), got -1.0",
    ),
    (
        ("retry_after",),
        math.inf,
        "retry_after must be None or a number of seconds >= 0 and <= 31536000 (365 days), got inf",
    ),
    (
        ("retry_after",),
        "20",
        "retry_after must be None or a number of seconds >= 0 and <= 31536000 (365 days), got '20'",
    ),
    (("state",), "opened", "state must be one of 'closed', 'open', 'half_open', got 'opened'"),
    (("state",), None, "state must be one of 'closed', 'open', 'half_open', got None"),
    (("name",), "", "name must be a non-empty string, got ''"),
    (("name",), 7, "name must be a non-empty string, got 7"),
    (("enabled",), 1, "enabled must be True or False, got 1"),
    (("shutdown",), "no", "shutdown must be True or False, got 'no'"),
    (("forced_open",), None, "forced_open must be True or False, got None"),
    (("window",), {}, "window must be a list of buckets, got {}"),
    (("window", 1), [], "window[1] must be an object of bucket counts, got []"),
    (
        ("window", 1, "age"),
        -1,
        "window[1].age must be an integer >= 0 and < 10 (rolling_count_buckets), got -1",
    ),
    (
        ("window", 1, "age"),
        10,
        "window[1].age must be an integer >= 0 and < 10 (rolling_count_buckets), got 10",
    ),
    (
        ("window", 1, "age"),
        1.0,
        "window[1].age must be an integer >= 0 and < 10 (rolling_count_buckets), got 1.0",
    ),
    (("window", 2, "age"), 0, "window[2].age must differ from every other bucket's, got 0 again"),
    (
        ("window", 0, "rejects"),
        10**9 * MAX_EXACT,
        f"window[0].rejects must be an integer >= 0 and <= {MAX_EXACT}, got {10**9 * MAX_EXACT}",
    ),
    (
        ("window", 0, "rejects"),
        -1,
        f"window[0].rejects must be an integer >= 0 and <= {MAX_EXACT}, got -1",
    ),
    (
        ("window", 0, "cancelled"),
        True,
        f"window[0].cancelled must be an integer >= 0 and <= {MAX_EXACT}, got True",
    ),
    (
        ("window", 0, "fallbacks"),
        2.5,
        f"window[0].fallbacks must be an integer >= 0 and <= {MAX_EXACT}, got 2.5",
    ),
    (
        ("window", 0, "timeouts"),
        4,
        "window[0].timeouts must be at most the bucket's failures (3), got 4",
    ),
    (("window", 0, "failed"), 3, "window[0].failed must be a list of latencies, got 3"),
    # The older form, one latency per call in "succeeded" and "failed", is still read.
    (
        ("window", 0, "failed"),
        [0.1, math.nan],
        "window[0].failed[1] must be a finite number of seconds >= 0, got nan",
    ),
    (
        ("window", 0, "failed"),
        [0.1, -0.5],
        "window[0].failed[1] must be a finite number of seconds >= 0, got -0.5",
    ),
    (
        ("window", 2, "succeeded"),
        ["0.1"],
        "window[2].succeeded[0] must be a finite number of seconds >= 0, got '0.1'",
    ),
    (
        ("window", 1, "succeeded"),
        [10**400],
        f"window[1].succeeded[0] must be a finite number of seconds >= 0, got {10**400}",
    ),
    (
        ("window", 0, "failures"),
        2.5,
        f"window[0].failures must be an integer >= 0 and <= {MAX_EXACT}, got 2.5",
    ),
    (
        ("window", 0, "latencies"),
        3,
        "window[0].latencies must be an object of counts by bin, got 3",
    ),
    (
        ("window", 0, "latencies"),
        {"0.3": 3},
        "window[0].latencies has the unknown bin '0.3'; a bin is named by its upper bound in "
        'seconds, "9.5367431640625e-07" to "1024.0", or "+Inf"',
    ),
    (
        ("window", 0, "latencies"),
        {"+Inf": 2},
        "window[0].latencies must hold one latency per success and failure (3), got 2",
    ),
    (
        ("window", 0, "latencies", "9.5367431640625e-07"),
        -1,
        f"window[0].latencies['9.5367431640625e-07'] must be an integer >= 0 and "
        f"<= {MAX_EXACT}, got -1",
    ),
    (
        ("window", 0, "latency_sum"),
        math.nan,
        "window[0].latency_sum must be a finite number of seconds >= 0, got nan",
    ),
    (
        ("options", "timeout"),
        math.nan,
        "options.timeout must be a number of seconds > 0 and "
        "<= 31536000 (365 days) or None, got nan",
    ),
    (
        ("options", "rolling_count_buckets"),
        10**9,
        "options.rolling_count_buckets must be an integer >= 1 and <= 1000, got 1000000000",
    ),
    (("options",), [], "options must be an object of option values, got []"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD_SNAPSHOTS)
def test_a_bad_snapshot_is_refused_naming_the_path(
    path: tuple[Any, ...], value: Any, message: str
) -> None:
    data = snapshot()
    set_path(data, path, value)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        CircuitBreaker.from_dict(data, clock=FakeClock())


def test_unknown_keys_are_refused_where_they_are() -> None:
    for path, key, message in [
        (
            (),
            "retry",
            "unknown key 'retry' in the snapshot; the keys are: name, state, enabled, "
            "shutdown, forced_open, retry_after, options, window, stats",
        ),
        (
            ("window", 1),
            "rejected",
            "unknown key 'rejected' in window[1]; the keys are: age, successes, failures, "
            "latencies, latency_sum, rejects, timeouts, fallbacks, semaphore_rejections, "
            "cancelled, succeeded, failed",
        ),
        (
            ("options",),
            "error_filter",
            "unknown key 'error_filter' in options; the keys are: "
            "timeout, reset_timeout, error_threshold_percentage, rolling_count_timeout, "
            "rolling_count_buckets, volume_threshold, allow_warm_up, capacity, enabled, "
            "half_open_max_calls, half_open_timeout",
        ),
    ]:
        data = snapshot()
        set_path(data, (*path, key), 1)
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            CircuitBreaker.from_dict(data, clock=FakeClock())


@pytest.mark.parametrize("key", ["name", "state", "options"])
def test_a_snapshot_without_a_required_key_is_refused(key: str) -> None:
    data = snapshot()
    del data[key]
    with pytest.raises(ValueError, match=f"^the snapshot has no {key!r}$"):
        CircuitBreaker.from_dict(data, clock=FakeClock())


def test_a_bucket_without_an_age_is_refused() -> None:
    data = snapshot()
    del data["window"][1]["age"]
    with pytest.raises(ValueError, match=r"^window\[1\] has no 'age'$"):
        CircuitBreaker.from_dict(data, clock=FakeClock())


def test_forced_open_needs_the_open_state() -> None:
    data = snapshot()
    data["state"] = "half_open"
    data["forced_open"] = True
    expected = "forced_open can be True only when state is 'open', got state 'half_open'"
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        CircuitBreaker.from_dict(data, clock=FakeClock())


@pytest.mark.parametrize("data", [None, [], "open"])
def test_a_snapshot_must_be_a_dict(data: Any) -> None:
    expected = f"a snapshot must be a dict, as to_dict() returns, got {data!r}"
    with pytest.raises(TypeError, match=f"^{re.escape(expected)}$"):
        CircuitBreaker.from_dict(data, clock=FakeClock())


def test_a_huge_reject_count_is_kept_as_a_number_not_as_memory() -> None:
    data = snapshot()
    data["window"][0]["rejects"] = MAX_EXACT
    before = tracemalloc.is_tracing()
    tracemalloc.start()
    try:
        restored = CircuitBreaker.from_dict(data, clock=FakeClock())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not before:
            tracemalloc.stop()
    assert peak < 1_000_000  # bytes: 2**53 rejections once meant 2**53 bytes
    assert restored.stats.rejects == MAX_EXACT
    assert restored.to_dict()["window"][0]["rejects"] == MAX_EXACT
    # New rejections add to the restored count.
    with pytest.raises(CircuitOpenError):
        restored.call_sync(lambda: None)
    assert restored.stats.rejects == MAX_EXACT + 1


def test_a_retry_after_of_a_year_is_accepted() -> None:
    data = snapshot()
    data["retry_after"] = 31_536_000
    restored = CircuitBreaker.from_dict(data, clock=FakeClock())
    assert restored.retry_after == 31_536_000


def test_a_valid_snapshot_still_round_trips_exactly() -> None:
    data = snapshot()
    restored = CircuitBreaker.from_dict(data, clock=FakeClock())
    again = through_json(restored.to_dict())
    assert again == data
