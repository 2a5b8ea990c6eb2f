"""OPEN -> HALF_OPEN by the clock, the trial permits, and how the trials decide."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastapi_breaker import CallTimeoutError, CircuitBreaker, CircuitOpenError, Event, State
from fastapi_breaker.testing import FakeClock


class Boom(Exception):
    pass


class Trial:
    """A call held in flight until the test says how it ends."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.fail = False

    async def run(self) -> str:
        await self.release.wait()
        if self.fail:
            raise Boom
        return "ok"


def ok() -> str:
    return "ok"


def fail() -> None:
    raise Boom


def make(clock: FakeClock, **options: Any) -> CircuitBreaker:
    options.setdefault("reset_timeout", 30)
    return CircuitBreaker(name="trials", clock=clock, **options)


def record(breaker: CircuitBreaker, *names: Any) -> list[str]:
    seen: list[str] = []
    for name in names:
        breaker.on(name, lambda event: seen.append(event.name))
    return seen


async def start(breaker: CircuitBreaker, trial: Trial) -> asyncio.Task[Any]:
    task = asyncio.create_task(breaker.call(trial.run))
    await asyncio.sleep(0)  # let it be admitted and block on its gate
    return task


async def finish(task: asyncio.Task[Any], trial: Trial, *, fail: bool) -> None:
    trial.fail = fail
    trial.release.set()
    if fail:
        with pytest.raises(Boom):
            await task
    else:
        assert await task == "ok"


async def half_opened(clock: FakeClock, breaker: CircuitBreaker) -> None:
    breaker.open()
    clock.advance(breaker.options.reset_timeout)
    assert breaker.state is State.HALF_OPEN


# ------------------------------------------------------------------ OPEN -> HALF_OPEN


async def test_open_turns_half_open_exactly_at_reset_timeout_when_someone_looks() -> None:
    clock = FakeClock()
    breaker = make(clock)
    seen = record(breaker, "open", "half_open")
    assert breaker.retry_after is None
    breaker.open()
    assert breaker.retry_after == 30.0
    clock.advance(10)
    assert breaker.retry_after == 20.0
    clock.advance(19.5)
    assert breaker.state is State.OPEN
    assert breaker.retry_after == 0.5
    clock.advance(0.5)
    # No timer ran: the clock moved, and nothing is emitted until the breaker is read.
    assert seen == ["open"]
    assert breaker.state is State.HALF_OPEN
    assert seen == ["open", "half_open"]
    assert breaker.retry_after == 0.0  # a trial permit is free
    assert seen == ["open", "half_open"]


async def test_rejection_while_open_carries_name_and_time_left() -> None:
    clock = FakeClock()
    breaker = make(clock)
    breaker.open()
    clock.advance(12)
    with pytest.raises(CircuitOpenError) as caught:
        await breaker.call(ok)
    assert caught.value.name == "trials"
    assert caught.value.retry_after == 18.0


# ------------------------------------------------------------------ permits


@pytest.mark.parametrize("permits", [1, 3])
async def test_exactly_half_open_max_calls_trials_are_admitted(permits: int) -> None:
    clock = FakeClock()
    breaker = make(clock, half_open_max_calls=permits, timeout=10)
    await half_opened(clock, breaker)
    trials = [Trial() for _ in range(permits)]
    tasks = [await start(breaker, trial) for trial in trials]
    assert breaker.retry_after == 10.0  # until the oldest trial's limit
    for _ in range(5):
        with pytest.raises(CircuitOpenError) as caught:
            await breaker.call(ok)
        assert caught.value.name == "trials"
        assert caught.value.retry_after == 10.0
    clock.advance(4)
    with pytest.raises(CircuitOpenError) as caught:
        await breaker.call(ok)
    assert caught.value.retry_after == 6.0
    assert breaker.stats.rejects == 6
    for task, trial in zip(tasks, trials, strict=True):
        await finish(task, trial, fail=False)
    assert breaker.state is State.CLOSED


async def test_one_successful_trial_closes() -> None:
    clock = FakeClock()
    breaker = make(clock)
    seen = record(breaker, "open", "half_open", "close")
    await half_opened(clock, breaker)
    assert await breaker.call(ok) == "ok"
    assert breaker.state is State.CLOSED
    assert breaker.retry_after is None
    assert seen == ["open", "half_open", "close"]


async def test_one_failed_trial_reopens_and_restarts_the_reset_timeout() -> None:
    clock = FakeClock()
    breaker = make(clock)
    seen = record(breaker, "open", "half_open", "close")
    await half_opened(clock, breaker)
    clock.advance(2)
    with pytest.raises(Boom):
        await breaker.call(fail)
    assert breaker.state is State.OPEN
    assert seen == ["open", "half_open", "open"]
    assert breaker.retry_after == 30.0  # counted from the reopening, not the first opening
    clock.advance(29.5)
    assert breaker.state is State.OPEN
    clock.advance(0.5)
    assert breaker.state is State.HALF_OPEN


# ------------------------------------------------------------------ four trials, threshold 50
# `_judge_trials`: reopen as soon as 100*failures > threshold*N; close as soon as
# 100*(failures + undecided) <= threshold*N. With N=4 and 50%: 3 failures reopen, 2 successes close.


async def four_trials(
    clock: FakeClock,
) -> tuple[CircuitBreaker, list[Trial], list[asyncio.Task[Any]]]:
    breaker = make(clock, half_open_max_calls=4, error_threshold_percentage=50)
    await half_opened(clock, breaker)
    trials = [Trial() for _ in range(4)]
    tasks = [await start(breaker, trial) for trial in trials]
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    return breaker, trials, tasks


async def test_two_failures_of_four_close() -> None:
    breaker, trials, tasks = await four_trials(FakeClock())
    outcomes = [True, True, False, False]  # fail, fail, succeed, succeed
    for index, fail_it in enumerate(outcomes):
        assert breaker.state is State.HALF_OPEN
        await finish(tasks[index], trials[index], fail=fail_it)
    assert breaker.state is State.CLOSED


async def test_three_failures_of_four_reopen_before_the_fourth_ends() -> None:
    breaker, trials, tasks = await four_trials(FakeClock())
    await finish(tasks[0], trials[0], fail=True)
    await finish(tasks[1], trials[1], fail=True)
    assert breaker.state is State.HALF_OPEN  # 2 failures: not decided yet
    await finish(tasks[2], trials[2], fail=True)
    assert breaker.state is State.OPEN  # 75% > 50%, whatever the fourth does
    assert breaker.retry_after == 30.0
    await finish(tasks[3], trials[3], fail=False)
    # The fourth's late success is counted, but its period is over.
    assert breaker.state is State.OPEN
    assert (breaker.stats.successes, breaker.stats.failures) == (1, 3)


async def test_two_successes_of_four_close_before_the_others_end() -> None:
    breaker, trials, tasks = await four_trials(FakeClock())
    await finish(tasks[0], trials[0], fail=False)
    assert breaker.state is State.HALF_OPEN  # 3 undecided could still make 75%
    await finish(tasks[1], trials[1], fail=False)
    assert breaker.state is State.CLOSED  # at most 2 failures of 4 = 50%: cannot exceed it
    await finish(tasks[2], trials[2], fail=True)
    await finish(tasks[3], trials[3], fail=True)
    # Late failures of the finished half-open period count, but do not reopen.
    assert breaker.state is State.CLOSED
    assert breaker.stats.failures == 2


# ------------------------------------------------------------------ late trials


@pytest.mark.parametrize("late_fails", [False, True])
async def test_late_result_of_an_earlier_half_open_period_does_not_move_the_state(
    late_fails: bool,
) -> None:
    clock = FakeClock()
    breaker = make(clock)
    await half_opened(clock, breaker)
    old = Trial()
    old_task = await start(breaker, old)
    breaker.open()  # a new period begins; the old trial is still in flight
    clock.advance(30)
    assert breaker.state is State.HALF_OPEN
    new = Trial()
    new_task = await start(breaker, new)

    await finish(old_task, old, fail=late_fails)
    assert breaker.state is State.HALF_OPEN
    # The new trial still holds the only permit.
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    await finish(new_task, new, fail=False)
    assert breaker.state is State.CLOSED


@pytest.mark.parametrize(
    ("call_timeout", "half_open_timeout", "limit"),
    [(None, None, 10.0), (3.0, None, 3.0), (3.0, 1.5, 1.5), (None, 2.0, 2.0)],
)
async def test_trial_older_than_its_limit_counts_as_failed_when_the_breaker_looks(
    call_timeout: float | None, half_open_timeout: float | None, limit: float
) -> None:
    clock = FakeClock()
    breaker = make(clock, timeout=call_timeout, half_open_timeout=half_open_timeout)
    seen = record(breaker, "open", "half_open", "close")
    await half_opened(clock, breaker)
    trial = Trial()
    task = await start(breaker, trial)
    clock.advance(limit - 0.25)
    assert breaker.state is State.HALF_OPEN
    assert breaker.retry_after == 0.25
    clock.advance(0.25)  # exactly at its limit: not past it yet
    assert breaker.state is State.HALF_OPEN
    clock.advance(0.125)
    assert breaker.state is State.OPEN
    assert breaker.retry_after == 30.0
    assert seen == ["open", "half_open", "open"]
    # The stuck trial ends at last: its success is too late to close the breaker.
    await finish(task, trial, fail=False)
    assert breaker.state is State.OPEN


async def test_the_next_call_notices_an_expired_trial_and_is_rejected() -> None:
    clock = FakeClock()
    breaker = make(clock, timeout=None)
    await half_opened(clock, breaker)
    trial = Trial()
    task = await start(breaker, trial)
    clock.advance(10.25)  # past the 10 s trial limit
    with pytest.raises(CircuitOpenError) as caught:
        await breaker.call(ok)
    assert caught.value.retry_after == 30.0
    await finish(task, trial, fail=False)


# ------------------------------------------------------------------ permits given back


async def test_cancelled_trial_gives_its_permit_back() -> None:
    clock = FakeClock()
    breaker = make(clock)
    await half_opened(clock, breaker)
    task = await start(breaker, Trial())
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state is State.HALF_OPEN
    assert breaker.retry_after == 0.0
    assert await breaker.call(ok) == "ok"  # admitted as the trial
    assert breaker.state is State.CLOSED
    assert breaker.stats.failures == 0


async def test_filtered_trial_error_gives_its_permit_back_and_skips_the_fallback() -> None:
    clock = FakeClock()
    breaker = make(clock, error_filter=lambda exc: isinstance(exc, LookupError))
    fallback_calls: list[BaseException] = []
    breaker.fallback(lambda exc: fallback_calls.append(exc))
    events: list[Event] = []
    for name in ("success", "failure", "fallback", "open", "close"):
        breaker.on(name, events.append)
    await half_opened(clock, breaker)
    events.clear()  # the manual opening

    def missing() -> None:
        raise KeyError("excused")

    with pytest.raises(KeyError):
        await breaker.call(missing)
    assert [event.name for event in events] == ["success"]
    assert isinstance(events[0].error, KeyError)
    assert fallback_calls == []
    assert breaker.stats.fallbacks == 0
    assert breaker.state is State.HALF_OPEN  # neither closed nor reopened: the permit is back
    assert await breaker.call(ok) == "ok"
    assert breaker.state is State.CLOSED
    assert [event.name for event in events] == ["success", "success", "close"]


# ------------------------------------------------------------------ trial limits on the loop


@pytest.mark.parametrize(
    ("call_timeout", "half_open_timeout"), [(None, 0.02), (5.0, 0.02), (0.02, None)]
)
async def test_hanging_trial_is_cancelled_at_its_limit_and_reopens(
    call_timeout: float | None, half_open_timeout: float | None
) -> None:
    clock = FakeClock()
    breaker = make(clock, timeout=call_timeout, half_open_timeout=half_open_timeout)
    await half_opened(clock, breaker)
    cancelled: list[bool] = []

    async def hang() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.append(True)

    with pytest.raises(CallTimeoutError) as caught:
        await breaker.call(hang)
    assert caught.value.timeout == 0.02
    assert cancelled == [True]
    assert breaker.state is State.OPEN
    assert (breaker.stats.failures, breaker.stats.timeouts) == (1, 1)


def test_call_sync_trial_over_its_limit_by_the_clock_reopens() -> None:
    clock = FakeClock()
    breaker = make(clock, timeout=None, half_open_timeout=2.0)
    breaker.open()
    clock.advance(30)

    def slow() -> str:
        clock.advance(2.5)
        return "too late"

    with pytest.raises(CallTimeoutError):
        breaker.call_sync(slow)
    assert breaker.state is State.OPEN
    assert breaker.retry_after == 30.0
