"""Stats over the rolling window: exact counts, percentages, latencies, and bucket rotation."""

import asyncio
import dataclasses
import json
from typing import Any

import pytest

from fastapi_breaker import (
    PERCENTILES,
    CapacityExceededError,
    CircuitBreaker,
    CircuitOpenError,
    Stats,
)
from fastapi_breaker.testing import FakeClock

EMPTY_PERCENTILES = dict.fromkeys(PERCENTILES, 0.0)


async def ok() -> str:
    return "ok"


async def boom() -> None:
    raise RuntimeError("down")


def never_opening(clock: FakeClock, **options: Any) -> CircuitBreaker:
    # "Strictly above 100%" cannot happen, so failures pile up without opening the circuit.
    return CircuitBreaker(clock=clock, error_threshold_percentage=100, **options)


def move_to(clock: FakeClock, t: float) -> None:
    # Set the time exactly: summing advance() steps would drift by float rounding at the edges.
    assert t >= clock.now, "a monotonic clock cannot go back"
    clock.now = t


async def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(RuntimeError):
            await breaker.call(boom)


def test_new_breaker_has_empty_stats() -> None:
    stats = CircuitBreaker(clock=FakeClock()).stats
    assert stats == Stats(
        fires=0,
        successes=0,
        failures=0,
        rejects=0,
        timeouts=0,
        fallbacks=0,
        semaphore_rejections=0,
        error_percentage=0.0,
        latency_mean=0.0,
        percentiles=EMPTY_PERCENTILES,
    )


def test_percentile_keys_are_the_public_constant() -> None:
    assert PERCENTILES == (0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 1.0)


async def test_counts_of_successes_failures_filtered_and_rejects() -> None:
    breaker = never_opening(FakeClock(), error_filter=lambda exc: isinstance(exc, KeyError))
    for _ in range(3):
        await breaker.call(ok)
    await fail(breaker, 2)

    async def excused() -> None:
        raise KeyError("not the service's fault")

    with pytest.raises(KeyError):
        await breaker.call(excused)
    breaker.force_open()
    for _ in range(4):
        with pytest.raises(CircuitOpenError):
            await breaker.call(ok)

    stats = breaker.stats
    assert (stats.successes, stats.failures, stats.rejects) == (4, 2, 4)
    assert stats.fires == 10
    assert (stats.timeouts, stats.fallbacks, stats.semaphore_rejections) == (0, 0, 0)


async def test_fallbacks_are_counted_for_failures_and_rejections() -> None:
    breaker = CircuitBreaker(clock=FakeClock(), volume_threshold=0).fallback(lambda exc: "fallback")
    assert await breaker.call(boom) == "fallback"  # opens the circuit
    assert await breaker.call(ok) == "fallback"  # rejected
    stats = breaker.stats
    assert (stats.fires, stats.failures, stats.rejects, stats.fallbacks) == (2, 1, 1, 2)


async def test_timeouts_count_as_timeouts_and_failures() -> None:
    breaker = never_opening(FakeClock(), timeout=0.01)

    async def hang() -> None:
        await asyncio.Event().wait()

    for _ in range(2):
        with pytest.raises(TimeoutError):
            await breaker.call(hang)
    await breaker.call(ok)
    stats = breaker.stats
    assert (stats.fires, stats.successes, stats.failures, stats.timeouts) == (3, 1, 2, 2)


async def test_semaphore_rejections_are_counted_but_not_failures() -> None:
    breaker = CircuitBreaker(clock=FakeClock(), capacity=1)
    started, release = asyncio.Event(), asyncio.Event()

    async def busy() -> None:
        started.set()
        await release.wait()

    first = asyncio.create_task(breaker.call(busy))
    for _ in range(20):
        if started.is_set():
            break
        await asyncio.sleep(0)
    for _ in range(3):
        with pytest.raises(CapacityExceededError):
            await breaker.call(ok)
    # The running call has not ended, so it is not a fire yet.
    assert breaker.stats.fires == 3
    release.set()
    await first

    stats = breaker.stats
    assert (stats.fires, stats.successes, stats.failures, stats.semaphore_rejections) == (
        4,
        1,
        0,
        3,
    )
    assert stats.error_percentage == 0.0


async def test_a_cancelled_call_is_a_fire_but_neither_success_nor_failure() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(breaker.call(hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = breaker.stats
    assert (stats.fires, stats.successes, stats.failures) == (1, 0, 0)


async def test_error_percentage_ignores_rejections() -> None:
    breaker = never_opening(FakeClock())
    for _ in range(3):
        await breaker.call(ok)
    await fail(breaker)
    assert breaker.stats.error_percentage == 25.0

    breaker.force_open()
    for _ in range(5):
        with pytest.raises(CircuitOpenError):
            await breaker.call(ok)
    assert breaker.stats.error_percentage == 25.0


async def test_error_percentage_of_all_failures() -> None:
    breaker = never_opening(FakeClock())
    await fail(breaker, 3)
    assert breaker.stats.error_percentage == 100.0


# ------------------------------------------------------------------ latencies


async def run_with_latencies(
    breaker: CircuitBreaker, clock: FakeClock, latencies: list[float]
) -> None:
    """One call per latency, each advancing the fake clock by it; odd positions fail."""

    async def take(seconds: float, fails: bool) -> None:
        clock.advance(seconds)
        if fails:
            raise RuntimeError("down")

    for i, seconds in enumerate(latencies):
        if i % 2:
            with pytest.raises(RuntimeError):
                await breaker.call(take, seconds, True)
        else:
            await breaker.call(take, seconds, False)


async def test_latencies_one_to_ten_seconds() -> None:
    clock = FakeClock()
    # A 100 s window keeps all 55 s of calls inside it.
    breaker = never_opening(clock, rolling_count_timeout=100.0)
    # Out of order and mixing successes with failures: both count, sorted by the breaker.
    await run_with_latencies(breaker, clock, [7.0, 3.0, 10.0, 1.0, 5.0, 9.0, 2.0, 8.0, 4.0, 6.0])

    stats = breaker.stats
    assert (stats.successes, stats.failures) == (5, 5)
    assert stats.latency_mean == 5.5
    # Opossum's rule by hand, n = 10: p=0 is the minimum, else sorted[ceil(p*10) - 1]; each
    # read as the middle of its bin, (lower bound, upper bound], four bins per power of two.
    assert stats.percentiles == {
        0.0: 0.9375,  # min 1.0, in (0.875, 1]
        0.25: 2.75,  # ceil(2.5) = 3 -> sorted[2] = 3.0, in (2.5, 3]
        0.5: 4.5,  # ceil(5.0) = 5 -> sorted[4] = 5.0, in (4, 5]
        0.75: 7.5,  # ceil(7.5) = 8 -> sorted[7] = 8.0, in (7, 8]
        0.9: 9.0,  # ceil(9.0) = 9 -> sorted[8] = 9.0, in (8, 10]
        0.95: 9.0,  # ceil(9.5) = 10 -> sorted[9] = 10.0, in (8, 10]
        0.99: 9.0,
        0.995: 9.0,
        1.0: 9.0,
    }


async def test_latencies_of_three_calls() -> None:
    clock = FakeClock()
    breaker = never_opening(clock, rolling_count_timeout=100.0)
    await run_with_latencies(breaker, clock, [4.0, 0.5, 2.0])

    stats = breaker.stats
    assert stats.latency_mean == pytest.approx(6.5 / 3)
    # n = 3, sorted [0.5, 2.0, 4.0], in (0.4375, 0.5], (1.75, 2] and (3.5, 4].
    assert stats.percentiles == {
        0.0: 0.46875,
        0.25: 0.46875,  # ceil(0.75) = 1 -> sorted[0]
        0.5: 1.875,  # ceil(1.5) = 2 -> sorted[1]
        0.75: 3.75,  # ceil(2.25) = 3 -> sorted[2]
        0.9: 3.75,
        0.95: 3.75,
        0.99: 3.75,
        0.995: 3.75,
        1.0: 3.75,
    }


async def test_latency_is_zero_when_the_fake_clock_does_not_move() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    await breaker.call(ok)
    stats = breaker.stats
    assert stats.latency_mean == 0.0
    assert stats.percentiles == EMPTY_PERCENTILES


async def test_rejections_have_no_latency() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock)
    await run_with_latencies(breaker, clock, [3.0])
    breaker.force_open()
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    assert breaker.stats.latency_mean == 3.0
    assert set(breaker.stats.percentiles.values()) == {2.75}  # 3.0 is in (2.5, 3]


# ------------------------------------------------------------------ the frozen view


def test_stats_is_frozen() -> None:
    stats = CircuitBreaker(clock=FakeClock()).stats
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.fires = 3  # type: ignore[misc]


async def test_stats_is_a_snapshot_not_a_live_view() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    before = breaker.stats
    await breaker.call(ok)
    assert before.fires == 0
    assert breaker.stats.fires == 1


async def test_to_dict_is_json_serialisable() -> None:
    clock = FakeClock()
    breaker = never_opening(clock, rolling_count_timeout=100.0)
    await run_with_latencies(breaker, clock, [1.0, 2.0])
    data = breaker.stats.to_dict()
    decoded = json.loads(json.dumps(data))
    assert decoded["fires"] == 2
    assert decoded["failures"] == 1
    assert decoded["error_percentage"] == 50.0
    assert decoded["latency_mean"] == 1.5
    assert decoded["percentiles"] == {str(p): v for p, v in breaker.stats.percentiles.items()}
    assert decoded["percentiles"]["0.5"] == 0.9375  # 1.0, in (0.875, 1]


# ------------------------------------------------------------------ rotation


async def test_a_sample_drops_out_when_its_bucket_leaves_the_window() -> None:
    clock = FakeClock()
    # A 10 s window of ten 1 s buckets.
    breaker = never_opening(clock, rolling_count_timeout=10.0, rolling_count_buckets=10)
    await fail(breaker)  # at t=0, in the bucket [0, 1)
    for _ in range(9):
        clock.advance(1.0)
        assert breaker.stats.failures == 1, clock.now
    clock.advance(0.9)  # t = 9.9: bucket [0, 1) is still the oldest of ten
    assert breaker.stats.failures == 1
    clock.advance(0.1)  # t = 10.0: the window is [1, 11)
    assert clock.now == 10.0
    assert breaker.stats.failures == 0
    assert breaker.stats.fires == 0


async def test_samples_drop_out_bucket_by_bucket() -> None:
    clock = FakeClock()
    breaker = never_opening(clock, rolling_count_timeout=10.0, rolling_count_buckets=10)
    # One success at t = 0, 1, 2, 3 and 4, then a failure at t = 4.5 (same bucket as t = 4).
    for t in range(5):
        move_to(clock, float(t))
        await breaker.call(ok)
    move_to(clock, 4.5)
    await fail(breaker)

    move_to(clock, 9.99)
    assert (breaker.stats.successes, breaker.stats.failures) == (5, 1)
    expected = [(4, 1), (3, 1), (2, 1), (1, 1), (0, 0)]  # at t = 10, 11, 12, 13, 14
    for t, counts in zip(range(10, 15), expected, strict=True):
        move_to(clock, float(t))
        assert (breaker.stats.successes, breaker.stats.failures) == counts, t


async def test_an_idle_breaker_wakes_to_an_empty_window() -> None:
    clock = FakeClock()
    breaker = never_opening(clock)
    await breaker.call(ok)
    await fail(breaker, 2)
    clock.advance(3600.0)

    stats = breaker.stats
    assert (stats.fires, stats.successes, stats.failures) == (0, 0, 0)
    assert stats.percentiles == EMPTY_PERCENTILES

    await breaker.call(ok)
    stats = breaker.stats
    assert (stats.fires, stats.successes, stats.failures) == (1, 1, 0)


async def test_close_clears_the_window() -> None:
    breaker = never_opening(FakeClock())
    await breaker.call(ok)
    await fail(breaker)
    breaker.open()
    breaker.close()
    assert breaker.stats.fires == 0


def test_to_dict_has_every_field_of_stats() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    stats = breaker.stats
    assert list(stats.to_dict()) == [f.name for f in dataclasses.fields(stats)]
