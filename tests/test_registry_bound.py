"""BreakerRegistry's bound: `max_breakers`, which breakers it evicts to make room, `remove()`."""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import threading
from collections.abc import Callable
from typing import Any

import pytest

from fastapi_breaker import (
    BreakerError,
    BreakerRegistry,
    BreakerShutdownError,
    CircuitBreaker,
    CircuitOpenError,
    NameTooLongError,
    RegistryFullError,
    State,
    _registry,
)
from fastapi_breaker._registry import SEARCH_LIMIT
from fastapi_breaker.testing import FakeClock


def full(name: str, max_breakers: int) -> str:
    return (
        f"cannot create circuit breaker {name!r}: the registry is full "
        f"(max_breakers={max_breakers}) and none of the oldest breakers could be evicted "
        "(only an idle, unconfigured one can)"
    )


def boom() -> None:
    raise ValueError("upstream down")


# ---------------------------------------------------------------- the bound


def test_the_default_bound_is_1000_and_none_means_unbounded() -> None:
    assert BreakerRegistry().max_breakers == 1000
    unbounded = BreakerRegistry(max_breakers=None)
    assert unbounded.max_breakers is None

    for i in range(1500):
        unbounded.get(f"host-{i}")

    assert len(unbounded.breakers()) == 1500


def test_ten_thousand_names_against_a_bound_of_100_leave_exactly_the_newest_100() -> None:
    registry = BreakerRegistry(max_breakers=100)
    names = [f"tenant-{i}" for i in range(10_000)]
    largest = 0

    for name in names:
        assert registry.get(name).name == name
        largest = max(largest, len(registry.breakers()))

    assert largest == 100
    # Idle breakers go oldest first: what is left is the last 100 names, in creation order.
    assert list(registry.breakers()) == names[-100:]


def test_an_evicted_name_comes_back_as_a_fresh_breaker() -> None:
    registry = BreakerRegistry(max_breakers=1)
    first = registry.get("a")
    registry.get("b")

    again = registry.get("a")

    assert again is not first
    assert list(registry.breakers()) == ["a"]
    assert "b" not in registry


def test_an_existing_name_is_served_without_the_lock() -> None:
    class NoLock:
        def __enter__(self) -> None:
            raise AssertionError("get() of an existing name took the registry's lock")

        def __exit__(self, *exc: object) -> None:
            return None

    registry = BreakerRegistry(max_breakers=1)
    breaker = registry.get("a")
    registry._lock = NoLock()  # type: ignore[assignment]

    assert registry.get("a") is breaker


# ---------------------------------------------------------------- what is never evicted


def test_an_open_breaker_is_never_evicted() -> None:
    # Else flooding new names would reset an open circuit and let calls through again.
    clock = FakeClock()
    registry = BreakerRegistry(
        {"volume_threshold": 0, "reset_timeout": 30.0, "rolling_count_timeout": 10.0},
        max_breakers=10,
        clock=clock,
    )
    victim = registry.get("victim")
    with pytest.raises(ValueError, match="upstream down"):
        victim.call_sync(boom)
    clock.advance(15.0)  # the failure has left the window; the circuit is still open
    assert (victim.state, victim.stats.failures) == (State.OPEN, 0)

    for i in range(1000):
        registry.get(f"flood-{i}")

    assert registry.get("victim") is victim
    assert victim.state is State.OPEN
    assert set(registry.breakers()) == {"victim", *(f"flood-{i}" for i in range(991, 1000))}


def test_a_configured_breaker_is_never_evicted_even_when_idle() -> None:
    registry = BreakerRegistry(breakers={"AuthService": {"timeout": 5.0}}, max_breakers=3)
    auth = registry.get("AuthService")

    for i in range(1000):
        registry.get(f"host-{i}")

    assert registry.get("AuthService") is auth
    assert set(registry.breakers()) == {"AuthService", "host-998", "host-999"}


def test_room_is_kept_for_configured_breakers_not_created_yet() -> None:
    registry = BreakerRegistry(breakers={"A": {}, "B": {}}, max_breakers=3)
    held = registry.get("x")
    held.open()

    # One place is left for unconfigured names, and "x" holds it: "A" and "B" must still fit.
    with pytest.raises(RegistryFullError) as caught:
        registry.get("y")
    a, b = registry.get("A"), registry.get("B")

    assert str(caught.value) == full("y", 3)
    assert registry.breakers() == {"x": held, "A": a, "B": b}


def test_a_bound_equal_to_the_configured_count_admits_no_other_name() -> None:
    registry = BreakerRegistry(breakers={"A": {}, "B": {}}, max_breakers=2)

    with pytest.raises(RegistryFullError) as caught:
        registry.get("x")

    assert str(caught.value) == full("x", 2)
    assert registry.breakers() == {}
    assert registry.get("A").name == "A"


# Each case: make the held breaker unsafe to forget, then (if it can be) make it safe again.
Hold = Callable[[CircuitBreaker, FakeClock], Callable[[], object] | None]


def held_open(breaker: CircuitBreaker, clock: FakeClock) -> Callable[[], object]:
    breaker.open()
    return breaker.close


def held_half_open_by_its_trial(breaker: CircuitBreaker, clock: FakeClock) -> Callable[[], object]:
    breaker.open()
    clock.advance(30.0)
    attempt = breaker.begin()  # the trial, running
    assert breaker.state is State.HALF_OPEN
    return attempt.succeeded  # the trial closes it


def held_open_and_still_called(breaker: CircuitBreaker, clock: FakeClock) -> Callable[[], object]:
    breaker.open()
    clock.advance(29.0)
    with pytest.raises(CircuitOpenError):
        breaker.call_sync(lambda: None)  # refused: it is still being called
    return breaker.close


def held_forced_open(breaker: CircuitBreaker, clock: FakeClock) -> Callable[[], object]:
    breaker.force_open()
    clock.advance(3600.0)
    return breaker.close


def held_disabled(breaker: CircuitBreaker, clock: FakeClock) -> Callable[[], object]:
    breaker.disable()
    return breaker.enable


def held_shut_down(breaker: CircuitBreaker, clock: FakeClock) -> None:
    breaker.shutdown()


def held_by_a_listener(breaker: CircuitBreaker, clock: FakeClock) -> Callable[[], object]:
    def handler(event: Any) -> None:
        return None

    breaker.on("open", handler)
    return lambda: breaker.off("open", handler)


def held_by_a_call_in_a_capacity_slot(
    breaker: CircuitBreaker, clock: FakeClock
) -> Callable[[], object]:
    attempt = breaker.begin()  # capacity=1: the slot is counted until the call ends
    return attempt.succeeded


def held_by_a_recent_failure(breaker: CircuitBreaker, clock: FakeClock) -> Callable[[], object]:
    # Closed, but counting towards opening: forgetting it would reset that count.
    with pytest.raises(ValueError, match="upstream down"):
        breaker.call_sync(boom)
    assert breaker.state is State.CLOSED
    return lambda: clock.advance(10.0)  # the failure leaves the rolling window


def held_by_a_fallback(breaker: CircuitBreaker, clock: FakeClock) -> None:
    breaker.fallback(lambda *args: "cached")


def held_by_a_decorated_function(breaker: CircuitBreaker, clock: FakeClock) -> None:
    @breaker
    def fetch() -> str:
        return "ok"


@pytest.mark.parametrize(
    "hold",
    [
        held_open,
        held_half_open_by_its_trial,
        held_open_and_still_called,
        held_forced_open,
        held_disabled,
        held_shut_down,
        held_by_a_listener,
        held_by_a_call_in_a_capacity_slot,
        held_by_a_recent_failure,
        held_by_a_fallback,
        held_by_a_decorated_function,
    ],
)
def test_a_breaker_that_is_not_idle_is_not_evicted(hold: Hold) -> None:
    clock = FakeClock()
    registry = BreakerRegistry(
        {"volume_threshold": 5, "capacity": 1, "reset_timeout": 30.0, "timeout": None},
        max_breakers=1,
        clock=clock,
    )
    held = registry.get("held")
    release = hold(held, clock)

    with pytest.raises(RegistryFullError) as caught:
        registry.get("newcomer")

    error = caught.value
    assert isinstance(error, BreakerError)
    assert isinstance(error, LookupError)
    assert (error.name, error.max_breakers) == ("newcomer", 1)
    assert str(error) == full("newcomer", 1)
    assert registry.breakers() == {"held": held}
    if release is not None:
        release()
        newcomer = registry.get("newcomer")
        assert registry.breakers() == {"newcomer": newcomer}


async def test_a_breaker_with_a_health_check_is_not_evicted() -> None:
    registry = BreakerRegistry(max_breakers=1, clock=FakeClock())
    held = registry.get("held")
    task = held.health_check(lambda: None, interval=3600.0)

    with pytest.raises(RegistryFullError, match=r"^cannot create circuit breaker 'newcomer'"):
        registry.get("newcomer")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)  # the task's done callback forgets it

    assert registry.get("newcomer").name == "newcomer"
    assert list(registry.breakers()) == ["newcomer"]


async def test_a_breaker_with_a_timed_call_in_flight_is_not_evicted() -> None:
    registry = BreakerRegistry({"timeout": 60.0}, max_breakers=1)
    held = registry.get("held")
    gate = asyncio.Event()
    call = asyncio.create_task(held.call(gate.wait))
    await asyncio.sleep(0)  # the call starts: its deadline is pending

    with pytest.raises(RegistryFullError, match=r"^cannot create circuit breaker 'newcomer'"):
        registry.get("newcomer")
    gate.set()
    assert await call is True

    assert list(registry.breakers()) == ["held"]
    assert registry.get("newcomer").name == "newcomer"
    assert list(registry.breakers()) == ["newcomer"]


def test_busy_breakers_are_passed_over_for_the_oldest_idle_one() -> None:
    registry = BreakerRegistry(max_breakers=4)
    busy = registry.get("busy")
    busy.open()
    idle = [registry.get(name) for name in ("idle-1", "idle-2", "idle-3")]

    registry.get("new-1")
    registry.get("new-2")

    # "busy" was passed over once and moved behind the newest, so the second search skips it.
    assert list(registry.breakers()) == ["idle-3", "busy", "new-1", "new-2"]
    assert not any(breaker.is_shutdown for breaker in idle)


def test_a_refusal_tests_at_most_search_limit_breakers_and_moves_them_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A registry full of open breakers: a new name must not test all 1,000 under the lock.
    registry = BreakerRegistry(max_breakers=1000)
    names = [f"open-{i}" for i in range(1000)]
    for name in names:
        registry.get(name).open()
    tested: list[str] = []
    forgettable = _registry._forgettable

    def counting(breaker: CircuitBreaker, shared: Any = None) -> bool:
        tested.append(breaker.name)
        return forgettable(breaker, shared)

    monkeypatch.setattr(_registry, "_forgettable", counting)

    with pytest.raises(RegistryFullError, match=r"^cannot create circuit breaker 'new'"):
        registry.get("new")

    assert SEARCH_LIMIT == 32
    assert tested == names[:32]
    assert list(registry.breakers()) == names[32:] + names[:32]


def test_the_next_search_starts_past_the_busy_breakers_it_was_refused_by() -> None:
    registry = BreakerRegistry(max_breakers=50)
    for i in range(40):
        registry.get(f"open-{i}").open()
    for i in range(10):
        registry.get(f"idle-{i}")

    with pytest.raises(RegistryFullError):
        registry.get("new")  # tests open-0 to open-31
    new = registry.get("new")  # tests open-32 to open-39, then idle-0 goes

    held = registry.breakers()
    assert held["new"] is new
    assert "idle-0" not in held
    assert len(held) == 50
    assert sum(breaker.state is State.OPEN for breaker in held.values()) == 40


def test_configured_breakers_do_not_use_up_the_search() -> None:
    configured = {f"service-{i}": {} for i in range(60)}
    registry = BreakerRegistry(breakers=configured, max_breakers=100)
    for name in configured:
        registry.get(name)  # the 60 oldest, ahead of every unconfigured one
    for i in range(40):
        registry.get(f"idle-{i}")

    registry.get("new")

    held = registry.breakers()
    assert len(held) == 100
    assert "idle-0" not in held
    assert set(configured) < set(held)


# ---------------------------------------------------------------- evicted means forgotten


def test_an_evicted_breaker_is_forgotten_not_shut_down() -> None:
    # A caller may still hold it mid-request: its call ends normally and it keeps working.
    registry = BreakerRegistry(max_breakers=1)
    old = registry.get("a")
    attempt = old.begin()  # closed, no capacity: a call the registry cannot see

    new = registry.get("b")
    attempt.succeeded()

    assert registry.breakers() == {"b": new}
    assert not old.is_shutdown
    assert old.call_sync(lambda: 42) == 42
    assert old.stats.successes == 2


# ---------------------------------------------------------------- remove()


def test_remove_forgets_and_shuts_down_an_unconfigured_breaker() -> None:
    registry = BreakerRegistry()
    breaker = registry.get("tenant-7")
    other = registry.get("tenant-8")

    assert registry.remove("tenant-7") is True

    assert breaker.is_shutdown
    with pytest.raises(BreakerShutdownError):
        breaker.call_sync(lambda: 1)
    assert registry.breakers() == {"tenant-8": other}
    assert "tenant-7" not in registry
    assert registry.remove("tenant-7") is False
    assert registry.remove("never-made") is False


def test_remove_of_a_configured_name_rebuilds_it_from_its_options_next_time() -> None:
    registry = BreakerRegistry(breakers={"AuthService": {"timeout": 5.0}}, strict=True)
    first = registry.get("AuthService")
    first.open()

    assert registry.remove("AuthService") is True

    assert first.is_shutdown
    assert registry.breakers() == {}
    assert "AuthService" in registry  # still configured
    again = registry.get("AuthService")
    assert again is not first
    assert (again.state, again.options.timeout) == (State.CLOSED, 5.0)


def test_removing_a_configured_breaker_frees_no_room_for_other_names() -> None:
    registry = BreakerRegistry(breakers={"A": {}}, max_breakers=2)
    registry.get("A")
    x = registry.get("x")

    assert registry.remove("A") is True
    y = registry.get("y")  # the one place for unconfigured names: "x" makes way

    assert registry.breakers() == {"y": y}
    assert not x.is_shutdown
    a = registry.get("A")
    assert registry.breakers() == {"y": y, "A": a}


def test_remove_makes_room_in_a_full_registry() -> None:
    registry = BreakerRegistry(max_breakers=1)
    registry.get("a").open()
    with pytest.raises(RegistryFullError):
        registry.get("b")

    assert registry.remove("a") is True

    assert list(registry.breakers()) == []
    assert registry.get("b").name == "b"


def test_shutdown_makes_room_too() -> None:
    registry = BreakerRegistry(breakers={"A": {}}, max_breakers=2)
    registry.get("A")
    registry.get("x").open()
    with pytest.raises(RegistryFullError):
        registry.get("y")

    registry.shutdown()

    y, a = registry.get("y"), registry.get("A")
    assert registry.breakers() == {"y": y, "A": a}


def test_a_remove_handler_may_use_the_registry() -> None:
    registry = BreakerRegistry(max_breakers=2)
    seen: list[str] = []
    registry.get("a").on("shutdown", lambda event: seen.append(registry.get("b").name))

    assert registry.remove("a") is True  # would deadlock if shut down under the lock

    assert seen == ["b"]
    assert list(registry.breakers()) == ["b"]


# ---------------------------------------------------------------- threads


@pytest.mark.usefixtures("frequent_thread_switches")
def test_threads_creating_names_never_push_the_registry_past_its_bound() -> None:
    registry = BreakerRegistry(max_breakers=50)
    names = [f"host-{i}" for i in range(400)]
    threads = 8
    start = threading.Barrier(threads)
    largest = [0] * threads
    wrong: list[tuple[str, str]] = []

    def worker(index: int) -> None:
        start.wait()
        # Each thread walks the names from its own offset: same-name races and evictions mix.
        for step in range(len(names)):
            name = names[(step + index * 50) % len(names)]
            breaker = registry.get(name)
            if breaker.name != name:
                wrong.append((name, breaker.name))
            largest[index] = max(largest[index], len(registry.breakers()))

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()

    assert wrong == []
    assert max(largest) == 50
    held = registry.breakers()
    assert len(held) == 50
    assert set(held) <= set(names)
    assert all(breaker.name == name for name, breaker in held.items())


# ---------------------------------------------------------------- construction


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "0"),
        (-1, "-1"),
        (True, "True"),
        (10.0, "10.0"),
        (float("nan"), "nan"),
        ("100", "'100'"),
    ],
)
def test_a_bad_max_breakers_fails_at_construction(value: Any, shown: str) -> None:
    with pytest.raises(ValueError, match=r"^max_breakers must be") as caught:
        BreakerRegistry(max_breakers=value)

    assert str(caught.value) == f"max_breakers must be an integer >= 1 or None, got {shown}"


def test_max_breakers_must_fit_every_configured_breaker() -> None:
    with pytest.raises(ValueError, match=r"^max_breakers must be") as caught:
        BreakerRegistry(breakers={"A": {}, "B": {}, "C": {}}, max_breakers=2)

    assert str(caught.value) == (
        "max_breakers must be an integer >= 3 (the number of configured breakers) or None, got 2"
    )
    assert BreakerRegistry(breakers={"A": {}, "B": {}, "C": {}}, max_breakers=3).max_breakers == 3


def test_registry_full_error_survives_pickling() -> None:
    error = RegistryFullError("tenant-1", 100)

    copy = pickle.loads(pickle.dumps(error))

    assert (copy.name, copy.max_breakers, str(copy)) == ("tenant-1", 100, full("tenant-1", 100))


def quiet_half_open(breaker: CircuitBreaker, clock: FakeClock) -> None:
    breaker.open()
    clock.advance(30.0)
    assert breaker.state is State.HALF_OPEN  # no call came for its trial


def quiet_open_past_its_reset(breaker: CircuitBreaker, clock: FakeClock) -> None:
    for _ in range(5):
        with contextlib.suppress(ValueError):
            breaker.call_sync(boom)
    assert breaker.state is State.OPEN
    clock.advance(30.0)  # its reset is over, and its failures have left the window


@pytest.mark.parametrize("quiet", [quiet_half_open, quiet_open_past_its_reset])
def test_a_breaker_nobody_calls_whose_wait_is_over_is_evicted(
    quiet: Callable[[CircuitBreaker, FakeClock], None],
) -> None:
    clock = FakeClock()
    registry = BreakerRegistry(
        {"volume_threshold": 5, "reset_timeout": 30.0, "timeout": None},
        max_breakers=1,
        clock=clock,
    )
    quiet(registry.get("failing-host"), clock)
    newcomer = registry.get("newcomer")
    assert registry.breakers() == {"newcomer": newcomer}


def test_failing_hosts_nobody_calls_any_more_do_not_wedge_the_registry() -> None:
    # The bound filled with hosts that failed and opened; a legitimate new host must get a
    # breaker once they have been quiet for their reset timeout.
    clock = FakeClock()
    registry = BreakerRegistry(
        {"volume_threshold": 10, "reset_timeout": 20.0, "timeout": None},
        max_breakers=50,
        clock=clock,
    )
    for index in range(50):
        breaker = registry.get(f"attacker-{index}.example")
        for _ in range(10):
            with contextlib.suppress(ValueError):
                breaker.call_sync(boom)
        assert breaker.state is State.OPEN
    clock.advance(5.0)
    with pytest.raises(RegistryFullError):
        registry.get("api.example")  # every one is still open, its failures in its window
    clock.advance(15.0)  # 20 s: reset over, window (10 s) quiet
    assert registry.get("api.example").state is State.CLOSED


def test_a_flood_of_names_cannot_reset_a_breaker_that_is_still_called() -> None:
    clock = FakeClock()
    registry = BreakerRegistry(
        {"volume_threshold": 5, "reset_timeout": 2.0, "timeout": None},
        max_breakers=2,
        clock=clock,
    )
    victim = registry.get("payments")
    for _ in range(5):
        with contextlib.suppress(ValueError):
            victim.call_sync(boom)
    assert victim.state is State.OPEN
    for step in range(600):  # a minute of fake time, a name every 0.1 s
        clock.advance(0.1)
        with contextlib.suppress(RegistryFullError):
            registry.get(f"flood-{step}")
        if step % 10 == 0:  # the real caller, once a second: refused, or a trial that fails
            with contextlib.suppress(CircuitOpenError, ValueError):
                registry.get("payments").call_sync(boom)
        assert registry.get("payments") is victim, step
    assert victim.state is not State.CLOSED


def test_a_new_name_longer_than_max_name_length_is_refused_without_a_breaker() -> None:
    registry = BreakerRegistry(clock=FakeClock())
    longest = "a" * 300
    assert registry.get(longest).name == longest  # the default bound: 300
    name = "a" * 10_008
    with pytest.raises(NameTooLongError) as refused:
        registry.get(name)
    error = refused.value
    assert isinstance(error, BreakerError)
    assert isinstance(error, ValueError)
    assert (error.name, error.max_name_length) == (name, 300)
    assert str(error) == (
        f"cannot create circuit breaker {'a' * 40!r}... : its name has 10,008 characters, "
        "more than max_name_length=300"
    )
    assert list(registry.breakers()) == [longest]


def test_max_name_length_is_configurable_and_checked() -> None:
    registry = BreakerRegistry(max_name_length=8, clock=FakeClock())
    registry.get("12345678")
    with pytest.raises(NameTooLongError):
        registry.get("123456789")
    assert BreakerRegistry(max_name_length=None).get("x" * 5000).name == "x" * 5000
    for bad in (0, -1, True, 2.5, "300"):
        with pytest.raises(ValueError, match=r"^max_name_length must be an integer >= 1 or None"):
            BreakerRegistry(max_name_length=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"its name has 9 characters, more than max_name_length=8"):
        BreakerRegistry(breakers={"123456789": {}}, max_name_length=8)
