"""`call_sync` for code on threads, the decorator, and the breaker's default name."""

from __future__ import annotations

import inspect
import itertools
import threading
from collections.abc import Callable
from typing import Any

import pytest

from fastapi_breaker import CallTimeoutError, CircuitBreaker, CircuitOpenError, State
from fastapi_breaker.testing import FakeClock


class Boom(Exception):
    pass


def ok() -> str:
    return "ok"


def fail(*args: Any, **kwargs: Any) -> None:
    raise Boom


def test_call_sync_success_returns_the_result() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    assert breaker.call_sync(lambda a, *, b: a + b, 1, b=2) == 3
    assert (breaker.stats.fires, breaker.stats.successes) == (1, 1)


def test_call_sync_failure_raises_and_opens() -> None:
    breaker = CircuitBreaker(clock=FakeClock(), volume_threshold=0)
    with pytest.raises(Boom):
        breaker.call_sync(fail)
    assert breaker.stats.failures == 1
    assert breaker.state is State.OPEN


def test_call_sync_rejects_while_open() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(name="sync", reset_timeout=30, clock=clock)
    breaker.open()
    clock.advance(5)
    ran: list[bool] = []
    with pytest.raises(CircuitOpenError) as caught:
        breaker.call_sync(lambda: ran.append(True))
    assert ran == []
    assert caught.value.name == "sync"
    assert caught.value.retry_after == 25.0
    assert breaker.stats.rejects == 1


def test_call_sync_half_open_trial_closes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(reset_timeout=30, clock=clock)
    breaker.open()
    clock.advance(30)
    assert breaker.call_sync(ok) == "ok"
    assert breaker.state is State.CLOSED


@pytest.mark.parametrize("refused", [False, True], ids=["failure", "rejection"])
def test_call_sync_fallback_answers(refused: bool) -> None:
    received: list[tuple[Any, ...]] = []

    def fallback(*args: Any, **kwargs: Any) -> str:
        received.append((args, kwargs))
        return "fallback"

    breaker = CircuitBreaker(clock=FakeClock()).fallback(fallback)
    if refused:
        breaker.open()
    assert breaker.call_sync(fail, 1, key="k") == "fallback"
    ((args, kwargs),) = received
    assert args[0] == 1
    assert isinstance(args[1], CircuitOpenError if refused else Boom)
    assert kwargs == {"key": "k"}
    assert breaker.stats.fallbacks == 1


def test_call_sync_async_fallback_runs_to_its_end() -> None:
    async def fallback(exc: BaseException) -> str:
        return f"async {type(exc).__name__}"

    breaker = CircuitBreaker(clock=FakeClock()).fallback(fallback)
    assert breaker.call_sync(fail) == "async Boom"
    assert breaker.stats.fallbacks == 1


def test_call_sync_breaker_fallback() -> None:
    backup = CircuitBreaker(lambda exc: f"backup {type(exc).__name__}", clock=FakeClock())
    breaker = CircuitBreaker(clock=FakeClock()).fallback(backup)
    assert breaker.call_sync(fail) == "backup Boom"
    assert backup.stats.successes == 1


def run_threads(worker: Callable[[], None], count: int) -> None:
    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_call_sync_is_thread_safe_with_exact_counts() -> None:
    # A huge volume keeps the breaker closed: every call must be counted, none refused.
    breaker = CircuitBreaker(volume_threshold=10**6, clock=FakeClock())
    threads_count, calls = 8, 500
    start = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def worker() -> None:
        start.wait()
        for i in range(calls):
            try:
                breaker.call_sync(fail if i % 2 else ok)
            except Boom:
                pass
            except BaseException as exc:  # anything else is a bug worth seeing
                errors.append(exc)

    run_threads(worker, threads_count)
    assert errors == []
    stats = breaker.stats
    half = threads_count * calls // 2
    assert (stats.fires, stats.successes, stats.failures, stats.rejects) == (
        2 * half,
        half,
        half,
        0,
    )
    assert breaker.state is State.CLOSED


def test_call_sync_refuses_an_awaitable_and_closes_it() -> None:
    breaker = CircuitBreaker(clock=FakeClock())

    async def coroutine_function() -> str:
        return "never"

    with pytest.raises(TypeError, match="call_sync got an awaitable"):
        breaker.call_sync(coroutine_function)
    # Not a failure of the downstream service: the breaker stays closed.
    assert breaker.stats.failures == 0
    assert breaker.state is State.CLOSED


# ------------------------------------------------------------------ the decorator


def test_decorated_sync_function_goes_through_call_sync() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(timeout=1.0, clock=clock)

    @breaker
    def slow(seconds: float) -> str:
        """Take `seconds` by the fake clock."""
        clock.advance(seconds)
        return "done"

    assert slow(0.5) == "done"  # a plain value, not an awaitable
    # call_sync checks the limit when the function returns.
    with pytest.raises(CallTimeoutError):
        slow(2.0)
    assert slow.__name__ == "slow"
    assert slow.__doc__ == "Take `seconds` by the fake clock."
    assert (breaker.stats.successes, breaker.stats.timeouts) == (1, 1)


async def test_decorated_async_function_stays_a_coroutine_function() -> None:
    breaker = CircuitBreaker(clock=FakeClock())

    @breaker
    async def fetch(item: int) -> int:
        """Fetch one item."""
        return item * 2

    assert inspect.iscoroutinefunction(fetch)
    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Fetch one item."
    assert await fetch(21) == 42
    assert breaker.stats.successes == 1
    # The decorated function becomes the bound action.
    assert await breaker.fire(5) == 10


def test_fire_without_an_action_raises_type_error() -> None:
    breaker = CircuitBreaker(name="bare")
    with pytest.raises(TypeError, match="no action"):
        breaker.fire()


# ------------------------------------------------------------------ names


def test_name_defaults_to_the_actions_qualname() -> None:
    def lookup() -> None:
        pass

    assert CircuitBreaker(lookup).name == lookup.__qualname__
    assert CircuitBreaker(lookup).name.endswith("<locals>.lookup")


def test_decorator_names_an_unnamed_breaker_after_the_function() -> None:
    breaker = CircuitBreaker()

    @breaker
    def charge() -> None:
        pass

    assert breaker.name == charge.__qualname__


def test_given_name_is_kept_by_the_decorator() -> None:
    breaker = CircuitBreaker(name="payments")

    @breaker
    def charge() -> None:
        pass

    assert breaker.name == "payments"


def test_unnamed_breakers_without_action_get_unique_names() -> None:
    names = {CircuitBreaker().name for _ in range(50)}
    assert len(names) == 50


def test_half_open_admits_exactly_max_calls_trials_across_threads() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(reset_timeout=30, half_open_max_calls=3, clock=clock)
    breaker.open()
    clock.advance(30)
    threads_count, permits = 16, 3
    release = threading.Event()
    refused = threading.Semaphore(0)
    admitted = 0
    lock = threading.Lock()
    outcomes: list[str] = []

    def trial() -> str:
        nonlocal admitted
        with lock:
            admitted += 1
        assert release.wait(timeout=5)
        return "ok"

    def worker() -> None:
        try:
            outcomes.append(breaker.call_sync(trial))
        except CircuitOpenError:
            outcomes.append("refused")
            refused.release()

    threads = [threading.Thread(target=worker) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    # Every thread but the admitted ones is refused at once; the trials wait for `release`.
    for _ in range(threads_count - permits):
        assert refused.acquire(timeout=5), "more trials were admitted than permitted"
    assert admitted == permits
    release.set()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["ok"] * permits + ["refused"] * (threads_count - permits)
    assert breaker.state is State.CLOSED


async def test_call_sync_on_the_event_loop_thread_with_an_async_fallback() -> None:
    # A decorated sync function called from an async endpoint runs call_sync on the loop's
    # own thread; an async fallback must still answer there.
    async def fallback(exc: BaseException) -> str:
        return f"async {type(exc).__name__}"

    breaker = CircuitBreaker(clock=FakeClock()).fallback(fallback)
    assert breaker.call_sync(fail) == "async Boom"
    assert breaker.stats.fallbacks == 1


# ------------------------------------------------------------------ a breaker with an async action
# as the fallback: call_sync used to raise TypeError where `await call()` answered.


def breakers_with_an_async_fallback_breaker() -> tuple[CircuitBreaker, list[tuple[str, str]]]:
    log: list[tuple[str, str]] = []

    async def backup_action(*args: Any, **kwargs: Any) -> str:
        exc = args[-1]
        return f"backup {args[:-1]} {kwargs} {type(exc).__name__}"

    backup = CircuitBreaker(backup_action, name="backup", clock=FakeClock())
    breaker = CircuitBreaker(name="main", clock=FakeClock(), volume_threshold=0).fallback(backup)
    for each in (breaker, backup):
        for event in ("fire", "success", "failure", "open", "fallback"):
            each.on(event, lambda e: log.append((e.breaker.name, e.name)))
    return breaker, log


EXPECTED_ORDER = [
    ("main", "fire"),
    ("main", "failure"),
    ("main", "open"),
    ("backup", "fire"),
    ("backup", "success"),
    ("main", "fallback"),
]


def test_call_sync_with_a_fallback_breaker_whose_action_is_async() -> None:
    breaker, log = breakers_with_an_async_fallback_breaker()
    assert breaker.call_sync(fail, 1, key="v") == "backup (1,) {'key': 'v'} Boom"
    assert log == EXPECTED_ORDER
    assert breaker.stats.fallbacks == 1


async def test_call_sync_on_the_loop_thread_with_a_fallback_breaker_whose_action_is_async() -> None:
    breaker, log = breakers_with_an_async_fallback_breaker()
    assert breaker.call_sync(fail, 1, key="v") == "backup (1,) {'key': 'v'} Boom"
    assert log == EXPECTED_ORDER


async def test_await_call_with_the_same_fallback_breaker_answers_the_same() -> None:
    breaker, log = breakers_with_an_async_fallback_breaker()

    async def async_fail(*args: Any, **kwargs: Any) -> None:
        raise Boom

    assert await breaker.call(async_fail, 1, key="v") == "backup (1,) {'key': 'v'} Boom"
    assert log == EXPECTED_ORDER


def test_call_sync_refused_with_a_fallback_breaker_whose_action_is_async() -> None:
    breaker, log = breakers_with_an_async_fallback_breaker()
    breaker.open()
    log.clear()
    assert breaker.call_sync(ok) == "backup () {} CircuitOpenError"
    assert log == [
        ("main", "fire"),
        ("backup", "fire"),
        ("backup", "success"),
        ("main", "fallback"),
    ]


def test_call_sync_with_a_fallback_breaker_whose_action_is_an_async_callable_object() -> None:
    class Backup:
        async def __call__(self, exc: BaseException) -> str:
            return f"object {type(exc).__name__}"

    backup = CircuitBreaker(Backup(), name="backup", clock=FakeClock())
    breaker = CircuitBreaker(clock=FakeClock()).fallback(backup)
    assert breaker.call_sync(fail) == "object Boom"
    assert backup.stats.successes == 1


class TickingClock:
    """A clock that moves 0.1 ms at every reading, from any thread: buckets keep rotating."""

    def __init__(self) -> None:
        self._ticks = itertools.count()

    def __call__(self) -> float:
        return next(self._ticks) * 1e-4  # `next` on a count is atomic under the GIL


@pytest.mark.usefixtures("frequent_thread_switches")
def test_32_threads_on_the_lock_free_path_count_every_call_across_bucket_rotations() -> None:
    # Closed, default options: call_sync takes no lock. 10 ms buckets, and every call moves the
    # clock: the window rotates hundreds of times while 32 threads append to it.
    clock = TickingClock()
    breaker = CircuitBreaker(
        clock=clock, rolling_count_timeout=10.0, rolling_count_buckets=1000, timeout=None
    )
    assert breaker.core.fast
    threads_count, calls = 32, 400
    start = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def worker() -> None:
        start.wait()
        try:
            for _ in range(calls):
                assert breaker.call_sync(ok) == "ok"
        except BaseException as exc:  # anything else is a bug worth seeing
            errors.append(exc)

    run_threads(worker, threads_count)
    assert errors == []
    stats = breaker.stats
    total = threads_count * calls
    assert (stats.fires, stats.successes, stats.failures, stats.rejects) == (total, total, 0, 0)
    assert len(breaker.to_dict()["window"]) > 100  # the window did rotate, many times
