"""One admitted call, for integrations that cannot hand the breaker a callable.

An httpx transport learns whether a request failed only after the response arrives, and maybe
only when its body has streamed to the end. `breaker.begin()` admits the call (or raises the
breaker's refusal) and returns an `Attempt`; the integration settles it once, when it knows:

    attempt = breaker.begin()
    try:
        async with attempt.time_limit():
            response = await send(request)
    except BaseException as exc:
        attempt.failed(exc)
        raise
    ...
    attempt.succeeded()          # or attempt.failed(error, open_for=seconds)

Everything a call through `breaker.call()` gets applies: counts, events, half-open permits,
capacity slots, and the period rule (a late outcome counts in the stats only).
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from ._deadlines import DeadlineQueue, current_task_of
from ._errors import CallTimeoutError
from ._outcome import record_error, record_success
from ._tickets import Ticket

if TYPE_CHECKING:
    # For annotations only: the breaker imports this module, not the other way round.
    from ._async_calls import AsyncCalls
    from ._breaker import CircuitBreaker

__all__ = ["Attempt"]


class Attempt:
    """A call the breaker admitted. Settle it exactly once; later settlements are ignored."""

    __slots__ = ("_breaker", "_settled", "_start", "_ticket", "_timed_out")

    def __init__(self, breaker: AsyncCalls, ticket: Ticket | None, start: float) -> None:
        self._breaker = breaker
        self._ticket = ticket  # None: the breaker is disabled and counts nothing
        self._start = start
        self._settled = False
        self._timed_out = False

    @property
    def trial(self) -> bool:
        """Whether this is a half-open trial, whose outcome decides the breaker's state."""
        return self._ticket is not None and self._ticket.trial is not None

    @property
    def settled(self) -> bool:
        return self._settled

    @property
    def breaker(self) -> CircuitBreaker:
        """The breaker that admitted the call."""
        return cast("CircuitBreaker", self._breaker)

    def answered(self) -> bool:
        """The upstream has answered (an HTTP response's headers arrived, say).

        The time limit bounds the wait for the answer, not what follows: a half-open trial
        that answered in time is judged by how it ends, however long its body takes. Returns
        False when the trial's limit had already passed: it counts as failed.
        """
        if self._settled or self._ticket is None:
            return True
        breaker = self._breaker
        moves: list[str] = []
        answered = breaker.core.answered(self._ticket, breaker.clock(), moves)
        breaker.announce(moves)
        return answered

    def succeeded(self, result: Any = None) -> None:
        if self._settle():
            record_success(self._breaker, result, self._start, cast(Ticket, self._ticket))

    def failed(self, error: BaseException, *, open_for: float | None = None) -> BaseException:
        """Count `error` as the call's outcome; returns the error as callers should see it.

        A cancellation counts as neither success nor failure and gives a trial's permit back;
        an error that `error_filter` excuses counts as a success. `open_for`: if this failure
        opens the breaker, it stays open at least that many seconds.
        """
        if not self._settle():
            return error
        ticket = cast(Ticket, self._ticket)
        _, seen = record_error(
            self._breaker,
            error,
            self._timed_out,
            self._start,
            ticket.generation,
            ticket,
            open_for=open_for,
        )
        return seen

    def cancelled(self) -> None:
        """The call was abandoned: not the service's fault. A trial's permit goes back."""
        self.failed(asyncio.CancelledError())

    def timed_out(self) -> BaseException:
        """Count the call as a timeout: the breaker's clock says it passed its time limit,
        though no timer cancelled it (`answered()` returned False). Returns the error counted,
        a `CallTimeoutError`. Only for a call with a limit: a trial, or `timeout` set.
        """
        if not self._settled:
            self._timed_out = True
        return self.failed(asyncio.CancelledError())

    def collected(self) -> bool:
        """Settle as cancelled from a finalizer, if it is safe there; else do nothing, False.

        For what owns an attempt and is garbage collected unsettled (an unclosed response).
        A finalizer runs wherever the collector started, perhaps on this thread in the middle
        of the breaker's own bookkeeping, holding the core's lock: settling there would wait
        for ever. Then settle it later, with `cancelled()`.
        """
        if self._settled or self._ticket is None:
            self._settled = True
            return True
        if self._breaker.core.busy:
            return False
        self.cancelled()
        return True

    def time_limit(self) -> _TimeLimit:
        """An async context that cancels the block at the breaker's time limit.

        The limit is `timeout` (or the trial limit for a half-open trial); on expiry the block
        raises `CallTimeoutError`, and a later `failed()` counts it as a timeout.
        """
        return _TimeLimit(self)

    def _settle(self) -> bool:
        if self._settled:
            return False
        self._settled = True
        return self._ticket is not None


class _TimeLimit:
    __slots__ = ("_attempt", "_key", "_queue", "_task")

    def __init__(self, attempt: Attempt) -> None:
        self._attempt = attempt
        self._queue: DeadlineQueue | None = None
        self._key: Any = None
        self._task: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> None:
        attempt = self._attempt
        options = attempt._breaker.core.options
        if attempt._ticket is None or (not attempt.trial and options.timeout is None):
            return
        loop = asyncio.get_running_loop()
        self._task = current_task_of(loop)
        if self._task is None:
            return
        breaker = attempt._breaker
        queue = self._queue = breaker.deadline_queue(loop, trial=attempt.trial)
        self._key = queue.start(self._task, breaker)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        queue, task = self._queue, self._task
        if queue is None or task is None:
            return
        expired = queue.finish(self._key)
        # Only our own cancellation becomes a timeout; one the caller also asked for wins.
        if expired and task.uncancel() == 0:
            self._attempt._timed_out = True
            timeout_error = CallTimeoutError(self._attempt._breaker.name, queue.seconds)
            raise timeout_error from (None if isinstance(exc, asyncio.CancelledError) else exc)
