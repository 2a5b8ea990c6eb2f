"""The circuit breaker: Opossum's model, on asyncio, with its known flaws fixed.

The hot path is `call()` while the breaker is closed. It reads one flag (`_fast`), two clock
values and appends one latency to the current bucket: no lock, no event object, no timer per
call. Everything else (open, half-open, capacity, listeners, disabled, shut down) goes through
`_enter()`, which takes the lock.

Every state decision reads the injected clock. No timer moves the state: OPEN turns HALF_OPEN
when someone looks (a call, `state`, `retry_after`) and finds the reset timeout passed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import inspect
import itertools
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable
from types import CoroutineType
from typing import Any, ParamSpec, TypeVar, cast

from ._attempt import Attempt
from ._clock import Clock, first_reading, monotonic
from ._deadlines import Deadline, DeadlineQueue, current_task_of
from ._errors import (
    BreakerShutdownError,
    CallTimeoutError,
    CapacityExceededError,
    CircuitOpenError,
)
from ._events import Emitter, Event, EventHandler, EventName
from ._options import (
    MAX_SECONDS,
    BreakerOptions,
    ErrorFilter,
    check_keys,
    check_seconds,
    shown,
)
from ._state import State
from ._stats import Stats
from ._window import RollingWindow, parse_window

__all__ = ["CircuitBreaker"]

logger = logging.getLogger("fastapi_breaker")

P = ParamSpec("P")
R = TypeVar("R")

_current_task = asyncio.current_task
_get_running_loop = asyncio.get_running_loop
_isawaitable = inspect.isawaitable
# Builds a CircuitOpenError without running its Python `__init__`: `BaseException.__new__`
# already stores the arguments in `args`, and rejecting is the one path where that matters.
_new_exception = CircuitOpenError.__new__

# How a counted call ended, for the bookkeeping under the lock.
_SUCCESS, _FAILURE, _TIMEOUT, _FILTERED, _CANCELLED = range(5)

Fallback = Callable[..., Any]

# What `to_dict()` writes, in its order: `from_dict()` refuses any other key.
_SNAPSHOT_KEYS = (
    "name",
    "state",
    "enabled",
    "shutdown",
    "forced_open",
    "retry_after",
    "options",
    "window",
    "stats",
)
_SNAPSHOT_OPTIONS = tuple(
    f.name for f in dataclasses.fields(BreakerOptions) if f.name != "error_filter"
)
_STATE_NAMES = tuple(state.value for state in State)


class _Trial:
    """A half-open trial in flight. `expired` is set when the clock ran out its time limit;
    `answered` once the upstream answered within it, after which the limit no longer applies."""

    __slots__ = ("answered", "expired", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.expired = False
        self.answered = False


class _Ticket:
    """What `_enter()` hands a call it admits on the guarded path."""

    __slots__ = ("generation", "holds_slot", "trial")

    def __init__(self, generation: int, trial: _Trial | None, holds_slot: bool) -> None:
        self.generation = generation
        self.trial = trial
        self.holds_slot = holds_slot


class _PassThrough:
    """Marker: the breaker is disabled and the call goes straight to the function."""


_PASS = _PassThrough()


class CircuitBreaker:
    """An asyncio circuit breaker with a rolling window, fallbacks, events and stats.

    Use it with a bound action (`await breaker.fire(...)`), on any callable
    (`await breaker.call(fn, ...)`), from threads (`breaker.call_sync(fn, ...)`), or as a
    decorator on an async function.
    """

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
        self._setup(action, name, options, clock)

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
        self._bind(action)
        self._name_given = name is not None
        self.name: str = name or _default_name(action)
        self.options = options
        self._clock = clock
        self._timeout = options.timeout
        self._lock = threading.RLock()
        self._emitter = Emitter()
        now = first_reading(clock)
        self._window = RollingWindow(
            options.rolling_count_timeout, options.rolling_count_buckets, now, self._lock
        )
        self._warm_until = now + options.rolling_count_timeout if options.allow_warm_up else now
        self._state = State.CLOSED
        # Bumped on every state change: only calls admitted in the current period move the state.
        self._generation = 0
        self._opened_until = 0.0
        self._forced = False
        self._enabled = options.enabled
        self._shut = False
        self._in_flight = 0
        self._trials: list[_Trial] = []
        self._trials_admitted = 0
        self._trial_successes = 0
        self._trial_failures = 0
        self._fallback: Fallback | CircuitBreaker | None = None
        self._queues: dict[tuple[asyncio.AbstractEventLoop, bool], DeadlineQueue] = {}
        self._queue: DeadlineQueue | None = None  # the timeout queue of the loop used last
        self._health_tasks: set[asyncio.Task[None]] | None = None  # made by health_check()
        self._fast = self._rejecting = False
        self._refresh_fast()

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self.state.value}>"

    # ------------------------------------------------------------------ calling

    def fire(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        """Run the bound action under the breaker: `await breaker.fire(...)`."""
        if self._action is None:
            raise TypeError(f"breaker {self.name!r} has no action; use `await breaker.call(fn)`")
        return self.call(self._action, *args, **kwargs)

    def _bind(self, action: Callable[..., Any] | None) -> None:
        self._action = action
        if action is not None:
            # Shadow `fire` with `call` already bound to the action: a C-level partial, where
            # the method above would cost one more Python frame and a repack of the arguments.
            setattr(self, "fire", functools.partial(self.call, action))  # noqa: B010

    async def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run `fn(*args, **kwargs)` under the breaker; an awaitable result is awaited."""
        ticket: _Ticket | None
        if self._fast:
            ticket = None
            generation = self._generation
            limited = self._timeout is not None
        elif self._rejecting and (now := self._clock()) < self._opened_until:
            # Open, and nobody listens: refuse with as little work as possible.
            window = self._window
            if now >= window.current_end:
                self._rotated(now)
            window.current.rejected.append(1)
            if self._fallback is None:
                # Raised straight from the expression: an error held in a local makes a cycle
                # (error -> traceback -> this frame -> error) that only the cyclic GC frees, and
                # a flood of rejections then buys long GC pauses.
                raise _new_exception(CircuitOpenError, self.name, self._opened_until - now)
            rejection = _new_exception(CircuitOpenError, self.name, self._opened_until - now)
            return await self._run_fallback(rejection, args, kwargs)
        else:
            entered: Any = self._enter(args, kwargs)
            if type(entered) is not _Ticket:
                if entered is _PASS:
                    result = fn(*args, **kwargs)
                    return (await result) if _isawaitable(result) else result
                if self._fallback is None:
                    try:
                        raise entered
                    finally:
                        del entered  # no cycle: see the rejection above
                return await self._run_fallback(entered, args, kwargs)
            ticket = entered
            generation = ticket.generation
            limited = ticket.trial is not None or self._timeout is not None

        clock = self._clock
        # An error between admission and the call (a clock, a loop, a queue that fails) must
        # not keep the slot or the trial permit that admission took. `try` costs nothing on
        # 3.11 until something raises.
        if not limited:
            try:
                start = clock()
            except BaseException:
                self._abandon(ticket)
                raise
            try:
                result = fn(*args, **kwargs)
                if type(result) is CoroutineType or _isawaitable(result):
                    result = await result
            except BaseException as exc:
                return await self._failed(exc, None, start, generation, ticket, args, kwargs)
        else:
            try:
                loop = _get_running_loop()
                queue = self._queue
                if ticket is not None and ticket.trial is not None:
                    queue = self._queue_for(loop, trial=True)
                elif queue is None or queue.loop is not loop:
                    queue = self._queue_for(loop)
                start = clock()
                deadline = queue.start(current_task_of(loop))  # type: ignore[arg-type]
            except BaseException:
                self._abandon(ticket)
                raise
            try:
                result = fn(*args, **kwargs)
                if type(result) is CoroutineType or _isawaitable(result):
                    result = await result
            except BaseException as exc:
                queue.finish(deadline)
                return await self._failed(exc, deadline, start, generation, ticket, args, kwargs)
            queue.finish(deadline)
            if deadline.expired:  # the call swallowed our cancellation and returned late
                error = asyncio.CancelledError()
                return await self._failed(error, deadline, start, generation, ticket, args, kwargs)

        now = clock()
        window = self._window
        if now >= window.current_end:
            self._rotated(now)
        window.current.succeeded.append(now - start)
        if ticket is not None:
            self._succeeded(result, now - start, ticket, args, kwargs)
        return result

    def call_sync(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """Run a sync `fn` under the breaker, from any thread.

        A thread cannot be interrupted, so the time limit is checked when `fn` returns: a call
        that took longer counts as a timeout and raises `CallTimeoutError`, its result dropped.
        """
        entered = self._enter(args, kwargs)
        if entered is _PASS:
            return fn(*args, **kwargs)
        if not isinstance(entered, _Ticket):
            try:
                return cast(R, self._fallback_sync(cast(BaseException, entered), args, kwargs))
            finally:
                del entered  # no cycle error -> traceback -> frame -> error
        ticket = entered
        limit = self.options.trial_timeout if ticket.trial is not None else self._timeout
        clock = self._clock
        try:
            start = clock()
        except BaseException:
            self._abandon(ticket)
            raise
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            late = limit is not None and clock() - start > limit
            # No local for the error: it would make a cycle through this frame's traceback.
            return cast(
                R,
                self._fallback_sync(
                    self._settle_error(exc, late, start, ticket.generation, ticket, args, kwargs),
                    args,
                    kwargs,
                ),
            )
        if _isawaitable(result):
            _discard(result)
            # A misuse, not a downstream failure: settle it as a call that never happened.
            with contextlib.suppress(asyncio.CancelledError):
                self._settle_error(
                    asyncio.CancelledError(), False, start, ticket.generation, ticket, args, kwargs
                )
            raise TypeError(f"call_sync got an awaitable from {fn!r}; use `await breaker.call()`")
        now = clock()
        if limit is not None and now - start > limit:
            late_error = CallTimeoutError(self.name, limit)
            try:
                return cast(
                    R,
                    self._fallback_sync(
                        self._settle_error(
                            late_error, True, start, ticket.generation, ticket, args, kwargs
                        ),
                        args,
                        kwargs,
                    ),
                )
            finally:
                del late_error  # no cycle error -> traceback -> frame -> error
        window = self._window
        if now >= window.current_end:
            self._rotated(now)
        window.current.succeeded.append(now - start)
        self._succeeded(result, now - start, ticket, args, kwargs)
        return result

    def begin(self) -> Attempt:
        """Admit one call whose outcome you report yourself; see `Attempt`.

        Raises what `call()` would refuse with: `CircuitOpenError`, `CapacityExceededError`,
        `BreakerShutdownError`. No fallback runs: the integration decides what to answer.
        """
        if self._fast:
            # Closed, no capacity, nobody listening: what `_enter()` would decide, without
            # its lock, its state check and its event bookkeeping.
            return Attempt(self, _Ticket(self._generation, None, False), self._clock())
        entered: Any = self._enter((), {})
        if type(entered) is _Ticket:
            try:
                start = self._clock()
            except BaseException:
                self._abandon(entered)
                raise
            return Attempt(self, entered, start)
        if entered is _PASS:
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
        if self._shut:
            raise BreakerShutdownError(self.name)
        if self._fast or not self._enabled:
            return
        now = self._clock()
        events: list[EventName] = []
        refusal: CircuitOpenError | None = None
        with self._lock:
            state = self._observe(now, events)
            if state is State.OPEN or (
                state is State.HALF_OPEN
                and self._trials_admitted >= self.options.half_open_max_calls
            ):
                refusal = CircuitOpenError(self.name, self._retry_after(now))
                self._bucket(now).rejected.append(1)
        self._emit_names(events)
        if refusal is None:
            return
        if "reject" in self._emitter.listening:
            self._emit(Event("reject", self, error=refusal))
        try:
            raise refusal
        finally:
            del refusal  # no cycle error -> traceback -> frame -> error

    def _answered(self, ticket: _Ticket) -> bool:
        """The upstream answered: a trial still within its limit keeps no limit from now on.

        False if the trial had already run out its limit (it failed, however it ends).
        """
        trial = ticket.trial
        if trial is None:
            return True
        events: list[EventName] = []
        with self._lock:
            self._observe(self._clock(), events)
            if not trial.expired:
                trial.answered = True
        self._emit_names(events)
        return not trial.expired

    def _record_success(self, result: Any, start: float, ticket: _Ticket) -> None:
        now = self._clock()
        window = self._window
        if now >= window.current_end:
            self._rotated(now)
        window.current.succeeded.append(now - start)
        self._succeeded(result, now - start, ticket, (), {})

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a function so that every call goes through this breaker."""
        if self._action is None:
            self._bind(fn)
            if not self._name_given:
                self.name = _default_name(fn)
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await self.call(fn, *args, **kwargs)

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return self.call_sync(fn, *args, **kwargs)

        return sync_wrapper

    # ------------------------------------------------------------------ admission

    def _enter(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
        """Admit a call on the guarded path: a `_Ticket`, `_PASS`, or the error refusing it."""
        if self._shut:
            raise BreakerShutdownError(self.name)
        if not self._enabled:
            return _PASS
        listening = self._emitter.listening
        if "fire" in listening:
            self._emit(Event("fire", self, args, kwargs))
        now = self._clock()
        events: list[EventName] = []
        refusal: BaseException | None = None
        with self._lock:
            state = self._observe(now, events)
            trial: _Trial | None = None
            if state is State.OPEN or (
                state is State.HALF_OPEN
                and self._trials_admitted >= self.options.half_open_max_calls
            ):
                refusal = CircuitOpenError(self.name, self._retry_after(now))
                self._bucket(now).rejected.append(1)
            elif self.options.capacity is not None and self._in_flight >= self.options.capacity:
                refusal = CapacityExceededError(self.name, self.options.capacity)
                self._bucket(now).semaphore_rejections += 1
            else:
                if state is State.HALF_OPEN:
                    trial = _Trial(now)
                    self._trials.append(trial)
                    self._trials_admitted += 1
                holds_slot = self.options.capacity is not None
                if holds_slot:
                    self._in_flight += 1
                ticket = _Ticket(self._generation, trial, holds_slot)
        self._emit_names(events)
        if refusal is None:
            return ticket
        kind: EventName = "reject" if isinstance(refusal, CircuitOpenError) else "semaphore_locked"
        if kind in listening:
            self._emit(Event(kind, self, args, kwargs, error=refusal))
        return refusal

    def _observe(self, now: float, events: list[EventName]) -> State:
        """The state at `now`, after the transitions the clock has made due. Holds the lock."""
        if self._state is State.OPEN and not self._forced and now >= self._opened_until:
            self._become(State.HALF_OPEN, now, events)
        elif self._state is State.HALF_OPEN and self._trials:
            # A trial that outlived its limit by the clock counts as failed, even if no loop
            # timer cancelled it (a worker thread, or a test driving a fake clock).
            limit = self.options.trial_timeout
            late = [t for t in self._trials if not t.answered and now - t.started > limit]
            for trial in late:
                trial.expired = True
                self._trials.remove(trial)
                self._trial_failures += 1
            self._judge_trials(now, events)
        return self._state

    # ------------------------------------------------------------------ outcomes

    def _succeeded(
        self,
        result: Any,
        latency: float,
        ticket: _Ticket,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """The guarded-path bookkeeping of a success; the latency is already recorded."""
        if ticket.trial is None and not ticket.holds_slot:
            # No slot to give back and no trial to judge: nothing to do under the lock.
            if "success" in self._emitter.listening:
                self._emit(Event("success", self, args, kwargs, result=result, latency=latency))
            return
        events: list[EventName] = []
        with self._lock:
            self._release(ticket)
            if ticket.trial is not None:
                now = self._clock()
                # A trial that outlived its limit by the clock failed, however it ended: the
                # same rule whether it ends through call(), call_sync() or an Attempt.
                self._observe(now, events)
                if self._owns(ticket):
                    self._trial_successes += 1
                    self._judge_trials(now, events)
        if "success" in self._emitter.listening:
            self._emit(Event("success", self, args, kwargs, result=result, latency=latency))
        self._emit_names(events)

    async def _failed(
        self,
        exc: BaseException,
        deadline: Deadline | None,
        start: float,
        generation: int,
        ticket: _Ticket | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        timed_out = False
        if deadline is not None and deadline.expired:
            task = _current_task()
            # Zero left means only our timer cancelled the task; more means the caller was
            # cancelled too, and the caller's cancellation wins.
            timed_out = task is None or task.uncancel() == 0
        error = self._settle_error(exc, timed_out, start, generation, ticket, args, kwargs)
        if self._fallback is None:
            try:
                raise error
            finally:
                del error, exc  # no cycle error -> traceback -> frame -> error
        return await self._run_fallback(error, args, kwargs)

    def _settle_error(
        self,
        exc: BaseException,
        timed_out: bool,
        start: float,
        generation: int,
        ticket: _Ticket | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> BaseException:
        """Record how a call that raised ended. Returns the error for the fallback, or raises
        the ones that must not reach it: a cancellation, or an error `error_filter` excuses."""
        kind, error = self._record_error(exc, timed_out, start, generation, ticket, args, kwargs)
        if kind in (_CANCELLED, _FILTERED):
            try:
                raise error
            finally:
                del error, exc  # no cycle error -> traceback -> frame -> error
        return error

    def _record_error(
        self,
        exc: BaseException,
        timed_out: bool,
        start: float,
        generation: int,
        ticket: _Ticket | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        open_for: float | None = None,
    ) -> tuple[int, BaseException]:
        """Classify, count and emit an error; (kind, the error as the caller should see it)."""
        now = self._clock()
        latency = now - start
        if timed_out:
            kind = _TIMEOUT
            limit = self.options.trial_timeout if ticket and ticket.trial else self._timeout
            if not isinstance(exc, CallTimeoutError):
                cause = None if isinstance(exc, asyncio.CancelledError) else exc
                timeout_error = CallTimeoutError(self.name, cast(float, limit))
                timeout_error.__cause__ = cause
                exc = timeout_error
        elif isinstance(exc, asyncio.CancelledError) or not isinstance(exc, Exception):
            kind = _CANCELLED
        elif self._is_filtered(exc):
            kind = _FILTERED
        else:
            kind = _FAILURE

        events: list[EventName] = []
        with self._lock:
            bucket = self._bucket(now)
            if kind == _CANCELLED:
                bucket.cancelled += 1
            elif kind == _FILTERED:
                bucket.succeeded.append(latency)
            else:
                bucket.failed.append(latency)
                if kind == _TIMEOUT:
                    bucket.timeouts += 1
            if ticket is not None:
                self._release(ticket)
                if ticket.trial is not None:
                    self._observe(now, events)  # an over-age trial has failed, as in _succeeded
            owns = generation == self._generation and (ticket is None or self._owns(ticket))
            if owns and ticket is not None and ticket.trial is not None:
                if kind in (_CANCELLED, _FILTERED):
                    self._trials_admitted -= 1  # the permit goes back
                else:
                    self._trial_failures += 1
                self._judge_trials(now, events, open_for)
            elif owns and kind in (_FAILURE, _TIMEOUT) and self._state is State.CLOSED:
                self._check_trip(now, events, open_for)

        listening = self._emitter.listening
        if kind == _CANCELLED:
            # Counted as neither, but settling it may still have moved the state (a trial that
            # ran out its limit meanwhile): that change is announced like any other.
            self._emit_names(events)
            return kind, exc
        if kind == _FILTERED:
            if "success" in listening:
                self._emit(Event("success", self, args, kwargs, error=exc, latency=latency))
            self._emit_names(events)
            return kind, exc
        if kind == _TIMEOUT and "timeout" in listening:
            self._emit(Event("timeout", self, args, kwargs, error=exc, latency=latency))
        if "failure" in listening:
            self._emit(Event("failure", self, args, kwargs, error=exc, latency=latency))
        self._emit_names(events)
        return kind, exc

    def _is_filtered(self, exc: BaseException) -> bool:
        error_filter = self.options.error_filter
        if error_filter is None:
            return False
        try:
            return bool(error_filter(exc))
        except Exception:
            logger.exception("error_filter of breaker %r raised; counting a failure", self.name)
            return False

    def _owns(self, ticket: _Ticket) -> bool:
        """Whether the call may still move the state: admitted this period, not expired."""
        trial = ticket.trial
        if ticket.generation != self._generation:
            return False
        if trial is None:
            return True
        if trial.expired:
            return False
        self._trials.remove(trial)
        return True

    def _abandon(self, ticket: _Ticket | None) -> None:
        """Give back what admission took from a call that never started: its capacity slot and
        its trial permit. The call counts nowhere."""
        if ticket is None:
            return
        with self._lock:
            self._release(ticket)
            if ticket.trial is not None and self._owns(ticket):
                self._trials_admitted -= 1

    def _release(self, ticket: _Ticket) -> None:
        if ticket.holds_slot:
            ticket.holds_slot = False
            self._in_flight -= 1

    # ------------------------------------------------------------------ refusals and fallbacks

    async def _run_fallback(
        self, error: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        fallback = self._fallback
        if isinstance(fallback, CircuitBreaker):
            result = await fallback.fire(*args, error, **kwargs)
        else:
            result = cast(Fallback, fallback)(*args, error, **kwargs)
            if _isawaitable(result):
                result = await result
        self._fell_back(result, error, args, kwargs)
        return result

    def _fallback_sync(
        self, error: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        fallback = self._fallback
        if fallback is None:
            try:
                raise error
            finally:
                del error  # no cycle error -> traceback -> frame -> error
        if isinstance(fallback, CircuitBreaker):
            action = fallback._action
            if action is None:
                raise TypeError(f"fallback breaker {fallback.name!r} has no action")
            if _is_async(action):
                # Its call_sync would refuse the coroutine: run its async call to the end, as
                # for any async fallback.
                result = _run_to_end(fallback.call(action, *args, error, **kwargs))
            else:
                result = fallback.call_sync(action, *args, error, **kwargs)
        else:
            result = fallback(*args, error, **kwargs)
        if _isawaitable(result):
            result = _run_to_end(result)
        self._fell_back(result, error, args, kwargs)
        return result

    def _fell_back(
        self, result: Any, error: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        now = self._clock()
        with self._lock:
            self._bucket(now).fallbacks += 1
        if "fallback" in self._emitter.listening:
            self._emit(Event("fallback", self, args, kwargs, result=result, error=error))

    # ------------------------------------------------------------------ state machine

    def _check_trip(
        self, now: float, events: list[EventName], open_for: float | None = None
    ) -> None:
        """Open if the window says so. Holds the lock; called after a counted failure."""
        options = self.options
        if now < self._warm_until:
            return
        successes, failures = self._window.outcome_counts(now)
        counted = successes + failures
        if counted == 0 or counted < options.volume_threshold:
            return
        if 100.0 * failures / counted > options.error_threshold_percentage:
            self._become(State.OPEN, now, events, open_for=open_for)

    def _judge_trials(
        self, now: float, events: list[EventName], open_for: float | None = None
    ) -> None:
        """Close or reopen once the trials' outcome is certain. Holds the lock."""
        if self._state is not State.HALF_OPEN:
            return
        planned = self.options.half_open_max_calls
        threshold = self.options.error_threshold_percentage
        failures = self._trial_failures
        undecided = planned - self._trial_successes - failures
        if 100.0 * failures > threshold * planned:
            self._become(State.OPEN, now, events, open_for=open_for)
        elif 100.0 * (failures + undecided) <= threshold * planned:
            self._become(State.CLOSED, now, events)

    def _become(
        self,
        state: State,
        now: float,
        events: list[EventName],
        *,
        forced: bool = False,
        open_for: float | None = None,
    ) -> None:
        """Move to `state`. Holds the lock; the caller emits `events` after releasing it.

        `open_for` keeps a breaker that opens open at least that long: an upstream that said
        when to come back (`Retry-After`) is not tried again earlier.
        """
        self._state = state
        self._generation += 1
        self._forced = forced
        self._trials = []
        self._trials_admitted = self._trial_successes = self._trial_failures = 0
        if state is State.OPEN:
            # `max` keeps reset_timeout over a NaN; `min` bounds an upstream's infinity.
            held = max(self.options.reset_timeout, open_for or 0.0)
            self._opened_until = now + min(held, MAX_SECONDS)
            events.append("open")
        elif state is State.HALF_OPEN:
            events.append("half_open")
        else:
            # Old failures must not re-trip a breaker that just closed.
            self._window.clear(now)
            events.append("close")
        self._refresh_fast()

    def _refresh_fast(self) -> None:
        working = self._enabled and not self._shut
        listening = self._emitter.listening
        self._fast = (
            working
            and self._state is State.CLOSED
            and self.options.capacity is None
            and not ({"fire", "success"} & listening)
        )
        self._rejecting = (
            working
            and self._state is State.OPEN
            and not self._forced
            and not ({"fire", "reject"} & listening)
        )

    def _bucket(self, now: float) -> Any:
        window = self._window
        if now >= window.current_end:
            self._rotated(now)
        return window.current

    def _rotated(self, now: float) -> None:
        if self._window.rotate(now) and "snapshot" in self._emitter.listening:
            self._emit(Event("snapshot", self, stats=self._window.stats(now)))

    def _retry_after(self, now: float) -> float:
        if self._state is State.OPEN:
            if self._forced:
                return self.options.reset_timeout
            return max(0.0, self._opened_until - now)
        if self._trials_admitted < self.options.half_open_max_calls:
            return 0.0
        limit = self.options.trial_timeout
        return max(0.0, min((t.started + limit - now for t in self._trials), default=0.0))

    # ------------------------------------------------------------------ control

    def fallback(self, fn: Fallback | CircuitBreaker) -> CircuitBreaker:
        """Set what answers when the call fails or is refused; it gets `(*args, exc, **kwargs)`."""
        if not callable(fn):
            raise TypeError(f"a fallback must be callable or a CircuitBreaker, got {fn!r}")
        self._fallback = fn
        return self

    def on(self, event: EventName, handler: EventHandler) -> CircuitBreaker:
        """Subscribe `handler(event)` to an event; sync and async handlers both work."""
        self._emitter.subscribe(event, handler)
        self._refresh_fast()
        return self

    def off(self, event: EventName, handler: EventHandler) -> CircuitBreaker:
        self._emitter.unsubscribe(event, handler)
        self._refresh_fast()
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
        events: list[EventName] = []
        with self._lock:
            now = self._clock()
            if self._state is not state:
                self._become(state, now, events, forced=forced)
            elif state is State.OPEN:
                # Re-opening restarts the reset timeout but is not a new `open` event.
                self._forced = forced
                self._opened_until = now + self.options.reset_timeout
                self._generation += 1
                self._refresh_fast()
            else:
                self._window.clear(now)  # close() on a closed breaker still resets its window
        self._emit_names(events)

    def disable(self) -> None:
        """Let every call straight through, uncounted, until `enable()`."""
        self._enabled = False
        self._refresh_fast()

    def enable(self) -> None:
        self._enabled = True
        self._refresh_fast()

    def shutdown(self) -> None:
        """Stop for good: later calls raise `BreakerShutdownError`; timers and tasks end."""
        if self._shut:
            return
        self._shut = True
        self._enabled = False
        self._refresh_fast()
        for task in self._health_tasks or ():
            task.cancel()
        self._health_tasks = None
        with self._lock:
            queues = list(self._queues.values())
            self._queues.clear()
            self._queue = None
        for queue in queues:
            queue.close_when_idle()
        self._emitter.cancel_pending()
        self._emit_names(["shutdown"])

    def health_check(self, fn: Callable[[], Any], interval: float = 5.0) -> asyncio.Task[None]:
        """Run `fn` every `interval` seconds; when it raises, emit `health_check_failed` and open.

        Needs a running event loop. The task ends with `shutdown()`.
        """
        if self._shut:
            raise BreakerShutdownError(self.name)
        if not callable(fn):
            raise TypeError(f"health_check needs a callable, got {fn!r}")
        check_seconds("interval", interval)  # NaN would run `fn` on every turn of the loop
        try:
            loop = _get_running_loop()
        except RuntimeError:
            raise RuntimeError("health_check needs a running event loop") from None
        task = loop.create_task(self._health_loop(fn, float(interval)))
        if self._health_tasks is None:
            self._health_tasks = set()
        self._health_tasks.add(task)
        task.add_done_callback(self._health_tasks.discard)
        return task

    async def _health_loop(self, fn: Callable[[], Any], interval: float) -> None:
        while not self._shut:
            await asyncio.sleep(interval)
            try:
                outcome = fn()
                if _isawaitable(outcome):
                    await outcome
            except Exception as exc:
                if "health_check_failed" in self._emitter.listening:
                    self._emit(Event("health_check_failed", self, error=exc))
                self.open()

    # ------------------------------------------------------------------ inspection

    @property
    def state(self) -> State:
        events: list[EventName] = []
        with self._lock:
            state = self._observe(self._clock(), events)
        self._emit_names(events)
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
        return self._enabled

    @property
    def is_shutdown(self) -> bool:
        return self._shut

    @property
    def forced_open(self) -> bool:
        return self._forced

    @property
    def retry_after(self) -> float | None:
        """Seconds until a call would be admitted; None while closed.

        A forced-open breaker has no release time, so it reports `reset_timeout` as a hint.
        """
        events: list[EventName] = []
        with self._lock:
            now = self._clock()
            state = self._observe(now, events)
            value = None if state is State.CLOSED else self._retry_after(now)
        self._emit_names(events)
        return value

    @property
    def stats(self) -> Stats:
        """A frozen snapshot of the rolling window; percentiles are computed here, not per call."""
        return self._window.stats(self._clock())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe picture of the breaker; `from_dict()` rebuilds a breaker from it."""
        state = self.state
        with self._lock:
            now = self._clock()
            return {
                "name": self.name,
                "state": state.value,
                "enabled": self._enabled,
                "shutdown": self._shut,
                "forced_open": self._forced,
                "retry_after": None if state is State.CLOSED else self._retry_after(now),
                "options": self.options.to_dict(),
                "window": self._window.to_list(now),
                "stats": self._window.stats(now).to_dict(),
            }

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
        if not isinstance(data, dict):
            raise TypeError(f"a snapshot must be a dict, as to_dict() returns, got {shown(data)}")
        check_keys("the snapshot", data, _SNAPSHOT_KEYS)
        for key in ("name", "state", "options"):
            if key not in data:
                raise ValueError(f"the snapshot has no {key!r}")
        name = data["name"]
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {shown(name)}")
        state_name = data["state"]
        if not isinstance(state_name, str) or state_name not in _STATE_NAMES:
            allowed = ", ".join(repr(s) for s in _STATE_NAMES)
            raise ValueError(f"state must be one of {allowed}, got {shown(state_name)}")
        state = State(state_name)
        flags = {
            key: data.get(key, key == "enabled") for key in ("enabled", "shutdown", "forced_open")
        }
        for key, flag in flags.items():
            if not isinstance(flag, bool):
                raise ValueError(f"{key} must be True or False, got {shown(flag)}")
        if flags["forced_open"] and state is not State.OPEN:
            raise ValueError(
                f"forced_open can be True only when state is 'open', got state {state_name!r}"
            )
        # Up to the longest duration, not reset_timeout: an upstream's Retry-After may have
        # held the breaker open longer.
        retry_after = data.get("retry_after")
        if retry_after is not None and (
            isinstance(retry_after, bool)
            or not isinstance(retry_after, int | float)
            or not 0 <= retry_after <= MAX_SECONDS
        ):
            raise ValueError(
                f"retry_after must be None or a number of seconds >= 0 and <= {MAX_SECONDS} "
                f"(365 days), got {shown(retry_after)}"
            )
        given = data["options"]
        if not isinstance(given, dict):
            raise ValueError(f"options must be an object of option values, got {shown(given)}")
        check_keys("options", given, _SNAPSHOT_OPTIONS)
        try:
            options = BreakerOptions(**given, error_filter=error_filter)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"options.{exc}") from None
        buckets = parse_window(data.get("window", []), options.rolling_count_buckets)

        breaker = cls.from_options(options, action, name=name, clock=clock)
        now = breaker._clock()
        breaker._window.restore(now, buckets)
        if state is not State.CLOSED:
            with breaker._lock:
                breaker._become(state, now, [], forced=flags["forced_open"])
                if state is State.OPEN:
                    breaker._opened_until = now + (retry_after or 0.0)
        if not flags["enabled"]:
            breaker.disable()
        if flags["shutdown"]:
            breaker.shutdown()
        return breaker

    # ------------------------------------------------------------------ plumbing

    def _queue_for(self, loop: asyncio.AbstractEventLoop, trial: bool = False) -> DeadlineQueue:
        """The deadline queue of `loop` for calls (or half-open trials), made on first use.

        The trial queue is made only when a trial runs: most breakers never need one.
        """
        queue = self._queues.get((loop, trial))  # one dict lookup: safe without the lock
        if queue is None:
            # Threads that each run their own loop make and forget queues at once: every
            # change to the dict, and every walk over it, happens under the lock.
            with self._lock:
                queue = self._queues.get((loop, trial))
                if queue is None:
                    # Forget loops that have closed (tests and `asyncio.run` make one per run).
                    for key in [key for key in self._queues if key[0].is_closed()]:
                        del self._queues[key]
                    limit = self.options.trial_timeout
                    queue = DeadlineQueue(loop, limit if trial else (self._timeout or limit))
                    self._queues[(loop, trial)] = queue
        if not trial:
            self._queue = queue
        return queue

    def _emit(self, event: Event) -> None:
        self._emitter.emit(event)

    def _emit_names(self, names: list[EventName]) -> None:
        listening = self._emitter.listening
        for name in names:
            if name in listening:
                self._emitter.emit(Event(name, self))


_ids = itertools.count(1)


def _default_name(action: Callable[..., Any] | None) -> str:
    qualname = getattr(action, "__qualname__", None)
    if isinstance(qualname, str) and qualname:
        return qualname
    return f"breaker-{next(_ids)}-{uuid.uuid4().hex[:8]}"


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _run_to_end(awaitable: Awaitable[Any]) -> Any:
    """Run an async fallback from sync code: here if this thread has no loop, else on a thread.

    `call_sync` on the event loop's own thread already blocks that loop, so the loop cannot run
    the fallback; a one-off thread with its own loop can.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_awaited(awaitable))
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="breaker-fallback") as pool:
        return pool.submit(asyncio.run, _awaited(awaitable)).result()


def _is_async(fn: Callable[..., Any]) -> bool:
    """A coroutine function, or an object whose `__call__` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - the method, not callable()
    )


def _discard(awaitable: Awaitable[Any]) -> None:
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()
