"""What every part of a breaker shares: its fields, its clock, its core and its event handlers.

`CircuitBreaker` is put together from this base, the async runner (`_async_calls`) and the
thread runner (`_sync_calls`). The base holds no decisions: those are the core's
(`_core.BreakerCore`). It reads the clock, announces events, and gives the runners and `Attempt`
the public pieces they work through: `core`, `clock`, `emit()` and `listening`.

Every field is a slot: a registry may hold thousands of breakers, and an idle one should cost
little more than its name (`make bench-engine` measures the bytes).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from ._clock import Clock
from ._core import BreakerCore, Moves
from ._deadlines import DeadlineQueue
from ._events import Emitter, Event, EventHandler, EventName
from ._logs import log_move
from ._options import BreakerOptions
from ._state import State
from ._transitions import Move

__all__ = ["BreakerBase", "Fallback", "default_name"]

Fallback = Callable[..., Any]

_NOTHING: frozenset[str] = frozenset()  # shared by every breaker with no handlers
_EMITTER_MAKER = threading.Lock()  # two threads subscribing first at once make one emitter


class BreakerBase:
    """The fields and plumbing of a breaker; see `CircuitBreaker` for the API."""

    __slots__ = (
        "__weakref__",
        "_action",
        "_emitter",
        "_fallback",
        "_health_tasks",
        "_name_given",
        "_queue",
        "_timeout",
        "clock",
        "core",
        "fire",
        "listening",
        "name",
    )

    name: str
    # The decisions, sans I/O: what an integration (a coordinator, metrics) hooks into.
    core: BreakerCore
    # The monotonic clock every state decision and latency reads.
    clock: Clock
    # `await breaker.fire(...)` runs the bound action: `call` bound to it, a C-level partial kept
    # in a slot (a method would cost one more Python frame per call).
    fire: Callable[..., Awaitable[Any]]
    # The event names with at least one handler: what the hot paths check before building one.
    listening: frozenset[str]
    _timeout: float | None
    _action: Callable[..., Any] | None
    _fallback: Fallback | BreakerBase | None
    _emitter: Emitter | None  # made by the first on(): most breakers never have a handler
    _queue: DeadlineQueue | None  # the time-limit queue of the loop used last
    _health_tasks: set[asyncio.Task[None]] | None  # made by health_check()
    _name_given: bool

    def _init_base(
        self, name: str, name_given: bool, core: BreakerCore, clock: Clock, action: Any
    ) -> None:
        self.name = name
        self._name_given = name_given
        self.core = core
        self.clock = clock
        self._timeout = core.options.timeout
        self.listening = _NOTHING
        self._action = action
        self._fallback = None
        self._emitter = None
        self._queue = None
        self._health_tasks = None

    @property
    def options(self) -> BreakerOptions:
        return self.core.options

    @property
    def fleet_state(self) -> State | None:
        """The fleet's state as last heard from its coordinator; None without a coordinator,
        or while the coordinator cannot reach the fleet (the breaker then follows its own)."""
        link = self.core.fleet
        if link is None or not link.healthy or link.state is None:
            return None
        return State(link.state)

    # ------------------------------------------------------------------ events

    def emit(self, event: Event) -> None:
        """Run this breaker's handlers of `event.name`. The breaker calls it for every event;
        an integration that settles calls itself (see `Attempt`) may too."""
        emitter = self._emitter
        if emitter is not None:
            emitter.emit(event)

    def _subscribe(self, event: EventName, handler: EventHandler) -> None:
        emitter = self._emitter
        if emitter is None:
            with _EMITTER_MAKER:
                emitter = self._emitter
                if emitter is None:
                    emitter = self._emitter = Emitter()
        emitter.subscribe(event, handler)
        self._heard(emitter)

    def _unsubscribe(self, event: EventName, handler: EventHandler) -> None:
        emitter = self._emitter
        if emitter is not None:
            emitter.unsubscribe(event, handler)
            self._heard(emitter)

    def listeners(self, event: EventName) -> tuple[EventHandler, ...]:
        """The handlers subscribed to `event`, in the order they run (a registry's included)."""
        emitter = self._emitter
        return () if emitter is None else emitter.held(event)

    def hears_only(self, handlers: dict[str, tuple[EventHandler, ...]]) -> bool:
        """Whether this breaker's handlers are all among `handlers` (by event): a registry
        that subscribed them may still forget the breaker."""
        emitter = self._emitter
        return emitter is None or emitter.only(handlers)

    def _heard(self, emitter: Emitter) -> None:
        listening = emitter.listening
        self.listening = listening or _NOTHING
        self.core.watch(
            calls=bool({"fire", "success"} & listening),
            rejections=bool({"fire", "reject"} & listening),
        )

    def announce(self, moves: Moves) -> None:
        """Emit the transitions the core reported in `moves`, in order, to whoever listens.

        For code that calls the core itself (see `BreakerCore`): the breaker's own calls and
        `Attempt` end here, outside the core's lock."""
        listening = self.listening
        for name in moves:
            if name in listening:
                self.emit(Event(name, self))  # type: ignore[arg-type]
            if isinstance(name, Move):
                log_move(self, name, self.clock())

    def start_bucket(self, now: float) -> None:
        """Start the window's bucket for `now` (the caller saw `now` past `window.current_end`),
        and announce the window as it was as a `snapshot` event, if anyone listens."""
        if self.core.rotate(now) and "snapshot" in self.listening:
            self.emit(Event("snapshot", self, stats=self.core.stats(now)))  # type: ignore[arg-type]

    def _fell_back(
        self, result: Any, error: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.core.fell_back(self.clock())
        if "fallback" in self.listening:
            event = Event("fallback", self, args, kwargs, result=result, error=error)  # type: ignore[arg-type]
            self.emit(event)


_ids = itertools.count(1)


def default_name(action: Callable[..., Any] | None) -> str:
    """The action's qualified name, else a unique one."""
    qualname = getattr(action, "__qualname__", None)
    if isinstance(qualname, str) and qualname:
        return qualname
    return f"breaker-{next(_ids)}-{uuid.uuid4().hex[:8]}"
