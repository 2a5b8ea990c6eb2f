"""Reading a breaker's `to_dict()` snapshot back, checked as strictly as options.

A snapshot may come from another process, a cache or a file: every value is checked and a bad
one raises `ValueError` naming its path (`window[3].age`, `options.timeout`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, NamedTuple

from ._buckets import Bucket, parse_window
from ._options import MAX_SECONDS, BreakerOptions, ErrorFilter, check_keys, shown
from ._state import State

if TYPE_CHECKING:
    from ._core import BreakerCore

__all__ = ["SNAPSHOT_KEYS", "Snapshot", "parse_snapshot", "snapshot"]

# What `to_dict()` writes, in its order: `from_dict()` refuses any other key.
SNAPSHOT_KEYS = (
    "name",
    "state",
    "enabled",
    "shutdown",
    "forced_open",
    "retry_after",
    "options",
    "window",
    "stats",
)
_OPTION_KEYS = tuple(f.name for f in dataclasses.fields(BreakerOptions) if f.name != "error_filter")
_STATE_NAMES = tuple(state.value for state in State)


class Snapshot(NamedTuple):
    name: str
    state: State
    enabled: bool
    shutdown: bool
    forced_open: bool
    retry_after: float | None
    options: BreakerOptions
    buckets: list[Bucket]


def snapshot(name: str, state: State, core: BreakerCore, now: float) -> dict[str, Any]:
    """What `to_dict()` returns, in `SNAPSHOT_KEYS` order."""
    return {
        "name": name,
        "state": state.value,
        "enabled": core.enabled,
        "shutdown": core.shut,
        "forced_open": core.forced,
        "retry_after": core.retry_after(now, []),
        "options": core.options.to_dict(),
        "window": core.window_list(now),
        "stats": core.stats(now).to_dict(),
    }


def parse_snapshot(data: object, error_filter: ErrorFilter | None) -> Snapshot:
    """The checked content of `data`; `stats` is ignored, as the window rebuilds it."""
    if not isinstance(data, dict):
        raise TypeError(f"a snapshot must be a dict, as to_dict() returns, got {shown(data)}")
    check_keys("the snapshot", data, SNAPSHOT_KEYS)
    for key in ("name", "state", "options"):
        if key not in data:
            raise ValueError(f"the snapshot has no {key!r}")
    name = data["name"]
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {shown(name)}")
    state_name = data["state"]
    if not isinstance(state_name, str) or state_name not in _STATE_NAMES:
        allowed = ", ".join(repr(s) for s in _STATE_NAMES)
        raise ValueError(f"state must be one of {allowed}, got {shown(state_name)}")
    state = State(state_name)
    flags = {key: data.get(key, key == "enabled") for key in ("enabled", "shutdown", "forced_open")}
    for key, flag in flags.items():
        if not isinstance(flag, bool):
            raise ValueError(f"{key} must be True or False, got {shown(flag)}")
    if flags["forced_open"] and state is not State.OPEN:
        raise ValueError(
            f"forced_open can be True only when state is 'open', got state {state_name!r}"
        )
    # Up to the longest duration, not reset_timeout: an upstream's Retry-After may have held
    # the breaker open longer.
    retry_after = data.get("retry_after")
    if retry_after is not None and (
        isinstance(retry_after, bool)
        or not isinstance(retry_after, int | float)
        or not 0 <= retry_after <= MAX_SECONDS
    ):
        raise ValueError(
            f"retry_after must be None or a number of seconds >= 0 and <= {MAX_SECONDS} "
            f"(365 days), got {shown(retry_after)}"
        )
    given = data["options"]
    if not isinstance(given, dict):
        raise ValueError(f"options must be an object of option values, got {shown(given)}")
    check_keys("options", given, _OPTION_KEYS)
    try:
        options = BreakerOptions(**given, error_filter=error_filter)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"options.{exc}") from None
    buckets = parse_window(data.get("window", []), options.rolling_count_buckets)
    return Snapshot(
        name,
        state,
        flags["enabled"],
        flags["shutdown"],
        flags["forced_open"],
        retry_after,
        options,
        buckets,
    )
