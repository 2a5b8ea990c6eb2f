from __future__ import annotations

import enum

__all__ = ["State"]


class State(enum.StrEnum):
    """The three states of a circuit breaker. The values are what `to_dict()` and `/health` show."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
