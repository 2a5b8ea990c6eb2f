"""How a breaker's name is written wherever it leaves the process: the standard library only.

A name can come from a request (a tenant, a host), so it may hold anything a `str` holds,
lone surrogates included, which UTF-8 cannot encode. `/health`, the 503 body, the dashboard,
Prometheus labels, OpenTelemetry attributes and the structured log field all write it with
`printable_name()`, so that one breaker reads the same everywhere and two breakers never read
the same anywhere.
"""

from __future__ import annotations

__all__ = ["printable_name"]


def printable_name(name: str) -> str:
    """`name` as text UTF-8 can carry, one-to-one: each backslash doubled, then each lone
    surrogate written as `\\udXXX` (as Python's `backslashreplace` writes it).

    Doubling the backslashes first is what keeps it one-to-one: a name spelled with the text
    `\\udc80` becomes `\\\\udc80`, never the same as a name holding that lone surrogate. A
    name with neither, which is nearly every name, is returned as it is.
    """
    if "\\" not in name:
        if name.isascii():
            return name
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            pass
        else:
            return name
    return name.replace("\\", "\\\\").encode("utf-8", "backslashreplace").decode("utf-8")
