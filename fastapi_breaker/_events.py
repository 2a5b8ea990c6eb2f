"""Breaker events: their names, their payload, and the dispatch of handlers.

Emitting is paid for only when someone listens: the breaker checks its `listening` set before
it builds an `Event`, so a breaker with no handlers spends nothing here, and holds no `Emitter`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    # For the annotation of `Event.breaker` only: nothing of the breaker runs here.
    from ._breaker import CircuitBreaker
    from ._stats import Stats

__all__ = ["EVENT_NAMES", "MAX_HANDLERS", "Event", "EventHandler", "EventName"]

logger = logging.getLogger("fastapi_breaker")

EventName = Literal[
    "fire",
    "success",
    "failure",
    "timeout",
    "reject",
    "open",
    "close",
    "half_open",
    "fallback",
    "semaphore_locked",
    "shutdown",
    "snapshot",
    "health_check_failed",
    "coordinator_degraded",
    "coordinator_recovered",
]
EVENT_NAMES: frozenset[str] = frozenset(get_args(EventName))
_NOTHING: frozenset[str] = frozenset()  # shared by every breaker with no handlers

# Distinct handlers one event of one breaker keeps. Every emit runs them all inline, so a
# thousand is already far past a sane design; past it, a subscription in a loop is a leak.
MAX_HANDLERS = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """What a handler receives. Fields that do not apply to an event are None.

    - `name`: the event, one of `EVENT_NAMES`.
    - `breaker`: the breaker that emitted it.
    - `args`, `kwargs`: the call's arguments (`fire`, `failure`, `timeout`, `reject`, ...).
    - `result`: the call's result (`success`) or the fallback's result (`fallback`).
    - `error`: the exception of `failure`, `timeout`, `reject`, `semaphore_locked`, `fallback`,
      `health_check_failed` and `coordinator_degraded` (why the fleet cannot be reached).
    - `latency`: seconds the call took, by the breaker's clock (`success`, `failure`, `timeout`).
    - `stats`: the window at that moment (`snapshot`).
    """

    name: EventName
    breaker: CircuitBreaker
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    result: Any = None
    error: BaseException | None = None
    latency: float | None = None
    stats: Stats | None = None

    @property
    def breaker_name(self) -> str:
        """The emitting breaker's name: what a registry-wide handler tells breakers apart by."""
        return self.breaker.name


EventHandler = Callable[[Event], None] | Callable[[Event], Awaitable[None]]


class Emitter:
    """Subscribers by event name. Handlers run in subscription order and never break a call.

    A handler is kept once per event: subscribing an equal one again changes nothing.
    """

    __slots__ = ("_handlers", "_home_loop", "_lock", "_tasks", "listening")

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[EventHandler, ...]] = {}
        # The names with at least one handler: what the hot path checks.
        self.listening: frozenset[str] = _NOTHING
        # Made on the first async handler: most breakers never have one.
        self._tasks: set[asyncio.Future[None] | concurrent.futures.Future[None]] | None = None
        self._home_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def subscribe(self, name: str, handler: EventHandler) -> None:
        if name not in EVENT_NAMES:
            raise ValueError(
                f"unknown event {name!r}; the events are: {', '.join(sorted(EVENT_NAMES))}"
            )
        if not callable(handler):
            raise TypeError(f"an event handler must be callable, got {handler!r}")
        if inspect.iscoroutinefunction(handler):
            # An async handler emitted from a worker thread runs on the loop it was subscribed on.
            with contextlib.suppress(RuntimeError):
                self._home_loop = asyncio.get_running_loop()
        with self._lock:
            handlers = self._handlers.get(name, ())
            # `in` compares with `==`, as off() does: an equal bound method is the same handler.
            if handler in handlers:
                return
            if len(handlers) >= MAX_HANDLERS:
                raise ValueError(
                    f"event {name!r} already has {MAX_HANDLERS} handlers, the most one event "
                    "keeps; remove one with off() first"
                )
            self._handlers[name] = (*handlers, handler)
            self.listening = frozenset(self._handlers) if self._handlers else _NOTHING

    def unsubscribe(self, name: str, handler: EventHandler) -> None:
        with self._lock:
            # `!=`, not `is not`: each read of `obj.method` makes a new, equal, bound method.
            remaining = tuple(h for h in self._handlers.get(name, ()) if h != handler)
            if remaining:
                self._handlers[name] = remaining
            else:
                self._handlers.pop(name, None)
            self.listening = frozenset(self._handlers) if self._handlers else _NOTHING

    def held(self, name: str) -> tuple[EventHandler, ...]:
        """The handlers of event `name`, in the order they run."""
        return self._handlers.get(name, ())

    def only(self, handlers: dict[str, tuple[EventHandler, ...]]) -> bool:
        """Whether every handler held here is among `handlers` (a registry's, by event)."""
        return all(
            all(handler in handlers.get(name, ()) for handler in held)
            for name, held in self._handlers.items()
        )

    def emit(self, event: Event) -> None:
        for handler in self._handlers.get(event.name, ()):
            try:
                outcome = handler(event)
                if inspect.isawaitable(outcome):
                    self._schedule(outcome, event)
            except Exception:
                logger.exception(
                    "handler %r of event %r on breaker %r raised",
                    handler,
                    event.name,
                    event.breaker.name,
                )

    def _schedule(self, awaitable: Awaitable[None], event: Event) -> None:
        async def run() -> None:
            try:
                await awaitable
            except Exception:
                logger.exception(
                    "async handler of event %r on breaker %r raised", event.name, event.breaker.name
                )

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        pending: asyncio.Future[None] | concurrent.futures.Future[None]
        if loop is not None:
            pending = loop.create_task(run())
        elif self._home_loop is not None and self._home_loop.is_running():
            pending = asyncio.run_coroutine_threadsafe(run(), self._home_loop)
        else:
            # A thread with no loop in sight: run the handler here rather than lose the event.
            asyncio.run(run())
            return
        # Keep a reference, or the task may be collected before it runs.
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(pending)
        pending.add_done_callback(self._tasks.discard)

    def cancel_pending(self) -> None:
        for task in list(self._tasks or ()):
            task.cancel()
