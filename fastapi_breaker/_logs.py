"""The log line of every state change, on the `fastapi_breaker` logger.

Opening and going half-open are WARNINGs (someone may need to look), closing is INFO. Each
record carries structured fields for log pipelines: `breaker`, `from_state`, `to_state`,
`error_percentage` (this process's window) and `retry_after`; an open that a fleet
coordinator decided says so, since this process's own window may hold no failure. A breaker
named after a URL (the httpx transports name one per host) is written without the URL's
credentials, query or fragment.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    # For annotations only: a breaker's public pieces are all this module reads.
    from ._base import BreakerBase
    from ._transitions import Move

__all__ = ["log_move", "loggable_name", "logger"]

logger = logging.getLogger("fastapi_breaker")

_LEVELS = {"open": logging.WARNING, "half_open": logging.WARNING, "close": logging.INFO}
_VERBS = {"open": "opened", "half_open": "is half-open", "close": "closed"}


def loggable_name(name: str) -> str:
    """`name` without a URL's user, password, query or fragment; other names as they are."""
    if "@" not in name and "?" not in name and "#" not in name:
        return name
    try:
        parts = urlsplit(name)
    except ValueError:
        parts = None
    if parts is None or not parts.scheme or not parts.netloc:
        # Not a URL: keep what comes before anything that looks like a secret or a query.
        for mark in ("?", "#"):
            name = name.split(mark, 1)[0]
        return name.rsplit("@", 1)[-1]
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def log_move(breaker: BreakerBase, move: Move, now: float) -> None:
    """Log one transition of `breaker`, with the window and retry time as they stand."""
    level = _LEVELS[move]
    if not logger.isEnabledFor(level):
        return
    percentage, retry_after, by_fleet = breaker.core.describe(now)
    name = loggable_name(breaker.name)
    if move == "close":
        detail = ""
    elif move == "open":
        # A fleet's open is decided from every process's counts, not this one's window.
        why = "as its fleet decided" if by_fleet else f"at {percentage:.1f}% errors"
        detail = f" {why}; next trial in {retry_after or 0.0:.3g} s"
    else:
        detail = "; a trial call may pass"
    logger.log(
        level,
        "circuit breaker %r %s (%s -> %s)%s",
        name,
        _VERBS[move],
        move.source,
        move.target,
        detail,
        extra={
            "breaker": name,
            "from_state": move.source,
            "to_state": move.target,
            "error_percentage": percentage,
            "retry_after": retry_after,
        },
    )
