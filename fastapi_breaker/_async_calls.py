"""The async runner: `call()` and `fire()` on asyncio, and the admission both runners share.

The hot path is `call()` while the breaker is closed: it reads the core's `fast` flag, two
clock values and appends one latency to the current bucket: no lock, no event object, no timer
per call. A time limit adds one entry in the loop's shared deadline queue (`_deadlines`).
Everything else (open, half-open, capacity, listeners, disabled, shut down) goes through
`_enter()`, which asks the core to admit the call.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from types import CoroutineType
from typing import Any, cast

from ._base import BreakerBase, Fallback
from ._deadlines import DeadlineQueue, current_task_of, queue_for
from ._errors import BreakerShutdownError, CapacityExceededError, CircuitOpenError
from ._events import Event
from ._outcome import record_error, record_success
from ._tickets import CANCELLED, EXCUSED, PASS, Refusal, Ticket

__all__ = ["AsyncCalls", "no_action"]

_current_task = asyncio.current_task
_get_running_loop = asyncio.get_running_loop
_get_ident = threading.get_ident
_isawaitable = inspect.isawaitable
# Builds a CircuitOpenError without running its Python `__init__`: `BaseException.__new__`
# already stores the arguments in `args`, and rejecting is the one path where that matters.
_new_exception = CircuitOpenError.__new__


def no_action(*args: Any, **kwargs: Any) -> Any:
    """`fire` of a breaker made without an action."""
    raise TypeError("this breaker has no action: pass one to CircuitBreaker(), or use call(fn)")


class AsyncCalls(BreakerBase):
    __slots__ = ()

    async def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run `fn(*args, **kwargs)` under the breaker; an awaitable result is awaited."""
        core = self.core
        ticket: Ticket | None
        if core.fast:
            ticket = None
            generation = core.generation
            seconds = self._timeout
        elif core.rejecting and (now := self.clock()) < core.opened_until:
            # Open, and nobody listens: refuse with as little work as possible.
            window = core.window
            if now >= window.current_end:
                self.start_bucket(now)
            window.current.rejected.append(1)
            if self._fallback is None:
                # Raised straight from the expression: an error held in a local makes a cycle
                # (error -> traceback -> this frame -> error) that only the cyclic GC frees, and
                # a flood of rejections then buys long GC pauses.
                raise _new_exception(CircuitOpenError, self.name, core.opened_until - now)
            rejection = _new_exception(CircuitOpenError, self.name, core.opened_until - now)
            return await self._run_fallback(rejection, args, kwargs)
        else:
            entered: Any = self._enter(args, kwargs)
            if type(entered) is not Ticket:
                if entered is PASS:
                    result = fn(*args, **kwargs)
                    return (await result) if _isawaitable(result) else result
                if self._fallback is None:
                    try:
                        raise entered
                    finally:
                        del entered  # no cycle: see the rejection above
                return await self._run_fallback(entered, args, kwargs)
            ticket = entered
            generation = entered.generation
            seconds = core.options.trial_timeout if entered.trial is not None else self._timeout

        clock = self.clock
        # An error between admission and the call (a clock, a loop that fails) must not keep
        # the slot or the trial permit that admission took. `try` costs nothing on 3.11 until
        # something raises.
        # Two copies of the run below, one per branch: the branch that has no time limit must
        # not pay a test of `queue` three times over (it is the closed breaker's hot path).
        if seconds is None:
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
                return await self._failed(exc, False, start, generation, ticket, args, kwargs)
        else:
            try:
                queue = self._queue
                if ticket is not None and ticket.trial is not None:
                    queue = queue_for(_get_running_loop(), seconds)
                elif queue is None or queue.loop._thread_id != _get_ident():  # type: ignore[attr-defined]
                    # Not the loop this thread runs now. (A loop that runs sets `_thread_id`:
                    # comparing it costs a third of `get_running_loop()` on 3.11.)
                    queue = self._queue_for(_get_running_loop())
                start = clock()
                # `queue.start()`, written out: this is every default call's path, and a
                # method call is a third of its cost. The loop's clock is most often ours.
                entry: Any = (
                    start if clock is queue.time else queue.time(),
                    self,
                    current_task_of(queue.loop),
                )
                key: Any
                if queue.solo is None and queue.timer is not None:
                    queue.solo = key = entry  # the usual case: no other call in flight
                else:
                    key = queue.place(entry)
            except BaseException:
                self._abandon(ticket)
                raise
            try:
                result = fn(*args, **kwargs)
                if type(result) is CoroutineType or _isawaitable(result):
                    result = await result
            except BaseException as exc:
                expired = queue.finish(key)
                return await self._failed(exc, expired, start, generation, ticket, args, kwargs)
            if queue.solo is key:
                queue.solo = None
            elif queue.finish(key):
                # The timer cancelled the call, and the call swallowed the cancellation.
                error = asyncio.CancelledError()
                return await self._failed(error, True, start, generation, ticket, args, kwargs)

        now = clock()
        if ticket is None:
            window = core.window
            if now >= window.current_end:
                self.start_bucket(now)
            window.current.succeeded.append(now - start)
        else:
            self._succeeded(result, start, now, ticket, args, kwargs)
        return result

    # ------------------------------------------------------------------ admission

    def _enter(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
        """Admit a call on the guarded path: a `Ticket`, `PASS`, or the error refusing it."""
        core = self.core
        if core.shut:
            raise BreakerShutdownError(self.name)
        if not core.enabled:
            return PASS
        listening = self.listening
        if "fire" in listening:
            self.emit(Event("fire", self, args, kwargs))  # type: ignore[arg-type]
        now = self.clock()
        if now >= core.window.current_end:
            self.start_bucket(now)
        moves: list[str] = []
        entered = core.admit(now, moves)
        self.announce(moves)
        if type(entered) is not Refusal:
            return entered
        refusal: BaseException
        if entered.open:
            refusal = CircuitOpenError(self.name, entered.retry_after)
            if "reject" in listening:
                self.emit(Event("reject", self, args, kwargs, error=refusal))  # type: ignore[arg-type]
        else:
            refusal = CapacityExceededError(self.name, cast(int, core.options.capacity))
            if "semaphore_locked" in listening:
                event = Event("semaphore_locked", self, args, kwargs, error=refusal)  # type: ignore[arg-type]
                self.emit(event)
        return refusal

    def _abandon(self, ticket: Ticket | None) -> None:
        if ticket is not None:
            self.core.abandon(ticket)

    def _queue_for(self, loop: asyncio.AbstractEventLoop) -> DeadlineQueue:
        return self.deadline_queue(loop, trial=False)

    def deadline_queue(self, loop: asyncio.AbstractEventLoop, *, trial: bool) -> DeadlineQueue:
        """The queue that holds the time limits of this breaker's calls (or trials) on `loop`.

        The calls' queue is remembered, for the next call (if the loop says which thread runs
        it, as asyncio's own do) and for a registry, which asks it whether a call of this
        breaker is in flight before it forgets the breaker.
        """
        if trial:
            return queue_for(loop, self.core.options.trial_timeout)
        queue = queue_for(loop, cast(float, self._timeout))
        # Remembered only for a loop whose `_thread_id` names this thread while it runs (all of
        # asyncio's own, 3.11 to 3.13): the next call's test of it then cannot fail.
        if getattr(loop, "_thread_id", None) == _get_ident():
            self._queue = queue
        return queue

    # ------------------------------------------------------------------ outcomes

    def _succeeded(
        self,
        result: Any,
        start: float,
        now: float,
        ticket: Ticket,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """The guarded-path bookkeeping of a success that ended at `now`."""
        record_success(self, result, start, ticket, args, kwargs, now)

    async def _failed(
        self,
        exc: BaseException,
        expired: bool,
        start: float,
        generation: int,
        ticket: Ticket | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        timed_out = False
        if expired:
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
        ticket: Ticket | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> BaseException:
        """Record how a call that raised ended. Returns the error for the fallback, or raises
        the ones that must not reach it: a cancellation, or an error `error_filter` excuses."""
        kind, error = record_error(self, exc, timed_out, start, generation, ticket, args, kwargs)
        if kind in (CANCELLED, EXCUSED):
            try:
                raise error
            finally:
                del error, exc  # no cycle error -> traceback -> frame -> error
        return error

    async def _run_fallback(
        self, error: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        fallback = self._fallback
        if isinstance(fallback, AsyncCalls):
            result = await fallback.fire(*args, error, **kwargs)
        else:
            result = cast(Fallback, fallback)(*args, error, **kwargs)
            if _isawaitable(result):
                result = await result
        self._fell_back(result, error, args, kwargs)
        return result
