"""The real breaker, step by step, against a small reference model of the brief's rules.

The model is written from the rules, not from the engine: it keeps every call as a
(timestamp, outcome) pair and finds the live ones with its own bucket arithmetic. All times are
multiples of 0.25 s, so float arithmetic is exact and a disagreement at a bucket edge or at the
exact reset time is a real one, not rounding.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from fastapi_breaker import CallTimeoutError, CircuitBreaker, CircuitOpenError, State
from fastapi_breaker.testing import FakeClock

WINDOW = 10.0
BUCKETS = 5
WIDTH = WINDOW / BUCKETS
# The trial limit when neither half_open_timeout nor timeout is set (timeout=None here).
DEFAULT_TRIAL_LIMIT = 10.0

SUCCESS, FAILURE, TIMEOUT, REJECT = "success", "failure", "timeout", "reject"


class Boom(Exception):
    """The downstream failure the actions raise."""


@dataclass
class Ticket:
    """What the model remembers of an admitted call: its period and whether it is a trial."""

    period: int
    trial: bool


class Model:
    """The brief's rules for one breaker with half_open_max_calls=1, and nothing else."""

    def __init__(
        self, threshold: float, volume: int, reset: float, trial_limit: float, now: float
    ) -> None:
        self.threshold = threshold
        self.volume = volume
        self.reset = reset
        self.trial_limit = trial_limit
        self.state = State.CLOSED
        self.opened_until = 0.0
        # Bumped on every state change: a call admitted in an older period moves nothing.
        self.period = 0
        self.origin = now
        self.events: list[tuple[float, str]] = []
        self.trial_started: float | None = None

    # -- the window
    def epoch(self, t: float) -> int:
        return math.floor((t - self.origin) / WIDTH)

    def live(self, now: float) -> list[tuple[float, str]]:
        oldest = self.epoch(now) - BUCKETS + 1
        return [(t, kind) for t, kind in self.events if self.epoch(t) >= oldest]

    def counts(self, now: float) -> dict[str, int]:
        kinds = [kind for _, kind in self.live(now)]
        return {
            "successes": kinds.count(SUCCESS),
            "failures": kinds.count(FAILURE) + kinds.count(TIMEOUT),
            "timeouts": kinds.count(TIMEOUT),
            "rejects": kinds.count(REJECT),
        }

    # -- state
    def move(self, state: State, now: float) -> None:
        self.state = state
        self.period += 1
        self.trial_started = None
        if state is State.OPEN:
            self.opened_until = now + self.reset
        elif state is State.CLOSED:
            self.events = []
            self.origin = now

    def observe(self, now: float) -> None:
        """What the clock has made due: the reset timeout, or a trial past its limit."""
        if self.state is State.OPEN and now >= self.opened_until:
            self.move(State.HALF_OPEN, now)
        elif self.state is State.HALF_OPEN and self.trial_started is not None:
            if now - self.trial_started > self.trial_limit:
                self.trial_started = None
                self.judge_trial(failed=True, now=now)
            elif self.threshold >= 100.0:
                # Even a failure could not exceed the threshold: the outcome is certain, and
                # the breaker closes as soon as it looks, without waiting for the trial.
                self.move(State.CLOSED, now)

    def judge_trial(self, *, failed: bool, now: float) -> None:
        # One planned trial, now ended: its failure % is 100 or 0.
        failure_pct = 100.0 if failed else 0.0
        if failure_pct > self.threshold:
            self.move(State.OPEN, now)
        else:
            self.move(State.CLOSED, now)

    def retry_after(self, now: float) -> float | None:
        if self.state is State.CLOSED:
            return None
        if self.state is State.OPEN:
            return self.opened_until - now
        return 0.0  # half-open with its one permit free

    # -- calls
    def admit(self, now: float) -> Ticket | None:
        """A ticket for an admitted call, None (and a counted rejection) for a refused one."""
        self.observe(now)
        if self.state is State.OPEN or (
            self.state is State.HALF_OPEN and self.trial_started is not None
        ):
            self.events.append((now, REJECT))
            return None
        trial = self.state is State.HALF_OPEN
        if trial:
            self.trial_started = now
        return Ticket(self.period, trial)

    def settle(self, ticket: Ticket, kind: str, now: float) -> None:
        """A call ended at `now`: it always counts in the window, moves the state only if owned."""
        self.events.append((now, kind))
        if ticket.trial:
            # A trial past its limit by the clock has failed, whatever it returned: the
            # breaker looks before it judges the trial.
            self.observe(now)
        if ticket.period != self.period:
            return  # late: stats only
        failed = kind in (FAILURE, TIMEOUT)
        if ticket.trial:
            self.trial_started = None
            self.judge_trial(failed=failed, now=now)
        elif failed:
            c = self.counts(now)
            counted = c["successes"] + c["failures"]
            if (
                counted >= self.volume
                and counted > 0
                and 100.0 * c["failures"] / counted > self.threshold
            ):
                self.move(State.OPEN, now)

    def open(self, now: float) -> None:
        self.move(State.OPEN, now)

    def close(self, now: float) -> None:
        if self.state is not State.CLOSED:
            self.move(State.CLOSED, now)
        else:
            # close() always clears the window, even on a breaker that is already closed.
            self.events = []
            self.origin = now


thresholds = st.sampled_from([0.0, 10.0, 25.0, 50.0, 60.0, 75.0, 99.5, 100.0])
reset_timeouts = st.sampled_from([0.25, 1.0, 2.0, 3.0, 7.5, 10.0, 30.0])
steps = st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.75, 2.0, 2.5, 4.0, 8.0, 10.0, 10.25, 30.0])
outcomes = st.sampled_from([SUCCESS, FAILURE])
# call_sync and `await call()` share the state machine but not the code: drive both.
vias = st.sampled_from(["sync", "async"])
offsets = st.sampled_from([-0.25, 0.0, 0.25])


class BreakerMachine(RuleBasedStateMachine):
    breaker: CircuitBreaker
    model: Model
    clock: FakeClock
    runner: asyncio.Runner | None = None

    @initialize(
        threshold=thresholds,
        volume=st.integers(min_value=0, max_value=6),
        reset=reset_timeouts,
        half_open_timeout=st.sampled_from([None, 2.0, 5.0]),
        start=st.sampled_from([0.0, 1000.0]),
    )
    def make(
        self,
        threshold: float,
        volume: int,
        reset: float,
        half_open_timeout: float | None,
        start: float,
    ) -> None:
        self.clock = FakeClock(start)
        self.breaker = CircuitBreaker(
            clock=self.clock,
            timeout=None,
            reset_timeout=reset,
            error_threshold_percentage=threshold,
            volume_threshold=volume,
            rolling_count_timeout=WINDOW,
            rolling_count_buckets=BUCKETS,
            half_open_max_calls=1,
            half_open_timeout=half_open_timeout,
        )
        trial_limit = DEFAULT_TRIAL_LIMIT if half_open_timeout is None else half_open_timeout
        self.model = Model(threshold, volume, reset, trial_limit, start)
        self.runner = asyncio.Runner()

    def teardown(self) -> None:
        if self.runner is not None:
            self.runner.close()

    # -- driving the breaker
    def _run(self, fn: Any, via: str) -> tuple[str, Any]:
        """Call through the breaker; how the call ended, and its value or error."""
        try:
            if via == "sync":
                value = self.breaker.call_sync(fn)
            else:
                assert self.runner is not None
                value = self.runner.run(self.breaker.call(fn))
        except CircuitOpenError as exc:
            return REJECT, exc
        except CallTimeoutError as exc:
            return TIMEOUT, exc
        except Boom as exc:
            return FAILURE, exc
        return SUCCESS, value

    def _call(self, outcome: str, via: str, duration: float = 0.0, peek: bool = False) -> None:
        model, clock = self.model, self.clock
        ticket = model.admit(clock())
        ran: list[bool] = []

        def action() -> str:
            ran.append(True)
            clock.advance(duration)
            if peek:
                # Someone else looks at the breaker while this call runs.
                self.breaker.state  # noqa: B018
                model.observe(clock())
            if outcome == FAILURE:
                raise Boom
            return "ok"

        ended, value = self._run(action, via)
        if ticket is None:
            assert ended == REJECT, f"model rejects, breaker said {ended}"
            assert not ran
            assert value.retry_after == model.retry_after(clock())
            return
        assert ran, f"model admits, breaker said {ended}"
        kind = outcome
        # A thread cannot be interrupted: call_sync checks the limit when the function returns.
        # Only trials have a limit here (timeout=None). An async trial's limit is the loop's
        # timer, which a fake clock never moves.
        if via == "sync" and ticket.trial and duration > model.trial_limit:
            kind = TIMEOUT
        model.settle(ticket, kind, clock())
        assert ended == kind
        if kind == SUCCESS:
            assert value == "ok"

    # -- rules
    @rule(outcome=outcomes, via=vias)
    def call(self, outcome: str, via: str) -> None:
        self._call(outcome, via)

    @rule(
        outcome=outcomes,
        via=vias,
        data=st.data(),
        relative=st.booleans(),
        peek=st.booleans(),
    )
    def slow_call(
        self, outcome: str, via: str, data: st.DataObject, relative: bool, peek: bool
    ) -> None:
        if relative:  # right around the trial limit
            duration = self.model.trial_limit + data.draw(offsets)
        else:
            duration = data.draw(st.sampled_from([0.25, 2.0, 4.5, 12.0]))
        self._call(outcome, via, duration=duration, peek=peek)

    # Trials whose end falls right around their limit are rare by chance: ask for them.
    @precondition(lambda self: self.model.state is State.HALF_OPEN)
    @rule(outcome=outcomes, via=vias, offset=offsets, peek=st.booleans())
    def trial_around_its_limit(self, outcome: str, via: str, offset: float, peek: bool) -> None:
        self._call(outcome, via, duration=self.model.trial_limit + offset, peek=peek)

    @rule(seconds=steps)
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(offset=offsets)
    def advance_to_bucket_edge(self, offset: float) -> None:
        now = self.clock()
        edge = self.model.origin + (self.model.epoch(now) + 1) * WIDTH
        self.clock.advance(max(0.0, edge - now + offset))

    @precondition(lambda self: self.model.state is State.OPEN)
    @rule(offset=offsets)
    def advance_to_reset(self, offset: float) -> None:
        self.clock.advance(max(0.0, self.model.opened_until - self.clock() + offset))

    @precondition(lambda self: bool(self.model.live(self.clock())))
    @rule(offset=offsets)
    def advance_until_oldest_expires(self, offset: float) -> None:
        now = self.clock()
        oldest = min(self.model.epoch(t) for t, _ in self.model.live(now))
        leaves = self.model.origin + (oldest + BUCKETS) * WIDTH
        self.clock.advance(max(0.0, leaves - now + offset))

    @rule()
    def open(self) -> None:
        self.breaker.open()
        self.model.open(self.clock())

    @rule()
    def close(self) -> None:
        self.breaker.close()
        self.model.close(self.clock())

    # -- after every step
    @invariant()
    def agrees_with_model(self) -> None:
        now = self.clock()
        self.model.observe(now)
        assert self.breaker.state is self.model.state
        assert self.breaker.retry_after == self.model.retry_after(now)
        stats = self.breaker.stats
        expected = self.model.counts(now)
        actual = {name: getattr(stats, name) for name in expected}
        assert actual == expected
        assert stats.fires == expected["successes"] + expected["failures"] + expected["rejects"]
        counted = expected["successes"] + expected["failures"]
        assert stats.error_percentage == (
            100.0 * expected["failures"] / counted if counted else 0.0
        )


BreakerMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestBreakerAgainstModel = BreakerMachine.TestCase
