"""The example's User Service reads its breakers the documented way: `FASTAPI_BREAKER_*`
variables through `registry_from_settings()`, over the design note's settings in
`example_app/user_service.env`; `example_app.user_service:app` is what uvicorn serves."""

from __future__ import annotations

import dataclasses
import logging
import os

import pytest
from fastapi import FastAPI

from example_app import fleet_demo, user_service
from example_app.user_service import AuthSettings, app_from_environment, registry_from_environment
from fastapi_breaker import BreakerRegistry
from fastapi_breaker.redis import RedisCoordinator
from fastapi_breaker.settings import BreakerSettingsError


@pytest.fixture(autouse=True)
def no_breaker_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in list(os.environ):
        if variable.upper().startswith("FASTAPI_BREAKER_") or variable == "EXAMPLE_AUTH_URL":
            monkeypatch.delenv(variable)


def auth_service_options(registry: BreakerRegistry) -> dict[str, object]:
    options = registry.get("AuthService").options
    return {field.name: getattr(options, field.name) for field in dataclasses.fields(AuthSettings)}


def test_the_settings_file_holds_the_design_note_settings() -> None:
    registry = registry_from_environment()
    assert auth_service_options(registry) == dataclasses.asdict(AuthSettings())
    assert registry.strict
    assert registry.coordinator is None


def test_a_variable_in_the_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_BREAKER_BREAKERS__AuthService__RESET_TIMEOUT", "2")
    app = app_from_environment()
    registry: BreakerRegistry = app.state.breaker_registry
    assert auth_service_options(registry) == {
        **dataclasses.asdict(AuthSettings()),
        "reset_timeout": 2.0,
    }


def test_a_misspelt_variable_stops_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_BREAKER_STRCT", "false")
    with pytest.raises(BreakerSettingsError, match=r"unknown variable FASTAPI_BREAKER_STRCT \("):
        app_from_environment()


def test_a_redis_url_and_namespace_share_the_breakers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_BREAKER_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("FASTAPI_BREAKER_REDIS_NAMESPACE", "user-service")
    coordinator = registry_from_environment().coordinator
    assert isinstance(coordinator, RedisCoordinator)
    assert coordinator.namespace == "user-service"


def test_app_is_the_user_service_made_from_the_environment_on_first_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(user_service, "_app", None)
    monkeypatch.setenv("FASTAPI_BREAKER_BREAKERS__AuthService__TIMEOUT", "0.5")
    app = user_service.app
    assert isinstance(app, FastAPI)
    assert user_service.app is app  # one per process
    assert app.state.breaker_registry.get("AuthService").options.timeout == 0.5
    with pytest.raises(AttributeError, match="has no attribute 'apps'"):
        user_service.apps  # noqa: B018


def test_the_fleet_demo_workers_leave_the_breaker_logger_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logger = logging.getLogger("fastapi_breaker")
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    for variable, value in fleet_demo.worker_environment("http://127.0.0.1:1", None).items():
        monkeypatch.setenv(variable, value)
    app = fleet_demo.worker_app()
    assert logger.level == logging.NOTSET
    assert logger.getEffectiveLevel() == logging.WARNING  # its warnings are seen
    options = app.state.breaker_registry.get("AuthService").options
    assert (options.timeout, options.reset_timeout) == (0.5, 2.0)
