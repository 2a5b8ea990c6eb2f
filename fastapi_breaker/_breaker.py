"""The circuit breaker: Opossum's model, on asyncio and threads, with its known flaws fixed.

`CircuitBreaker` is the public face. Its decisions are made by a sans-IO core
(`_core.BreakerCore`), which is told the time; its calls are run by the async runner
(`_async_calls`) and the thread runner (`_sync_calls`). This module builds a breaker and holds
what users do with it besides calling: control, events, inspection, snapshots, health checks.

Every state decision reads the injected clock. No timer moves the state: OPEN turns HALF_OPEN
when someone looks (a call, `state`, `retry_after`) and finds the reset timeout passed.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from ._async_calls import no_action
from ._attempt import Attempt
from ._base import Fallback, default_name
from ._clock import Clock, first_reading, monotonic
from ._core import BreakerCore
from ._errors import BreakerShutdownError, CircuitOpenError
from ._events import Event, EventHandler, EventName
from ._metrics import BreakerMetrics, read_metrics
from ._options import BreakerOptions, ErrorFilter, check_seconds, shared
from ._snapshot import parse_snapshot, snapshot
from ._state import State
from ._stats import Stats
from ._sync_calls import SyncCalls
from ._tickets import PASS, Ticket

__all__ = ["CircuitBreaker"]

P = ParamSpec("P")
R = TypeVar("R")

_isawaitable = inspect.isawaitable


class CircuitBreaker(SyncCalls):
    """An asyncio circuit breaker with a rolling window, fallbacks, events and stats.

    Use it with a bound action (`await breaker.fire(...)`), on any callable
    (`await breaker.call(fn, ...)`), from threads (`breaker.call_sync(fn, ...)`), or as a
    decorator on an async function.
    """

    __slots__ = ()

    def __init__(
        self,
        action: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        timeout: float | None = 10.0,
        reset_timeout: float = 30.0,
        error_threshold_percentage: float = 50.0,
        rolling_count_timeout: float = 10.0,
        rolling_count_buckets: int = 10,
        volume_threshold: int = 10,
        allow_warm_up: bool = False,
        capacity: int | None = None,
        error_filter: ErrorFilter | None = None,
        enabled: bool = True,
        half_open_max_calls: int = 1,
        half_open_timeout: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        options = BreakerOptions(
            timeout=timeout,
            reset_timeout=reset_timeout,
            error_threshold_percentage=error_threshold_percentage,
            rolling_count_timeout=rolling_count_timeout,
            rolling_count_buckets=rolling_count_buckets,
            volume_threshold=volume_threshold,
            allow_warm_up=allow_warm_up,
            capacity=capacity,
            error_filter=error_filter,
            enabled=enabled,
            half_open_max_calls=half_open_max_calls,
            half_open_timeout=half_open_timeout,
        )
        self._setup(action, name, shared(options), clock)

    @classmethod
    def from_options(
        cls,
        options: BreakerOptions,
        action: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        clock: Clock | None = None,
    ) -> CircuitBreaker:
        """A breaker from an already validated `BreakerOptions` (what a registry holds)."""
        if not isinstance(options, BreakerOptions):
            raise TypeError(f"options must be a BreakerOptions, got {options!r}")
        breaker = cls.__new__(cls)
        breaker._setup(action, name, options, clock)
        return breaker

    def _setup(
        self,
        action: Callable[..., Any] | None,
        name: str | None,
        options: BreakerOptions,
        clock: Clock | None,
    ) -> None:
        if action is not None and not callable(action):
            raise TypeError(f"action must be callable or None, got {action!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name must be a non-empty string or None, got {name!r}")
        if clock is None:
            clock = monotonic
        elif not callable(clock):
            raise TypeError(f"clock must be a callable returning monotonic seconds, got {clock!r}")
        core = BreakerCore(options, first_reading(clock))
        self._init_base(name or default_name(action), name is not None, core, clock, action)
        self._bind(action)

    def _bind(self, action: Callable[..., Any] | None) -> None:
        self._action = action
        self.fire = no_action if action is None else functools.partial(self.call, action)

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self.state.value}>"

    # ------------------------------------------------------------------ calling

    def begin(self) -> Attempt:
        """Admit one call whose outcome you report yourself; see `Attempt`.

        Raises what `call()` would refuse with: `CircuitOpenError`, `CapacityExceededError`,
        `BreakerShutdownError`. No fallback runs: the integration decides what to answer.
        """
        core = self.core
        if core.fast:
            # Closed, no capacity, nobody listening: what `_enter()` would decide, without
            # the core's lock and its event bookkeeping.
            return Attempt(self, Ticket(core.generation, None, False), self.clock())
        entered: Any = self._enter((), {})
        if type(entered) is Ticket:
            try:
                start = self.clock()
            except BaseException:
                core.abandon(entered)
                raise
            return Attempt(self, entered, start)
        if entered is PASS:
            return Attempt(self, None, 0.0)
        try:
            raise entered
        finally:
            del entered  # no cycle error -> traceback -> frame -> error

    def check(self) -> None:
        """Raise the refusal a call would meet now, admitting nothing; else return.

        For code that can fail sooner than the call: a route that would build an upstream
        request only to have it refused. A refusal counts and emits as a rejection; in
        half-open a free trial permit is left for the call that follows.
        """
        core = self.core
        if core.shut:
            raise BreakerShutdownError(self.name)
        if core.fast or not core.enabled:
            return
        now = self.clock()
        if now >= core.window.current_end:
            self.start_bucket(now)
        moves: list[str] = []
        refused = core.check(now, moves)
        self.announce(moves)
        if refused is None:
            return
        refusal = CircuitOpenError(self.name, refused.retry_after)
        if "reject" in self.listening:
            self.emit(Event("reject", self, error=refusal))
        try:
            raise refusal
        finally:
            del refusal  # no cycle error -> traceback -> frame -> error

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a function so that every call goes through this breaker."""
        if self._action is None:
            self._bind(fn)
            if not self._name_given:
                self.name = default_name(fn)
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await self.call(fn, *args, **kwargs)

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return self.call_sync(fn, *args, **kwargs)

        return sync_wrapper

    # ------------------------------------------------------------------ control

    def fallback(self, fn: Fallback | CircuitBreaker) -> CircuitBreaker:
        """Set what answers when the call fails or is refused; it gets `(*args, exc, **kwargs)`."""
        if not callable(fn):
            raise TypeError(f"a fallback must be callable or a CircuitBreaker, got {fn!r}")
        self._fallback = fn
        return self

    def on(self, event: EventName, handler: EventHandler) -> CircuitBreaker:
        """Subscribe `handler(event)` to an event; sync and async handlers both work."""
        self._subscribe(event, handler)
        return self

    def off(self, event: EventName, handler: EventHandler) -> CircuitBreaker:
        self._unsubscribe(event, handler)
        return self

    def open(self) -> None:
        """Open now. As in Opossum, a half-open trial is allowed after `reset_timeout`."""
        self._move(State.OPEN)

    def force_open(self) -> None:
        """Open now and stay open, admitting no trial, until `close()` releases the breaker."""
        self._move(State.OPEN, forced=True)

    def close(self) -> None:
        """Close now (releasing a forced open) and clear the window."""
        self._move(State.CLOSED)

    def _move(self, state: State, *, forced: bool = False) -> None:
        moves: list[str] = []
        self.core.move(state, self.clock(), moves, forced=forced)
        self.announce(moves)

    def disable(self) -> None:
        """Let every call straight through, uncounted, until `enable()`."""
        self.core.set_enabled(False)

    def enable(self) -> None:
        self.core.set_enabled(True)

    def shutdown(self) -> None:
        """Stop for good: later calls raise `BreakerShutdownError`; timers and tasks end."""
        if not self.core.shutdown():
            return
        for task in self._health_tasks or ():
            task.cancel()
        self._health_tasks = None
        queue, self._queue = self._queue, None
        if queue is not None:
            queue.close()  # disarmed only if no call, of any breaker, is waiting on it
        if self._emitter is not None:
            self._emitter.cancel_pending()
        self.announce(["shutdown"])

    def health_check(self, fn: Callable[[], Any], interval: float = 5.0) -> asyncio.Task[None]:
        """Run `fn` every `interval` seconds; when it raises, emit `health_check_failed` and open.

        Needs a running event loop. The task ends with `shutdown()`.
        """
        if self.core.shut:
            raise BreakerShutdownError(self.name)
        if not callable(fn):
            raise TypeError(f"health_check needs a callable, got {fn!r}")
        check_seconds("interval", interval)  # NaN would run `fn` on every turn of the loop
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("health_check needs a running event loop") from None
        task = loop.create_task(self._health_loop(fn, float(interval)))
        if self._health_tasks is None:
            self._health_tasks = set()
        self._health_tasks.add(task)
        task.add_done_callback(self._health_tasks.discard)
        return task

    async def _health_loop(self, fn: Callable[[], Any], interval: float) -> None:
        while not self.core.shut:
            await asyncio.sleep(interval)
            try:
                outcome = fn()
                if _isawaitable(outcome):
                    await outcome
            except Exception as exc:
                if "health_check_failed" in self.listening:
                    self.emit(Event("health_check_failed", self, error=exc))
                self.open()

    # ------------------------------------------------------------------ inspection

    @property
    def state(self) -> State:
        moves: list[str] = []
        state = self.core.observe(self.clock(), moves)
        self.announce(moves)
        return state

    @property
    def opened(self) -> bool:
        return self.state is State.OPEN

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def half_open(self) -> bool:
        return self.state is State.HALF_OPEN

    @property
    def enabled(self) -> bool:
        return self.core.enabled

    @property
    def is_shutdown(self) -> bool:
        return self.core.shut

    @property
    def forced_open(self) -> bool:
        return self.core.forced

    @property
    def retry_after(self) -> float | None:
        """Seconds until a call would be admitted; None while closed.

        A forced-open breaker has no release time, so it reports `reset_timeout` as a hint.
        """
        moves: list[str] = []
        value = self.core.retry_after(self.clock(), moves)
        self.announce(moves)
        return value

    @property
    def has_fallback(self) -> bool:
        """Whether a fallback answers this breaker's refusals and failures."""
        return self._fallback is not None

    def forgettable(self) -> bool:
        """Nothing attached after creation (a fallback, a bound action, a health check) and no
        timed call that may still run: a registry may forget this breaker if its core is idle.
        """
        queue = self._queue
        return (
            self._fallback is None
            and self._action is None
            and not self._health_tasks
            and (queue is None or not queue.runs(self))
        )

    @property
    def stats(self) -> Stats:
        """A frozen snapshot of the rolling window; percentiles are computed here, not per call."""
        return self.core.stats(self.clock())

    def metrics(self) -> BreakerMetrics:
        """What an exporter reads at scrape time: the state, calls by outcome and latencies
        since the breaker was made, transitions, the window, the options. Its cost does not
        grow with traffic; see `BreakerMetrics`."""
        return read_metrics(self)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe picture of the breaker; `from_dict()` rebuilds a breaker from it."""
        state = self.state
        return snapshot(self.name, state, self.core, self.clock())

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        action: Callable[..., Any] | None = None,
        *,
        error_filter: ErrorFilter | None = None,
        clock: Clock | None = None,
    ) -> CircuitBreaker:
        """Rebuild a breaker from `to_dict()`: options, state, time left open, and window.

        Code is not data: pass the action and `error_filter` again. Times are restored relative
        to the new clock, so a dict may cross processes. A dict from elsewhere is checked as
        strictly as options: a bad value raises `ValueError` naming its path
        (`window[3].age`, `options.timeout`); `stats` is ignored, as the window rebuilds it.
        """
        snapshot = parse_snapshot(data, error_filter)
        breaker = cls.from_options(snapshot.options, action, name=snapshot.name, clock=clock)
        now = breaker.clock()
        core = breaker.core
        core.restore(
            snapshot.state, now, snapshot.forced_open, snapshot.retry_after, snapshot.buckets
        )
        if not snapshot.enabled:
            breaker.disable()
        if snapshot.shutdown:
            breaker.shutdown()
        return breaker
