"""The state machine under the core's lock: when the circuit opens, goes half-open and closes.

`Transitions` holds the breaker's state and decides its moves; `BreakerCore` (in `_core`) adds
admission and outcomes on top and takes the lock around every call into this module. Every
method here expects that lock held, and appends the name of each transition it makes
(`"open"`, `"half_open"`, `"close"`) to the `moves` list its caller announces.
"""

from __future__ import annotations

import math
from typing import cast

from ._fleet import FleetLink
from ._options import MAX_SECONDS, BreakerOptions
from ._state import State
from ._tickets import Period
from ._window import RollingWindow

__all__ = ["CALLS", "NEVER", "REJECTIONS", "Move", "Moves", "Transitions"]


class Move(str):
    """A transition, spelled as the event that announces it ("open", "half_open", "close"), that
    also tells the state it left, in `source`: what logs and metrics need, at no extra cost to
    code that only reads the name. One object per pair of states, made once."""

    source: str
    target: str


def _move(source: State, target: State) -> Move:
    move = Move({State.OPEN: "open", State.HALF_OPEN: "half_open"}.get(target, "close"))
    move.source, move.target = source.value, target.value
    return move


_MOVES = {(a, b): _move(a, b) for a in State for b in State}

Moves = list[str]

NEVER = -math.inf
CALLS, REJECTIONS = 1, 2  # bits of `_watched`: what event handlers must see one by one


class Transitions:
    """The state and its transitions; see the module docstring."""

    __slots__ = (
        "_forced",
        "_period",
        "_warm_until",
        "_watched",
        "enabled",
        "fast",
        "fleet",
        "generation",
        "opened_until",
        "options",
        "rejecting",
        "shut",
        "state",
        "window",
    )

    options: BreakerOptions
    window: RollingWindow
    state: State
    generation: int  # bumped on every transition: only calls of this period move the state
    opened_until: float
    enabled: bool
    shut: bool
    fast: bool
    rejecting: bool
    _forced: bool
    _period: Period | None  # the trials of the current half-open period
    _warm_until: float
    _watched: int
    fleet: FleetLink | None  # set while a coordinator shares this breaker with a fleet

    def _refuses(self, state: State) -> bool:
        """Open, or half-open with every trial permit taken."""
        return state is State.OPEN or (
            state is State.HALF_OPEN and self._trials().full(self.options)
        )

    def _trials(self) -> Period:
        """The half-open period's trials; called only while half-open (or for a ticket of the
        current generation, admitted while half-open)."""
        return cast(Period, self._period)

    def _observe(self, now: float, moves: Moves) -> State:
        if self.state is State.OPEN and not self._forced and now >= self.opened_until:
            fleet = self.fleet
            if fleet is None or not (fleet.held and fleet.healthy):
                self._become(State.HALF_OPEN, now, moves)
            # else the fleet picks the process that runs the trial: stay open until told.
        elif self.state is State.HALF_OPEN and self._trials().trials:
            # A trial that outlived its limit by the clock counts as failed, even if no timer
            # cancelled it (a worker thread, or a test driving a fake clock).
            period = self._trials()
            limit = self.options.trial_timeout
            late = [t for t in period.trials if not t.answered and now - t.started > limit]
            for trial in late:
                trial.expired = True
                period.trials.remove(trial)
                period.failures += 1
            self._judge_trials(now, moves, None)
        return self.state

    def _check_trip(self, now: float, moves: Moves, open_for: float | None) -> None:
        """Open if the window says so; called after a counted failure while closed."""
        options = self.options
        if now < self._warm_until:
            return
        successes, failures = self.window.outcome_counts(now)
        counted = successes + failures
        if counted == 0 or counted < options.volume_threshold:
            return
        if 100.0 * failures / counted > options.error_threshold_percentage:
            self._become(State.OPEN, now, moves, open_for=open_for)

    def _judge_trials(self, now: float, moves: Moves, open_for: float | None) -> None:
        """Close or reopen once the trials' outcome is certain."""
        if self.state is not State.HALF_OPEN:
            return
        planned = self.options.half_open_max_calls
        threshold = self.options.error_threshold_percentage
        period = self._trials()
        failures = period.failures
        undecided = planned - period.successes - failures
        if 100.0 * failures > threshold * planned:
            self._become(State.OPEN, now, moves, open_for=open_for)
        elif 100.0 * (failures + undecided) <= threshold * planned:
            self._become(State.CLOSED, now, moves)

    def _become(
        self,
        state: State,
        now: float,
        moves: Moves,
        *,
        forced: bool = False,
        open_for: float | None = None,
        counted: bool = True,
    ) -> None:
        """Move to `state`; `counted=False` for a state restored from a snapshot, which is no
        transition of this breaker's."""
        move = _MOVES[self.state, state]
        if counted:
            made = self.window.retired.transitions
            key = (move.source, move.target)
            made[key] = made.get(key, 0) + 1
        fleet = self.fleet
        if fleet is not None:
            if fleet.trial and self.state is State.HALF_OPEN and state is not State.HALF_OPEN:
                # The fleet's trial ran here: what it decided is the fleet's to hear.
                fleet.outcome = "ok" if state is State.CLOSED else "fail"
                fleet.trial = False
            if state is not State.OPEN:
                fleet.held = False
            fleet.wants_trial = False
        self.state = state
        self.generation += 1
        self._forced = forced
        self._period = Period() if state is State.HALF_OPEN else None
        if state is State.OPEN:
            # `max` keeps reset_timeout over a NaN; `min` bounds an upstream's infinity.
            held = max(self.options.reset_timeout, open_for or 0.0)
            self.opened_until = now + min(held, MAX_SECONDS)
        elif state is State.CLOSED:
            self.window.clear(now)  # old failures must not re-trip a breaker that just closed
        moves.append(move)
        self._refresh()

    def _refresh(self) -> None:
        working = self.enabled and not self.shut
        self.fast = (
            working
            and self.state is State.CLOSED
            and self.options.capacity is None
            and not self._watched & CALLS
        )
        self.rejecting = (
            working
            and self.state is State.OPEN
            and not self._forced
            and not self._watched & REJECTIONS
        )

    def _retry_after(self, now: float) -> float:
        if self.state is State.OPEN:
            if self._forced:
                return self.options.reset_timeout  # no release time: the reset timeout, a hint
            return max(0.0, self.opened_until - now)
        period = self._trials()
        if not period.full(self.options):
            return 0.0
        limit = self.options.trial_timeout
        return max(0.0, min((t.started + limit - now for t in period.trials), default=0.0))

    # ------------------------------------------------------------------ the fleet's decisions

    def follow_fleet(self, verdict: str, now: float, until: float, moves: Moves) -> None:
        """Take what the fleet decided, by `verdict`:

        - "open": the fleet is open until `until`: refuse until then, held by the fleet;
        - "wait": another process runs the fleet's trial, until `until` at the latest: refuse;
        - "trial": this process runs the fleet's trial: go half-open, with its permits;
        - "close": the fleet closed: a breaker the fleet held open closes, a local open stays.

        A breaker forced open by hand stays so, and a fleet trial running here is left to end:
        its outcome is what the fleet waits for. A trial granted here but never started gives
        way to what the fleet says next.
        """
        fleet = self.fleet
        if fleet is None:
            return
        fleet.state = {"open": "open", "close": "closed"}.get(verdict, "half_open")
        # A trial that has started here is left to end: its outcome is what the fleet waits
        # for. One granted but not started (no call came before the lease ran out) yields.
        running_trial = (
            fleet.trial and self.state is State.HALF_OPEN and self._trials().admitted > 0
        )
        if self._forced or (running_trial and verdict != "close"):
            return
        if verdict == "close":
            if fleet.held and self.state is not State.CLOSED:
                self._become(State.CLOSED, now, moves)
            fleet.held = False
        elif verdict == "trial":
            self._become(State.HALF_OPEN, now, moves)
            fleet.trial = fleet.held = True
        else:
            fleet.trial = False  # a trial granted but never started: its lease is gone
            if self.state is not State.OPEN:
                self._become(State.OPEN, now, moves)
            self.opened_until = until
            fleet.held = True
