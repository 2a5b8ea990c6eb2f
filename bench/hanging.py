"""An upstream that accepts TCP connections on 127.0.0.1, reads, and never answers.

It runs its own event loop on a thread of the harness, so the harness can read its counters
at any moment: connections accepted, connections open now, and HTTP requests received (the
request heads that arrived in full).

    with HangingUpstream() as upstream:
        ... point a server at upstream.url ...
        upstream.requests
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

__all__ = ["HangingUpstream"]

_METHODS = (b"GET ", b"POST ", b"PUT ", b"PATCH ", b"DELETE ", b"HEAD ", b"OPTIONS ")
_MAX_READS = 100_000  # per connection: a peer that never stops sending is cut off
_START_TIMEOUT = 5.0
_STOP_TIMEOUT = 5.0


class HangingUpstream:
    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0
        self.open = 0
        self.requests = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        """Zero the counts of accepted connections and requests (open ones stay open)."""
        self.accepted = 0
        self.requests = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        pending = b""
        try:
            for _ in range(_MAX_READS):
                data = await reader.read(65536)
                if not data:
                    break  # the client gave up and closed
                # Each request head ends with a blank line (these requests carry no body).
                pending += data
                while b"\r\n\r\n" in pending:
                    head, _, pending = pending.partition(b"\r\n\r\n")
                    if head.startswith(_METHODS):
                        self.requests += 1
                pending = pending[-65536:]
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            # Handlers wait on clients forever: cancel them rather than wait for them.
            handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hanging-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT) or self._error is not None:
            raise RuntimeError(f"the hanging upstream did not start: {self._error!r}")

    def stop(self) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(_STOP_TIMEOUT)

    def __enter__(self) -> HangingUpstream:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
