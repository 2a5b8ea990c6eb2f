"""Eight spawned processes calling one dead downstream: with the Redis coordinator the fleet
behaves as one breaker, without it as eight.

Each process (tests/fleet_worker.py) calls the downstream 5 times a second through its own
breaker, `volume_threshold=10` at 50%. The downstream is a counter shared by the processes, and
each hit's time (time.monotonic() is one clock for every process of this machine). These tests
wait on real processes and a real Redis, polling with a bound.
"""

from __future__ import annotations

import itertools
import multiprocessing
import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests import fleet_worker

PROCESSES = 8
RATE = 5.0  # calls per second, per process
FLUSH = 0.1  # the coordinator's default flush interval
VOLUME = 10
CONTEXT = multiprocessing.get_context("spawn")


@dataclass
class Fleet:
    received: Any
    down: Any
    stop: Any
    states: Any
    hits: Any
    seen: dict[int, list[tuple[str, float]]] = field(default_factory=dict)

    def collect(self) -> None:
        while True:
            try:
                index, state, at = self.states.get_nowait()
            except queue.Empty:
                return
            self.seen.setdefault(index, []).append((state, at))

    def state(self, index: int) -> str | None:
        history = self.seen.get(index)
        return history[-1][0] if history else None

    def wait(self, what: str, predicate: Any, within: float) -> None:
        deadline = time.monotonic() + within
        while True:
            self.collect()
            if predicate():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {within} s: {what}; states {self.seen}")
            time.sleep(0.01)

    def all_in(self, state: str) -> bool:
        return all(self.state(index) == state for index in range(PROCESSES))

    def hit_times(self) -> list[float]:
        return list(self.hits[: min(self.received.value, len(self.hits))])


@contextmanager
def fleet(redis_url: str | None, **options: Any) -> Iterator[Fleet]:
    options = {
        "volume_threshold": VOLUME,
        "error_threshold_percentage": 50.0,
        "timeout": None,
        **options,
    }
    running = Fleet(
        received=CONTEXT.Value("i", 0),
        down=CONTEXT.Value("i", 1),
        stop=CONTEXT.Event(),
        states=CONTEXT.Queue(),
        hits=CONTEXT.Array("d", 2000),
    )
    processes = [
        CONTEXT.Process(
            target=fleet_worker.run,
            args=(
                redis_url,
                options,
                running.received,
                running.down,
                running.stop,
                running.states,
                index,
                RATE,
                FLUSH,
                running.hits,
            ),
            daemon=True,
        )
        for index in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        running.wait(
            "every process ready",
            lambda: all(running.seen.get(i) for i in range(PROCESSES)),
            within=60.0,
        )
        yield running
    finally:
        running.stop.set()
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join(5)


def test_without_the_coordinator_each_process_opens_on_its_own_evidence() -> None:
    with fleet(None, reset_timeout=60.0) as running:
        running.wait("every process open", lambda: running.all_in("open"), within=30.0)
        # Ten failures each: the fleet sends the dead downstream eight times the threshold.
        assert running.received.value == PROCESSES * VOLUME


def test_with_the_coordinator_the_fleet_opens_after_about_the_threshold(redis_url: str) -> None:
    with fleet(redis_url, reset_timeout=60.0) as running:
        running.wait("every process open", lambda: running.all_in("open"), within=30.0)
        received = running.received.value
        assert VOLUME <= received <= 2 * VOLUME


@pytest.mark.parametrize("trials", [1, 2])
def test_one_trial_per_reset_period_for_the_whole_fleet(redis_url: str, trials: int) -> None:
    reset = 0.6
    periods = 20 if trials == 1 else 6
    with fleet(redis_url, reset_timeout=reset, half_open_max_calls=trials) as running:
        running.wait("every process open", lambda: running.all_in("open"), within=30.0)
        opened = running.received.value
        running.wait(
            f"{periods} periods of trials",
            lambda: running.received.value >= opened + periods * trials,
            within=periods * (reset + 1.0) + 10.0,
        )
        hits = running.hit_times()[opened : opened + periods * trials]
    # Each period's trials come together; the next period's only after a full reset timeout.
    groups = [hits[i : i + trials] for i in range(0, len(hits), trials)]
    for group in groups:
        assert group[-1] - group[0] < reset / 2, f"a period's {trials} trials apart: {group}"
    gaps = [later[0] - earlier[-1] for earlier, later in itertools.pairwise(groups)]
    assert min(gaps) >= reset * 0.95, f"two trials in one period: gaps {gaps}"
    assert max(gaps) < 2 * reset, f"a period without a trial: gaps {gaps}"


def test_after_recovery_one_trial_closes_every_process_within_the_flush_interval(
    redis_url: str,
) -> None:
    reset = 0.6
    with fleet(redis_url, reset_timeout=reset) as running:
        running.wait("every process open", lambda: running.all_in("open"), within=30.0)
        opened = running.received.value
        running.down.value = 0
        running.wait("every process closed", lambda: running.all_in("closed"), within=15.0)
        trial_at = running.hit_times()[opened]  # the first call after the recovery: the trial
        assert running.received.value >= opened + 1
        closed_at = [
            max(at for state, at in running.seen[index] if state == "closed")
            for index in range(PROCESSES)
        ]
    assert max(closed_at) - trial_at <= FLUSH + 0.05, (max(closed_at) - trial_at, closed_at)
