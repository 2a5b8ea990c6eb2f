"""What a Redis URL must be for redis-py to read it as written: the standard library only.

`fastapi_breaker.redis` checks the URL a `RedisCoordinator` is given, and the settings check
`FASTAPI_BREAKER_REDIS_URL` as they read it, with the same rule.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

__all__ = ["ENCODE_HINT", "check_redis_url"]

ENCODE_HINT = (
    "percent-encode the characters of the user name and password that a URL reserves: "
    "'#' as %23, '/' as %2F, '?' as %3F, '@' as %40"
)


def check_redis_url(url: str) -> None:
    """Raise ValueError when redis-py would read `url` wrong or fail on it at start.

    No message echoes the URL or a part of it: wherever it is cut, a piece of a password may
    stand there. A reserved character left in a password ends the host part early, which shows
    as a port that is no number, a fragment, or an `@` after the host.
    """
    parts = urlsplit(url)
    path, query = parts.path, parts.query
    if not url.startswith("unix://"):
        try:
            parts.port  # noqa: B018 - parsing is the check
        except ValueError:
            raise ValueError(f"url's host and port cannot be read: {ENCODE_HINT}") from None
        if parts.fragment or "@" in path or "@" in query:
            raise ValueError(f"url's host, port or database cannot be read: {ENCODE_HINT}")
        if path not in ("", "/") and not path[1:].isdigit():
            raise ValueError(
                "url's database (its path) must be a whole number, as in "
                "redis://host:6379/0, or absent (0)"
            )
    for value in parse_qs(query).get("db", ()):
        if not value.isdigit():
            raise ValueError("url's db= must be a whole number, as in ?db=0")
