"""What httpx's connection pool does under bench.http's load, round by round.

    python -m bench.pool_churn [--limits default|example] [--rounds N] [--seconds S]

Both variants of bench.http's item 1 run with httpcore's pool counted: how many connections
and requests it holds each time it assigns requests to connections, and how many connections
it opens. `--limits default` gives both apps httpx's default limits (100 connections, 20 kept
alive), as the example had before; `example` keeps `AUTH_SERVICE_LIMITS`. Under `wrk -c32`
with the default limits, a pool that reaches 20 connections closes and reopens connections
for as long as the load lasts, and the CPU each request costs rises with it.

The counting wraps two methods of httpcore's `AsyncConnectionPool` in the server processes
(this module's app factories); it costs both variants alike.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from collections.abc import Sequence
from typing import Any

import httpx
import psutil
from httpcore import AsyncConnectionPool
from starlette.types import ASGIApp, Receive, Scope, Send

from bench import apps
from bench.processes import UvicornProcess, get
from bench.wrk import find_wrk, run_wrk

__all__ = ["main", "make_breaker_app", "make_plain_app"]

LOGIN = "/login?token=valid-alice"
COUNTS = {"assigns": 0, "connections": 0, "requests": 0, "opened": 0, "sent": 0}


def _count_pool() -> None:
    """Wrap the pool's bookkeeping with counters (in a server process, once)."""
    assign = AsyncConnectionPool._assign_requests_to_connections
    create = AsyncConnectionPool.create_connection
    handle = AsyncConnectionPool.handle_async_request

    @functools.wraps(assign)
    def counted_assign(self: AsyncConnectionPool) -> Any:
        COUNTS["assigns"] += 1
        COUNTS["connections"] += len(self._connections)
        COUNTS["requests"] += len(self._requests)
        return assign(self)

    @functools.wraps(create)
    def counted_create(self: AsyncConnectionPool, origin: Any) -> Any:
        COUNTS["opened"] += 1
        return create(self, origin)

    @functools.wraps(handle)
    async def counted_handle(self: AsyncConnectionPool, request: Any) -> Any:
        COUNTS["sent"] += 1
        return await handle(self, request)

    AsyncConnectionPool._assign_requests_to_connections = counted_assign  # type: ignore[method-assign]
    AsyncConnectionPool.create_connection = counted_create  # type: ignore[method-assign]
    AsyncConnectionPool.handle_async_request = counted_handle  # type: ignore[method-assign]


def _default_limits() -> None:
    """Make every `AsyncHTTPTransport` ignore the limits it is given: httpx's defaults apply."""
    init = httpx.AsyncHTTPTransport.__init__

    @functools.wraps(init)
    def with_default_limits(self: httpx.AsyncHTTPTransport, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("limits", None)
        init(self, *args, **kwargs)

    httpx.AsyncHTTPTransport.__init__ = with_default_limits  # type: ignore[method-assign]


def _serving_counts(app: ASGIApp) -> ASGIApp:
    async def counted(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/_bench/pool":
            body = json.dumps(COUNTS).encode()
            COUNTS.update(dict.fromkeys(COUNTS, 0))
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return counted


def _prepare() -> None:
    _count_pool()
    if os.environ.get("BENCH_POOL_LIMITS") == "default":
        _default_limits()


def make_breaker_app() -> ASGIApp:
    _prepare()
    return _serving_counts(apps.make_breaker_app())


def make_plain_app() -> ASGIApp:
    _prepare()
    return _serving_counts(apps.make_plain_app())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pool_churn", description=__doc__)
    parser.add_argument("--limits", choices=("default", "example"), default="default")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per variant (4)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per round (4)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds < 1 or args.connections < 1:
        parser.error("--rounds and --connections must be at least 1, --seconds at least 1")
    wrk = find_wrk()
    upstream = UvicornProcess(
        "bench.apps:make_upstream_app", ready_path="/verify?token=valid-alice", lifespan="off"
    )
    print(f"httpx pool limits: {args.limits}; wrk -t1 -c{args.connections}, {args.seconds:g} s")
    print(
        f"  {'variant':<9}{'rps':>6}{'CPU us/req':>12}{'conns/scan':>12}"
        f"{'requests/scan':>15}{'opened/1000 req':>17}"
    )
    with upstream:
        env = {"BENCH_UPSTREAM_URL": upstream.url, "BENCH_POOL_LIMITS": args.limits}
        servers = {
            name: UvicornProcess(f"bench.pool_churn:make_{name}_app", env=env)
            for name in ("breaker", "plain")
        }
        with servers["breaker"], servers["plain"]:
            for server in servers.values():
                run_wrk(wrk, server.url + LOGIN, connections=args.connections, seconds=2)
            for index in range(args.rounds):
                order = ("breaker", "plain") if index % 2 == 0 else ("plain", "breaker")
                for name in order:
                    server = servers[name]
                    process = psutil.Process(server.pid)
                    get(server.url + "/_bench/pool")  # resets the counts
                    before = sum(process.cpu_times()[:2])
                    result = run_wrk(
                        wrk, server.url + LOGIN, connections=args.connections, seconds=args.seconds
                    )
                    spent = sum(process.cpu_times()[:2]) - before
                    _, counts = get(server.url + "/_bench/pool")
                    sent, scans = max(counts["sent"], 1), max(counts["assigns"], 1)
                    print(
                        f"  {name:<9}{result.rps:6.0f}{spent / sent * 1e6:12.0f}"
                        f"{counts['connections'] / scans:12.1f}{counts['requests'] / scans:15.1f}"
                        f"{counts['opened'] / sent * 1000:17.1f}",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
