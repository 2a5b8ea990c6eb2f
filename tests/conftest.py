"""Fixtures shared by more than one test module."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    # Imported in the fixtures: redis-py loads only for the tests that use a server.
    from tests.redis_server import RedisServer


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    # Switching threads every microsecond makes a race show up, without any sleep.
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session (tests/redis_server.py); never skipped."""
    from tests.redis_server import NO_BINARY, RedisServer, find_redis_server

    executable = find_redis_server()
    if executable is None:
        pytest.fail(NO_BINARY, pytrace=False)
    with RedisServer(executable) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's server, running, unpaused, with no keys and no scripts."""
    redis_server.make_ready()
    return redis_server.url
