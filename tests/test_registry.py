"""BreakerRegistry: named breakers made on first use, options checked up front, strict mode."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import pytest

from fastapi_breaker import (
    BreakerError,
    BreakerOptions,
    BreakerRegistry,
    CircuitBreaker,
    State,
    UnknownBreakerError,
)
from fastapi_breaker.testing import FakeClock

VALID_KEYS = (
    "timeout, reset_timeout, error_threshold_percentage, rolling_count_timeout, "
    "rolling_count_buckets, volume_threshold, allow_warm_up, capacity, error_filter, enabled, "
    "half_open_max_calls, half_open_timeout"
)


def not_a_failure(exc: BaseException) -> bool:
    return isinstance(exc, KeyError)


# ---------------------------------------------------------------- creation on first use


def test_get_creates_the_breaker_once_and_names_it() -> None:
    registry = BreakerRegistry()
    assert registry.breakers() == {}

    breaker = registry.get("AuthService")

    assert isinstance(breaker, CircuitBreaker)
    assert breaker.name == "AuthService"
    assert registry.get("AuthService") is breaker
    assert registry.breakers() == {"AuthService": breaker}


def test_per_name_mapping_overrides_the_defaults_key_by_key() -> None:
    registry = BreakerRegistry(
        {"timeout": 3.0, "reset_timeout": 7.0, "error_filter": not_a_failure},
        {"AuthService": {"timeout": 5.0, "volume_threshold": 10}},
    )

    options = registry.get("AuthService").options

    assert options.timeout == 5.0
    assert options.volume_threshold == 10
    # Not named by the breaker's own entry: the defaults, error_filter included.
    assert options.reset_timeout == 7.0
    assert options.error_filter is not_a_failure
    assert options.capacity is None


def test_a_name_without_options_gets_the_defaults_when_not_strict() -> None:
    defaults = BreakerOptions(timeout=2.0, error_filter=not_a_failure)
    registry = BreakerRegistry(defaults, {"AuthService": {"timeout": 5.0}})

    assert registry.get("Billing").options == defaults


def test_per_name_breaker_options_are_used_whole() -> None:
    own = BreakerOptions(reset_timeout=9.0)
    registry = BreakerRegistry({"timeout": 3.0}, {"AuthService": own})

    # A BreakerOptions is a complete set: the defaults' timeout does not leak into it.
    assert registry.get("AuthService").options is own
    assert registry.get("AuthService").options.timeout == 10.0


def test_breakers_run_on_the_registry_clock() -> None:
    clock = FakeClock()
    registry = BreakerRegistry(breakers={"AuthService": {"reset_timeout": 20.0}}, clock=clock)
    breaker = registry.get("AuthService")
    breaker.open()

    clock.advance(19.9)
    before = breaker.state
    clock.advance(0.1)

    assert (before, breaker.state) == (State.OPEN, State.HALF_OPEN)


def test_breakers_returns_a_copy() -> None:
    registry = BreakerRegistry()
    registry.get("A")

    snapshot = registry.breakers()
    snapshot.clear()

    assert list(registry.breakers()) == ["A"]


def test_configured_names_and_membership() -> None:
    registry = BreakerRegistry(breakers={"AuthService": {}, "Billing": {"capacity": 2}})

    assert registry.configured == frozenset({"AuthService", "Billing"})
    assert "AuthService" in registry  # configured, not created yet
    assert "Search" not in registry
    registry.get("Search")
    assert "Search" in registry  # created from the defaults
    assert registry.configured == frozenset({"AuthService", "Billing"})
    assert 42 not in registry


def test_strict_is_reported() -> None:
    assert BreakerRegistry().strict is False
    assert BreakerRegistry(strict=True).strict is True


# ---------------------------------------------------------------- strict mode


def test_strict_registry_refuses_an_unknown_name() -> None:
    registry = BreakerRegistry(breakers={"Billing": {}, "AuthService": {}}, strict=True)

    with pytest.raises(UnknownBreakerError) as caught:
        registry.get("Auth")

    error = caught.value
    assert isinstance(error, BreakerError)
    assert isinstance(error, LookupError)
    assert error.name == "Auth"
    assert error.known == ("AuthService", "Billing")
    assert str(error) == (
        "unknown circuit breaker 'Auth' in a strict registry; known breakers: 'AuthService', "
        "'Billing'"
    )
    assert registry.breakers() == {}


def test_strict_registry_with_nothing_configured_says_so() -> None:
    with pytest.raises(UnknownBreakerError, match=r"known breakers: none$"):
        BreakerRegistry(strict=True).get("AuthService")


def test_strict_registry_serves_configured_names() -> None:
    registry = BreakerRegistry(breakers={"AuthService": {}}, strict=True)

    assert registry.get("AuthService").name == "AuthService"


def test_unknown_breaker_error_survives_pickling() -> None:
    error = UnknownBreakerError("Auth", ["B", "A"])

    copy = pickle.loads(pickle.dumps(error))

    assert (copy.name, copy.known, str(copy)) == (error.name, error.known, str(error))


# ---------------------------------------------------------------- options checked at construction


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        (
            {"timeout": -1},
            ValueError,
            "breaker 'AuthService': timeout must be a number of seconds > 0 and <= 31536000 "
            "(365 days) or None, got -1",
        ),
        (
            {"error_threshold_percentage": 150},
            ValueError,
            "breaker 'AuthService': error_threshold_percentage must be a number from 0 to 100, "
            "got 150",
        ),
        (
            {"enabled": "yes"},
            TypeError,
            "breaker 'AuthService': enabled must be True or False, got 'yes'",
        ),
    ],
)
def test_a_bad_per_name_option_fails_at_construction_naming_breaker_and_field(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        BreakerRegistry(breakers={"Billing": {}, "AuthService": options})

    assert str(caught.value) == message
    # The option's own error is kept as the cause, for whoever wants the original.
    assert type(caught.value.__cause__) is error


def test_a_bad_default_fails_at_construction() -> None:
    with pytest.raises(
        ValueError,
        match=r"^defaults: capacity must be an integer >= 1 and <= 1000000 or None, got 0$",
    ):
        BreakerRegistry({"capacity": 0})


def test_a_default_that_a_breaker_overrides_is_still_checked() -> None:
    # The bad default would reach every unconfigured name, so it fails even if no one uses it.
    with pytest.raises(ValueError, match=r"^defaults: reset_timeout"):
        BreakerRegistry({"reset_timeout": 0}, {"AuthService": {"reset_timeout": 5}})


def test_an_unknown_option_key_names_the_key_the_breaker_and_the_valid_keys() -> None:
    with pytest.raises(ValueError, match="timout") as caught:
        BreakerRegistry(breakers={"AuthService": {"timout": 5}})

    assert str(caught.value) == (
        f"breaker 'AuthService': unknown option 'timout'; valid options are: {VALID_KEYS}"
    )


def test_several_unknown_keys_are_all_named() -> None:
    with pytest.raises(ValueError, match=r"^defaults: unknown options 'name', 'clock'; valid"):
        BreakerRegistry({"name": "x", "clock": None})


@pytest.mark.parametrize(
    ("breakers", "error", "message"),
    [
        ({"AuthService": 5}, TypeError, "breaker 'AuthService': options must be a BreakerOptions"),
        ({"": {}}, ValueError, "a breaker name must be a non-empty string, got ''"),
        ({3: {}}, ValueError, "a breaker name must be a non-empty string, got 3"),
        (["AuthService"], TypeError, "breakers must be a mapping of name to options"),
    ],
)
def test_malformed_breakers_fail_at_construction(
    breakers: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        BreakerRegistry(breakers=breakers)

    assert str(caught.value).startswith(message)


def test_malformed_defaults_strict_and_clock_fail_at_construction() -> None:
    with pytest.raises(TypeError, match=r"^defaults: options must be a BreakerOptions or a map"):
        BreakerRegistry(defaults=[("timeout", 1)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^strict must be True or False, got 1$"):
        BreakerRegistry(strict=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^clock must be a callable"):
        BreakerRegistry(clock=0.0)  # type: ignore[arg-type]


def test_an_empty_name_is_refused_at_get() -> None:
    with pytest.raises(ValueError, match=r"^a breaker name must be a non-empty string, got ''$"):
        BreakerRegistry().get("")


# ---------------------------------------------------------------- shutdown


def test_shutdown_ends_every_breaker_and_forgets_them() -> None:
    registry = BreakerRegistry(breakers={"AuthService": {"timeout": 5.0}})
    first = registry.get("AuthService")
    other = registry.get("Search")

    registry.shutdown()

    assert first.is_shutdown
    assert other.is_shutdown
    assert registry.breakers() == {}
    assert "Search" not in registry  # created, now forgotten
    assert "AuthService" in registry  # still configured
    # A lifespan that runs again gets fresh breakers with the same options.
    again = registry.get("AuthService")
    assert again is not first
    assert not again.is_shutdown
    assert again.options.timeout == 5.0


def test_a_shutdown_handler_may_use_the_registry() -> None:
    registry = BreakerRegistry()
    seen: list[bool] = []
    registry.get("A").on("shutdown", lambda event: seen.append(registry.get("B").is_shutdown))

    registry.shutdown()  # would deadlock if breakers were shut down under the registry's lock

    assert seen == [False]
    assert list(registry.breakers()) == ["B"]


# ---------------------------------------------------------------- threads


@pytest.mark.usefixtures("frequent_thread_switches")
def test_threads_asking_for_the_same_new_name_get_the_same_breaker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created: list[str] = []
    from_options = CircuitBreaker.from_options

    def counting(*args: Any, **kwargs: Any) -> CircuitBreaker:
        breaker = from_options(*args, **kwargs)
        created.append(breaker.name)
        return breaker

    monkeypatch.setattr(CircuitBreaker, "from_options", counting)
    registry = BreakerRegistry()
    names = [f"service-{i}" for i in range(50)]
    threads = 16
    start = threading.Barrier(threads)
    results: list[dict[str, CircuitBreaker]] = [{} for _ in range(threads)]

    def worker(index: int) -> None:
        start.wait()
        for name in names:
            results[index][name] = registry.get(name)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()

    assert sorted(created) == sorted(names)  # each breaker was made exactly once
    for result in results:
        assert all(result[name] is registry.get(name) for name in names)


@pytest.mark.parametrize("reading", [float("nan"), "12", None, True, float("inf")])
def test_a_registry_clock_that_does_not_give_seconds_is_refused_at_construction(
    reading: object,
) -> None:
    with pytest.raises(ValueError, match=r"^clock must be a callable returning monotonic seconds"):
        BreakerRegistry(clock=lambda: reading)  # type: ignore[arg-type, return-value]
