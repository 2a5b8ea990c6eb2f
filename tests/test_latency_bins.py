"""Latencies in fixed log-scale bins: every latency lands in the bin Prometheus's `le` puts it
in, percentiles stay within the documented bound of the exact ones, and reading the window
costs the same however many calls it holds."""

from __future__ import annotations

import math
import random
import threading
from array import array
from bisect import bisect_left

import pytest

from fastapi_breaker import LATENCY_BOUNDS, PERCENTILES, CircuitBreaker
from fastapi_breaker._histogram import Fold, fold
from fastapi_breaker.testing import FakeClock

# The documented bound: a bin spans at most a quarter of its lower bound, and the estimate is
# its middle, so it is off by at most 1/9 of the exact value between 1 us and 1,024 s.
BOUND = 1 / 9


def expected_bins(latencies: list[float]) -> dict[int, int]:
    """Bins by definition: latency x is in bin i when BOUNDS[i-1] < x <= BOUNDS[i]."""
    found: dict[int, int] = {}
    for latency in latencies:
        index = bisect_left(LATENCY_BOUNDS, latency)
        found[index] = found.get(index, 0) + 1
    return found


def test_the_bounds_are_four_per_power_of_two_from_one_microsecond_to_1024_seconds() -> None:
    assert len(LATENCY_BOUNDS) == 121
    assert LATENCY_BOUNDS[0] == 2.0**-20
    assert LATENCY_BOUNDS[-1] == 1024.0
    assert LATENCY_BOUNDS[1:5] == (2.0**-20 * 1.25, 2.0**-20 * 1.5, 2.0**-20 * 1.75, 2.0**-19)
    assert all(2.0**k in LATENCY_BOUNDS for k in range(-20, 11))


@pytest.mark.parametrize("size", [1, 47, 48, 5_000])
def test_folding_puts_each_latency_in_its_bin(size: int) -> None:
    rng = random.Random(size)
    edges = [0.0, 1e-300, 2.0**-40, 1e-9, 1024.0, 1025.0, 2.0**20, 1e300]
    edges += list(LATENCY_BOUNDS)
    edges += [math.nextafter(bound, 0) for bound in LATENCY_BOUNDS]
    edges += [math.nextafter(bound, math.inf) for bound in LATENCY_BOUNDS]
    latencies = [
        rng.choice(edges) if rng.random() < 0.5 else rng.lognormvariate(-5, 3) for _ in range(size)
    ]
    folded = Fold()
    fold(array("d", latencies), folded)
    assert folded.sparse() == expected_bins(latencies)
    assert folded.total == sum(latencies)


def test_folding_many_equal_latencies_on_a_bound() -> None:
    # What a fake clock makes: a bound repeated, and zero. Each goes to the bin it closes.
    latencies = [1.0] * 1_000 + [0.0] * 500 + [0.25] * 10
    folded = Fold()
    fold(array("d", latencies), folded)
    assert folded.sparse() == {80: 1_000, 0: 500, 72: 10}
    assert LATENCY_BOUNDS[80] == 1.0
    assert LATENCY_BOUNDS[72] == 0.25


async def test_percentiles_are_within_the_bound_of_the_exact_ones() -> None:
    rng = random.Random(7)
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, error_threshold_percentage=100, timeout=None)
    latencies = [rng.lognormvariate(-4, 2) for _ in range(3_000)]
    latencies = [min(max(x, 2e-6), 1000.0) for x in latencies]  # the bound's range
    start = clock.now

    async def take(seconds: float) -> None:
        clock.now += seconds

    for latency in latencies:
        # Each call starts where the last one ended, inside one bucket of a 10 s window: the
        # window is read back from the clock, so keep it from rotating.
        clock.now = start
        await breaker.call(take, latency)
    clock.now = start
    stats = breaker.stats
    ordered = sorted(clock_latencies(start, latencies))
    n = len(ordered)
    for p in PERCENTILES:
        exact = ordered[0] if p == 0 else ordered[math.ceil(p * n) - 1]
        assert abs(stats.percentiles[p] - exact) <= BOUND * exact, p
    assert stats.latency_mean == pytest.approx(sum(ordered) / n, rel=1e-12)


def clock_latencies(start: float, latencies: list[float]) -> list[float]:
    # What the breaker measured: (start + x) - start, as floats round it.
    return [(start + latency) - start for latency in latencies]


async def test_reading_the_window_settles_it_so_the_next_read_has_nothing_to_fold() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock)
    for _ in range(10_000):
        await breaker.call(noop)
    assert len(breaker.core.window.current.succeeded) == 10_000  # pending: the calls paid nothing
    assert breaker.stats.successes == 10_000
    assert len(breaker.core.window.current.succeeded) == 0  # folded into bins, memory given back
    assert breaker.stats.successes == 10_000


async def test_a_bucket_is_folded_when_the_next_one_starts() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock)
    for _ in range(100):
        await breaker.call(noop)
    first = breaker.core.window.current
    clock.advance(1.0)  # one bucket of the default 10 s window
    await breaker.call(noop)
    assert breaker.core.window.current is not first
    assert len(first.succeeded) == 0
    assert first.successes == 100


def test_threads_lose_no_count_while_readers_fold() -> None:
    breaker = CircuitBreaker(error_threshold_percentage=100, timeout=None)
    threads, calls = 4, 20_000
    stop = threading.Event()

    def work() -> None:
        for _ in range(calls):
            breaker.call_sync(lambda: None)

    def read() -> None:
        reads = 0
        while not stop.is_set() and reads < 100_000:
            breaker.stats  # noqa: B018 - reading folds the current bucket under the lock
            reads += 1

    reader = threading.Thread(target=read)
    reader.start()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    reader.join()
    assert breaker.metrics().calls["success"] == threads * calls


async def noop() -> None:
    return None
