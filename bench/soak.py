"""Soak: minutes of wrk load on a breaker-protected service while its upstream flaps.

    python -m bench.soak [--seconds 120] [--flap-seconds S] [--concurrency 32]

The service (`create_soak_app`) has one route through `AsyncBreakerTransport` (503s) and one
through `breaker.call()` with a fallback. The upstream, in this process, is up, then down
(hanging, then refusing connections) by turns. Every response must be the upstream's answer,
a fallback or a well-formed 503 with `Retry-After`; the server's RSS must stay flat after the
warm-up and its tasks return to the idle count. Exit code 1 if any goal fails. The method in
full: docs/benchmarks.md. Results: bench/results/soak-<date>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

import httpx
import psutil
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from bench.apps import add_tasks_route, upstream_url
from bench.processes import HANG, REFUSED, UP, Upstream, UvicornProcess, get
from bench.report import Run, goal, heading, verdict_lines
from bench.wrk import find_wrk, run_wrk, sampled
from fastapi_breaker import BreakerRegistry, CircuitBreaker, CircuitOpenError
from fastapi_breaker.fastapi import get_breaker, setup_breakers
from fastapi_breaker.health import health_router
from fastapi_breaker.httpx import AsyncBreakerTransport
from fastapi_breaker.middleware import retry_after_header

TRANSPORT_BREAKER = "AuthService"  # GET /login: httpx transport, 503 when refused
CALL_BREAKER = "AuthServiceCall"  # GET /login-or-guest: breaker.call() with a fallback
FAILED_DETAIL = "The Auth Service failed"  # the app's 503; the middleware's says "temporarily"
GOOD = ("upstream", "fallback", "503 open", "503 failed")
RSS_GROWTH_LIMIT = 0.05
SAMPLE_SECONDS = 2.0  # between readings of the server's RSS and tasks
DRAIN_POLLS = 120  # x 250 ms: tasks get 30 s to return to the baseline after the load

# Both routes by turns; every response classified (see the module's text).
LUA = """
local paths = {"/login?token=valid-soak", "/login-or-guest?token=valid-soak"}
local sent = 0
request = function()
  sent = sent + 1
  return wrk.format("GET", paths[sent % 2 + 1])
end
classify = function(status, headers, body)
  if status == 200 then
    if body == '{"user":"soak","source":"upstream"}' then return "upstream" end
    if body == '{"user":"guest","source":"fallback"}' then return "fallback" end
    return "bad 200"
  elseif status ~= 503 then
    return "status " .. status
  end
  local after = headers["retry-after"] or ""
  if not after:match("^[1-9]%d*$") then return "bad Retry-After" end
  if not (headers["content-type"] or ""):match("^application/problem%+json") then
    return "bad content-type"
  end
  local tail = '"retry_after":' .. after .. "}"
  if not (body:find('"status":503', 1, true) and body:find(tail, 1, true)) then
    return "bad 503 body"
  end
  if body:find('"detail":"The service is temporarily unavailable', 1, true) then
    return "503 open"
  end
  if body:find('"detail":"FAILED_DETAIL', 1, true) then return "503 failed" end
  return "bad 503 detail"
end
""".replace("FAILED_DETAIL", FAILED_DETAIL)


# ---------------------------------------------------------------------------------- the service


def create_soak_app() -> FastAPI:
    """The service under test: BENCH_UPSTREAM_URL, and SOAK_OPTIONS for both breakers (JSON)."""
    upstream = upstream_url()
    options = json.loads(os.environ["SOAK_OPTIONS"])
    registry = BreakerRegistry(
        breakers={TRANSPORT_BREAKER: options, CALL_BREAKER: options}, strict=True
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry.get(CALL_BREAKER).fallback(_guest)
        transport = AsyncBreakerTransport(registry=registry, name=TRANSPORT_BREAKER)
        async with (
            httpx.AsyncClient(base_url=upstream, transport=transport) as guarded,
            httpx.AsyncClient(base_url=upstream) as plain,
        ):
            app.state.guarded = guarded
            app.state.plain = plain
            yield

    app = FastAPI(title="Soak service", lifespan=lifespan)
    setup_breakers(app, registry)
    app.include_router(health_router(detail="always"))

    @app.get("/login", response_model=None)
    async def login(
        token: str,
        request: Request,
        breaker: Annotated[CircuitBreaker, Depends(get_breaker(TRANSPORT_BREAKER))],
    ) -> dict[str, str] | Response:
        client: httpx.AsyncClient = request.app.state.guarded
        try:
            response = await client.get("/verify", params={"token": token})
        except CircuitOpenError:
            raise  # the middleware answers 503 with Retry-After
        except httpx.TransportError:
            return _failed(breaker)  # counted; the breaker may open on it
        if response.is_error:
            return _failed(breaker)
        return {"user": response.json()["user"], "source": "upstream"}

    @app.get("/login-or-guest")
    async def login_or_guest(
        token: str,
        request: Request,
        breaker: Annotated[CircuitBreaker, Depends(get_breaker(CALL_BREAKER))],
    ) -> dict[str, str]:
        answer: dict[str, str] = await breaker.call(_verify, request.app.state.plain, token)
        return answer

    add_tasks_route(app)
    return app


async def _verify(client: httpx.AsyncClient, token: str) -> dict[str, str]:
    response = await client.get("/verify", params={"token": token})
    response.raise_for_status()
    return {"user": response.json()["user"], "source": "upstream"}


def _guest(client: httpx.AsyncClient, token: str, exc: BaseException) -> dict[str, str]:
    return {"user": "guest", "source": "fallback"}


def _failed(breaker: CircuitBreaker) -> Response:
    """503 for a failure the breaker counted: same shape as the middleware's, its own detail."""
    seconds = retry_after_header(breaker.retry_after)
    body = {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": f"{FAILED_DETAIL}; retry after {seconds} s.",
        "retry_after": int(seconds),
    }
    return JSONResponse(
        body,
        status_code=503,
        headers={"Retry-After": seconds, "Cache-Control": "no-store"},
        media_type="application/problem+json",
    )


# ---------------------------------------------------------------------------------- the run


def schedule(periods: int) -> list[str]:
    """Up first; then down and up by turns, the down periods hanging and refused by turns."""
    return [UP if i % 2 == 0 else (HANG, REFUSED)[i // 2 % 2] for i in range(periods)]


def soak(args: argparse.Namespace) -> dict[str, Any]:
    wrk = find_wrk()
    options = {
        "timeout": args.breaker_timeout,
        "reset_timeout": args.reset_timeout,
        "volume_threshold": args.volume_threshold,
        "error_threshold_percentage": 50.0,
        "rolling_count_timeout": args.window,
    }
    env = {"SOAK_OPTIONS": json.dumps(options)}
    periods: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(Upstream(UP))
        env["BENCH_UPSTREAM_URL"] = upstream.url
        server = stack.enter_context(UvicornProcess("bench.soak:create_soak_app", env=env))
        process = psutil.Process(server.pid)
        for path in ("/login", "/login-or-guest"):  # imports and pools, before the baseline
            get(f"{server.url}{path}?token=valid-soak")
        time.sleep(0.5)
        baseline = {"tasks": _tasks(server), "rss": process.memory_info().rss}
        process.cpu_percent(None)
        started = time.monotonic()

        def sample() -> dict[str, Any]:
            found = {
                "t": round(time.monotonic() - started, 2),
                "rss": process.memory_info().rss,
                "cpu_percent": process.cpu_percent(None),
                "tasks": None,
            }
            with contextlib.suppress(httpx.TransportError, TypeError, KeyError):
                found["tasks"] = _tasks(server)
            return found

        for index, mode in enumerate(schedule(math.ceil(args.seconds / args.flap_seconds))):
            upstream.set_mode(mode)
            upstream.reset()
            seconds = min(args.flap_seconds, args.seconds - index * args.flap_seconds)
            load = functools.partial(
                run_wrk, wrk, server.url + "/login", connections=args.concurrency,
                seconds=seconds, timeout_s=args.client_timeout, counted=True, lua=LUA,
            )  # fmt: skip
            result, found = sampled(load, sample, seconds, SAMPLE_SECONDS)
            samples += found
            periods.append({"mode": mode, "wrk": result.to_dict(), "samples": found,
                            "upstream_received": upstream.received,
                            "upstream_answered": upstream.answered})  # fmt: skip
            print(f"  period {index} ({mode}): {result.counts}", file=sys.stderr, flush=True)
        at_end = sample()
        upstream.set_mode(UP)
        # Drain: wrk has closed its connections; tasks must return to the baseline.
        after = at_end["tasks"]
        for _ in range(DRAIN_POLLS):
            with contextlib.suppress(httpx.TransportError, TypeError, KeyError):
                after = _tasks(server)
            if after is not None and after <= baseline["tasks"]:
                break
            time.sleep(0.25)
        errors = [line for line in server.output().splitlines() if line.strip()]
    return {
        "baseline": baseline,
        "periods": periods,
        "samples": samples,
        "drain": {"tasks_at_end_of_load": at_end["tasks"], "tasks_after": after},
        "server_log": errors[:40],
    }


def _tasks(server: UvicornProcess) -> int:
    return int(get(f"{server.url}/_bench/tasks", timeout=2.0)[1]["tasks"])


# ---------------------------------------------------------------------------------- the report


def summarize(args: argparse.Namespace, found: dict[str, Any]) -> dict[str, Any]:
    violations: dict[str, int] = {}
    for period in found["periods"]:
        wrk = period["wrk"]
        bad = {k: v for k, v in wrk["counts"].items() if k not in GOOD}
        bad |= {f"wrk {k}": v for k, v in wrk["errors"].items() if v and k != "status"}
        for kind, count in bad.items():
            violations[kind] = violations.get(kind, 0) + count
        period["violations"] = sum(bad.values())
    if found["server_log"]:
        violations["server log lines"] = len(found["server_log"])

    warmup_end = min(max(0.2 * args.seconds, 2 * args.flap_seconds), args.seconds)
    after_warmup = [s for s in found["samples"] if s["t"] >= warmup_end]
    rss: dict[str, Any] = {"warmup_end_s": warmup_end}
    if after_warmup:
        warm, final = after_warmup[0]["rss"], after_warmup[-1]["rss"]
        rss |= {"at_warmup": warm, "final": final, "growth": (final - warm) / warm}
    baseline, drain = found["baseline"], found["drain"]
    total = sum(p["wrk"]["requests"] for p in found["periods"])
    # The run proves nothing unless the upstream really flapped and both routes saw it.
    flapped = all(
        c.get("upstream", 0) > 0
        if p["mode"] == UP
        else c.get("fallback", 0) > 0 and c.get("503 open", 0) > 0 and not c.get("upstream")
        for p in found["periods"]
        for c in [p["wrk"]["counts"]]
    )
    tasks = max((s["tasks"] or 0 for s in found["samples"]), default=0)
    verdicts = [
        goal(
            "every response is the upstream's, a fallback or a 503 with Retry-After",
            not violations,
            f"{total:,} responses, violations: {violations or 'none'}",
        ),
        goal(
            f"RSS after the warm-up ({warmup_end:.0f} s) grows by less than 5%",
            after_warmup != [] and rss["growth"] < RSS_GROWTH_LIMIT,
            f"{rss['at_warmup'] / 2**20:.1f} MB -> {rss['final'] / 2**20:.1f} MB "
            f"({rss['growth']:+.2%})"
            if after_warmup
            else "no sample after the warm-up: run longer",
        ),
        goal(
            "asyncio tasks return to the idle baseline after the load",
            drain["tasks_after"] is not None and drain["tasks_after"] <= baseline["tasks"],
            f"baseline {baseline['tasks']}, max under load {tasks}, at its end "
            f"{drain['tasks_at_end_of_load']}, after: {drain['tasks_after']}",
        ),
        goal(
            "the flaps were seen: the upstream's answers when up; fallbacks and open 503s,"
            " and none of its answers, when down",
            flapped,
            "every period" if flapped else "see the table",
        ),
    ]
    return {**found, "config": dict(vars(args)), "rss": rss, "verdicts": verdicts}


def render(report: dict[str, Any]) -> str:
    config = report["config"]
    cpu = [s["cpu_percent"] for s in report["samples"]]
    lines = [
        *heading(report),
        f"load: wrk -c{config['concurrency']}, both routes by turns, client timeout "
        f"{config['client_timeout']} s; {config['seconds']} s in flaps of {config['flap_seconds']}"
        f" s; server CPU {sum(cpu) / max(1, len(cpu)):.0f}% of a core",
        f"breakers: timeout {config['breaker_timeout']} s, reset_timeout "
        f"{config['reset_timeout']} s, volume_threshold {config['volume_threshold']}, 50%, "
        f"window {config['window']} s",
        "",
        f"{'#':>2} {'mode':<8}{'reqs':>8}{'req/s':>7}{'upstr':>8}{'fallbk':>8}{'503open':>8}"
        f"{'503fail':>8}{'bad':>5}{'p50ms':>7}{'p99ms':>7}{'maxms':>7}{'up rcv':>7}{'RSS MB':>8}",
    ]
    for index, period in enumerate(report["periods"]):
        wrk, counts = period["wrk"], period["wrk"]["counts"]
        lat = wrk["latency_ms"]
        rss = period["samples"][-1]["rss"] / 2**20 if period["samples"] else 0.0
        lines.append(
            f"{index:>2} {period['mode']:<8}{wrk['requests']:>8}{wrk['rps']:>7.0f}"
            + "".join(f"{counts.get(kind, 0):>8}" for kind in GOOD)
            + f"{period['violations']:>5}{lat['p50']:>7.1f}{lat['p99']:>7.1f}{lat['max']:>7.0f}"
            f"{period['upstream_received']:>7}{rss:>8.1f}"
        )
    lines.append("(up rcv: requests the upstream received; RSS: the period's last sample)")
    lines += [f"  server log: {line}" for line in report["server_log"][:10]]
    return "\n".join(lines + verdict_lines(report["verdicts"]))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    add = parser.add_argument
    add("--seconds", type=float, default=120.0, help="load duration (120)")
    add("--flap-seconds", type=float, help="up, then down (20, or a sixth of a shorter run)")
    add("--concurrency", type=int, default=32, help="wrk connections (32)")
    add("--client-timeout", type=float, default=10.0, help="hung after (10 s)")
    add("--breaker-timeout", type=float, default=1.0, help="breaker (1 s)")
    add("--volume-threshold", type=int, default=10, help="breaker (10)")
    args = parser.parse_args(argv)
    args.flap_seconds = args.flap_seconds or min(20, max(1, int(args.seconds // 6)))
    if args.flap_seconds < 1 or args.seconds < 2 * args.flap_seconds:
        parser.error("--seconds must cover at least one up and one down flap of 1 s or more")
    if not 1 <= args.concurrency <= 1000:
        parser.error("--concurrency must be between 1 and 1000")
    if args.client_timeout <= args.breaker_timeout:
        parser.error("--client-timeout must be longer than --breaker-timeout")
    # A quarter of a flap: the breaker opens, probes and closes within every period, several
    # times over, instead of carrying the last period's successes into the next one.
    args.reset_timeout = args.window = args.flap_seconds / 4
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C, through the `with` blocks that stop the servers.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    run = Run("bench.soak", argv)
    report = {**run.header, **summarize(args, soak(args))}
    run.finish("soak", report, render)
    met = all(verdict["met"] for verdict in report["verdicts"])
    print("PASS" if met else "FAIL")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
