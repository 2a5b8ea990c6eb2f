"""The breaker's decisions, sans I/O: state, window accounting, admission, trials, transitions.

`BreakerCore` is a state machine that is told the time. Every method that depends on time takes
`now` (monotonic seconds, from whatever clock the caller reads); nothing here reads a clock,
sleeps, awaits, starts a timer, logs or calls user code. The async runner, the thread runner,
`Attempt` and the integrations (httpx, FastAPI, a fleet coordinator) are thin users of it: they
read the clock, run the call, and report what happened.

The contract:

- **Admission.** `admit(now, moves)` returns a `Ticket` for a call it lets through, or a
  `Refusal` (open, half-open with every trial permit taken, or `capacity` calls running), or
  `PASS` (disabled: run the call uncounted). The caller refuses every call once `shut`.
  `check(now, moves)` is the same question without admitting anything.
- **Outcomes.** Every ticket is settled exactly once: `succeeded(...)`, `failed(...)` with a
  kind (`FAILURE`, `TIMEOUT`, `EXCUSED`, `CANCELLED`), or `abandon()` for a call that never
  started. A success or failure records its latency in the window at `now`. A ticket admitted
  before the last transition (an older *generation*) counts in the window but never moves the
  state: a slow call from before an opening cannot close or re-open the circuit.
- **Transitions.** A method that changes the state appends the transition's event name
  (`"open"`, `"half_open"`, `"close"`) to the `moves` list it was given, in order; the caller
  announces them after the call returns, outside the lock. OPEN turns HALF_OPEN when a method
  is called at or after `opened_until`; no timer is needed.
- **The lock-free paths.** `fast` is True while a closed call needs no bookkeeping beyond its
  latency (closed, enabled, no capacity, nobody watching each call): the caller may then skip
  `admit()` and append the latency to `window.current` itself, after `rotate()` if `now` is
  past `window.current_end`. `rejecting` is the same for refusals while open: append to
  `window.current.rejected`. Both flags are refreshed under the lock on every change.
- **Threads.** Every method is safe to call from any thread. The lock (shared with a few other
  cores) is never held while anything outside this module runs.
"""

from __future__ import annotations

import functools
import threading

from ._buckets import Bucket, Totals
from ._fleet import Deltas, FleetLink
from ._options import BreakerOptions
from ._state import State
from ._stats import Stats
from ._tickets import (
    CANCELLED,
    EXCUSED,
    FAILURE,
    PASS,
    TIMEOUT,
    Pass,
    Refusal,
    Ticket,
    Trial,
)
from ._transitions import CALLS, NEVER, REJECTIONS, Moves, Transitions
from ._window import RollingWindow

__all__ = ["BreakerCore", "Moves"]

# The cores' locks: each core takes one of these, by its id. A lock per core would cost 88 bytes
# per breaker; sharing is safe because a core never holds its lock while it takes another or
# runs anything outside this module, so no two acquisitions nest, and it is cheap because each
# is held for a few microseconds.
_LOCKS = tuple(threading.Lock() for _ in range(64))


@functools.lru_cache(maxsize=256)
def _bucket_width(seconds: float, buckets: int) -> float:
    """One float for every window of the same shape, not one per breaker."""
    return seconds / buckets


class BreakerCore(Transitions):
    """The state machine of one breaker; see the module docstring for its contract."""

    __slots__ = ("_lock", "in_flight")

    def __init__(self, options: BreakerOptions, now: float) -> None:
        self.options = options
        self.window = RollingWindow(
            _bucket_width(options.rolling_count_timeout, options.rolling_count_buckets),
            options.rolling_count_buckets,
            now,
        )
        warm = options.allow_warm_up
        self._warm_until = now + options.rolling_count_timeout if warm else NEVER
        self.state = State.CLOSED
        self.generation = 0
        self.opened_until = 0.0
        self._forced = False
        self.enabled = options.enabled
        self.shut = False
        self.in_flight = 0  # calls holding a capacity slot
        self._period = None
        self.fleet = None
        self._lock = _LOCKS[(id(self) >> 4) % len(_LOCKS)]
        self._watched = 0
        self.fast = self.rejecting = False
        self._refresh()

    @property
    def busy(self) -> bool:
        """Whether the core's lock is held, by this or another core: a finalizer, which may run
        in the middle of the core's own work, must not wait for it."""
        return self._lock.locked()

    # ------------------------------------------------------------------ admission

    def admit(self, now: float, moves: Moves) -> Ticket | Refusal | Pass:
        if not self.enabled:  # shut down too: the caller checks `shut` first
            return PASS
        with self._lock:
            state = self._observe(now, moves)
            if self._refuses(state):
                self._refused(now)
                return Refusal(True, self._retry_after(now))
            capacity = self.options.capacity
            if capacity is not None and self.in_flight >= capacity:
                self.window.bucket(now).semaphore_rejections += 1
                return Refusal(False, 0.0)
            trial = None
            if state is State.HALF_OPEN:
                trial = Trial(now)
                period = self._trials()
                period.trials.append(trial)
                period.admitted += 1
            if capacity is not None:
                self.in_flight += 1
            return Ticket(self.generation, trial, capacity is not None)

    def check(self, now: float, moves: Moves) -> Refusal | None:
        """The refusal a call would meet at `now`, counted as a rejection; admits nothing."""
        with self._lock:
            if self._refuses(self._observe(now, moves)):
                self._refused(now)
                return Refusal(True, self._retry_after(now))
        return None

    def _refused(self, now: float) -> None:
        self.window.bucket(now).reject()
        fleet = self.fleet
        if fleet is not None and fleet.held and now >= self.opened_until:
            fleet.wants_trial = True  # past the fleet's deadline: ask the fleet for the trial

    def rotate(self, now: float) -> bool:
        """Start the window's bucket for `now`; True if a bucket closed (a `snapshot` moment)."""
        with self._lock:
            return self.window.rotate(now)

    # ------------------------------------------------------------------ outcomes

    def succeeded(self, ticket: Ticket, now: float, latency: float, moves: Moves) -> None:
        """A success: records the latency, gives the slot back, judges a trial."""
        with self._lock:
            self.window.bucket(now).succeeded.append(latency)
            self._release(ticket)
            if ticket.trial is not None:
                # A trial that outlived its limit by the clock failed, however it ended.
                self._observe(now, moves)
                if self._owns(ticket):
                    self._trials().successes += 1
                    self._judge_trials(now, moves, None)

    def failed(
        self,
        ticket: Ticket | None,
        generation: int,
        kind: int,
        now: float,
        latency: float,
        moves: Moves,
        open_for: float | None = None,
    ) -> None:
        """A call that raised. `ticket` is None on the fast path, whose call held nothing.

        `open_for`: if this failure opens the circuit, it stays open at least that long.
        """
        with self._lock:
            bucket = self.window.bucket(now)
            if kind == CANCELLED:
                bucket.cancelled += 1
            elif kind == EXCUSED:
                bucket.succeeded.append(latency)
            else:
                bucket.fail(latency)
                if kind == TIMEOUT:
                    bucket.timeouts += 1
            if ticket is not None:
                self._release(ticket)
                if ticket.trial is not None:
                    self._observe(now, moves)  # an over-age trial has failed, as in succeeded()
            owns = generation == self.generation and (ticket is None or self._owns(ticket))
            if owns and ticket is not None and ticket.trial is not None:
                if kind in (CANCELLED, EXCUSED):
                    self._trials().admitted -= 1  # the permit goes back
                else:
                    self._trials().failures += 1
                self._judge_trials(now, moves, open_for)
            elif owns and kind in (FAILURE, TIMEOUT) and self.state is State.CLOSED:
                self._check_trip(now, moves, open_for)

    def abandon(self, ticket: Ticket) -> None:
        """A call admitted but never started: its slot and trial permit go back, nothing counts."""
        with self._lock:
            self._release(ticket)
            if ticket.trial is not None and self._owns(ticket):
                self._trials().admitted -= 1

    def answered(self, ticket: Ticket, now: float, moves: Moves) -> bool:
        """The upstream answered: a trial within its limit keeps no limit from now on.

        False if the trial had already run out its limit (it failed, however it ends).
        """
        trial = ticket.trial
        if trial is None:
            return True
        with self._lock:
            self._observe(now, moves)
            if not trial.expired:
                trial.answered = True
        return not trial.expired

    def fell_back(self, now: float) -> None:
        with self._lock:
            self.window.bucket(now).fallbacks += 1

    def _owns(self, ticket: Ticket) -> bool:
        """Whether the call may still move the state: admitted this period, not expired."""
        trial = ticket.trial
        if ticket.generation != self.generation:
            return False
        if trial is None:
            return True
        if trial.expired:
            return False
        self._trials().trials.remove(trial)  # this period's: the generation is the same
        return True

    def _release(self, ticket: Ticket) -> None:
        if ticket.holds_slot:
            ticket.holds_slot = False
            self.in_flight -= 1

    # ------------------------------------------------------------------ transitions

    def observe(self, now: float, moves: Moves) -> State:
        """The state at `now`, after the transitions the clock has made due."""
        with self._lock:
            return self._observe(now, moves)

    def move(self, state: State, now: float, moves: Moves, *, forced: bool = False) -> None:
        """Open, force open or close by hand. Re-opening restarts the reset timeout, silently."""
        with self._lock:
            if self.state is not state:
                self._become(state, now, moves, forced=forced)
            elif state is State.OPEN:
                self._forced = forced
                self.opened_until = now + self.options.reset_timeout
                self.generation += 1
                self._refresh()
            else:
                self.window.clear(now)  # close() on a closed breaker still resets its window

    def restore(
        self,
        state: State,
        now: float,
        forced: bool,
        retry_after: float | None,
        buckets: list[Bucket],
    ) -> None:
        """Take the state and window a snapshot gives: no transition is announced."""
        with self._lock:
            self.window.restore(now, buckets)
            if state is not State.CLOSED:
                self._become(state, now, [], forced=forced, counted=False)
                if state is State.OPEN:
                    self.opened_until = now + (retry_after or 0.0)

    # ------------------------------------------------------------------ switches

    def watch(self, calls: bool, rejections: bool) -> None:
        """Whether someone must see each admitted call, and each rejection (event handlers)."""
        with self._lock:
            self._watched = (CALLS if calls else 0) | (REJECTIONS if rejections else 0)
            self._refresh()

    def set_enabled(self, enabled: bool) -> None:
        with self._lock:
            self.enabled = enabled
            self._refresh()

    def shutdown(self) -> bool:
        """Stop for good; False if already shut down."""
        with self._lock:
            if self.shut:
                return False
            self.shut = True
            self.enabled = False
            self._refresh()
            return True

    # ------------------------------------------------------------------ reading

    @property
    def forced(self) -> bool:
        return self._forced

    def retry_after(self, now: float, moves: Moves) -> float | None:
        """Seconds until a call would be admitted at `now`; None while closed."""
        with self._lock:
            state = self._observe(now, moves)
            return None if state is State.CLOSED else self._retry_after(now)

    def stats(self, now: float) -> Stats:
        with self._lock:
            return self.window.stats(now)

    def read(self, now: float, moves: Moves) -> tuple[State, float | None, Totals, Totals]:
        """What an exporter reads, under one lock: (the state at `now`, after the transitions
        the clock made due; seconds until a call would be admitted, None while closed; everything
        counted since the breaker was made, transitions included; the window's counts)."""
        with self._lock:
            state = self._observe(now, moves)
            retry_after = None if state is State.CLOSED else self._retry_after(now)
            totals, window = self.window.read(now)
            return state, retry_after, totals, window

    def describe(self, now: float) -> tuple[float, float | None, bool]:
        """(the window's error percentage, seconds until a call would be admitted or None while
        closed, whether the fleet holds this state), as they stand: no transition is made, so
        a transition's log may read them."""
        with self._lock:
            successes, failures = self.window.outcome_counts(now)
            counted = successes + failures
            percentage = 100.0 * failures / counted if counted else 0.0
            retry = None if self.state is State.CLOSED else self._retry_after(now)
            fleet = self.fleet
            return percentage, retry, fleet is not None and fleet.held

    def window_list(self, now: float) -> list[dict[str, object]]:
        with self._lock:
            return self.window.to_list(now)

    def idle(self, now: float) -> bool:
        """Whether forgetting this breaker loses nothing worth keeping. Enabled, not shut, not
        forced open, nothing holding a slot, and either:

        - closed with no failure in the window: what it forgets says all is well; or
        - quiet: no call at all in the window (none ended, none refused), and no wait left:
          open past its reset timeout, or half-open with no trial running. A breaker still
          being called has its refusals in its window, so a flood of new names cannot reset
          it; one nobody calls would only let the next call through as a trial.
        """
        if not (self.enabled and not self.shut) or self._forced:
            return False
        with self._lock:
            if self.in_flight:
                return False
            state = self.state
            if state is State.CLOSED:
                return self.window.failures(now) == 0
            if state is State.OPEN and now < self.opened_until:
                return False
            if state is State.HALF_OPEN and self._trials().trials:
                return False
            return self.window.quiet(now)

    # ------------------------------------------------------------------ the fleet

    def link_fleet(self) -> FleetLink:
        """Start following a fleet (see `_fleet`): returns the link a coordinator drives."""
        with self._lock:
            if self.fleet is None:
                self.fleet = FleetLink()
            return self.fleet

    def keep_fleet_open(self) -> None:
        """The fleet forgot its state: an open held from it becomes this core's own, refusing
        until its deadline, then a trial by this core's clock (a local open stays local)."""
        with self._lock:
            if self.fleet is not None:
                self.fleet.held = False

    def unlink_fleet(self) -> None:
        with self._lock:
            self.fleet = None

    def drain(self, now: float) -> tuple[Deltas, bool, str]:
        """(what was counted since the last drain, whether a trial is wanted, the outcome of a
        fleet trial to report or ""). Clears the trial wish and the outcome."""
        with self._lock:
            fleet = self.fleet
            if fleet is None:
                return Deltas(0, 0, 0), False, ""
            deltas = fleet.drain(self.window.live(now))
            wants, outcome = fleet.wants_trial, fleet.outcome
            fleet.outcome = ""
            return deltas, wants, outcome

    def follow(self, verdict: str, now: float, until: float, moves: Moves) -> None:
        """Take the fleet's decision (see `Transitions.follow_fleet`); `until` is this core's
        clock: the fleet's open deadline, or the end of another process's trial lease."""
        with self._lock:
            self.follow_fleet(verdict, now, until, moves)

    def fleet_health(self, healthy: bool) -> None:
        """Whether the coordinator reaches the fleet. While it does not, a held breaker follows
        its own clock: a known fleet open holds until its deadline, then a local trial."""
        with self._lock:
            if self.fleet is not None:
                self.fleet.healthy = healthy
