"""Where the breaker's HTTP overhead goes: GET /login in process, one layer at a time.

    python -m bench.http_layers [--requests N] [--rounds R] [--quick]

No server, no sockets, no load generator: every variant is an ASGI app called directly, one
request after another, and the Auth Service is an in-memory httpx transport that answers
/verify at once with a streamed body. What is left is the CPU cost of the layers themselves,
which a shared machine disturbs far less than the HTTP benchmark (bench.http), whose figures
also carry uvicorn, h11, httpcore and the loopback sockets.

Variants, closed breaker (200): "plain" (bench.apps.create_plain_app), then one layer added at a
time, then the example User Service as shipped (create_user_app, its httpx transport swapped
for the in-memory one). Open breaker (503): a route answering the same 503 at once (the
framework's floor), and /login refused by the open breaker.

A sample times N requests of one variant with the garbage collector off (as bench.engine); a
round takes one sample of each, rotated. Reported: microseconds per request, min and median
over rounds, and the difference from "plain" (from the floor, for the 503s). The results go to
stdout and to bench/results/http-layers-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import statistics
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
from fastapi import FastAPI, Response
from starlette.types import ASGIApp, Message

from bench.apps import create_plain_app
from bench.report import Run
from example_app.user_service import AuthSettings, create_user_app
from fastapi_breaker import BreakerRegistry, CircuitBreaker, CircuitOpenError
from fastapi_breaker.health import health_router
from fastapi_breaker.httpx import AsyncBreakerTransport
from fastapi_breaker.middleware import CircuitBreakerMiddleware, problem_response

BASE_URL = "http://127.0.0.1:1"  # never dialled: the transport answers in memory
BODY = b'{"user":"alice"}'
SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/login",
    "raw_path": b"/login",
    "query_string": b"token=valid-alice",
    "root_path": "",
    "headers": [(b"host", b"127.0.0.1:8000")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}


class _Body(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield BODY


class MemoryAuthService(httpx.AsyncBaseTransport):
    """Answers every request 200 with BODY, streamed as a network body would be."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "application/json"}, stream=_Body())


@dataclasses.dataclass
class Variant:
    key: str
    label: str
    app: ASGIApp
    path: str
    status: int
    baseline: str  # the variant it is compared with


def _settings_breaker() -> CircuitBreaker:
    return CircuitBreaker(name="AuthService", **dataclasses.asdict(AuthSettings()))


def _client(transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=BASE_URL, transport=transport)


def _plain(
    transport: httpx.AsyncBaseTransport | None = None, *, middleware: bool = False, **kw: Any
) -> FastAPI:
    app = create_plain_app(**kw)
    app.state.auth_client = _client(transport or MemoryAuthService())
    if middleware:
        app.add_middleware(CircuitBreakerMiddleware)
    return app


def _user_app(*, open_breaker: bool = False) -> FastAPI:
    app = create_user_app(BASE_URL, AuthSettings())
    registry: BreakerRegistry = app.state.breaker_registry
    transport = AsyncBreakerTransport(MemoryAuthService(), registry=registry, name="AuthService")
    app.state.auth_client = _client(transport)  # what its lifespan does, minus the network

    @app.get("/_floor")
    async def floor() -> Response:
        return problem_response(CircuitOpenError("AuthService", 20.0))

    if open_breaker:
        registry.get("AuthService").force_open()
    return app


def build_variants() -> list[Variant]:
    login = "/login"
    return [
        Variant("plain", "plain (no breaker)", _plain(), login, 200, "plain"),
        Variant(
            "transport",
            "plain + AsyncBreakerTransport",
            _plain(AsyncBreakerTransport(MemoryAuthService(), breaker=_settings_breaker())),
            login,
            200,
            "plain",
        ),
        Variant(
            "transport+middleware",
            "plain + transport + 503 middleware",
            _plain(
                AsyncBreakerTransport(MemoryAuthService(), breaker=_settings_breaker()),
                middleware=True,
            ),
            login,
            200,
            "plain",
        ),
        Variant(
            "health_first",
            "plain + health router included before /login",
            _plain(routers_first=[health_router(registry=BreakerRegistry())]),
            login,
            200,
            "plain",
        ),
        Variant("user_app", "User Service as shipped", _user_app(), login, 200, "plain"),
        Variant("floor", "503 answered at once (floor)", _user_app(), "/_floor", 503, "floor"),
        Variant(
            "rejected",
            "503: /login, breaker open",
            _user_app(open_breaker=True),
            login,
            503,
            "floor",
        ),
    ]


def _requester(variant: Variant) -> Callable[[int], Any]:
    scope = {**SCOPE, "path": variant.path, "raw_path": variant.path.encode()}
    statuses: list[int] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def run(n: int) -> None:
        app = variant.app
        for _ in range(n):
            await app(dict(scope), receive, send)
        if set(statuses) != {variant.status}:
            raise RuntimeError(f"{variant.key}: expected {variant.status}, got {set(statuses)}")
        statuses.clear()

    return run


async def measure(requests: int, rounds: int) -> tuple[list[Variant], dict[str, list[float]]]:
    variants = build_variants()
    runs = {v.key: _requester(v) for v in variants}
    for run in runs.values():
        await run(min(requests, 200))  # warm-up, and a check of every status
    samples: dict[str, list[float]] = {v.key: [] for v in variants}
    for index in range(rounds):
        shift = index % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            gc.collect()
            gc.disable()
            try:
                start = time.perf_counter_ns()
                await runs[variant.key](requests)
                elapsed = time.perf_counter_ns() - start
            finally:
                gc.enable()
            samples[variant.key].append(elapsed / requests / 1000)
    return variants, samples


def summarize(variants: list[Variant], samples: dict[str, list[float]]) -> list[dict[str, Any]]:
    rows = []
    for variant in variants:
        raw, base = samples[variant.key], samples[variant.baseline]
        rows.append(
            {
                "key": variant.key,
                "label": variant.label,
                "status": variant.status,
                "baseline": variant.baseline,
                "min_us": min(raw),
                "median_us": statistics.median(raw),
                "delta_min_us": min(raw) - min(base),
                # Paired with the baseline's sample of the same round.
                "delta_median_us": statistics.median(
                    total - ref for total, ref in zip(raw, base, strict=True)
                ),
                "samples_us": [round(value, 2) for value in raw],
            }
        )
    return rows


def render(report: dict[str, Any]) -> str:
    lines = [
        f"fastapi_breaker HTTP layers, in process, {report['date']}",
        f"machine: {report['machine']['nproc']} cores, {report['machine']['python']}; "
        f"load average at start {report['machine']['loadavg']}",
        f"{report['requests']} requests per sample x {report['rounds']} rounds, rotated; "
        "microseconds per request; delta vs the baseline (paired median, and min - min)",
        "",
        f"  {'variant':<46}{'min':>8}{'median':>8}{'+median':>9}{'+min':>7}  vs",
    ]
    for row in report["results"]:
        lines.append(
            f"  {row['label']:<46}{row['min_us']:8.1f}{row['median_us']:8.1f}"
            f"{row['delta_median_us']:+9.1f}{row['delta_min_us']:+7.1f}  {row['baseline']}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.http_layers", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--requests", type=int, default=300, help="requests per sample (300)")
    parser.add_argument("--rounds", type=int, default=40, help="samples per variant (40)")
    parser.add_argument("--quick", action="store_true", help="a short run: 200 x 8 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.rounds = 200, 8
    if args.requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run("bench.http_layers", argv)
    variants, samples = asyncio.run(measure(args.requests, args.rounds))
    report = {
        **run.header,
        "requests": args.requests,
        "rounds": args.rounds,
        "results": summarize(variants, samples),
    }
    run.finish("http-layers", report, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
