"""The thread runner: `call_sync()` for sync code on any thread.

While the breaker is closed and quiet, a call takes no lock: it reads the core's `fast` flag,
reads the clock twice and appends one latency to the current bucket, an `array.append` that
the GIL makes atomic. A thread cannot be interrupted, so the time limit is checked when the
function returns: a call that took longer counts as a timeout and raises `CallTimeoutError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from ._async_calls import AsyncCalls
from ._errors import CallTimeoutError
from ._tickets import PASS, Ticket

__all__ = ["SyncCalls"]

R = TypeVar("R")

_isawaitable = inspect.isawaitable
# Results that are never awaitable: checked by type before the slower general test.
_PLAIN = frozenset({type(None), bool, int, float, str, bytes, dict, list, tuple, set})


class SyncCalls(AsyncCalls):
    __slots__ = ()

    def call_sync(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """Run a sync `fn` under the breaker, from any thread.

        A thread cannot be interrupted, so the time limit is checked when `fn` returns: a call
        that took longer counts as a timeout and raises `CallTimeoutError`, its result dropped.
        """
        core = self.core
        clock = self.clock
        if core.fast:
            # Closed and quiet: no lock, one latency appended (an `array.append`, atomic).
            generation = core.generation
            start = clock()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                return cast(R, self._sync_failed(exc, start, generation, None, args, kwargs))
            now = clock()
            latency = now - start
            if result is not None and type(result) not in _PLAIN and _isawaitable(result):
                self._refuse_awaitable(fn, result, start, generation, None, args, kwargs)
            limit = self._timeout
            if limit is not None and latency > limit:
                return cast(R, self._late(limit, start, generation, None, args, kwargs))
            window = core.window
            if now >= window.current_end:
                self.start_bucket(now)
            window.current.succeeded.append(latency)
            return result
        entered = self._enter(args, kwargs)
        if entered is PASS:
            return fn(*args, **kwargs)
        if type(entered) is not Ticket:
            try:
                return cast(R, self._fallback_sync(cast(BaseException, entered), args, kwargs))
            finally:
                del entered  # no cycle error -> traceback -> frame -> error
        ticket = entered
        try:
            start = clock()
        except BaseException:
            self._abandon(ticket)
            raise
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            return cast(R, self._sync_failed(exc, start, ticket.generation, ticket, args, kwargs))
        if type(result) not in _PLAIN and _isawaitable(result):
            self._refuse_awaitable(fn, result, start, ticket.generation, ticket, args, kwargs)
        now = clock()
        limit = core.options.trial_timeout if ticket.trial is not None else self._timeout
        if limit is not None and now - start > limit:
            return cast(R, self._late(limit, start, ticket.generation, ticket, args, kwargs))
        self._succeeded(result, start, now, ticket, args, kwargs)
        return result

    def _sync_failed(
        self,
        exc: BaseException,
        start: float,
        generation: int,
        ticket: Ticket | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """A sync call raised: count it (a timeout if it also ran past its limit) and answer
        with the fallback, or raise."""
        options = self.core.options
        limit = options.trial_timeout if ticket and ticket.trial else self._timeout
        late = limit is not None and self.clock() - start > limit
        # No local for the error: it would make a cycle through this frame's traceback.
        return self._fallback_sync(
            self._settle_error(exc, late, start, generation, ticket, args, kwargs), args, kwargs
        )

    def _late(
        self,
        limit: float,
        start: float,
        generation: int,
        ticket: Ticket | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """A call that returned after its limit: counted as a timeout, its result dropped."""
        late_error = CallTimeoutError(self.name, limit)
        try:
            settled = self._settle_error(late_error, True, start, generation, ticket, args, kwargs)
            return self._fallback_sync(settled, args, kwargs)
        finally:
            del late_error  # no cycle error -> traceback -> frame -> error

    def _refuse_awaitable(
        self,
        fn: Callable[..., Any],
        result: Awaitable[Any],
        start: float,
        generation: int,
        ticket: Ticket | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        _discard(result)
        # A misuse, not a downstream failure: settle it as a call that never happened.
        with contextlib.suppress(asyncio.CancelledError):
            self._settle_error(
                asyncio.CancelledError(), False, start, generation, ticket, args, kwargs
            )
        raise TypeError(f"call_sync got an awaitable from {fn!r}; use `await breaker.call()`")

    def _fallback_sync(
        self, error: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        fallback = self._fallback
        if fallback is None:
            try:
                raise error
            finally:
                del error  # no cycle error -> traceback -> frame -> error
        if isinstance(fallback, SyncCalls):
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
            result = cast(Callable[..., Any], fallback)(*args, error, **kwargs)
        if _isawaitable(result):
            result = _run_to_end(result)
        self._fell_back(result, error, args, kwargs)
        return result


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
