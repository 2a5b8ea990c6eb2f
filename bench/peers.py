"""The contenders: fastapi_breaker and each Python peer, set up as its own docs advise.

Every contender is a loop that makes `n` protected calls of `noop()`. The loop body is written
out for each one, exactly as a user would write the call, so that all loops carry the same
`for` overhead as the bare `await noop()` they are compared with.

Peers are configured fairly: their in-memory defaults, no listeners, no storage backend. The
breakers that must be open for the rejection timings are tripped by a real failure, with an
open period of an hour so that none of them turns half-open during the run. `check()` asserts
the state before and after every timed sample.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi_breaker import CircuitBreaker, CircuitOpenError, State

__all__ = ["Contender", "build_contenders", "noop", "noop_sync"]

BASELINE, CLOSED, TIMEOUT, REJECT, SYNC = "baseline", "closed", "timeout", "reject", "sync"
OPEN_FOR = 3600.0  # seconds: longer than any run, so no tripped breaker goes half-open


async def noop() -> None:
    return None


def noop_sync() -> None:
    return None


class Boom(Exception):
    """The failure used to trip breakers, and the floor of the rejection timings."""


async def fail() -> None:
    raise Boom


def _nothing() -> None:
    return None


@dataclass
class Contender:
    key: str
    group: str
    label: str
    loop: Callable[[int], Awaitable[None]]
    check: Callable[[], None]
    # Housekeeping after a sample, outside the timed region.
    after: Callable[[], None] = _nothing
    ours: bool = False
    peer: str | None = None  # the distribution, for its version in the report


def _expect(what: str, actual: object, wanted: object) -> None:
    # Not `assert`: the check must survive `python -O`.
    if actual != wanted:
        raise RuntimeError(f"{what}: expected {wanted!r}, found {actual!r}")


async def _trip(call: Callable[[], Awaitable[Any]]) -> None:
    """Make one failing call; a breaker that opens on it may raise its own error instead."""
    try:
        await call()
    except Exception:
        return
    raise RuntimeError("the tripping call did not fail")


# ---------------------------------------------------------------------- references


def references() -> list[Contender]:
    async def bare(n: int) -> None:
        for _ in range(n):
            await noop()

    async def with_timeout(n: int) -> None:
        timeout = asyncio.timeout
        for _ in range(n):
            async with timeout(10):
                await noop()

    async def bare_sync(n: int) -> None:
        for _ in range(n):
            noop_sync()

    async def raise_and_catch(n: int) -> None:
        for _ in range(n):
            try:  # noqa: SIM105 - contextlib.suppress would add its own cost to the timing
                await fail()
            except Boom:
                pass

    return [
        Contender("bare", BASELINE, "await noop() (bare)", bare, _nothing),
        Contender("bare.sync", BASELINE, "noop_sync() (bare)", bare_sync, _nothing),
        Contender(
            "asyncio.timeout",
            TIMEOUT,
            "async with asyncio.timeout(10): await noop()",
            with_timeout,
            _nothing,
        ),
        Contender(
            "floor", REJECT, "floor: await f() that raises, caught", raise_and_catch, _nothing
        ),
    ]


# ---------------------------------------------------------------------- fastapi_breaker


def ours_closed(timeout: float | None, group: str) -> list[Contender]:
    breaker = CircuitBreaker(noop, name=f"bench-{group}", timeout=timeout)
    decorator_breaker = CircuitBreaker(name=f"bench-{group}-decorator", timeout=timeout)
    decorated = decorator_breaker(noop)

    def check() -> None:
        for b in (breaker, decorator_breaker):
            _expect("fastapi_breaker state", b.state, State.CLOSED)
            _expect("fastapi_breaker enabled", b.enabled, True)

    async def call(n: int) -> None:
        b = breaker
        for _ in range(n):
            await b.call(noop)

    async def fire(n: int) -> None:
        b = breaker
        for _ in range(n):
            await b.fire()

    async def decorator(n: int) -> None:
        f = decorated
        for _ in range(n):
            await f()

    suffix = "timeout=None" if timeout is None else f"timeout={timeout}"
    contenders = [
        Contender(
            f"ours.call.{group}", group, f"fastapi_breaker call(noop), {suffix}", call, check
        ),
        Contender(f"ours.fire.{group}", group, f"fastapi_breaker fire(), {suffix}", fire, check),
    ]
    if group == CLOSED:
        contenders.append(
            Contender(
                f"ours.decorator.{group}",
                group,
                f"fastapi_breaker @breaker decorator, {suffix}",
                decorator,
                check,
            )
        )
    for contender in contenders:
        contender.ours = True
    return contenders


def ours_sync() -> list[Contender]:
    """`call_sync()` with the default options (a 10 s limit, checked when the call returns)."""
    breaker = CircuitBreaker(name="bench-sync")

    def check() -> None:
        _expect("fastapi_breaker state", breaker.state, State.CLOSED)

    async def call_sync(n: int) -> None:
        call = breaker.call_sync
        for _ in range(n):
            call(noop_sync)

    label = "fastapi_breaker call_sync(noop_sync), defaults"
    return [Contender("ours.call_sync", SYNC, label, call_sync, check, ours=True)]


async def ours_open() -> list[Contender]:
    breaker = CircuitBreaker(noop, name="bench-reject", reset_timeout=OPEN_FOR, volume_threshold=0)
    await _trip(lambda: breaker.call(fail))

    def check() -> None:
        _expect("fastapi_breaker state", breaker.state, State.OPEN)

    async def call(n: int) -> None:
        b = breaker
        for _ in range(n):
            try:  # noqa: SIM105 - contextlib.suppress would add its own cost to the timing
                await b.call(noop)
            except CircuitOpenError:
                pass

    async def fire(n: int) -> None:
        b = breaker
        for _ in range(n):
            try:  # noqa: SIM105 - contextlib.suppress would add its own cost to the timing
                await b.fire()
            except CircuitOpenError:
                pass

    return [
        Contender("ours.call.reject", REJECT, "fastapi_breaker call(noop)", call, check, ours=True),
        Contender("ours.fire.reject", REJECT, "fastapi_breaker fire()", fire, check, ours=True),
    ]


# ---------------------------------------------------------------------- purgatory


async def purgatory() -> list[Contender]:
    from purgatory import AsyncCircuitBreakerFactory
    from purgatory.domain.model import OpenedState

    factory = AsyncCircuitBreakerFactory()  # in-memory unit of work, no listener
    held = await factory.get_breaker("bench-closed")
    tripped_factory = AsyncCircuitBreakerFactory(default_threshold=1, default_ttl=OPEN_FOR)
    tripped = await tripped_factory.get_breaker("bench-reject")

    async def fail_inside() -> None:
        async with tripped:
            await fail()

    await _trip(fail_inside)
    # The in-memory repository hands out the same context on every lookup: the one the
    # documented form below finds by name on each call.
    looked_up = await factory.get_breaker("bench-doc")
    opened = tripped.context._state
    if not isinstance(opened, OpenedState):
        raise RuntimeError(f"purgatory did not open: {tripped.context!r}")

    def check_closed() -> None:
        _expect("purgatory state", held.context.state, "closed")
        _expect("purgatory state", looked_up.context.state, "closed")

    def check_open() -> None:
        _expect("purgatory state", tripped.context.state, "opened")

    def forget_traceback() -> None:
        # purgatory raises the same OpenedState instance on every rejection, so its
        # traceback grows with each raise; drop it between samples to bound memory.
        opened.__traceback__ = None

    async def held_loop(n: int) -> None:
        b = held
        for _ in range(n):
            async with b:
                await noop()

    async def documented_loop(n: int) -> None:
        f = factory
        for _ in range(n):
            async with await f.get_breaker("bench-doc"):
                await noop()

    async def reject_loop(n: int) -> None:
        b = tripped
        for _ in range(n):
            try:
                async with b:
                    await noop()
            except OpenedState:
                pass

    from purgatory import SyncCircuitBreakerFactory

    sync_held = SyncCircuitBreakerFactory().get_breaker("bench-sync")

    def check_sync() -> None:
        _expect("purgatory state", sync_held.context.state, "closed")

    async def sync_loop(n: int) -> None:
        b = sync_held
        for _ in range(n):
            with b:
                noop_sync()

    return [
        Contender(
            "purgatory.sync",
            SYNC,
            "purgatory: with breaker (sync factory)",
            sync_loop,
            check_sync,
            peer="purgatory",
        ),
        Contender(
            "purgatory.held",
            CLOSED,
            "purgatory: async with breaker (fetched once)",
            held_loop,
            check_closed,
            peer="purgatory",
        ),
        Contender(
            "purgatory.documented",
            CLOSED,
            "purgatory: async with await get_breaker(name)",
            documented_loop,
            check_closed,
            peer="purgatory",
        ),
        Contender(
            "purgatory.reject",
            REJECT,
            "purgatory: async with breaker",
            reject_loop,
            check_open,
            after=forget_traceback,
            peer="purgatory",
        ),
    ]


# ---------------------------------------------------------------------- circuitbreaker


async def circuitbreaker() -> list[Contender]:
    from circuitbreaker import CircuitBreaker as Breaker
    from circuitbreaker import CircuitBreakerError

    closed = Breaker(name="bench-closed")
    protected = closed(noop)
    sync_closed = Breaker(name="bench-sync")
    protected_sync = sync_closed(noop_sync)
    tripped = Breaker(failure_threshold=1, recovery_timeout=int(OPEN_FOR), name="bench-reject")
    rejected = tripped(noop)
    await _trip(tripped(fail))

    def check_closed() -> None:
        _expect("circuitbreaker state", closed.state, "closed")
        _expect("circuitbreaker state", sync_closed.state, "closed")

    def check_open() -> None:
        _expect("circuitbreaker state", tripped.state, "open")

    async def closed_loop(n: int) -> None:
        f = protected
        for _ in range(n):
            await f()

    async def sync_loop(n: int) -> None:
        f = protected_sync
        for _ in range(n):
            f()

    async def reject_loop(n: int) -> None:
        f = rejected
        for _ in range(n):
            try:  # noqa: SIM105 - contextlib.suppress would add its own cost to the timing
                await f()
            except CircuitBreakerError:
                pass

    return [
        Contender(
            "circuitbreaker.sync",
            SYNC,
            "circuitbreaker: @circuit on def",
            sync_loop,
            check_closed,
            peer="circuitbreaker",
        ),
        Contender(
            "circuitbreaker.closed",
            CLOSED,
            "circuitbreaker: @circuit on async def",
            closed_loop,
            check_closed,
            peer="circuitbreaker",
        ),
        Contender(
            "circuitbreaker.reject",
            REJECT,
            "circuitbreaker: @circuit on async def",
            reject_loop,
            check_open,
            peer="circuitbreaker",
        ),
    ]


# ---------------------------------------------------------------------- aiobreaker


async def aiobreaker() -> list[Contender]:
    from aiobreaker import CircuitBreaker as Breaker
    from aiobreaker import CircuitBreakerError, CircuitBreakerState

    closed = Breaker(name="bench-closed")
    tripped = Breaker(fail_max=1, timeout_duration=timedelta(seconds=OPEN_FOR), name="bench-rej")
    await _trip(lambda: tripped.call_async(fail))

    def check_closed() -> None:
        _expect("aiobreaker state", closed.current_state, CircuitBreakerState.CLOSED)

    def check_open() -> None:
        _expect("aiobreaker state", tripped.current_state, CircuitBreakerState.OPEN)

    async def closed_loop(n: int) -> None:
        b = closed
        for _ in range(n):
            await b.call_async(noop)

    async def reject_loop(n: int) -> None:
        b = tripped
        for _ in range(n):
            try:  # noqa: SIM105 - contextlib.suppress would add its own cost to the timing
                await b.call_async(noop)
            except CircuitBreakerError:
                pass

    return [
        Contender(
            "aiobreaker.closed",
            CLOSED,
            "aiobreaker: call_async(noop)",
            closed_loop,
            check_closed,
            peer="aiobreaker",
        ),
        Contender(
            "aiobreaker.reject",
            REJECT,
            "aiobreaker: call_async(noop)",
            reject_loop,
            check_open,
            peer="aiobreaker",
        ),
    ]


# ---------------------------------------------------------------------- pybreaker


async def pybreaker() -> list[Contender]:
    # pybreaker's `call_async` runs the call as a Tornado coroutine and needs tornado, which the
    # bench dependency group does not install. Its `call(noop)` would count the call a success
    # as soon as the coroutine object exists, before it runs. Its `calling()` context manager
    # guards the block, await included, and counts an exception raised in it: that is the
    # most direct way it supports to protect a coroutine on asyncio.
    from pybreaker import STATE_CLOSED, STATE_OPEN, CircuitBreakerError
    from pybreaker import CircuitBreaker as Breaker

    closed = Breaker(name="bench-closed")
    tripped = Breaker(fail_max=1, reset_timeout=OPEN_FOR, name="bench-reject")

    async def fail_inside() -> None:
        with tripped.calling():
            await fail()

    await _trip(fail_inside)

    def check_closed() -> None:
        _expect("pybreaker state", closed.current_state, STATE_CLOSED)

    def check_open() -> None:
        _expect("pybreaker state", tripped.current_state, STATE_OPEN)

    async def closed_loop(n: int) -> None:
        b = closed
        for _ in range(n):
            with b.calling():
                await noop()

    async def sync_loop(n: int) -> None:
        call = closed.call
        for _ in range(n):
            call(noop_sync)

    async def reject_loop(n: int) -> None:
        b = tripped
        for _ in range(n):
            try:
                with b.calling():
                    await noop()
            except CircuitBreakerError:
                pass

    return [
        Contender(
            "pybreaker.sync",
            SYNC,
            "pybreaker: call(noop_sync)",
            sync_loop,
            check_closed,
            peer="pybreaker",
        ),
        Contender(
            "pybreaker.closed",
            CLOSED,
            "pybreaker: with calling(): await noop()",
            closed_loop,
            check_closed,
            peer="pybreaker",
        ),
        Contender(
            "pybreaker.reject",
            REJECT,
            "pybreaker: with calling(): await noop()",
            reject_loop,
            check_open,
            peer="pybreaker",
        ),
    ]


# ---------------------------------------------------------------------- interlock-cb


async def interlock() -> list[Contender]:
    from interlock import CircuitBreaker as Breaker
    from interlock import CircuitOpenError as InterlockOpen
    from interlock import Config
    from interlock import State as InterlockState

    closed = Breaker(name="bench-closed")  # Config() defaults: count window of 100 calls
    tripped = Breaker(
        name="bench-reject",
        config=Config(minimum_number_of_calls=1, wait_duration_in_open=OPEN_FOR),
    )
    await _trip(lambda: tripped.call_async(fail))

    def check_closed() -> None:
        _expect("interlock state", closed.state, InterlockState.CLOSED)

    def check_open() -> None:
        _expect("interlock state", tripped.state, InterlockState.OPEN)

    async def closed_loop(n: int) -> None:
        b = closed
        for _ in range(n):
            await b.call_async(noop)

    async def reject_loop(n: int) -> None:
        b = tripped
        for _ in range(n):
            try:  # noqa: SIM105 - contextlib.suppress would add its own cost to the timing
                await b.call_async(noop)
            except InterlockOpen:
                pass

    return [
        Contender(
            "interlock.closed",
            CLOSED,
            "interlock-cb: call_async(noop)",
            closed_loop,
            check_closed,
            peer="interlock-cb",
        ),
        Contender(
            "interlock.reject",
            REJECT,
            "interlock-cb: call_async(noop)",
            reject_loop,
            check_open,
            peer="interlock-cb",
        ),
    ]


PEERS: dict[str, Callable[[], Awaitable[list[Contender]]]] = {
    "purgatory": purgatory,
    "circuitbreaker": circuitbreaker,
    "aiobreaker": aiobreaker,
    "pybreaker": pybreaker,
    "interlock-cb": interlock,
}


async def build_contenders() -> tuple[list[Contender], dict[str, str]]:
    """Every contender, and the peers that could not be set up (name -> reason)."""
    contenders = references()
    contenders += ours_closed(None, CLOSED)
    contenders += ours_closed(10.0, TIMEOUT)
    contenders += await ours_open()
    contenders += ours_sync()
    missing: dict[str, str] = {}
    for name, build in PEERS.items():
        try:
            contenders += await build()
        except ImportError as exc:
            missing[name] = f"not installed ({exc}); run `make bench`"
    return contenders, missing


# ---------------------------------------------------------------------- memory per breaker

Make = Callable[[int], Any]
Use = Callable[[Any], Awaitable[Any]]


def footprints() -> dict[str, tuple[Make, Use]]:
    """How each library makes its n-th breaker, and makes one successful call through it.

    Each as its docs show, with its defaults: ours with its default 10 s time limit.
    """
    makers: dict[str, tuple[Make, Use]] = {}

    async def ours_use(breaker: CircuitBreaker) -> None:
        await breaker.call(noop)

    makers["fastapi_breaker"] = (lambda i: CircuitBreaker(name=f"b{i}"), ours_use)
    try:
        import circuitbreaker

        async def circuit_use(breaker: Any) -> None:
            await breaker.call_async(noop)

        makers["circuitbreaker"] = (
            lambda i: circuitbreaker.CircuitBreaker(name=f"b{i}"),
            circuit_use,
        )
    except ImportError:
        pass
    try:
        import pybreaker

        async def py_use(breaker: Any) -> None:
            with breaker.calling():
                await noop()

        makers["pybreaker"] = (lambda i: pybreaker.CircuitBreaker(name=f"b{i}"), py_use)
    except ImportError:
        pass
    try:
        import aiobreaker

        async def aio_use(breaker: Any) -> None:
            await breaker.call_async(noop)

        makers["aiobreaker"] = (lambda i: aiobreaker.CircuitBreaker(name=f"b{i}"), aio_use)
    except ImportError:
        pass
    try:
        from purgatory import SyncCircuitBreakerFactory

        # A purgatory breaker lives in its factory's repository: what one more name adds there.
        factory = SyncCircuitBreakerFactory()

        async def purgatory_use(breaker: Any) -> None:
            with breaker:
                noop_sync()

        makers["purgatory"] = (lambda i: factory.get_breaker(f"b{i}"), purgatory_use)
    except ImportError:
        pass
    return makers
