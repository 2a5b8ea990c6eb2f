"""The engine's log lines of state changes, printed with their structured fields.

The engine logs every state change on the "fastapi_breaker" logger (open and half_open at
WARNING, close at INFO), with the fields `breaker`, `from_state`, `to_state`,
`error_percentage` and `retry_after` on each record. A log pipeline would ship those fields as
JSON; the demos print them after the message, as `key=value`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import TextIO

__all__ = ["FIELDS", "FieldsFormatter", "transition_logs"]

FIELDS = ("breaker", "from_state", "to_state", "error_percentage", "retry_after")


class FieldsFormatter(logging.Formatter):
    """`log LEVEL message [key=value ...]`, indented under the demo's timeline."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{key}={_show(getattr(record, key))}" for key in FIELDS if hasattr(record, key)
        )
        return f"{'':10}log {record.levelname} {record.getMessage()} [{fields}]"


def _show(value: object) -> str:
    # 4 significant digits: a retry-after of 1.9999 s reads 2.
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@contextlib.contextmanager
def transition_logs(stream: TextIO | None = None) -> Iterator[logging.Handler]:
    """Print the "fastapi_breaker" logger's INFO and above to `stream` (stdout) while open."""
    logger = logging.getLogger("fastapi_breaker")
    handler = logging.StreamHandler(sys.stdout if stream is None else stream)
    handler.setFormatter(FieldsFormatter())
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # close is logged at INFO, under the default WARNING
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
