"""A breaker's options, checked once at construction.

Every bad value fails here, with an error that names the option and its allowed range, so that a
typo in configuration never turns into a silent default at run time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "DEFAULT_HALF_OPEN_TIMEOUT",
    "MAX_BUCKETS",
    "MAX_COUNT",
    "MAX_SECONDS",
    "MIN_BUCKET_SECONDS",
    "BreakerOptions",
    "ErrorFilter",
    "check_keys",
    "check_seconds",
    "option_mapping",
    "options_from",
    "shared",
    "shown",
]

ErrorFilter = Callable[[BaseException], bool]

# The trial limit when neither `half_open_timeout` nor `timeout` is set: a trial must always end.
DEFAULT_HALF_OPEN_TIMEOUT = 10.0

# The longest any duration may be: 365 days. Longer is a mistake (a unit slip, `1e9` meant as
# "never"), and the bound keeps every deadline (a clock reading plus a duration) a float exact
# to the microsecond, and every `Retry-After` a header value that clients can read.
MAX_SECONDS = 365 * 24 * 3600
_SECONDS_TEXT = f"<= {MAX_SECONDS} (365 days)"

# The narrowest bucket: a window sliced finer than the clock and the calls can tell apart says
# nothing more, and a width near zero divides the clock by zero.
MIN_BUCKET_SECONDS = 0.001

# Every stats read and every failure walks the buckets: a thousand keeps that well under a
# millisecond.
MAX_BUCKETS = 1000

# Counts of calls (trials, concurrent calls, the volume threshold): more than a process runs at
# once or a window holds, and small enough for exact float arithmetic in the trip decisions.
MAX_COUNT = 1_000_000


def shown(value: object) -> str:
    """`repr(value)` for an error message; never itself an error, even for a huge int."""
    try:
        return repr(value)
    except ValueError:  # an int past sys.get_int_max_str_digits()
        return f"an integer of {value.bit_length()} bits"  # type: ignore[attr-defined]


def check_keys(where: str, given: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Raise ValueError naming the first key of `given` that is not one of `keys`."""
    for key in given:
        if key not in keys:
            raise ValueError(
                f"unknown key {shown(key)} in {where}; the keys are: {', '.join(keys)}"
            )


def check_seconds(
    field: str, value: object, *, optional: bool = False, zero_ok: bool = False
) -> None:
    """Raise ValueError naming `field` unless `value` is a duration this library can use."""
    if value is None and optional:
        return
    # Comparisons, not math.isnan(): they refuse NaN too, and never overflow on a huge int.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (0 <= value <= MAX_SECONDS)
        or (value == 0 and not zero_ok)
    ):
        allowed = f"a number of seconds {'>= 0' if zero_ok else '> 0'} and {_SECONDS_TEXT}"
        if optional:
            allowed += " or None"
        raise ValueError(f"{field} must be {allowed}, got {shown(value)}")


def _count(
    field: str, value: object, *, minimum: int, maximum: int = MAX_COUNT, optional: bool = False
) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        allowed = f"an integer >= {minimum} and <= {maximum}" + (" or None" if optional else "")
        raise ValueError(f"{field} must be {allowed}, got {shown(value)}")


def _flag(field: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{field} must be True or False, got {shown(value)}")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BreakerOptions:
    """Everything that shapes a breaker's behaviour. Times are seconds, as floats.

    Opossum's names are in brackets: `timeout` [timeout, ms], `reset_timeout` [resetTimeout],
    `error_threshold_percentage` [errorThresholdPercentage], `rolling_count_timeout`
    [rollingCountTimeout], `rolling_count_buckets` [rollingCountBuckets], `volume_threshold`
    [volumeThreshold], `allow_warm_up` [allowWarmUp], `capacity` [capacity], `error_filter`
    [errorFilter], `enabled` [enabled].
    """

    timeout: float | None = 10.0
    reset_timeout: float = 30.0
    error_threshold_percentage: float = 50.0
    rolling_count_timeout: float = 10.0
    rolling_count_buckets: int = 10
    volume_threshold: int = 10
    allow_warm_up: bool = False
    capacity: int | None = None
    error_filter: ErrorFilter | None = None
    enabled: bool = True
    half_open_max_calls: int = 1
    half_open_timeout: float | None = None

    def __post_init__(self) -> None:
        check_seconds("timeout", self.timeout, optional=True)
        check_seconds("reset_timeout", self.reset_timeout)
        pct = self.error_threshold_percentage
        if isinstance(pct, bool) or not isinstance(pct, int | float) or not 0 <= pct <= 100:
            raise ValueError(
                f"error_threshold_percentage must be a number from 0 to 100, got {shown(pct)}"
            )
        check_seconds("rolling_count_timeout", self.rolling_count_timeout)
        _count("rolling_count_buckets", self.rolling_count_buckets, minimum=1, maximum=MAX_BUCKETS)
        if self.rolling_count_timeout / self.rolling_count_buckets < MIN_BUCKET_SECONDS:
            raise ValueError(
                "rolling_count_timeout / rolling_count_buckets (the bucket width) must be at "
                f"least {MIN_BUCKET_SECONDS} seconds, got {self.rolling_count_timeout!r} / "
                f"{self.rolling_count_buckets!r}"
            )
        _count("volume_threshold", self.volume_threshold, minimum=0)
        _flag("allow_warm_up", self.allow_warm_up)
        _count("capacity", self.capacity, minimum=1, optional=True)
        if self.error_filter is not None and not callable(self.error_filter):
            raise TypeError(
                f"error_filter must be a callable (exc) -> bool or None, got {self.error_filter!r}"
            )
        _flag("enabled", self.enabled)
        _count("half_open_max_calls", self.half_open_max_calls, minimum=1)
        check_seconds("half_open_timeout", self.half_open_timeout, optional=True)

    @property
    def bucket_seconds(self) -> float:
        return self.rolling_count_timeout / self.rolling_count_buckets

    @property
    def trial_timeout(self) -> float:
        """The time limit of a half-open trial: never unlimited, unlike Opossum's."""
        if self.half_open_timeout is not None:
            return self.half_open_timeout
        if self.timeout is not None:
            return self.timeout
        return DEFAULT_HALF_OPEN_TIMEOUT

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe options; `error_filter` is code and is left out."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "error_filter"
        }


# Equal options, one object: a registry of ten thousand breakers made with the same settings
# holds one `BreakerOptions`, not ten thousand. Keyed by each value's type too, so that
# `timeout=10` and `timeout=10.0` stay what they were given as.
_SHARED: dict[tuple[object, ...], BreakerOptions] = {}
_SHARED_MAX = 256  # distinct settings in use at once; past it, start over
_FIELDS = tuple(f.name for f in dataclasses.fields(BreakerOptions))


def shared(options: BreakerOptions) -> BreakerOptions:
    """An options object equal to `options`, the same one for every equal call."""
    key = tuple((type(value), value) for value in map(options.__getattribute__, _FIELDS))
    try:
        found = _SHARED.get(key)
    except TypeError:  # an unhashable error_filter
        return options
    if found is None:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        found = _SHARED.setdefault(key, options)
    return found


# Every option a mapping may set, in the dataclass's order (that order reads well in errors).
_OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(BreakerOptions))


def option_mapping(where: str, given: BreakerOptions | Mapping[str, Any] | None) -> dict[str, Any]:
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


def options_from(where: str, options: Mapping[str, Any]) -> BreakerOptions:
    """`BreakerOptions` from a checked mapping; an error names `where` (a breaker, the defaults)."""
    try:
        return BreakerOptions(**options)
    except (ValueError, TypeError) as exc:
        # Same type, so that code catching the option's own error still catches this one.
        raise type(exc)(f"{where}: {exc}") from exc
