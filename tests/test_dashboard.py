"""dashboard_router(): the events stream (frames, fields, bounds, clean-up), the page, refusals.

The stream is read from real uvicorn servers on 127.0.0.1 with httpx, except where a client
must stall at an exact point: there the app is driven straight through ASGI with a `send` that
blocks, so that no socket buffer blurs the counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import socket
import time
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Header, HTTPException

from example_app.servers import LoopbackServer
from fastapi_breaker import (
    BreakerMetrics,
    BreakerRegistry,
    CircuitBreaker,
    EventHandler,
    EventName,
)
from fastapi_breaker.dashboard import dashboard_router
from fastapi_breaker.fastapi import setup_breakers
from fastapi_breaker.testing import FakeClock

EVENTS = "/breakers/events"
ASSETS = {
    "/breakers/dashboard": ("dashboard.html", "text/html; charset=utf-8"),
    "/breakers/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/breakers/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
SNAPSHOT_KEYS = ["dropped", "time", "period", "breakers"]
BREAKER_KEYS = [
    "name",
    "state",
    "error_percentage",
    "calls_per_second",
    "latency",
    "retry_after",
]
WAIT = 5.0  # seconds any expected frame may take on a busy machine


@dataclasses.dataclass
class Frame:
    """One Server-Sent Events frame: the lines up to a blank one."""

    event: str | None = None
    id: int | None = None
    data: Any = None
    retry: int | None = None
    comment: str | None = None


def parse(block: str) -> Frame:
    frame = Frame()
    for line in block.split("\n"):
        field, _, value = line.partition(": ")
        if field == "":
            frame.comment = value
        elif field == "event":
            frame.event = value
        elif field == "id":
            frame.id = int(value)
        elif field == "data":
            assert frame.data is None, "one data line per frame"
            frame.data = json.loads(value)
        elif field == "retry":
            frame.retry = int(value)
        else:
            raise AssertionError(f"unexpected line {line!r}")
    return frame


class Stream:
    """The frames of one streamed response, read as they come."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self) -> Frame:
        lines: list[str] = []
        async with asyncio.timeout(WAIT):
            async for line in self._lines:
                if line == "":
                    return parse("\n".join(lines))
                lines.append(line)
        raise AssertionError("the stream ended")

    async def next_event(self, kind: str) -> Frame:
        while True:
            frame = await self.next()
            if frame.event == kind:
                return frame


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    server = LoopbackServer(app)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as client:
            yield client
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def stream(client: httpx.AsyncClient, **kwargs: Any) -> AsyncIterator[Stream]:
    async with client.stream("GET", EVENTS, **kwargs) as response:
        assert response.status_code == 200
        opening = Stream(response)
        assert await opening.next() == Frame(retry=2000)
        yield opening


def make_app(registry: BreakerRegistry | None, **options: Any) -> FastAPI:
    app = FastAPI()
    app.include_router(dashboard_router(registry, **options))
    return app


def fails() -> None:
    raise RuntimeError("downstream down")


async def done(value: bool) -> bool:
    return value


def tickers() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "fastapi_breaker.dashboard ticker"]


async def eventually(check: Any) -> None:
    """Wait for the server to finish cleaning up after a client, which it does on its own."""
    for _ in range(int(WAIT / 0.01)):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {WAIT} s: {check}")


async def admitted(client: httpx.AsyncClient) -> bool:
    """Whether a new stream is let in now (it is closed at once)."""
    async with client.stream("GET", EVENTS) as response:
        return response.status_code == 200


# ---------------------------------------------------------------- the stream and its fields


async def test_stream_headers_then_retry_then_a_snapshot_of_every_breaker() -> None:
    registry = BreakerRegistry()
    registry.get("auth")
    registry.get("billing")
    async with serving(make_app(registry)) as client, client.stream("GET", EVENTS) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        frames = Stream(response)
        assert await frames.next() == Frame(retry=2000)
        snapshot = await frames.next()
    assert (snapshot.event, snapshot.id) == ("snapshot", 1)
    assert list(snapshot.data) == SNAPSHOT_KEYS
    assert snapshot.data["dropped"] == 0
    assert snapshot.data["period"] is None  # nothing to measure a rate against yet
    closed = {
        "state": "closed",
        "error_percentage": 0.0,
        "calls_per_second": None,
        "latency": {"p50": 0.0, "p90": 0.0, "p99": 0.0},
        "retry_after": None,
    }
    assert snapshot.data["breakers"] == [
        {"name": "auth", **closed},
        {"name": "billing", **closed},
    ]
    assert list(snapshot.data["breakers"][0]) == BREAKER_KEYS


async def test_snapshot_relays_the_breakers_window_and_retry_after() -> None:
    clock = FakeClock()
    registry = BreakerRegistry({"volume_threshold": 0, "reset_timeout": 30.0}, clock=clock)
    breaker = registry.get("auth")

    def slow(seconds: float) -> None:
        clock.advance(seconds)

    def slow_failure() -> None:
        clock.advance(0.016)
        raise RuntimeError("downstream down")

    for _ in range(3):
        breaker.call_sync(slow, 0.004)
    with pytest.raises(RuntimeError):
        breaker.call_sync(slow_failure)
    stats = breaker.stats  # the clock is frozen: the snapshot reads the same window
    async with serving(make_app(registry, interval=0.05)) as client, stream(client) as frames:
        first = (await frames.next_event("snapshot")).data["breakers"]
        breaker.open()
        while (entry := (await frames.next_event("snapshot")).data["breakers"][0])[
            "state"
        ] != "open":
            pass
    assert first == [
        {
            "name": "auth",
            "state": "closed",
            "error_percentage": 25.0,
            "calls_per_second": None,
            "latency": {
                "p50": stats.percentiles[0.5],
                "p90": stats.percentiles[0.9],
                "p99": stats.percentiles[0.99],
            },
            "retry_after": None,
        }
    ]
    assert stats.percentiles[0.5] == pytest.approx(0.004, rel=0.125)
    assert stats.percentiles[0.99] == pytest.approx(0.016, rel=0.125)
    assert entry["retry_after"] == 30.0


async def test_a_breaker_opened_in_the_server_is_a_state_event_then_an_open_snapshot() -> None:
    registry = BreakerRegistry({"volume_threshold": 0})
    app = make_app(registry, interval=0.05)

    @app.get("/fail")
    async def fail() -> None:
        await registry.get("auth").call(asyncio.to_thread, fails)

    registry.get("auth")
    async with serving(app) as client, stream(client) as frames:
        before = await frames.next_event("snapshot")
        assert (await client.get("/fail")).status_code == 500
        frame = await frames.next_event("state")
        after = await frames.next_event("snapshot")
    assert before.id is not None
    assert frame.id is not None
    assert frame.id > before.id
    assert list(frame.data) == ["name", "state", "time"]
    assert (frame.data["name"], frame.data["state"]) == ("auth", "open")
    assert after.data["breakers"][0]["state"] == "open"
    assert after.data["breakers"][0]["error_percentage"] == 100.0


async def test_state_events_follow_each_transition_in_order() -> None:
    clock = FakeClock()
    registry = BreakerRegistry({"reset_timeout": 5.0}, clock=clock)
    auth = registry.get("auth")
    async with serving(make_app(registry, interval=0.05)) as client, stream(client) as frames:
        await frames.next_event("snapshot")
        auth.open()
        clock.advance(5.0)  # the next snapshot reads the state, which moves to half_open
        seen = [(await frames.next_event("state")).data["state"] for _ in range(2)]
        auth.close()
        auth.force_open()
        registry.get("billing").open()  # a breaker made after the stream started
        for _ in range(3):
            frame = await frames.next_event("state")
            seen.append(f"{frame.data['name']}:{frame.data['state']}")
        auth.close()
        auth.disable()
        while (await frames.next_event("snapshot")).data["breakers"][0]["state"] != "disabled":
            pass
    assert seen == ["open", "half_open", "auth:closed", "auth:forced_open", "billing:open"]


async def test_a_state_change_on_a_worker_thread_reaches_the_stream() -> None:
    registry = BreakerRegistry()
    auth = registry.get("auth")
    async with serving(make_app(registry, interval=60)) as client, stream(client) as frames:
        await frames.next_event("snapshot")
        await asyncio.to_thread(auth.open)
        frame = await frames.next()
    assert (frame.event, frame.data["name"], frame.data["state"]) == ("state", "auth", "open")


async def test_snapshots_come_every_interval_with_consecutive_ids() -> None:
    registry = BreakerRegistry()
    registry.get("auth")
    async with serving(make_app(registry, interval=0.2)) as client, stream(client) as frames:
        snapshots = [await frames.next() for _ in range(4)]
    assert [(f.event, f.id) for f in snapshots] == [("snapshot", n) for n in (1, 2, 3, 4)]
    periods = [f.data["period"] for f in snapshots]
    assert periods[0] is None
    # Never closer than the interval; later only by a busy machine's lateness.
    for period in periods[1:]:
        assert 0.2 <= period <= 1.0, periods
    times = [f.data["time"] for f in snapshots]
    assert times == sorted(times)


async def test_calls_per_second_counts_every_call_once() -> None:
    registry = BreakerRegistry({"volume_threshold": 0, "error_threshold_percentage": 100})
    auth = registry.get("auth")
    async with serving(make_app(registry, interval=0.1)) as client, stream(client) as frames:
        await frames.next_event("snapshot")
        # No await between the calls: the ticker cannot run in the middle of them.
        for _ in range(30):
            auth.call_sync(lambda: None)
        for _ in range(7):
            with pytest.raises(RuntimeError):
                auth.call_sync(fails)
        after = time.time()
        counted = 0.0
        while True:  # every snapshot up to the first one taken after the calls
            entry = (await frames.next_event("snapshot")).data
            counted += entry["breakers"][0]["calls_per_second"] * entry["period"]
            if entry["time"] > after:
                break
    assert round(counted, 6) == 37


# ---------------------------------------------------------------- slow clients and bounds


class StalledClient:
    """Drives the app through ASGI; `send` blocks while stalled, as a client that stops reading."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.received = b""
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.stuck = asyncio.Event()  # set while a send waits
        self.gone = asyncio.Event()
        self.arrived = asyncio.Event()
        self.status: int | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": EVENTS,
            "raw_path": EVENTS.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver")],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        self.task = asyncio.create_task(self.app(scope, self.receive, self.send))

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            return
        if not self.flowing.is_set():
            self.stuck.set()
            await self.flowing.wait()
        self.received += message.get("body", b"")
        self.arrived.set()

    def frames(self) -> list[Frame]:
        blocks = self.received.decode().split("\n\n")
        assert blocks[-1] == ""
        return [parse(block) for block in blocks[:-1]]

    async def until(self, check: Any) -> list[Frame]:
        async with asyncio.timeout(WAIT):
            while not check(self.frames()):
                self.arrived.clear()
                await self.arrived.wait()
        return self.frames()

    async def close(self) -> None:
        self.flowing.set()
        self.gone.set()
        assert self.task is not None
        await self.task


async def test_a_client_that_stops_reading_keeps_the_newest_events_and_learns_what_it_lost() -> (
    None
):
    registry = BreakerRegistry()
    auth = registry.get("auth")
    client = StalledClient(make_app(registry, queue_size=4))  # one snapshot a second
    client.start()
    await client.until(lambda frames: len(frames) == 2)  # retry, then snapshot 1
    client.flowing.clear()
    auth.open()  # id 2: the stream takes it and stays stuck sending it
    async with asyncio.timeout(WAIT):
        await client.stuck.wait()
    for _ in range(5):  # ids 3 to 12; four fit in the queue, the six oldest are dropped
        auth.close()
        auth.open()
    client.flowing.set()
    # The next snapshot comes a second after the first: long after all of the above.
    frames = await client.until(lambda frames: frames[-1].event == "snapshot" and len(frames) > 2)
    await client.close()
    assert client.status == 200
    assert [(f.event, f.id, f.data and f.data.get("state")) for f in frames[1:-1]] == [
        ("snapshot", 1, None),
        ("state", 2, "open"),
        ("state", 9, "closed"),
        ("state", 10, "open"),
        ("state", 11, "closed"),
        ("state", 12, "open"),
    ]
    assert (frames[-1].id, frames[-1].data["dropped"]) == (13, 6)
    assert frames[1].data["dropped"] == 0


async def test_a_stalled_socket_loses_events_rather_than_queueing_them_and_counts_each() -> None:
    # Big snapshots, often: the socket buffers fill within a fraction of a second.
    registry = BreakerRegistry(max_breakers=None)
    for n in range(200):
        registry.get(f"{n:03d}-" + "x" * 100)
    server = LoopbackServer(make_app(registry, queue_size=3, interval=0.01))
    await server.start()
    sock = socket.socket()
    reader = ChunkedFrames()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", server.port))
        await loop.sock_sendall(sock, f"GET {EVENTS} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await asyncio.sleep(1.0)  # not reading: about 100 snapshots of 30 kB each are made
        async with asyncio.timeout(WAIT):
            while not (reader.frames and reader.frames[-1].data["dropped"]):
                reader.feed(await loop.sock_recv(sock, 1 << 16))
    finally:
        sock.close()
        await server.stop()
    frames = reader.frames
    ids = [f.id for f in frames]
    assert ids == sorted(ids)
    assert frames[0].data["dropped"] == 0
    missing = (ids[-1] - ids[0] + 1) - len(ids)
    assert frames[-1].data["dropped"] == missing > 0


class ChunkedFrames:
    """The event frames of a raw chunked HTTP/1.1 response, parsed as the bytes come."""

    def __init__(self) -> None:
        self.raw = b""
        self.text = b""
        self.head: bytes | None = None
        self.frames: list[Frame] = []

    def feed(self, data: bytes) -> None:
        self.raw += data
        if self.head is None:
            if b"\r\n\r\n" not in self.raw:
                return
            self.head, _, self.raw = self.raw.partition(b"\r\n\r\n")
        while b"\r\n" in self.raw:
            size_line, _, rest = self.raw.partition(b"\r\n")
            size = int(size_line, 16)
            if len(rest) < size + 2:
                break  # the chunk has not all come yet
            self.text += rest[:size]
            self.raw = rest[size + 2 :]
        *blocks, self.text = self.text.split(b"\n\n")
        for block in blocks:
            frame = parse(block.decode())
            if frame.retry is None:
                self.frames.append(frame)


async def test_a_heartbeat_comment_after_the_given_silence() -> None:
    registry = BreakerRegistry()
    async with (
        serving(make_app(registry, interval=60, heartbeat=0.05)) as client,
        stream(client) as frames,
    ):
        snapshot = await frames.next()
        assert (snapshot.event, snapshot.data["breakers"]) == ("snapshot", [])
        assert await frames.next() == Frame(comment="heartbeat")
        assert await frames.next() == Frame(comment="heartbeat")


async def test_a_stream_ends_at_max_stream_age_and_frees_its_place() -> None:
    registry = BreakerRegistry()
    app = make_app(registry, interval=60, heartbeat=0.2, max_stream_age=0.5, max_clients=1)
    async with serving(app) as client:
        started = time.monotonic()
        async with client.stream("GET", EVENTS) as response:
            body = (await response.aread()).decode()  # up to the end the server gives it
        lasted = time.monotonic() - started
        # The browser reconnects on its own, and is let in: the place was freed.
        assert await admitted(client)
    frames = [parse(block) for block in body.split("\n\n")[:-1]]
    assert frames[0] == Frame(retry=2000)
    assert frames[1].event == "snapshot"
    assert {f.comment for f in frames[2:]} <= {"heartbeat"}
    assert 0.5 <= lasted < WAIT


async def test_past_max_clients_the_stream_answers_503_until_one_leaves() -> None:
    registry = BreakerRegistry()
    async with serving(make_app(registry, max_clients=2, interval=60)) as client:
        async with stream(client), stream(client):
            refused = await client.get(EVENTS)
            assert refused.status_code == 503
            assert refused.json() == {
                "detail": "the dashboard already serves 2 streams (max_clients)"
            }
            assert refused.headers["retry-after"] == "5"
            assert refused.headers["cache-control"] == "no-store"

        await eventually(lambda: admitted(client))


async def stalled_viewer(url: str) -> socket.socket:
    """A viewer that asks for the stream and never reads: a tiny receive buffer, so that the
    server's sends block soon."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    sock.send(f"GET {EVENTS} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return sock


async def test_viewers_that_stop_reading_give_their_slots_back() -> None:
    # Snapshots of 300 long-named breakers, a hundred a second: a socket that is not read
    # fills well within the stream's age, and the server's next send waits on it.
    registry = BreakerRegistry()
    for index in range(300):
        registry.get(f"{index:03d}-" + "x" * 200)
    app = make_app(registry, max_clients=2, interval=0.01, max_stream_age=1.0, write_timeout=0.5)
    server = LoopbackServer(app)
    await server.start()
    stalled = [await stalled_viewer(server.url) for _ in range(2)]
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as client:
            await asyncio.sleep(0.3)
            assert not await admitted(client)  # both slots held
            started = time.monotonic()
            # By the age limit plus one write timeout, whatever the stalled viewers do.
            for _ in range(int(WAIT / 0.05)):
                if await admitted(client):
                    break
                await asyncio.sleep(0.05)
            freed_after = time.monotonic() - started
    finally:
        for sock in stalled:
            sock.close()
        await server.stop()
    assert freed_after < 1.0 + 0.5 + 0.5, freed_after


@pytest.mark.parametrize("value", [0, 0.001, 301, float("nan"), "1", True])
def test_write_timeout_is_checked_at_construction(value: object) -> None:
    expected = f"write_timeout must be a number of seconds from 0.01 to 300, got {value!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        dashboard_router(BreakerRegistry(), write_timeout=value)  # type: ignore[arg-type]


class RecordingRegistry(BreakerRegistry):
    """A registry that records who subscribes and unsubscribes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def on(self, event: EventName, handler: EventHandler) -> BreakerRegistry:
        self.calls.append(("on", event))
        return super().on(event, handler)

    def off(self, event: EventName, handler: EventHandler) -> BreakerRegistry:
        self.calls.append(("off", event))
        return super().off(event, handler)


async def test_the_registry_is_listened_to_only_while_a_client_is_connected() -> None:
    registry = RecordingRegistry()
    auth = registry.get("auth")
    subscribed = [("on", "open"), ("on", "close"), ("on", "half_open")]
    unsubscribed = [("off", "open"), ("off", "close"), ("off", "half_open")]
    async with serving(make_app(registry, max_clients=2, interval=60)) as client:
        assert registry.calls == []
        async with stream(client) as first:
            await first.next_event("snapshot")
            assert auth.listening == {"open", "close", "half_open"}
            async with stream(client) as second:
                await second.next_event("snapshot")
            # The second leaves, and its place is freed (max_clients=2), but the first still
            # listens: nothing is unsubscribed.
            await eventually(lambda: admitted(client))
            assert registry.calls == subscribed
            assert len(tickers()) == 1
        await eventually(lambda: done(len(registry.calls) == 6))
        assert registry.calls == subscribed + unsubscribed
        assert auth.listening == frozenset()
        await eventually(lambda: done(tickers() == []))


class CountingRegistry:
    """A registry whose breakers count how many of them were read so far."""

    def __init__(self, size: int) -> None:
        self.real = BreakerRegistry(max_breakers=None)
        self.reads = 0
        self.all = {str(n): self.real.get(str(n)) for n in range(size)}

    def breakers(self) -> dict[str, Any]:
        return {name: CountedBreaker(self, breaker) for name, breaker in self.all.items()}

    def on(self, event: EventName, handler: EventHandler) -> None:
        self.real.on(event, handler)

    def off(self, event: EventName, handler: EventHandler) -> None:
        self.real.off(event, handler)


@dataclasses.dataclass
class CountedBreaker:
    registry: CountingRegistry
    breaker: CircuitBreaker

    def metrics(self) -> BreakerMetrics:
        self.registry.reads += 1
        return self.breaker.metrics()


async def test_a_snapshot_lets_requests_run_after_every_64_breakers() -> None:
    registry = CountingRegistry(150)
    seen = [0]
    app = make_app(registry, interval=60)  # type: ignore[arg-type]

    async def watch() -> None:
        # Runs whenever the snapshot lets other tasks run: what it sees is where it paused.
        while registry.reads < 150:
            if registry.reads != seen[-1]:
                seen.append(registry.reads)
            await asyncio.sleep(0)
        seen.append(registry.reads)

    watcher = asyncio.create_task(watch())
    async with serving(app) as client, stream(client) as frames:
        snapshot = await frames.next_event("snapshot")
    await watcher
    assert len(snapshot.data["breakers"]) == 150
    assert seen == [0, 64, 128, 150]


async def test_the_default_registry_is_the_apps() -> None:
    registry = BreakerRegistry()
    registry.get("auth")
    app = make_app(None, interval=60)
    setup_breakers(app, registry)
    async with serving(app) as client, stream(client) as frames:
        snapshot = await frames.next_event("snapshot")
    assert [b["name"] for b in snapshot.data["breakers"]] == ["auth"]


async def test_one_router_in_two_apps_streams_each_apps_own_breakers_and_ids() -> None:
    router = dashboard_router(interval=60)
    apps = []
    for name in ("auth", "billing"):
        registry = BreakerRegistry()
        registry.get(name)
        app = FastAPI()
        app.include_router(router)
        setup_breakers(app, registry)
        apps.append(app)
    async with (
        serving(apps[0]) as first_client,
        serving(apps[1]) as second_client,
        stream(first_client) as first,
        stream(second_client) as second,
    ):
        one = await first.next_event("snapshot")
        two = await second.next_event("snapshot")
    assert (one.id, [b["name"] for b in one.data["breakers"]]) == (1, ["auth"])
    assert (two.id, [b["name"] for b in two.data["breakers"]]) == (1, ["billing"])


async def test_names_are_sent_as_json_text() -> None:
    registry = BreakerRegistry()
    markup = '<img src=x onerror="alert(1)">\n'
    registry.get(markup)
    registry.get("caf\udce9")  # a lone surrogate, as from a badly decoded header
    async with serving(make_app(registry, interval=60)) as client, stream(client) as frames:
        snapshot = await frames.next_event("snapshot")
        registry.get(markup).open()
        state = await frames.next_event("state")
    assert [b["name"] for b in snapshot.data["breakers"]] == [markup, "caf\\udce9"]
    assert state.data["name"] == markup


# ---------------------------------------------------------------- the page


@pytest.mark.parametrize("path", list(ASSETS))
async def test_the_page_and_its_assets_come_from_the_package(path: str) -> None:
    file, content_type = ASSETS[path]
    async with serving(make_app(BreakerRegistry())) as client:
        response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    assert response.content == files("fastapi_breaker").joinpath("_dashboard", file).read_bytes()
    # Nothing from another host: no CDN, no fonts, no analytics.
    assert re.findall(r"https?://|//[a-z]", response.text) == []


def test_the_page_loads_only_its_own_relative_files() -> None:
    page = files("fastapi_breaker").joinpath("_dashboard", "dashboard.html").read_text()
    script = files("fastapi_breaker").joinpath("_dashboard", "dashboard.js").read_text()
    assert re.findall(r'(?:src|href)="([^"]*)"', page) == [
        "data:,",
        "dashboard.css",
        "dashboard.js",
    ]
    assert 'new EventSource("events")' in script
    # Names come from user input: the script never parses markup.
    assert re.findall(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", script) == []
    # Nothing inline: the CSP forbids it.
    assert re.findall(r"<script>|<style|\sstyle=|\son[a-z]+=", page) == []


async def test_another_prefix_moves_every_route() -> None:
    async with serving(make_app(BreakerRegistry(), prefix="/ops/cb", interval=60)) as client:
        assert (await client.get("/ops/cb/dashboard")).status_code == 200
        assert (await client.get("/ops/cb/dashboard.js")).status_code == 200
        assert (await client.get("/breakers/dashboard")).status_code == 404
        async with client.stream("GET", "/ops/cb/events") as response:
            assert response.status_code == 200


# ---------------------------------------------------------------- authorization


def check_token(x_token: Annotated[str | None, Header()] = None) -> bool | str:
    if x_token is None:
        raise HTTPException(401, "Sign in", headers={"WWW-Authenticate": 'Token realm="ops"'})
    if x_token == "truthy":
        return "yes"  # truthy, but not True: refused
    return x_token == "good"


@pytest.mark.parametrize("path", [EVENTS, *ASSETS])
async def test_authorize_guards_every_route(path: str) -> None:
    app = make_app(BreakerRegistry(), authorize=check_token, max_clients=1, interval=60)
    async with serving(app) as client:
        for token in ("bad", "truthy"):
            refused = await client.get(path, headers={"X-Token": token})
            assert refused.status_code == 403
            assert refused.json() == {"detail": "Forbidden"}
            assert refused.headers["cache-control"] == "no-store"
        unknown = await client.get(path)
        assert unknown.status_code == 401
        assert unknown.json() == {"detail": "Sign in"}
        assert unknown.headers["www-authenticate"] == 'Token realm="ops"'
        # Refusals took no stream place: the one place is still free.
        async with client.stream("GET", path, headers={"X-Token": "good"}) as response:
            assert response.status_code == 200


# ---------------------------------------------------------------- construction


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"interval": 0}, "interval must be a number of seconds from 0.01 to 60, got 0"),
        ({"interval": 0.001}, "interval must be a number of seconds from 0.01 to 60, got 0.001"),
        ({"interval": 61}, "interval must be a number of seconds from 0.01 to 60, got 61"),
        (
            {"interval": float("nan")},
            "interval must be a number of seconds from 0.01 to 60, got nan",
        ),
        ({"interval": True}, "interval must be a number of seconds from 0.01 to 60, got True"),
        ({"interval": "1"}, "interval must be a number of seconds from 0.01 to 60, got '1'"),
        (
            {"heartbeat": float("inf")},
            "heartbeat must be a number of seconds from 0.01 to 300, got inf",
        ),
        ({"heartbeat": 0}, "heartbeat must be a number of seconds from 0.01 to 300, got 0"),
        ({"queue_size": 0}, "queue_size must be an integer from 1 to 1000, got 0"),
        ({"queue_size": 1001}, "queue_size must be an integer from 1 to 1000, got 1001"),
        ({"queue_size": 2.0}, "queue_size must be an integer from 1 to 1000, got 2.0"),
        ({"max_clients": 0}, "max_clients must be an integer from 1 to 10000, got 0"),
        ({"max_clients": None}, "max_clients must be an integer from 1 to 10000, got None"),
        (
            {"max_stream_age": 0.05},
            "max_stream_age must be a number of seconds from 0.1 to 86400, got 0.05",
        ),
        ({"prefix": "breakers"}, "prefix must start with '/' and not end with '/', got 'breakers'"),
        ({"prefix": "/breakers/"}, "prefix must start with '/' and not end with '/'"),
    ],
)
def test_bad_arguments_fail_at_construction_naming_the_field(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        dashboard_router(BreakerRegistry(), **options)


def test_bad_types_fail_at_construction() -> None:
    with pytest.raises(TypeError, match=r"^authorize must be a callable FastAPI dependency"):
        dashboard_router(authorize=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^registry must be a BreakerRegistry, got"):
        dashboard_router(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^tags must be a collection of names"):
        dashboard_router(tags="ops")


def test_the_routes_under_the_default_prefix() -> None:
    router = dashboard_router()
    paths = sorted(route.path for route in router.routes)  # type: ignore[attr-defined]
    assert paths == [
        "/breakers/dashboard",
        "/breakers/dashboard.css",
        "/breakers/dashboard.js",
        "/breakers/events",
    ]
