"""The log line of every state change, on the `fastapi_breaker` logger.

Opening and going half-open are WARNINGs (someone may need to look), closing is INFO. Each
record carries structured fields for log pipelines: `breaker`, `from_state`, `to_state`,
`error_percentage` (this process's window) and `retry_after`; an open that a fleet
coordinator decided says so, since this process's own window may hold no failure. The message
writes the name as `repr()` does (one-to-one, and no control character reaches the log), the
`breaker` field as every exporter does (`printable_name()`). A name that is a URL is written
with its user and password, query and fragment replaced by `***`; any other name as itself.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from ._names import printable_name

if TYPE_CHECKING:
    # For annotations only: a breaker's public pieces are all this module reads.
    from ._base import BreakerBase
    from ._transitions import Move

__all__ = ["log_move", "loggable_name", "logger"]

logger = logging.getLogger("fastapi_breaker")

_LEVELS = {"open": logging.WARNING, "half_open": logging.WARNING, "close": logging.INFO}
_VERBS = {"open": "opened", "half_open": "is half-open", "close": "closed"}


def loggable_name(name: str) -> str:
    """`name`, but for a URL's user and password, query and fragment, each replaced by `***`,
    so that the log shows something was left out.

    Only a name that is a URL (a scheme and a host) is redacted: any other is logged as itself,
    so that `tenant@AuthService` never reads as `AuthService`.
    """
    if "@" in name or "?" in name or "#" in name:
        try:
            parts = urlsplit(name)
        except ValueError:
            parts = None
        if parts is not None and parts.scheme and parts.netloc:
            _, at, host = parts.netloc.rpartition("@")
            name = urlunsplit(
                (
                    parts.scheme,
                    f"***@{host}" if at else host,
                    parts.path,
                    "***" if parts.query else "",
                    "***" if parts.fragment else "",
                )
            )
    return name


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
            "breaker": printable_name(name),
            "from_state": move.source,
            "to_state": move.target,
            "error_percentage": percentage,
            "retry_after": retry_after,
        },
    )
