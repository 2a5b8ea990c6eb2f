"""Registry settings from the environment or a mapping, with errors that name breaker and field."""

from __future__ import annotations

import dataclasses
import os

import pytest

from fastapi_breaker import BreakerOptions, State, UnknownBreakerError
from fastapi_breaker.settings import (
    BreakerSettings,
    BreakerSettingsError,
    RegistrySettings,
    registry_from_settings,
)
from fastapi_breaker.testing import FakeClock

PREFIX = "FASTAPI_BREAKER_"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The machine's own FASTAPI_BREAKER_* variables must not leak into these tests.
    for name in list(os.environ):
        if name.upper().startswith(PREFIX):
            monkeypatch.delenv(name)


# ---------------------------------------------------------------- the model mirrors BreakerOptions


def test_breaker_settings_has_every_option_but_error_filter() -> None:
    options = [f.name for f in dataclasses.fields(BreakerOptions) if f.name != "error_filter"]

    assert list(BreakerSettings.model_fields) == options


def test_breaker_settings_defaults_are_the_options_defaults() -> None:
    assert BreakerSettings().model_dump() == BreakerOptions().to_dict()


# ---------------------------------------------------------------- from a mapping


def test_a_mapping_makes_a_registry() -> None:
    registry = registry_from_settings(
        {
            "defaults": {"timeout": 3, "reset_timeout": 7},
            "breakers": {"AuthService": {"timeout": 5, "volume_threshold": 10}},
            "strict": True,
        }
    )

    assert registry.strict is True
    assert registry.configured == frozenset({"AuthService"})
    options = registry.get("AuthService").options
    # Only the keys the breaker's entry sets override the defaults.
    assert (options.timeout, options.volume_threshold, options.reset_timeout) == (5.0, 10, 7.0)
    assert options.error_threshold_percentage == 50.0
    with pytest.raises(UnknownBreakerError):
        registry.get("Billing")


def test_an_empty_mapping_gives_a_default_registry() -> None:
    registry = registry_from_settings({})

    assert registry.strict is False
    assert registry.configured == frozenset()
    assert registry.get("Any").options == BreakerOptions()


def test_null_disables_a_timeout() -> None:
    registry = registry_from_settings({"breakers": {"Slow": {"timeout": None}}})

    assert registry.get("Slow").options.timeout is None


def test_a_mapping_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_BREAKER_STRICT", "true")
    monkeypatch.setenv("FASTAPI_BREAKER_DEFAULTS__TIMEOUT", "-1")

    registry = registry_from_settings({"defaults": {"timeout": 2}})

    assert registry.strict is False
    assert registry.get("A").options.timeout == 2.0


def test_the_clock_reaches_the_breakers() -> None:
    clock = FakeClock()
    registry = registry_from_settings({"breakers": {"A": {"reset_timeout": 20}}}, clock=clock)
    breaker = registry.get("A")
    breaker.open()

    clock.advance(20.0)

    assert breaker.state is State.HALF_OPEN


# ---------------------------------------------------------------- from the environment


def test_the_environment_as_json_keeps_breaker_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_BREAKER_BREAKERS", '{"AuthService": {"timeout": 5}}')
    monkeypatch.setenv("FASTAPI_BREAKER_DEFAULTS__RESET_TIMEOUT", "20")
    monkeypatch.setenv("FASTAPI_BREAKER_STRICT", "true")

    registry = registry_from_settings()

    assert registry.strict is True
    assert registry.configured == frozenset({"AuthService"})
    options = registry.get("AuthService").options
    assert (options.timeout, options.reset_timeout) == (5.0, 20.0)


def test_per_breaker_variables_keep_the_name_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    # pydantic-settings lower-cases variable names; the breaker's name must survive that.
    monkeypatch.setenv("FASTAPI_BREAKER_BREAKERS__AuthService__TIMEOUT", "5")
    monkeypatch.setenv("FASTAPI_BREAKER_BREAKERS__AuthService__VOLUME_THRESHOLD", "10")
    monkeypatch.setenv("fastapi_breaker_breakers__Billing__capacity", "3")

    registry = registry_from_settings()

    assert registry.configured == frozenset({"AuthService", "Billing"})
    auth = registry.get("AuthService").options
    assert (auth.timeout, auth.volume_threshold, auth.reset_timeout) == (5.0, 10, 30.0)
    assert registry.get("Billing").options.capacity == 3


def test_json_and_per_breaker_variables_merge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_BREAKER_BREAKERS", '{"AuthService": {"timeout": 5}}')
    monkeypatch.setenv("FASTAPI_BREAKER_BREAKERS__AuthService__RESET_TIMEOUT", "20")

    registry = registry_from_settings()

    assert registry.configured == frozenset({"AuthService"})
    options = registry.get("AuthService").options
    assert (options.timeout, options.reset_timeout) == (5.0, 20.0)


def test_null_in_the_environment_disables_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_BREAKER_DEFAULTS__TIMEOUT", "null")

    assert registry_from_settings().get("A").options.timeout is None


def test_a_name_spelled_two_ways_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_BREAKER_BREAKERS__AuthService__TIMEOUT", "5")
    monkeypatch.setenv("FASTAPI_BREAKER_BREAKERS__AUTHSERVICE__CAPACITY", "4")

    with pytest.raises(BreakerSettingsError) as caught:
        registry_from_settings()

    assert str(caught.value) == (
        "one breaker is spelled in several ways in the environment: AUTHSERVICE, AuthService; "
        "breaker names are case-sensitive, so write each name one way"
    )


def test_a_settings_object_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_BREAKER_BREAKERS__AuthService__TIMEOUT", "5")
    settings = RegistrySettings()
    monkeypatch.setenv("FASTAPI_BREAKER_BREAKERS__AuthService__TIMEOUT", "6")

    registry = registry_from_settings(settings)

    assert registry.get("AuthService").options.timeout == 5.0


# ---------------------------------------------------------------- errors


def test_errors_name_the_breaker_and_the_field() -> None:
    with pytest.raises(BreakerSettingsError) as caught:
        registry_from_settings(
            {"breakers": {"AuthService": {"timeout": -1, "capacity": "many"}, "Ok": {}}}
        )

    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == (
        "invalid circuit breaker settings (2 problems):\n"
        "  breakers.AuthService.timeout: Input should be greater than 0 (got -1)\n"
        "  breakers.AuthService.capacity: Input should be a valid integer, unable to parse string "
        "as an integer (got 'many')"
    )


def test_a_wrong_type_in_the_environment_names_breaker_and_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FASTAPI_BREAKER_BREAKERS__AuthService__ALLOW_WARM_UP", "sometimes")

    with pytest.raises(BreakerSettingsError) as caught:
        registry_from_settings()

    assert str(caught.value) == (
        "invalid circuit breaker settings (1 problem):\n"
        "  breakers.AuthService.allow_warm_up: Input should be a valid boolean, unable to "
        "interpret input (got 'sometimes')"
    )


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        (
            {"defaults": {"error_threshold_percentage": 101}},
            "defaults.error_threshold_percentage: Input should be less than or equal to 100 "
            "(got 101)",
        ),
        (
            {"defaults": {"reset_timeout": float("inf")}},
            "defaults.reset_timeout: Input should be a finite number (got inf)",
        ),
        (
            {"breakers": {"A": {"rolling_count_buckets": 0}}},
            "breakers.A.rolling_count_buckets: Input should be greater than or equal to 1 (got 0)",
        ),
        (
            {"breakers": {"A": {"timout": 5}}},
            "breakers.A.timout: Extra inputs are not permitted (got 5); valid keys are: timeout, "
            "reset_timeout, error_threshold_percentage, rolling_count_timeout, "
            "rolling_count_buckets, volume_threshold, allow_warm_up, capacity, enabled, "
            "half_open_max_calls, half_open_timeout",
        ),
        (
            {"strikt": True},
            "strikt: Extra inputs are not permitted (got True); valid keys are: defaults, "
            "breakers, strict",
        ),
        ({"strict": "maybe"}, "strict: Input should be a valid boolean"),
        ({"breakers": ["A"]}, "breakers: Input should be a valid dictionary (got ['A'])"),
        (
            {"breakers": {"A": {"error_filter": "x"}}},
            "breakers.A.error_filter: Extra inputs are not permitted",
        ),
    ],
)
def test_each_bad_setting_is_reported(settings: dict[str, object], problem: str) -> None:
    with pytest.raises(BreakerSettingsError) as caught:
        registry_from_settings(settings)

    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid circuit breaker settings (1 problem):"
    assert lines[1].startswith(f"  {problem}")


def test_broken_json_in_the_environment_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_BREAKER_BREAKERS", '{"AuthService": ')

    with pytest.raises(BreakerSettingsError) as caught:
        registry_from_settings()

    message = str(caught.value)
    assert message.startswith("invalid circuit breaker settings: error parsing value for field")
    assert '"breakers"' in message
    assert message.endswith("Expecting value: line 1 column 17 (char 16)")


def test_a_source_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(TypeError, match=r"^settings must be a mapping, a RegistrySettings or None"):
        registry_from_settings(["breakers"])  # type: ignore[arg-type]
