"""Registry settings from the environment or a mapping, with errors that name breaker and field."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest
from pydantic_settings import SettingsConfigDict

from fastapi_breaker import BreakerOptions, NameTooLongError, State, UnknownBreakerError
from fastapi_breaker._registry import DEFAULT_MAX_BREAKERS
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


def test_option_variables_win_over_json_whatever_their_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FASTAPI_BREAKER_BREAKERS__AuthService__TIMEOUT", "6")
    monkeypatch.setenv("FASTAPI_BREAKER_BREAKERS__AuthService", '{"timeout": 5, "capacity": 2}')
    monkeypatch.setenv("FASTAPI_BREAKER_BREAKERS", '{"AuthService": {"reset_timeout": 9}}')

    options = registry_from_settings().get("AuthService").options

    assert (options.timeout, options.capacity, options.reset_timeout) == (6.0, 2, 9.0)


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
        "  breakers.AuthService.capacity: Input should be a valid integer (got 'many')"
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
            "breakers, strict, max_breakers",
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

    assert str(caught.value) == (
        "invalid circuit breaker settings: FASTAPI_BREAKER_BREAKERS is not valid JSON: "
        "Expecting value: line 1 column 17 (char 16)"
    )


def test_a_source_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(TypeError, match=r"^settings must be a mapping, a RegistrySettings or None"):
        registry_from_settings(["breakers"])  # type: ignore[arg-type]


# ---------------------------------------------------------------- unknown variables


VARIABLES = (
    "FASTAPI_BREAKER_STRICT, FASTAPI_BREAKER_MAX_BREAKERS, FASTAPI_BREAKER_MAX_NAME_LENGTH, "
    "FASTAPI_BREAKER_REDIS_URL, "
    "FASTAPI_BREAKER_REDIS_NAMESPACE, FASTAPI_BREAKER_DEFAULTS, "
    "FASTAPI_BREAKER_DEFAULTS__<option>, FASTAPI_BREAKER_BREAKERS, "
    "FASTAPI_BREAKER_BREAKERS__<name>, FASTAPI_BREAKER_BREAKERS__<name>__<option>"
)


@pytest.mark.parametrize(
    ("variable", "hint"),
    [
        ("FASTAPI_BREAKER_STRCT", " (did you mean FASTAPI_BREAKER_STRICT?)"),
        ("fastapi_breaker_strct", " (did you mean FASTAPI_BREAKER_STRICT?)"),
        ("FASTAPI_BREAKER_DEFAULTS__TIMOUT", " (did you mean FASTAPI_BREAKER_DEFAULTS__TIMEOUT?)"),
        ("FASTAPI_BREAKER_DEFAULTS_TIMEOUT", " (did you mean FASTAPI_BREAKER_DEFAULTS__TIMEOUT?)"),
        (
            "FASTAPI_BREAKER_BREAKERS__AuthService__RESET_TIMOUT",
            " (did you mean FASTAPI_BREAKER_BREAKERS__AuthService__RESET_TIMEOUT?)",
        ),
        (
            "FASTAPI_BREAKER_BREAKERS__AuthService__TIMEOUT__X",
            " (did you mean FASTAPI_BREAKER_BREAKERS__AuthService__TIMEOUT?)",
        ),
        ("FASTAPI_BREAKER_TOTALLY_UNRELATED", ""),
    ],
)
def test_an_unknown_variable_fails_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, hint: str
) -> None:
    monkeypatch.setenv("FASTAPI_BREAKER_STRICT", "true")
    monkeypatch.setenv(variable, "5")

    with pytest.raises(BreakerSettingsError) as caught:
        registry_from_settings()

    assert str(caught.value) == (
        f"invalid circuit breaker settings: unknown variable {variable}{hint}; "
        f"the variables are {VARIABLES}"
    )


def test_every_unknown_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_BREAKER_STRCT", "true")
    monkeypatch.setenv("FASTAPI_BREAKER_DEFAULTS__TIMOUT", "5")

    with pytest.raises(BreakerSettingsError) as caught:
        RegistrySettings()

    assert str(caught.value) == (
        "invalid circuit breaker settings: unknown variables "
        "FASTAPI_BREAKER_DEFAULTS__TIMOUT (did you mean FASTAPI_BREAKER_DEFAULTS__TIMEOUT?), "
        "FASTAPI_BREAKER_STRCT (did you mean FASTAPI_BREAKER_STRICT?); "
        f"the variables are {VARIABLES}"
    )


def test_variables_without_the_prefix_are_not_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_BREAKERS", "x")  # no "_" after the prefix's words
    monkeypatch.setenv("OTHER_APP_TIMEOUT", "x")

    assert registry_from_settings().configured == frozenset()


# ---------------------------------------------------------------- numbers are numbers

NUMBER_OPTIONS = [
    ("timeout", "number"),
    ("reset_timeout", "number"),
    ("error_threshold_percentage", "number"),
    ("rolling_count_timeout", "number"),
    ("rolling_count_buckets", "integer"),
    ("volume_threshold", "integer"),
    ("capacity", "integer"),
    ("half_open_max_calls", "integer"),
    ("half_open_timeout", "number"),
]


@pytest.mark.parametrize(("option", "kind"), NUMBER_OPTIONS)
@pytest.mark.parametrize("flag", [True, False])
def test_a_boolean_is_not_a_number_in_a_mapping(option: str, kind: str, flag: bool) -> None:
    with pytest.raises(BreakerSettingsError) as caught:
        registry_from_settings({"breakers": {"AuthService": {option: flag}}})

    assert str(caught.value) == (
        "invalid circuit breaker settings (1 problem):\n"
        f"  breakers.AuthService.{option}: Input should be a valid {kind} (got {flag})"
    )


def test_a_boolean_is_not_a_number_in_json_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FASTAPI_BREAKER_BREAKERS", '{"AuthService": {"timeout": true}}')
    monkeypatch.setenv("FASTAPI_BREAKER_DEFAULTS", '{"capacity": false}')

    with pytest.raises(BreakerSettingsError) as caught:
        registry_from_settings()

    assert str(caught.value) == (
        "invalid circuit breaker settings (2 problems):\n"
        "  defaults.capacity: Input should be a valid integer (got False)\n"
        "  breakers.AuthService.timeout: Input should be a valid number (got True)"
    )


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        (
            {"defaults": {"timeout": "5"}},
            "defaults.timeout: Input should be a valid number (got '5')",
        ),
        (
            {"defaults": {"capacity": 2.0}},
            "defaults.capacity: Input should be a valid integer (got 2.0)",
        ),
        ({"max_breakers": True}, "max_breakers: Input should be a valid integer (got True)"),
    ],
)
def test_a_mapping_takes_numbers_as_numbers_only(settings: dict[str, object], problem: str) -> None:
    with pytest.raises(BreakerSettingsError) as caught:
        registry_from_settings(settings)

    assert str(caught.value).splitlines() == [
        "invalid circuit breaker settings (1 problem):",
        f"  {problem}",
    ]


def test_per_option_variables_are_read_as_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_BREAKER_DEFAULTS__TIMEOUT", "2.5")
    monkeypatch.setenv("FASTAPI_BREAKER_DEFAULTS__CAPACITY", " 3 ")
    monkeypatch.setenv("FASTAPI_BREAKER_BREAKERS__AuthService__RESET_TIMEOUT", "20")
    monkeypatch.setenv("FASTAPI_BREAKER_BREAKERS__AuthService__ENABLED", "false")
    monkeypatch.setenv("FASTAPI_BREAKER_MAX_BREAKERS", "50")

    registry = registry_from_settings()

    auth = registry.get("AuthService").options
    assert (auth.timeout, auth.capacity, auth.reset_timeout, auth.enabled) == (2.5, 3, 20.0, False)
    assert registry.max_breakers == 50


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("true", "defaults.timeout: Input should be a valid number (got 'true')"),
        ("nan", "defaults.timeout: Input should be a finite number (got nan)"),
        ("5s", "defaults.timeout: Input should be a valid number (got '5s')"),
        ("", "defaults.timeout: Input should be a valid number (got '')"),
    ],
)
def test_a_per_option_variable_that_is_no_number_is_refused(
    monkeypatch: pytest.MonkeyPatch, text: str, problem: str
) -> None:
    monkeypatch.setenv("FASTAPI_BREAKER_DEFAULTS__TIMEOUT", text)

    with pytest.raises(BreakerSettingsError) as caught:
        registry_from_settings()

    assert str(caught.value).splitlines() == [
        "invalid circuit breaker settings (1 problem):",
        f"  {problem}",
    ]


# ---------------------------------------------------------------- the same ranges as the options


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"timeout": 31_536_001}, "timeout: Input should be less than or equal to 31536000"),
        (
            {"rolling_count_buckets": 1001},
            "rolling_count_buckets: Input should be less than or equal to 1000",
        ),
        ({"capacity": 1_000_001}, "capacity: Input should be less than or equal to 1000000"),
        (
            {"volume_threshold": 10**5000},
            "volume_threshold: Input should be less than or equal to 1000000 "
            "(got an integer of 16610 bits)",
        ),
    ],
)
def test_settings_check_the_upper_bounds_of_the_options(
    options: dict[str, object], problem: str
) -> None:
    with pytest.raises(BreakerSettingsError) as caught:
        registry_from_settings({"defaults": options})

    assert str(caught.value).splitlines()[1].startswith(f"  defaults.{problem}")


def test_an_error_of_the_registry_is_a_settings_error() -> None:
    # The bucket width needs two options together, and the registry's bound the names: checked
    # when the registry is built, reported as a settings error all the same.
    with pytest.raises(BreakerSettingsError) as caught:
        registry_from_settings(
            {"breakers": {"A": {"rolling_count_timeout": 0.5, "rolling_count_buckets": 1000}}}
        )

    assert str(caught.value) == (
        "invalid circuit breaker settings: breaker 'A': rolling_count_timeout / "
        "rolling_count_buckets (the bucket width) must be at least 0.001 seconds, got 0.5 / 1000"
    )


def test_max_breakers_is_a_setting() -> None:
    assert registry_from_settings({}).max_breakers == DEFAULT_MAX_BREAKERS
    assert registry_from_settings({"max_breakers": 5}).max_breakers == 5
    assert registry_from_settings({"max_breakers": None}).max_breakers is None
    with pytest.raises(BreakerSettingsError) as caught:
        registry_from_settings({"max_breakers": 1, "breakers": {"A": {}, "B": {}}})
    assert str(caught.value) == (
        "invalid circuit breaker settings: max_breakers must be an integer >= 2 (the number of "
        "configured breakers) or None, got 1"
    )


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    "settings",
    [{"breakers": {"": {"timeout": 1}}}, {"breakers": {"A": {}, "": {}}}],
)
def test_an_empty_breaker_name_is_a_settings_error(settings: dict[str, object]) -> None:
    with pytest.raises(BreakerSettingsError) as caught:
        registry_from_settings(settings)

    assert str(caught.value) == (
        "invalid circuit breaker settings (1 problem):\n"
        "  breakers: a breaker name must be a non-empty string"
    )


def test_an_empty_breaker_name_in_the_environment_is_a_settings_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FASTAPI_BREAKER_BREAKERS____TIMEOUT", "5")

    with pytest.raises(BreakerSettingsError) as caught:
        registry_from_settings()

    assert str(caught.value) == (
        "invalid circuit breaker settings: FASTAPI_BREAKER_BREAKERS____TIMEOUT names no breaker: "
        "write FASTAPI_BREAKER_BREAKERS__<name>__<option>"
    )


# ---------------------------------------------------------------- .env files


def write_env(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".env"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_dotenv_file_keeps_breaker_names_as_written(tmp_path: Path) -> None:
    path = write_env(
        tmp_path,
        "# shared with the rest of the app\n"
        "DATABASE_URL=postgres://db/app\n"
        "FASTAPI_BREAKER_STRICT=true\n"
        "FASTAPI_BREAKER_BREAKERS__AuthService__TIMEOUT=5\n"
        "fastapi_breaker_breakers__Billing__capacity=3\n",
    )

    registry = registry_from_settings(RegistrySettings(_env_file=path))

    assert registry.strict is True
    assert registry.configured == frozenset({"AuthService", "Billing"})
    assert registry.get("AuthService").options.timeout == 5.0
    assert registry.get("Billing").options.capacity == 3


def test_the_environment_overrides_the_dotenv_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_env(
        tmp_path,
        "FASTAPI_BREAKER_BREAKERS__AuthService__TIMEOUT=5\n"
        "FASTAPI_BREAKER_BREAKERS__AuthService__CAPACITY=3\n",
    )
    monkeypatch.setenv("FASTAPI_BREAKER_BREAKERS__AuthService__TIMEOUT", "6")

    options = registry_from_settings(RegistrySettings(_env_file=path)).get("AuthService").options

    assert (options.timeout, options.capacity) == (6.0, 3)


def test_a_dotenv_file_from_the_model_config(tmp_path: Path) -> None:
    path = write_env(tmp_path, "FASTAPI_BREAKER_BREAKERS__AuthService__TIMEOUT=4\n")

    class AppSettings(RegistrySettings):
        model_config = SettingsConfigDict(env_file=path)

    registry = registry_from_settings(AppSettings())

    assert registry.configured == frozenset({"AuthService"})
    assert registry.get("AuthService").options.timeout == 4.0


def test_an_unknown_variable_in_a_dotenv_file_is_named(tmp_path: Path) -> None:
    path = write_env(tmp_path, "FASTAPI_BREAKER_STRCT=true\n")

    with pytest.raises(BreakerSettingsError) as caught:
        RegistrySettings(_env_file=path)

    assert str(caught.value) == (
        "invalid circuit breaker settings: unknown variable FASTAPI_BREAKER_STRCT "
        f"(did you mean FASTAPI_BREAKER_STRICT?) in {path}; the variables are {VARIABLES}"
    )


def test_a_name_spelled_two_ways_across_dotenv_and_environment_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_env(tmp_path, "FASTAPI_BREAKER_BREAKERS__AuthService__TIMEOUT=5\n")
    monkeypatch.setenv("FASTAPI_BREAKER_BREAKERS", '{"authservice": {"capacity": 2}}')

    with pytest.raises(BreakerSettingsError) as caught:
        RegistrySettings(_env_file=path)

    assert str(caught.value) == (
        "one breaker is spelled in several ways in the environment: AuthService, authservice; "
        "breaker names are case-sensitive, so write each name one way"
    )


def test_a_missing_dotenv_file_is_skipped_as_pydantic_settings_does(tmp_path: Path) -> None:
    registry = registry_from_settings(RegistrySettings(_env_file=tmp_path / "absent.env"))

    assert registry.configured == frozenset()


# ---------------------------------------------------------------- a fleet through Redis


def test_a_redis_url_and_namespace_give_the_registry_a_redis_coordinator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FASTAPI_BREAKER_REDIS_URL", "rediss://app:secret@redis.internal:6380/2")
    monkeypatch.setenv("FASTAPI_BREAKER_REDIS_NAMESPACE", "user-service")
    registry = registry_from_settings()
    coordinator = registry.coordinator
    assert type(coordinator).__name__ == "RedisCoordinator"
    assert coordinator.namespace == "user-service"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"redis_url": "redis://127.0.0.1:6379/0"},
            "redis_url needs redis_namespace, this app's name in Redis",
        ),
        ({"redis_namespace": "user-service"}, "redis_namespace is set but redis_url is not"),
        ({"redis_url": "http://127.0.0.1", "redis_namespace": "x"}, "redis_url"),
        ({"redis_url": "redis://127.0.0.1", "redis_namespace": ""}, "redis_namespace"),
    ],
)
def test_redis_settings_must_come_together_and_be_well_formed(
    given: dict[str, str], message: str
) -> None:
    with pytest.raises(BreakerSettingsError, match=re.escape(message)):
        registry_from_settings(given)


def test_without_a_redis_url_there_is_no_coordinator() -> None:
    assert registry_from_settings({}).coordinator is None


def test_a_bad_redis_url_is_refused_without_echoing_its_password() -> None:
    with pytest.raises(BreakerSettingsError) as refused:
        registry_from_settings({"redis_url": "http://app:s3cret@redis", "redis_namespace": "x"})
    assert "redis_url" in str(refused.value)
    assert "s3cret" not in str(refused.value)


def test_a_lone_redis_url_is_refused_with_one_prefix() -> None:
    with pytest.raises(BreakerSettingsError) as refused:
        registry_from_settings({"redis_url": "redis://127.0.0.1:6379/0"})
    assert str(refused.value).count("invalid circuit breaker settings") == 1


ENCODE = (
    "percent-encode the characters of the user name and password that a URL reserves: "
    "'#' as %23, '/' as %2F, '?' as %3F, '@' as %40"
)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://app:Pa55#s3cret@redis:6379/0", f"url's host and port cannot be read: {ENCODE}"),
        ("redis://app:Pa55/s3cret@redis:6379/0", f"url's host and port cannot be read: {ENCODE}"),
        ("redis://app:Pa55?s3cret@redis:6379/0", f"url's host and port cannot be read: {ENCODE}"),
        (
            "redis://app:Pa55s3cret@redis:6379/zero",
            "url's database (its path) must be a whole number, as in redis://host:6379/0, "
            "or absent (0)",
        ),
    ],
)
def test_a_redis_url_in_a_dotenv_file_is_checked_when_read_naming_the_variable(
    tmp_path: Path, url: str, problem: str
) -> None:
    path = write_env(
        tmp_path, f"FASTAPI_BREAKER_REDIS_URL={url}\nFASTAPI_BREAKER_REDIS_NAMESPACE=users\n"
    )
    with pytest.raises(BreakerSettingsError) as refused:
        RegistrySettings(_env_file=path)
    assert str(refused.value) == (
        "invalid circuit breaker settings (1 problem):\n"
        f"  redis_url (FASTAPI_BREAKER_REDIS_URL): {problem}"
    )
    # Nothing of the password, in the message or in what the traceback would print with it.
    assert refused.value.__cause__ is None
    assert refused.value.__suppress_context__
    assert "Pa55" not in str(refused.value)
    assert "s3cret" not in str(refused.value)


def test_pydantics_own_error_never_reaches_the_app_with_a_password(tmp_path: Path) -> None:
    path = write_env(tmp_path, "FASTAPI_BREAKER_REDIS_URL=http://app:s3cret@redis:6379/0\n")
    with pytest.raises(BreakerSettingsError) as refused:
        RegistrySettings(_env_file=path)
    assert type(refused.value) is BreakerSettingsError
    assert "redis_url (FASTAPI_BREAKER_REDIS_URL): String should match pattern" in str(
        refused.value
    )
    assert "s3cret" not in str(refused.value)
    assert refused.value.__suppress_context__


def test_a_dotenv_line_without_a_value_is_named(tmp_path: Path) -> None:
    path = write_env(tmp_path, "FASTAPI_BREAKER_STRCT\nOTHER_APP_SETTING\n")
    with pytest.raises(BreakerSettingsError) as refused:
        RegistrySettings(_env_file=path)
    assert str(refused.value) == (
        "invalid circuit breaker settings: FASTAPI_BREAKER_STRCT (did you mean "
        f"FASTAPI_BREAKER_STRICT?) in {path} has no value: write FASTAPI_BREAKER_STRCT=<value>, "
        "or remove the line"
    )


def test_max_name_length_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_BREAKER_MAX_NAME_LENGTH", "12")
    registry = registry_from_settings()
    registry.get("x" * 12)
    with pytest.raises(NameTooLongError):
        registry.get("x" * 13)
    monkeypatch.setenv("FASTAPI_BREAKER_MAX_NAME_LENGTH", "0")
    expected = (
        "invalid circuit breaker settings (1 problem):\n"
        "  max_name_length (FASTAPI_BREAKER_MAX_NAME_LENGTH): Input should be greater than or "
        "equal to 1 (got 0)"
    )
    with pytest.raises(BreakerSettingsError, match=f"^{re.escape(expected)}$"):
        registry_from_settings()
