"""Named breakers, made on first use from default and per-name options.

Every option is checked when the registry is built, so that a bad value in configuration fails
at startup with the breaker's name in the message, never at the first request that uses it.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from ._breaker import CircuitBreaker
from ._clock import Clock
from ._errors import BreakerError
from ._options import BreakerOptions

__all__ = ["BreakerRegistry", "RegistryFullError", "UnknownBreakerError"]

# Every option a mapping may set, in the dataclass's order (that order reads well in errors).
_OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(BreakerOptions))


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
    """The registry holds `max_breakers` breakers and none of them may be evicted for a new one."""

    def __init__(self, name: str, max_breakers: int) -> None:
        super().__init__(name, max_breakers)

    @property
    def max_breakers(self) -> int:
        return int(self.args[1])

    def __str__(self) -> str:
        return (
            f"cannot create circuit breaker {self.name!r}: the registry is full "
            f"({self.max_breakers} breakers, none idle and unconfigured to evict)"
        )


class BreakerRegistry:
    """Holds one breaker per name and creates it, from defaults plus per-name options, on first use.

    `defaults` and each entry of `breakers` are a `BreakerOptions` or a mapping of option names.
    A per-name mapping overrides the defaults key by key; a per-name `BreakerOptions` is complete
    and used as it is. With `strict=True`, only the names in `breakers` exist.
    """

    __slots__ = ("_breakers", "_clock", "_configured", "_defaults", "_lock", "_options", "_strict")

    def __init__(
        self,
        defaults: BreakerOptions | Mapping[str, Any] | None = None,
        breakers: Mapping[str, BreakerOptions | Mapping[str, Any]] | None = None,
        *,
        strict: bool = False,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be True or False, got {strict!r}")
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a callable returning monotonic seconds, got {clock!r}")
        if breakers is None:
            breakers = {}
        elif not isinstance(breakers, Mapping):
            raise TypeError(f"breakers must be a mapping of name to options, got {breakers!r}")

        base = _as_mapping("defaults", defaults)
        self._defaults = _build("defaults", base)
        options: dict[str, BreakerOptions] = {}
        for name, given in breakers.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"a breaker name must be a non-empty string, got {name!r}")
            if isinstance(given, BreakerOptions):
                options[name] = given
            else:
                where = f"breaker {name!r}"
                options[name] = _build(where, {**base, **_as_mapping(where, given)})
        self._options = options
        self._configured = frozenset(options)
        self._strict = strict
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        # Guards creation only: two threads asking for the same new name get the same breaker.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        mode = " strict" if self._strict else ""
        return f"<BreakerRegistry{mode} configured={sorted(self._configured)!r}>"

    def get(self, name: str) -> CircuitBreaker:
        """The breaker called `name`, created on first use.

        Raises `UnknownBreakerError` in strict mode when `name` is not configured.
        """
        # The hot path of every request: one dict lookup, no lock.
        breaker = self._breakers.get(name)
        if breaker is not None:
            return breaker
        options = self._options.get(name)
        if options is None:
            if not isinstance(name, str) or not name:
                raise ValueError(f"a breaker name must be a non-empty string, got {name!r}")
            if self._strict:
                raise UnknownBreakerError(name, self._configured)
            options = self._defaults
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                breaker = CircuitBreaker.from_options(options, name=name, clock=self._clock)
                self._breakers[name] = breaker
        return breaker

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

    def __contains__(self, name: object) -> bool:
        return name in self._configured or name in self._breakers

    def shutdown(self) -> None:
        """Shut every breaker down and forget it: a later `get()` creates a fresh one.

        That lets an app's lifespan run again (a second `TestClient`, say) with new breakers.
        """
        with self._lock:
            breakers = list(self._breakers.values())
            self._breakers.clear()
        # Outside the lock: a shutdown event handler may well ask the registry for a breaker.
        for breaker in breakers:
            breaker.shutdown()


def _as_mapping(where: str, given: BreakerOptions | Mapping[str, Any] | None) -> dict[str, Any]:
    """The options as a plain dict, every key checked against the option names."""
    if given is None:
        return {}
    if isinstance(given, BreakerOptions):
        # Not `to_dict()`: that leaves out error_filter, which a registry must keep.
        return {name: getattr(given, name) for name in _OPTION_NAMES}
    if not isinstance(given, Mapping):
        raise TypeError(f"{where}: options must be a BreakerOptions or a mapping, got {given!r}")
    unknown = [key for key in given if key not in _OPTION_NAMES]
    if unknown:
        # A typo must not turn into a silent default: name it, and say what would have worked.
        label = "unknown option" if len(unknown) == 1 else "unknown options"
        raise ValueError(
            f"{where}: {label} {', '.join(map(repr, unknown))}; "
            f"valid options are: {', '.join(_OPTION_NAMES)}"
        )
    return dict(given)


def _build(where: str, options: Mapping[str, Any]) -> BreakerOptions:
    try:
        return BreakerOptions(**options)
    except (ValueError, TypeError) as exc:
        # Same type, so that code catching the option's own error still catches this one.
        raise type(exc)(f"{where}: {exc}") from exc
