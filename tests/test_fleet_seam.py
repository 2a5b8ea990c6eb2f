"""The engine's side of a fleet: what a coordinator drains from a core, and how the core follows
the fleet's decisions. Driven by a fake clock, with no coordinator and no Redis."""

from __future__ import annotations

import pytest

from fastapi_breaker import CircuitBreaker, CircuitOpenError, State
from fastapi_breaker.testing import FakeClock


class Boom(Exception):
    pass


async def ok() -> str:
    return "ok"


async def fail() -> None:
    raise Boom


def linked(clock: FakeClock, **options: object) -> CircuitBreaker:
    breaker = CircuitBreaker(clock=clock, timeout=None, **options)  # type: ignore[arg-type]
    breaker.core.link_fleet().healthy = True
    return breaker


def follow(breaker: CircuitBreaker, verdict: str, until: float = 0.0) -> list[str]:
    moves: list[str] = []
    breaker.core.follow(verdict, breaker.clock(), until, moves)
    return moves


async def test_drain_gives_what_was_counted_since_the_last_drain() -> None:
    clock = FakeClock()
    breaker = linked(clock, volume_threshold=100)
    for _ in range(3):
        await breaker.call(ok)
    with pytest.raises(Boom):
        await breaker.call(fail)
    deltas, wants, outcome = breaker.core.drain(clock())
    assert (deltas.successes, deltas.failures, deltas.rejections) == (3, 1, 0)
    assert (wants, outcome) == (False, "")
    deltas, _, _ = breaker.core.drain(clock())
    assert not deltas  # an idle breaker has nothing to send
    clock.advance(1.5)  # into the next bucket
    await breaker.call(ok)
    deltas, _, _ = breaker.core.drain(clock())
    assert (deltas.successes, deltas.failures) == (1, 0)


async def test_a_fleet_open_refuses_until_its_deadline_then_asks_for_the_trial() -> None:
    clock = FakeClock()
    breaker = linked(clock, reset_timeout=30.0)
    assert breaker.core.fast  # linking a fleet costs the closed path nothing
    assert follow(breaker, "open", until=clock() + 12.0) == ["open"]
    with pytest.raises(CircuitOpenError) as refused:
        await breaker.call(ok)
    assert refused.value.retry_after == 12.0  # the fleet's deadline, not the local reset_timeout
    assert breaker.core.drain(clock())[1] is False  # before the deadline: no trial wanted
    clock.advance(12.0)
    # The fleet picks who runs the trial: past the deadline, this process still refuses...
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    assert breaker.state is State.OPEN
    # ...and asks for the trial on the next flush.
    deltas, wants, _ = breaker.core.drain(clock())
    assert wants is True
    assert deltas.rejections == 1  # the one since the last drain


async def test_the_trial_runs_where_the_fleet_grants_it_and_its_outcome_is_reported() -> None:
    clock = FakeClock()
    breaker = linked(clock)
    follow(breaker, "open", until=clock() + 5.0)
    clock.advance(5.0)
    assert follow(breaker, "trial") == ["half_open"]
    assert await breaker.call(ok) == "ok"
    assert breaker.state is State.CLOSED
    assert breaker.core.drain(clock())[2] == "ok"
    assert breaker.core.drain(clock())[2] == ""  # reported once

    follow(breaker, "open", until=clock() + 5.0)
    clock.advance(5.0)
    follow(breaker, "trial")
    with pytest.raises(Boom):
        await breaker.call(fail)
    assert breaker.state is State.OPEN
    assert breaker.core.drain(clock())[2] == "fail"


async def test_while_another_process_runs_the_trial_this_one_refuses_until_its_lease_ends() -> None:
    clock = FakeClock()
    breaker = linked(clock)
    follow(breaker, "open", until=clock() + 5.0)
    clock.advance(5.0)
    assert follow(breaker, "wait", until=clock() + 3.0) == []  # still open: no new event
    with pytest.raises(CircuitOpenError) as refused:
        await breaker.call(ok)
    assert refused.value.retry_after == 3.0


async def test_a_fleet_close_closes_what_the_fleet_held_but_not_a_local_open() -> None:
    clock = FakeClock()
    held = linked(clock)
    follow(held, "open", until=clock() + 30.0)
    assert follow(held, "close") == ["close"]
    assert held.state is State.CLOSED

    local = linked(clock, volume_threshold=0)
    with pytest.raises(Boom):
        await local.call(fail)  # opens on its own evidence
    assert local.state is State.OPEN
    assert follow(local, "close") == []
    assert local.state is State.OPEN  # one bad process does not take the fleet's word for it


async def test_without_the_fleet_a_held_open_ends_by_the_local_clock() -> None:
    clock = FakeClock()
    breaker = linked(clock)
    follow(breaker, "open", until=clock() + 8.0)
    breaker.core.fleet_health(False)  # the coordinator lost the fleet
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)  # a known fleet open holds until its deadline
    clock.advance(8.0)
    assert breaker.state is State.HALF_OPEN  # then a local trial, as without a fleet
    assert await breaker.call(ok) == "ok"
    assert breaker.state is State.CLOSED


async def test_a_breaker_forced_open_by_hand_ignores_the_fleet() -> None:
    clock = FakeClock()
    breaker = linked(clock)
    breaker.force_open()
    assert follow(breaker, "close") == []
    assert follow(breaker, "trial") == []
    assert breaker.state is State.OPEN
    assert breaker.forced_open


async def test_a_trial_granted_but_never_started_gives_way_to_the_fleet() -> None:
    # Granted the trial, this process got no call before its lease ran out; another process
    # took the lease, its trial failed, and the fleet opened again.
    clock = FakeClock()
    breaker = linked(clock)
    follow(breaker, "open", until=clock() + 5.0)
    clock.advance(5.0)
    follow(breaker, "trial")
    assert breaker.state is State.HALF_OPEN
    clock.advance(2.0)
    assert follow(breaker, "open", until=clock() + 5.0) == ["open"]
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)  # no stale trial in the new period
    assert breaker.core.drain(clock())[2] == ""  # and no outcome to report for it


async def test_a_trial_that_started_here_is_left_to_end() -> None:
    clock = FakeClock()
    breaker = linked(clock)
    follow(breaker, "open", until=clock() + 5.0)
    clock.advance(5.0)
    follow(breaker, "trial")
    attempt = breaker.begin()  # the trial starts
    assert follow(breaker, "open", until=clock() + 5.0) == []
    assert breaker.state is State.HALF_OPEN
    attempt.succeeded()
    assert breaker.state is State.CLOSED
    assert breaker.core.drain(clock())[2] == "ok"
