"""Named breakers, made on first use from default and per-name options.

Every option is checked when the registry is built, so that a bad value in configuration fails
at startup with the breaker's name in the message, never at the first request that uses it.

The registry holds at most `max_breakers` breakers, each named in at most `max_name_length`
characters, since a name may come from user input (a tenant, a URL host). When a new name needs
room, the oldest breaker that is safe to forget goes; see `BreakerRegistry`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any, cast

from ._breaker import CircuitBreaker
from ._clock import Clock, first_reading
from ._errors import BreakerError
from ._events import EVENT_NAMES, MAX_HANDLERS, EventHandler, EventName
from ._fleet import Coordinator
from ._options import BreakerOptions, option_mapping, options_from, shown

__all__ = [
    "DEFAULT_MAX_BREAKERS",
    "DEFAULT_MAX_NAME_LENGTH",
    "SEARCH_LIMIT",
    "BreakerRegistry",
    "NameTooLongError",
    "RegistryFullError",
    "UnknownBreakerError",
]

# Enough for every named upstream a service has; small enough that a flood of made-up names
# costs a few MB and keeps `/health` quick.
DEFAULT_MAX_BREAKERS = 1000
# The longest name a registry takes: a host name is at most 253 characters, and a per-host
# breaker's name is `host:port`. A name costs its length in every /health, /metrics and
# dashboard answer, and a name may come from a request.
DEFAULT_MAX_NAME_LENGTH = 300

# How many unconfigured breakers one creation may test for idleness (about 1.5 us each, under
# the lock). Without a bound, a registry full of busy breakers makes every new name test them
# all: 1.6 ms per request at 1,000, which a flood of new names turns into a stalled event loop.
SEARCH_LIMIT = 32


class UnknownBreakerError(BreakerError, LookupError):
    """A strict registry was asked for a breaker that its configuration does not name."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        super().__init__(name, tuple(sorted(known)))

    @property
    def known(self) -> tuple[str, ...]:
        """The names the registry knows, sorted."""
        return tuple(self.args[1])

    def __str__(self) -> str:
        known = ", ".join(repr(n) for n in self.known) if self.known else "none"
        return (
            f"unknown circuit breaker {self.name!r} in a strict registry; known breakers: {known}"
        )


class RegistryFullError(BreakerError, LookupError):
    """The registry is full (`max_breakers`) and none of its breakers may be evicted."""

    def __init__(self, name: str, max_breakers: int) -> None:
        super().__init__(name, max_breakers)

    @property
    def max_breakers(self) -> int:
        return int(self.args[1])

    def __str__(self) -> str:
        return (
            f"cannot create circuit breaker {self.name!r}: the registry is full "
            f"(max_breakers={self.max_breakers}) and none of the oldest breakers could be "
            "evicted (only an idle, unconfigured one can)"
        )


class NameTooLongError(BreakerError, ValueError):
    """A new breaker name is longer than the registry's `max_name_length`: no breaker was made."""

    def __init__(self, name: str, max_name_length: int) -> None:
        super().__init__(name, max_name_length)

    @property
    def max_name_length(self) -> int:
        return int(self.args[1])

    def __str__(self) -> str:
        # Not the whole name: it is too long by definition, and may be megabytes.
        start = self.name[:40]
        return (
            f"cannot create circuit breaker {start!r}... : its name has {len(self.name):,} "
            f"characters, more than max_name_length={self.max_name_length}"
        )


class BreakerRegistry:
    """Holds one breaker per name and creates it, from defaults plus per-name options, on first use.

    `defaults` and each entry of `breakers` are a `BreakerOptions` or a mapping of option names.
    A per-name mapping overrides the defaults key by key; a per-name `BreakerOptions` is complete
    and used as it is. With `strict=True`, only the names in `breakers` exist.

    It holds at most `max_breakers` breakers (None: no bound, for names that only your code
    chooses). Room is kept for every configured name, so unconfigured names share what is left.
    When a new unconfigured name finds that share taken, it tests the oldest unconfigured
    breakers, at most `SEARCH_LIMIT` of them, and the first idle one (see `_forgettable`) is
    forgotten. Those found busy move behind the newest, so that the next search tests others.
    If none is idle, `get()` raises `RegistryFullError`. A forgotten breaker is not shut down:
    whoever still holds it can finish with it.

    A name is at most `max_name_length` characters (300; None: no bound): a longer new name
    raises `NameTooLongError` (a `ValueError`), and a longer configured one fails construction.
    """

    __slots__ = (
        "_breakers",
        "_clock",
        "_configured",
        "_coordinator",
        "_defaults",
        "_guests",
        "_handlers",
        "_lock",
        "_max",
        "_max_name",
        "_options",
        "_room",
        "_strict",
    )

    def __init__(
        self,
        defaults: BreakerOptions | Mapping[str, Any] | None = None,
        breakers: Mapping[str, BreakerOptions | Mapping[str, Any]] | None = None,
        *,
        strict: bool = False,
        clock: Clock | None = None,
        max_breakers: int | None = DEFAULT_MAX_BREAKERS,
        coordinator: Coordinator | None = None,
        max_name_length: int | None = DEFAULT_MAX_NAME_LENGTH,
    ) -> None:
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be True or False, got {strict!r}")
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a callable returning monotonic seconds, got {clock!r}")
        if clock is not None:
            first_reading(clock)  # a bad clock fails here, not at the first request
        if coordinator is not None and not all(
            callable(getattr(coordinator, method, None))
            for method in ("attach", "detach", "start", "stop")
        ):
            raise TypeError(
                "coordinator must have attach(), detach(), start() and stop() (a Coordinator, "
                f"such as fastapi_breaker.redis.RedisCoordinator), got {coordinator!r}"
            )
        self._coordinator = coordinator
        if breakers is None:
            breakers = {}
        elif not isinstance(breakers, Mapping):
            raise TypeError(f"breakers must be a mapping of name to options, got {breakers!r}")

        if max_name_length is not None and (
            isinstance(max_name_length, bool)
            or not isinstance(max_name_length, int)
            or max_name_length < 1
        ):
            raise ValueError(
                f"max_name_length must be an integer >= 1 or None, got {shown(max_name_length)}"
            )
        base = option_mapping("defaults", defaults)
        self._defaults = options_from("defaults", base)
        options: dict[str, BreakerOptions] = {}
        for name, given in breakers.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"a breaker name must be a non-empty string, got {name!r}")
            if max_name_length is not None and len(name) > max_name_length:
                raise ValueError(str(NameTooLongError(name, max_name_length)))
            if isinstance(given, BreakerOptions):
                options[name] = given
            else:
                where = f"breaker {name!r}"
                options[name] = options_from(where, {**base, **option_mapping(where, given)})
        _check_max_breakers(max_breakers, len(options))
        self._options = options
        self._configured = frozenset(options)
        self._strict = strict
        self._clock = clock
        self._max = max_breakers
        self._max_name = max_name_length
        # Insertion-ordered: the front holds the oldest, where the search for an idle one starts.
        self._breakers: dict[str, CircuitBreaker] = {}
        # How many of them are unconfigured (guests), and how many may be: what the configured
        # ones leave.
        self._guests = 0
        self._room = None if max_breakers is None else max_breakers - len(options)
        # Guards creation, eviction and removal: two threads asking for the same new name get
        # the same breaker, and the bound holds. Lookups of existing names never take it.
        self._lock = threading.Lock()
        # Registry-wide event handlers, by event: every breaker made from now on gets them too.
        self._handlers: dict[str, tuple[EventHandler, ...]] = {}

    def __repr__(self) -> str:
        mode = " strict" if self._strict else ""
        return (
            f"<BreakerRegistry{mode} configured={sorted(self._configured)!r} "
            f"max_breakers={self._max!r}>"
        )

    def get(self, name: str) -> CircuitBreaker:
        """The breaker called `name`, created on first use.

        Raises `UnknownBreakerError` in strict mode when `name` is not configured, and
        `RegistryFullError` when a new name finds no room and no idle breaker to evict.
        """
        # The hot path of every request: one dict lookup, no lock.
        try:
            breaker = self._breakers.get(name)
        except TypeError:  # unhashable: a list, a dict
            raise ValueError(_bad_name(name)) from None
        if breaker is not None:
            return breaker
        options = self._options.get(name)
        guest = options is None
        if options is None:
            if not isinstance(name, str) or not name:
                raise ValueError(_bad_name(name))
            if self._max_name is not None and len(name) > self._max_name:
                raise NameTooLongError(name, self._max_name)
            if self._strict:
                raise UnknownBreakerError(name, self._configured)
            options = self._defaults
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                # A configured name always has room kept for it; only guests make room.
                if guest and self._room is not None and self._guests >= self._room:
                    self._evict_for(name)
                breaker = CircuitBreaker.from_options(options, name=name, clock=self._clock)
                for event, handlers in self._handlers.items():
                    for handler in handlers:
                        breaker.on(event, handler)  # type: ignore[arg-type]
                if self._coordinator is not None:
                    self._coordinator.attach(breaker)
                self._breakers[name] = breaker
                if guest:
                    self._guests += 1
        return breaker

    def _evict_for(self, name: str) -> None:
        """Forget the oldest idle unconfigured breaker, else raise `RegistryFullError`. Locked.

        At most `SEARCH_LIMIT` unconfigured breakers are tested, so a creation costs O(1)
        whatever the registry holds. Configured breakers are passed over untested: there are
        only as many as the configuration names. Whatever was passed over, refused or not, goes
        behind the newest, so that the next search starts past it.
        """
        breakers = self._breakers
        configured = self._configured
        passed: list[str] = []
        victim: str | None = None
        tests = SEARCH_LIMIT
        for key, breaker in breakers.items():
            if key not in configured:
                if _forgettable(breaker, self._handlers):
                    victim = key
                    break
                tests -= 1
            passed.append(key)
            if not tests:
                break
        if victim is not None:
            # Forgotten, not shut down: a caller may still hold it mid-request, and nothing of
            # it needs stopping (no task, no handler, no call with a deadline).
            forgotten = breakers.pop(victim)
            self._guests -= 1
            if self._coordinator is not None:
                self._coordinator.detach(forgotten)
        for key in passed:
            # Between the pop and the store a lock-free lookup misses the name: get() then
            # takes the lock and finds it, and so does __contains__.
            breakers[key] = breakers.pop(key)
        if victim is None:
            raise RegistryFullError(name, cast(int, self._max))

    def on(self, event: EventName, handler: EventHandler) -> BreakerRegistry:
        """Run `handler` for `event` on every breaker of this registry, made already or later
        (on first use, or again after `remove()` or `shutdown()`). `event.breaker_name` says
        which breaker emitted it. Handlers of "fire", "success" or "reject" see each call, which
        turns off the fast paths; state changes cost calls nothing. Handlers added here never
        stop a breaker being forgotten (`max_breakers`)."""
        if event not in EVENT_NAMES:
            raise ValueError(
                f"unknown event {event!r}; the events are: {', '.join(sorted(EVENT_NAMES))}"
            )
        if not callable(handler):
            raise TypeError(f"an event handler must be callable, got {handler!r}")
        with self._lock:
            held = self._handlers.get(event, ())
            if handler in held:
                return self
            # Refused here, whole, rather than later by the breakers one at a time: past the
            # bound every get() of a new name would fail, and a breaker already full would
            # leave the handler on some breakers and not others.
            if len(held) >= MAX_HANDLERS:
                raise ValueError(
                    f"event {event!r} already has {MAX_HANDLERS} registry-wide handlers, the "
                    "most one event keeps; remove one with off() first"
                )
            for breaker in self._breakers.values():
                listeners = breaker.listeners(event)
                if handler not in listeners and len(listeners) >= MAX_HANDLERS:
                    raise ValueError(
                        f"breaker {breaker.name!r} already has {MAX_HANDLERS} handlers of event "
                        f"{event!r}, the most one event keeps; nothing was subscribed"
                    )
            for breaker in self._breakers.values():
                breaker.on(event, handler)
            self._handlers[event] = (*held, handler)
        return self

    def off(self, event: EventName, handler: EventHandler) -> BreakerRegistry:
        """Stop running `handler` for `event` on every breaker (one never added: no-op)."""
        with self._lock:
            held = self._handlers.get(event, ())
            remaining = tuple(h for h in held if h != handler)
            if remaining:
                self._handlers[event] = remaining
            else:
                self._handlers.pop(event, None)
            for breaker in self._breakers.values():
                breaker.off(event, handler)
        return self

    def remove(self, name: str) -> bool:
        """Forget the breaker called `name` and shut it down; True if there was one.

        A configured name stays configured: its next `get()` builds a fresh breaker from its
        options. Whoever still holds the old one gets `BreakerShutdownError` from it.
        """
        if not isinstance(name, str):
            raise ValueError(_bad_name(name))
        with self._lock:
            breaker = self._breakers.pop(name, None)
            if breaker is not None and name not in self._configured:
                self._guests -= 1
        if breaker is None:
            return False
        if self._coordinator is not None:
            self._coordinator.detach(breaker)
        # Outside the lock: a shutdown event handler may well ask the registry for a breaker.
        breaker.shutdown()
        return True

    def breakers(self) -> dict[str, CircuitBreaker]:
        """The breakers created so far, by name (a copy)."""
        with self._lock:
            return dict(self._breakers)

    @property
    def configured(self) -> frozenset[str]:
        """The names that have their own options."""
        return self._configured

    @property
    def strict(self) -> bool:
        return self._strict

    @property
    def max_breakers(self) -> int | None:
        """The most breakers the registry holds at once; None for no bound."""
        return self._max

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False  # no breaker has such a name; an unhashable one must not raise
        if name in self._configured or name in self._breakers:
            return True
        # A miss is asked again under the lock: an eviction may be moving the name right now.
        with self._lock:
            return name in self._breakers

    def shutdown(self) -> None:
        """Shut every breaker down and forget it: a later `get()` creates a fresh one.

        That lets an app's lifespan run again (a second `TestClient`, say) with new breakers.
        """
        with self._lock:
            breakers = list(self._breakers.values())
            self._breakers.clear()
            self._guests = 0
        # Outside the lock: a shutdown event handler may well ask the registry for a breaker.
        for breaker in breakers:
            if self._coordinator is not None:
                self._coordinator.detach(breaker)
            breaker.shutdown()

    @property
    def coordinator(self) -> Coordinator | None:
        """What shares these breakers' state with the fleet, if anything."""
        return self._coordinator

    async def start(self) -> None:
        """Start the coordinator's background work, if there is a coordinator.

        `setup_breakers()` calls it when the app starts; `async with registry:` does too.
        """
        if self._coordinator is not None:
            await self._coordinator.start()

    async def stop(self) -> None:
        """Stop the coordinator's background work (it reports what is left, briefly)."""
        if self._coordinator is not None:
            await self._coordinator.stop()

    async def __aenter__(self) -> BreakerRegistry:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop the coordinator, then shut every breaker down, as an app's lifespan does."""
        try:
            await self.stop()
        finally:
            self.shutdown()


def _bad_name(name: object) -> str:
    return f"a breaker name must be a non-empty string, got {name!r}"


def _forgettable(
    breaker: CircuitBreaker, shared: dict[str, tuple[EventHandler, ...]] | None = None
) -> bool:
    """Whether forgetting `breaker` loses nothing but counts that say all is well.

    Handlers the registry itself subscribed (`shared`, see `on()`) do not count as attached:
    the breaker that replaces it gets them too.

    It must be enabled and not shut down, with nothing the user attached after creation
    (handlers, a fallback, a bound action, a health check), no call the breaker can see in
    flight (a capacity slot or a pending deadline), and an idle core (`BreakerCore.idle`):
    closed with no failure in its window (forgetting one would reset that count towards
    opening), or quiet with no wait left (open past its reset timeout, or half-open with no
    trial, and no call at all in its window). A breaker still being called keeps its refusals in
    its window: flooding new names cannot reset an open circuit.

    Cheapest tests first. A call that starts on another thread just after the test ends on
    the forgotten breaker, which is harmless: nobody else holds it.
    """
    if breaker.listening and not (shared and breaker.hears_only(shared)):
        return False
    return breaker.forgettable() and breaker.core.idle(breaker.clock())


def _check_max_breakers(value: object, configured: int) -> None:
    if value is None:
        return
    minimum = max(1, configured)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        why = " (the number of configured breakers)" if configured > 1 else ""
        raise ValueError(
            f"max_breakers must be an integer >= {minimum}{why} or None, got {shown(value)}"
        )
