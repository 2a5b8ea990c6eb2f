"""A live view of the breakers: a Server-Sent Events stream and the page that draws it.

`dashboard_router()` returns an `APIRouter` (prefix `/breakers` by default) that nothing mounts
unless you include it:

- `GET /breakers/events`: the events stream (`text/event-stream`). Each state change as it
  happens (`event: state`), and every `interval` seconds one `event: snapshot` with every
  breaker's state, error percentage, calls per second, latency percentiles and time to the next
  trial. See docs/dashboard.md for the fields.
- `GET /breakers/dashboard`: one HTML page, with its script and style sheet next to it, that
  draws the stream. Everything is served from the package: no CDN, no build step.

Each client has its own queue of at most `queue_size` events. A client that reads slower than
events come loses the oldest queued ones, and each later snapshot says how many it lost, so a
stuck browser tab costs a bounded amount of memory. At most `max_clients` streams are open at
once per router; past that the stream answers 503. A stream ends after `max_stream_age`
seconds and the browser opens a new one, so that authorization is checked again and a server
that stops is not held open by a forgotten tab for longer than that.

The registry's state events are listened to only while a client is connected, and the
snapshots are read once per tick for every client, not once per client.
"""

import asyncio
import contextlib
import importlib.resources
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Annotated, Any

try:
    from fastapi import APIRouter, Depends, HTTPException, Request, Response
    from fastapi.responses import StreamingResponse
    from pydantic_core import to_json
    from starlette.types import Message, Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "fastapi_breaker.dashboard needs FastAPI: pip install 'fastapi_breaker[fastapi]'"
    ) from exc

from ._breaker import CircuitBreaker
from ._events import Event, EventName
from ._names import printable_name
from ._registry import BreakerRegistry
from .fastapi import get_registry
from .health import _check_prefix, _names

__all__ = ["dashboard_router"]

logger = logging.getLogger("fastapi_breaker")

# The registry events the stream relays, and the state each one means. A forced open and a
# disabled breaker are told apart by reading the breaker, as `metrics().state` does.
_STATE_EVENTS: dict[EventName, str] = {"open": "open", "close": "closed", "half_open": "half_open"}

# The snapshot task's name, so that a test or a debugger can tell it apart.
_TICKER_TASK = "fastapi_breaker.dashboard ticker"
# How long a browser waits before it reconnects a stream that dropped, in milliseconds.
_RECONNECT_MS = 2000
# What a refused stream tells a client about trying again, in seconds.
_BUSY_RETRY_AFTER = "5"

# Breakers read in one go before the snapshot lets other tasks run. A read costs about 50 us, so
# 1,000 breakers read at once would hold every request of the process for 50 ms each second.
_SLICE = 64

_INTERVAL = (0.01, 60.0)
_HEARTBEAT = (0.01, 300.0)
_QUEUE_SIZE = (1, 1000)
_MAX_CLIENTS = (1, 10_000)
_MAX_STREAM_AGE = (0.1, 86_400.0)
_WRITE_TIMEOUT = (0.01, 300.0)

# Caches and proxies must ask again each time: a stale stream or page lies.
_STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    # nginx buffers proxied responses by default, which would hold events back for minutes.
    "X-Accel-Buffering": "no",
}
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The page runs only its own script: a breaker name that carries markup can do nothing
    # even if some future change slipped it into innerHTML. The empty favicon is a data: URL.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}
_ASSETS = {
    "dashboard": ("dashboard.html", "text/html; charset=utf-8"),
    "dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}


def dashboard_router(
    registry: BreakerRegistry | None = None,
    *,
    prefix: str = "/breakers",
    authorize: Callable[..., Any] | None = None,
    interval: float = 1.0,
    heartbeat: float = 15.0,
    queue_size: int = 16,
    max_clients: int = 32,
    max_stream_age: float = 300.0,
    write_timeout: float = 10.0,
    tags: Iterable[str] = ("breakers",),
) -> APIRouter:
    """Build the events stream and dashboard router; see the module docstring.

    - `registry`: whose breakers to show; None reads the app's (`setup_breakers`) per request.
    - `prefix`: a plain path, as for `health_router`: the page is at `{prefix}/dashboard`, the
      stream at `{prefix}/events`.
    - `authorize`: a FastAPI dependency, as `health_router(detail="authorized")` takes. Every
      route here (page, script, style sheet, stream) runs it, and serves only when it returns
      exactly True: anything else gets 403, and an `HTTPException` it raises (a 401 with
      `WWW-Authenticate`, say) goes out as it is. None: anyone who reaches the routes sees every
      breaker's name. A browser's EventSource sends cookies and HTTP Basic credentials, but no
      other header: check one of those.
    - `interval`: seconds between snapshots, 0.01 to 60.
    - `heartbeat`: seconds of silence after which the stream sends a comment, so that proxies
      keep it open, 0.01 to 300.
    - `queue_size`: events queued per client before the oldest are dropped, 1 to 1000.
    - `max_clients`: streams open at once, 1 to 10,000; one more gets 503 with `Retry-After`.
    - `max_stream_age`: seconds after which the server ends a stream, 0.1 to 86,400. The
      browser reconnects 2 s later, through `authorize` again: a revoked credential loses the
      stream within this time, and a server that stops waits at most this long for open pages.
    - `write_timeout`: seconds one frame may wait for a client that does not read (its socket
      full) before the server ends its stream, 0.01 to 300. A stream ends by `max_stream_age`
      plus this at the latest, whatever its client does, so a viewer that stops reading gives
      its slot back.
    """
    _check_range("interval", interval, *_INTERVAL, "a number of seconds")
    _check_range("heartbeat", heartbeat, *_HEARTBEAT, "a number of seconds")
    _check_range("queue_size", queue_size, *_QUEUE_SIZE, "an integer")
    _check_range("max_clients", max_clients, *_MAX_CLIENTS, "an integer")
    _check_range("max_stream_age", max_stream_age, *_MAX_STREAM_AGE, "a number of seconds")
    _check_range("write_timeout", write_timeout, *_WRITE_TIMEOUT, "a number of seconds")
    _check_prefix(prefix)
    tag_list = list(_names("tags", tags))
    if authorize is not None and not callable(authorize):
        raise TypeError(f"authorize must be a callable FastAPI dependency, got {authorize!r}")
    if registry is not None and not all(
        callable(getattr(registry, method, None)) for method in ("breakers", "on", "off")
    ):
        raise TypeError(f"registry must be a BreakerRegistry, got {registry!r}")

    streams = _Streams(
        interval=float(interval),
        heartbeat=float(heartbeat),
        queue_size=queue_size,
        max_clients=max_clients,
        max_age=float(max_stream_age),
        write_timeout=float(write_timeout),
    )
    assets = {path: (_read_asset(file), media) for path, (file, media) in _ASSETS.items()}

    def source(request: Request) -> BreakerRegistry:
        return registry if registry is not None else get_registry(request)

    def stream(request: Request) -> Response:
        return streams.open(source(request))

    def asset(path: str) -> Callable[[Request], Response]:
        body, media = assets[path]

        def serve(request: Request) -> Response:
            return Response(body, media_type=media, headers=_PAGE_HEADERS)

        return serve

    router = APIRouter()
    routes: list[tuple[str, Callable[[Request], Response], bool]] = [
        ("/events", stream, True),
        *((f"/{path}", asset(path), path == "dashboard") for path in _ASSETS),
    ]
    for path, endpoint, in_schema in routes:
        router.add_api_route(
            prefix + path,
            _guarded(endpoint, authorize),
            methods=["GET"],
            name=f"breakers_{path.strip('/').replace('.', '_')}",
            tags=list(tag_list),
            include_in_schema=in_schema,
            response_class=Response,
        )
    return router


def _guarded(
    endpoint: Callable[[Request], Response], authorize: Callable[..., Any] | None
) -> Callable[..., Any]:
    """`endpoint` as a route, behind `authorize` when there is one."""
    if authorize is None:

        async def open_route(request: Request) -> Response:
            return endpoint(request)

        return open_route

    async def guarded_route(
        request: Request, allowed: Annotated[Any, Depends(authorize)]
    ) -> Response:
        if allowed is not True:
            raise HTTPException(403, "Forbidden", headers={"Cache-Control": "no-store"})
        return endpoint(request)

    return guarded_route


class _Client:
    """One connected stream's queue: at most `size` events, the oldest dropped first."""

    __slots__ = ("dropped", "queue", "wake")

    def __init__(self, size: int) -> None:
        self.queue: deque[tuple[str, int, bytes]] = deque(maxlen=size)
        self.dropped = 0  # events lost since the client connected
        self.wake = asyncio.Event()

    def put(self, item: tuple[str, int, bytes]) -> None:
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1  # the append below pushes the oldest out
        self.queue.append(item)
        self.wake.set()


class _Hub:
    """The clients watching one registry, the registry listeners and the snapshot ticker."""

    def __init__(self, streams: "_Streams", registry: BreakerRegistry) -> None:
        self.streams = streams
        self.registry = registry
        self.clients: set[_Client] = set()
        self.loop = asyncio.get_running_loop()
        self.latest: bytes | None = None  # the last snapshot's JSON after its opening '{'
        # The calls counted so far and when, by breaker: calls per second come from the deltas.
        self.previous: dict[str, tuple[CircuitBreaker, int]] = {}
        self.previous_time: float | None = None
        # Every client of this hub is sent every id: one that sees a gap knows it lost events.
        self.ids = itertools.count(1)
        for event in _STATE_EVENTS:
            registry.on(event, self.on_state)
        self.ticker = self.loop.create_task(self.tick(), name=_TICKER_TASK)

    def close(self) -> None:
        for event in _STATE_EVENTS:
            self.registry.off(event, self.on_state)
        self.ticker.cancel()

    def on_state(self, event: Event) -> None:
        # May run on any thread that moved a breaker (a sync call in a worker thread, say).
        breaker = event.breaker
        if not breaker.enabled:
            state = "disabled"
        elif event.name == "open" and breaker.forced_open:
            state = "forced_open"
        else:
            state = _STATE_EVENTS[event.name]
        body = to_json({"name": printable_name(breaker.name), "state": state, "time": time.time()})
        try:
            here = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            here = False
        if here:
            self.publish("state", body)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is watching
                self.loop.call_soon_threadsafe(self.publish, "state", body)

    def publish(self, kind: str, body: bytes) -> None:
        item = (kind, next(self.ids), body)
        for client in self.clients:
            client.put(item)

    async def tick(self) -> None:
        loop = self.loop
        while True:
            started = loop.time()
            try:
                self.latest = await self.snapshot()
                self.publish("snapshot", self.latest)
            except Exception:
                logger.exception("the dashboard could not read the breakers")
            # The reading's own cost does not stretch the interval; a late wake-up is not made
            # up for by a shorter one, so two snapshots are never closer than `interval`.
            await asyncio.sleep(max(0.0, started + self.streams.interval - loop.time()))

    async def snapshot(self) -> bytes:
        """Every breaker now, as the JSON of a snapshot without its opening '{'."""
        now = time.monotonic()
        period = None if self.previous_time is None else now - self.previous_time
        previous = self.previous
        current: dict[str, tuple[CircuitBreaker, int]] = {}
        # Each entry is encoded as soon as it is read, so that only bytes outlive it: a thousand
        # dicts kept to the end would reach the collector's oldest generation, and its full
        # collections stalled the event loop for 10 to 15 ms.
        entries: list[bytes] = []
        for index, (name, breaker) in enumerate(self.registry.breakers().items()):
            if index and not index % _SLICE:
                await asyncio.sleep(0)  # let requests run between slices
            metrics = breaker.metrics()
            calls = sum(count for outcome, count in metrics.calls.items() if outcome != "fallback")
            current[name] = (breaker, calls)
            before = previous.get(name)
            rate = None
            # A breaker rebuilt under the same name starts counting again: no rate for it yet.
            if period and before is not None and before[0] is breaker and calls >= before[1]:
                rate = (calls - before[1]) / period
            window = metrics.window
            entry = {
                "name": printable_name(name),
                "state": metrics.state,
                "error_percentage": metrics.error_percentage,
                "calls_per_second": rate,
                "latency": {
                    "p50": window.percentiles[0.5],
                    "p90": window.percentiles[0.9],
                    "p99": window.percentiles[0.99],
                },
                "retry_after": metrics.retry_after,
            }
            entries.append(to_json(entry, inf_nan_mode="null"))
        self.previous = current
        self.previous_time = now
        head = to_json({"time": time.time(), "period": period})
        return head[1:-1] + b',"breakers":[' + b",".join(entries) + b"]}"


class _Streams:
    """What one router holds: its settings and its hubs by registry."""

    def __init__(
        self,
        *,
        interval: float,
        heartbeat: float,
        queue_size: int,
        max_clients: int,
        max_age: float,
        write_timeout: float,
    ) -> None:
        self.interval = interval
        self.heartbeat = heartbeat
        self.queue_size = queue_size
        self.max_clients = max_clients
        self.max_age = max_age
        self.write_timeout = write_timeout
        self.hubs: dict[int, _Hub] = {}
        self.clients = 0

    def open(self, registry: BreakerRegistry) -> Response:
        if self.clients >= self.max_clients:
            raise HTTPException(
                503,
                f"the dashboard already serves {self.max_clients} streams (max_clients)",
                headers={"Retry-After": _BUSY_RETRY_AFTER, "Cache-Control": "no-store"},
            )
        hub = self.hubs.get(id(registry))
        if hub is None or hub.registry is not registry:
            hub = self.hubs[id(registry)] = _Hub(self, registry)
        client = _Client(self.queue_size)
        replay = hub.latest
        hub.clients.add(client)
        self.clients += 1

        def release() -> None:
            self.clients -= 1
            hub.clients.discard(client)
            if not hub.clients:
                hub.close()
                if self.hubs.get(id(registry)) is hub:
                    del self.hubs[id(registry)]

        return _EventStream(
            self.frames(client, replay),
            release,
            write_timeout=self.write_timeout,
            lifetime=self.max_age + self.write_timeout,
        )

    async def frames(self, client: _Client, replay: bytes | None) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        ends = loop.time() + self.max_age
        yield b"retry: %d\n\n" % _RECONNECT_MS
        if replay is not None:
            # The last snapshot, at once, so the page need not wait a tick. Without an id: it
            # was published before this client came, and ids count what it was sent since.
            yield _frame("snapshot", None, replay, client.dropped)
        queue = client.queue
        while loop.time() < ends:
            if not queue:
                client.wake.clear()
                try:
                    async with asyncio.timeout(min(self.heartbeat, ends - loop.time())):
                        await client.wake.wait()
                except TimeoutError:
                    if loop.time() < ends:
                        yield b": heartbeat\n\n"
                    continue
            kind, event_id, body = queue.popleft()
            yield _frame(kind, event_id, body, client.dropped)


def _frame(kind: str, event_id: int | None, body: bytes, dropped: int) -> bytes:
    head = b"" if event_id is None else b"id: %d\n" % event_id
    if kind == "snapshot":
        # Each client's own count of lost events goes first in its snapshots.
        body = b'{"dropped":%d,' % dropped + body
    return head + b"event: " + kind.encode() + b"\ndata: " + body + b"\n\n"


class _EventStream(StreamingResponse):
    """The stream's response; `release` runs when it ends, however it ends.

    The frames stop at the stream's age, but a client that does not read blocks the server's
    send once its socket is full, and the frames with it: each send is bounded by
    `write_timeout`, and the whole response by `lifetime`. Either ends the response unfinished,
    and the server closes the connection.
    """

    def __init__(
        self,
        frames: AsyncIterator[bytes],
        release: Callable[[], None],
        *,
        write_timeout: float,
        lifetime: float,
    ) -> None:
        super().__init__(frames, media_type="text/event-stream", headers=_STREAM_HEADERS)
        self._release = release
        self._write_timeout = write_timeout
        self._lifetime = lifetime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        write_timeout = self._write_timeout

        async def bounded_send(message: Message) -> None:
            try:
                async with asyncio.timeout(write_timeout):
                    await send(message)
            except TimeoutError:
                # Not a TimeoutError, which is an OSError: Starlette would take it for the
                # client's disconnect and raise that instead.
                raise _Stalled from None

        try:
            async with asyncio.timeout(self._lifetime):
                await super().__call__(scope, receive, bounded_send)
        except (TimeoutError, _Stalled):
            logger.info("dashboard stream ended: its client stopped reading")
        finally:
            self._release()


class _Stalled(Exception):
    """A frame waited `write_timeout` for a client that does not read."""


def _read_asset(name: str) -> bytes:
    return importlib.resources.files(__package__).joinpath("_dashboard", name).read_bytes()


def _check_range(field: str, value: object, low: float, high: float, kind: str) -> None:
    integer = kind == "an integer"
    # A comparison, not math.isnan(): it refuses NaN and infinities too.
    if (
        isinstance(value, bool)
        or not isinstance(value, int if integer else int | float)
        or not (low <= value <= high)
    ):
        raise ValueError(f"{field} must be {kind} from {low:g} to {high:g}, got {value!r}")
