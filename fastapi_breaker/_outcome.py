"""How a call's outcome is told to the core and announced: the one path every runner shares.

`call()`, `call_sync()` and `Attempt` all end here, so a success, a failure, a timeout, an
excused error and a cancellation count and emit the same way whichever way the call was made.
These functions use only a breaker's public pieces: `core`, `clock`, `emit()` and `listening`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from ._base import BreakerBase
from ._errors import CallTimeoutError
from ._events import Event
from ._tickets import CANCELLED, EXCUSED, FAILURE, TIMEOUT, Ticket

__all__ = ["classify", "record_error", "record_success"]

logger = logging.getLogger("fastapi_breaker")


def record_success(
    breaker: BreakerBase,
    result: Any,
    start: float,
    ticket: Ticket,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    now: float | None = None,
) -> None:
    """Count a success of an admitted call that started at `start` (and ended at `now`, if
    the caller read the clock already), and announce it."""
    if now is None:
        now = breaker.clock()
    core = breaker.core
    if now >= core.window.current_end:
        breaker.start_bucket(now)
    moves: list[str] = []
    core.succeeded(ticket, now, now - start, moves)
    if "success" in breaker.listening:
        breaker.emit(
            Event("success", breaker, args, kwargs or {}, result=result, latency=now - start)  # type: ignore[arg-type]
        )
    breaker.announce(moves)


def classify(
    breaker: BreakerBase, exc: BaseException, timed_out: bool, limit: float | None
) -> tuple[int, BaseException]:
    """(kind, the error as callers see it): a timeout becomes a `CallTimeoutError` caused by
    what the call raised; a cancellation or a BaseException counts as neither; an error that
    `error_filter` excuses counts as a success."""
    if timed_out:
        if not isinstance(exc, CallTimeoutError):
            cause = None if isinstance(exc, asyncio.CancelledError) else exc
            timeout_error = CallTimeoutError(breaker.name, cast(float, limit))
            timeout_error.__cause__ = cause
            exc = timeout_error
        return TIMEOUT, exc
    if isinstance(exc, asyncio.CancelledError) or not isinstance(exc, Exception):
        return CANCELLED, exc
    error_filter = breaker.core.options.error_filter
    if error_filter is not None:
        try:
            excused = bool(error_filter(exc))
        except Exception:
            logger.exception("error_filter of breaker %r raised; counting a failure", breaker.name)
            excused = False
        if excused:
            return EXCUSED, exc
    return FAILURE, exc


def record_error(
    breaker: BreakerBase,
    exc: BaseException,
    timed_out: bool,
    start: float,
    generation: int,
    ticket: Ticket | None,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    open_for: float | None = None,
) -> tuple[int, BaseException]:
    """Classify, count and announce an error; (kind, the error as the caller should see it).

    `ticket` is None for a call admitted on the core's lock-free path.
    """
    options = breaker.core.options
    limit = options.trial_timeout if ticket and ticket.trial else options.timeout
    kind, exc = classify(breaker, exc, timed_out, limit)
    now = breaker.clock()
    latency = now - start
    core = breaker.core
    if now >= core.window.current_end:
        breaker.start_bucket(now)
    moves: list[str] = []
    core.failed(ticket, generation, kind, now, latency, moves, open_for)

    listening = breaker.listening
    if kind == CANCELLED:
        # Counted as neither, but settling it may still have moved the state (a trial that
        # ran out its limit meanwhile): that change is announced like any other.
        breaker.announce(moves)
        return kind, exc
    if kwargs is None:
        kwargs = {}
    if kind == EXCUSED:
        if "success" in listening:
            breaker.emit(Event("success", breaker, args, kwargs, error=exc, latency=latency))  # type: ignore[arg-type]
        breaker.announce(moves)
        return kind, exc
    if kind == TIMEOUT and "timeout" in listening:
        breaker.emit(Event("timeout", breaker, args, kwargs, error=exc, latency=latency))  # type: ignore[arg-type]
    if "failure" in listening:
        breaker.emit(Event("failure", breaker, args, kwargs, error=exc, latency=latency))  # type: ignore[arg-type]
    breaker.announce(moves)
    return kind, exc
