"""Call time limits with one loop timer per breaker, instead of one per call.

`asyncio.timeout()` schedules and cancels a timer for every call, which costs more than the
rest of the breaker put together. A breaker's calls share one limit, so their deadlines arrive
in the order the calls started: a FIFO queue of deadlines needs a single timer, armed at the
oldest deadline still pending. When it fires it cancels the tasks whose deadline has passed and
re-arms itself for the next one; once nothing is pending it is not re-armed.

A call that ends behind an older one still running stays queued, as a finished entry, until
the queue is rebuilt: that happens once finished entries outnumber running ones (and 32), so
the queue holds at most about twice the calls in flight, at an amortized constant cost per call.

Only the loop's own clock is used here: a call timeout is the one thing the breaker leaves to
the event loop's timer.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["Deadline", "DeadlineQueue", "current_task_of"]

# `current_task_of(loop)`: the task running on `loop`. On 3.11 `asyncio.current_task` is a
# Python function around this C dict lookup (3.12 made it C): a tenth of a timed call's cost.
current_task_of: Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None]
if sys.version_info < (3, 12):
    current_task_of = asyncio.tasks._current_tasks.get  # type: ignore[attr-defined]
else:
    current_task_of = asyncio.current_task


# Finished deadlines the queue may hold beyond as many as there are running calls: a few keep
# a queue of one or two running calls from rebuilding on every finish.
_SLACK = 32


class Deadline:
    """One call's deadline. `task` is cleared when the call ends; `expired` is set if it ran out."""

    __slots__ = ("at", "expired", "task")

    def __init__(self, at: float, task: asyncio.Task[object]) -> None:
        self.at = at
        self.task: asyncio.Task[object] | None = task
        self.expired = False


class DeadlineQueue:
    """The pending deadlines of one breaker on one event loop, all `seconds` after their start."""

    __slots__ = ("_closing", "_finished", "_pending", "_timer", "loop", "seconds")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self.loop = loop
        self.seconds = seconds
        self._closing = False
        self._pending: deque[Deadline] = deque()
        self._finished = 0  # finished deadlines still in `_pending`, behind a running one
        self._timer: asyncio.TimerHandle | None = None

    def start(self, task: asyncio.Task[object]) -> Deadline:
        deadline = Deadline(self.loop.time() + self.seconds, task)
        self._pending.append(deadline)
        if self._timer is None:
            self._timer = self.loop.call_at(deadline.at, self._expire)
        return deadline

    def finish(self, deadline: Deadline) -> None:
        deadline.task = None
        pending = self._pending
        if pending and pending[0] is deadline:
            # The usual order: the oldest call ends first. Drop it, and the finished calls
            # that waited behind it.
            pending.popleft()
            while pending and pending[0].task is None:
                pending.popleft()
                self._finished -= 1
        elif not deadline.expired:  # an expired deadline was dropped by the timer already
            # Ended behind an older call that still runs: it stays queued until that one ends,
            # unless finished entries now outnumber running ones. Then a rebuild, paid for by
            # the finishes since the last one, keeps memory to the calls in flight.
            self._finished += 1
            if self._finished > _SLACK and 2 * self._finished > len(pending):
                pending = self._pending = deque(d for d in pending if d.task is not None)
                self._finished = 0
        if self._closing and not pending:
            self.close()

    def _expire(self) -> None:
        self._timer = None
        now = self.loop.time()
        pending = self._pending
        while pending:
            head = pending[0]
            if head.task is None:
                pending.popleft()
                self._finished -= 1
            elif head.at <= now:
                pending.popleft()
                head.expired = True
                head.task.cancel()
            else:
                self._timer = self.loop.call_at(head.at, self._expire)
                break

    def close_when_idle(self) -> None:
        """Disarm the timer now if nothing is pending, else as soon as the last call ends.

        Calls already running keep their time limit: a shutdown must not turn a bounded wait
        into an unbounded one.
        """
        self._closing = True
        if not self._pending:
            self.close()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def held(self) -> int:
        """Deadlines held: the running calls', and finished ones not yet dropped."""
        return len(self._pending)

    @property
    def idle(self) -> bool:
        return not self._pending
