"""Call time limits with one loop timer per time limit, shared by every breaker on the loop.

`asyncio.timeout()` schedules and cancels a timer for every call, which costs more than the
rest of the breaker put together. Calls with the same limit reach their deadlines in the order
they started, so a queue of them needs a single timer, armed at the oldest deadline still
pending; when it fires it cancels the tasks whose deadline has passed and re-arms itself for
the next one. Every breaker with the same limit on the same loop shares that queue: a breaker
holds no queue, no timer and no memory for its time limits, however many calls it has made.

Each call in flight is one entry: when it started by the loop's clock, the breaker that made it
(a registry asks whether a breaker has a call in flight) and its task. Starting a call puts the
entry in a slot, ending it takes it out, and a call whose entry is gone at the end was expired
by the timer. A call that starts inside another call of the same task (a fallback breaker, a
nested breaker) gets a key of its own. Ending out of order leaves nothing behind: the queue
holds exactly the calls in flight.

Only the loop's own clock is used here: a call timeout is the one thing the breaker leaves to
the event loop's timer.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["DeadlineQueue", "current_task_of", "queue_count", "queue_for", "queues_of"]

# `current_task_of(loop)`: the task running on `loop`. On 3.11 `asyncio.current_task` is a
# Python function around this C dict lookup (3.12 made it C): a tenth of a timed call's cost.
current_task_of: Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None]
if sys.version_info < (3, 12):
    current_task_of = asyncio.tasks._current_tasks.get  # type: ignore[attr-defined]
else:
    current_task_of = asyncio.current_task


class _Nested:
    """The key of a call made while the same task already has one in the queue."""

    __slots__ = ("task",)

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task

    def cancel(self) -> None:
        self.task.cancel()


Key = asyncio.Task[Any] | _Nested | tuple[float, object, asyncio.Task[Any]]


class DeadlineQueue:
    """The calls in flight on one loop with a limit of `seconds`, and the timer that ends them.

    A call is an entry `(start by the loop's clock, the breaker that made it, its task)`. The
    first call while no other is in flight sits in `solo`, and is its own key: most calls never
    overlap another, and a slot costs a tenth of a dict's insertion and removal. Calls that
    overlap go in `pending`, keyed by their task, oldest first.
    """

    __slots__ = ("loop", "pending", "seconds", "solo", "time", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self.loop = loop
        self.seconds = seconds
        # The loop's clock. The default loops read time.monotonic(): call it directly, without
        # the Python method around it.
        self.time: Callable[[], float] = (
            time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        )
        self.solo: tuple[float, object, asyncio.Task[Any]] | None = None
        self.pending: dict[Key, tuple[float, object, asyncio.Task[Any]]] = {}
        self.timer: asyncio.TimerHandle | None = None  # armed while a call is in flight

    def start(self, task: asyncio.Task[Any], owner: object) -> Key:
        """Put the call of `task` under the limit; returns its key for `finish()`."""
        return self.place((self.time(), owner, task))

    def place(self, entry: tuple[float, object, asyncio.Task[Any]]) -> Key:
        """Put a call in a slot: `solo` if free, else `pending`. Returns its key."""
        key: Key
        if self.solo is None:
            self.solo = key = entry
        else:
            key = entry[2]
            if key in self.pending:  # a call inside a call of the same task
                key = _Nested(key)
            self.pending[key] = entry
        if self.timer is None:
            self.timer = self.loop.call_at(entry[0] + self.seconds, self._expire)
        return key

    def finish(self, key: Key) -> bool:
        """End the call; True if its deadline had passed and the timer cancelled it."""
        if self.solo is key:
            self.solo = None
            return False
        return self.pending.pop(key, None) is None

    def _expire(self) -> None:
        self.timer = None
        now = self.time()
        seconds = self.seconds
        # The very sums the timer was armed with: the timer and these tests agree to the bit.
        upcoming = []
        solo = self.solo
        if solo is not None:
            if solo[0] + seconds <= now:
                self.solo = None
                solo[2].cancel()
            else:
                upcoming.append(solo[0] + seconds)
        pending = self.pending
        late = []
        for key, (started, _, _) in pending.items():
            if started + seconds > now:
                upcoming.append(started + seconds)
                break
            late.append(key)
        for key in late:
            del pending[key]
            key.cancel()  # type: ignore[union-attr]  # a task or a _Nested: never a solo entry
        if upcoming:
            self.timer = self.loop.call_at(min(upcoming), self._expire)

    def close(self) -> None:
        """Disarm the timer. Only when nothing is pending: a running call keeps its limit."""
        if self.timer is not None and self.held == 0:
            self.timer.cancel()
            self.timer = None

    @property
    def held(self) -> int:
        """The calls in flight under this limit."""
        return len(self.pending) + (self.solo is not None)

    def runs(self, owner: object) -> bool:
        """Whether a call of `owner` is in flight here: a search of the calls in flight."""
        solo = self.solo
        if solo is not None and solo[1] is owner:
            return True
        return any(entry[1] is owner for entry in list(self.pending.values()))


# (loop, seconds) -> queue. A loop that has closed is forgotten when the next queue is made
# (tests and `asyncio.run` make a loop per run; worker threads may each run one).
_QUEUES: dict[tuple[asyncio.AbstractEventLoop, float], DeadlineQueue] = {}
_QUEUES_LOCK = threading.Lock()  # loops on other threads make their queues at the same time


def queue_for(loop: asyncio.AbstractEventLoop, seconds: float) -> DeadlineQueue:
    """The queue of `loop` for calls limited to `seconds`, made on first use."""
    queue = _QUEUES.get((loop, seconds))  # one dict lookup: safe without the lock
    if queue is None:
        with _QUEUES_LOCK:
            queue = _QUEUES.get((loop, seconds))
            if queue is None:
                for key in [key for key in _QUEUES if key[0].is_closed()]:
                    # Its timer and the queue refer to each other: break that, so the queue
                    # is freed now rather than by the cyclic collector.
                    _QUEUES.pop(key).timer = None
                queue = _QUEUES[(loop, seconds)] = DeadlineQueue(loop, seconds)
    return queue


def queues_of(loop: asyncio.AbstractEventLoop) -> list[DeadlineQueue]:
    """The queues made for `loop` (for tests and diagnostics)."""
    with _QUEUES_LOCK:
        return [queue for (owner, _), queue in _QUEUES.items() if owner is loop]


def queue_count() -> int:
    """How many queues are held, across loops (for tests)."""
    return len(_QUEUES)
