"""Breaker options from environment variables or a mapping, validated by pydantic.

    FASTAPI_BREAKER_STRICT=true
    FASTAPI_BREAKER_DEFAULTS__TIMEOUT=5
    FASTAPI_BREAKER_BREAKERS='{"AuthService": {"timeout": 5, "reset_timeout": 20}}'

    registry = registry_from_settings()              # reads the environment
    registry = registry_from_settings({"breakers": {"AuthService": {"timeout": 5}}})

Per-breaker variables also work, `FASTAPI_BREAKER_BREAKERS__AuthService__TIMEOUT=5`, and keep
the name's case as written. A per-breaker entry overrides the defaults only in the keys it sets.
Set `timeout` or `half_open_timeout` to `null` to disable them. `error_filter` is code, not
configuration: pass it to `BreakerRegistry` directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any

try:
    from pydantic import BaseModel, ConfigDict, Field, ValidationError
    from pydantic.fields import FieldInfo
    from pydantic_settings import (
        BaseSettings,
        EnvSettingsSource,
        PydanticBaseSettingsSource,
        SettingsConfigDict,
    )
    from pydantic_settings import SettingsError as _PydanticSettingsError
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(
        "fastapi_breaker.settings needs pydantic-settings: pip install 'fastapi_breaker[fastapi]'"
    ) from exc

from ._clock import Clock
from ._registry import BreakerRegistry

__all__ = ["BreakerSettings", "BreakerSettingsError", "RegistrySettings", "registry_from_settings"]

# The same ranges that BreakerOptions checks, as constraints, so that OpenAPI-style tooling and
# pydantic's errors state them. Infinity and NaN are refused by the model config.
_Seconds = Annotated[float, Field(gt=0)]
_Percent = Annotated[float, Field(ge=0, le=100)]


class BreakerSettingsError(ValueError):
    """The settings are invalid; the message lists every problem as `where.field: what`."""


class BreakerSettings(BaseModel):
    """The options of one breaker: `BreakerOptions` without `error_filter`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    timeout: _Seconds | None = 10.0
    reset_timeout: _Seconds = 30.0
    error_threshold_percentage: _Percent = 50.0
    rolling_count_timeout: _Seconds = 10.0
    rolling_count_buckets: Annotated[int, Field(ge=1)] = 10
    volume_threshold: Annotated[int, Field(ge=0)] = 0
    allow_warm_up: bool = False
    capacity: Annotated[int, Field(ge=1)] | None = None
    enabled: bool = True
    half_open_max_calls: Annotated[int, Field(ge=1)] = 1
    half_open_timeout: _Seconds | None = None


class _RegistryFields(BaseModel):
    # What a mapping is checked against: the fields of RegistrySettings, without the environment.
    model_config = ConfigDict(extra="forbid")

    defaults: BreakerSettings = Field(default_factory=BreakerSettings)
    breakers: dict[str, BreakerSettings] = Field(default_factory=dict)
    strict: bool = False


class RegistrySettings(BaseSettings):
    """A registry's configuration, read from `FASTAPI_BREAKER_*` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="FASTAPI_BREAKER_",
        env_nested_delimiter="__",
        env_parse_none_str="null",
        extra="forbid",
    )

    defaults: BreakerSettings = Field(default_factory=BreakerSettings)
    breakers: dict[str, BreakerSettings] = Field(default_factory=dict)
    strict: bool = False

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if type(env_settings) is EnvSettingsSource:
            env_settings = _NameKeepingEnvSource(
                settings_cls,
                case_sensitive=env_settings.case_sensitive,
                env_prefix=env_settings.env_prefix,
                env_nested_delimiter=env_settings.env_nested_delimiter,
                env_ignore_empty=env_settings.env_ignore_empty,
                env_parse_none_str=env_settings.env_parse_none_str,
                env_parse_enums=env_settings.env_parse_enums,
            )
        return init_settings, env_settings, dotenv_settings, file_secret_settings


class _NameKeepingEnvSource(EnvSettingsSource):
    """Reads `..._BREAKERS__<name>__...` variables without lower-casing the breaker's name.

    pydantic-settings matches variable names case-insensitively by lower-casing them all, which
    would turn `AuthService` into `authservice`: a breaker the app never asks for.
    """

    def explode_env_vars(
        self, field_name: str, field: FieldInfo, env_vars: Mapping[str, str | None]
    ) -> dict[str, Any]:
        exploded = super().explode_env_vars(field_name, field, env_vars)
        if field_name != "breakers" or self.case_sensitive or not self.env_nested_delimiter:
            return exploded
        head = f"{self.env_prefix}{field_name}{self.env_nested_delimiter}".lower()
        spellings: dict[str, set[str]] = {}
        for variable in os.environ:
            if variable.lower().startswith(head):
                name = variable[len(head) :].split(self.env_nested_delimiter, 1)[0]
                spellings.setdefault(name.lower(), set()).add(name)
        kept: dict[str, Any] = {}
        for lowered, value in exploded.items():
            names = spellings.get(lowered, {lowered})
            if len(names) > 1:
                listed = ", ".join(sorted(names))
                raise BreakerSettingsError(
                    f"one breaker is spelled in several ways in the environment: {listed}; "
                    "breaker names are case-sensitive, so write each name one way"
                )
            kept[names.pop()] = value
        return kept


def registry_from_settings(
    source: Mapping[str, Any] | RegistrySettings | None = None, *, clock: Clock | None = None
) -> BreakerRegistry:
    """A `BreakerRegistry` from settings: the environment (None), a mapping, or `RegistrySettings`.

    Raises `BreakerSettingsError` (a `ValueError`) naming each breaker and field that is wrong.
    """
    settings: RegistrySettings | _RegistryFields
    try:
        if source is None:
            settings = RegistrySettings()
        elif isinstance(source, RegistrySettings):
            settings = source
        elif isinstance(source, Mapping):
            settings = _RegistryFields.model_validate(source)
        else:
            raise TypeError(
                f"settings must be a mapping, a RegistrySettings or None, got {source!r}"
            )
    except ValidationError as exc:
        raise BreakerSettingsError(_describe(exc)) from exc
    except _PydanticSettingsError as exc:
        if isinstance(exc.__cause__, BreakerSettingsError):
            raise exc.__cause__ from None
        # A variable that is not valid JSON, say; the cause holds the parser's own words.
        cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
        raise BreakerSettingsError(f"invalid circuit breaker settings: {exc}{cause}") from exc
    return BreakerRegistry(
        # Only the keys that were set, so that BreakerOptions stays the one source of defaults
        # and a breaker's own entry overrides the defaults in exactly the keys it names.
        settings.defaults.model_dump(exclude_unset=True),
        {
            name: options.model_dump(exclude_unset=True)
            for name, options in settings.breakers.items()
        },
        strict=settings.strict,
        clock=clock,
    )


def _describe(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    problems = "problem" if len(errors) == 1 else "problems"
    lines = [f"invalid circuit breaker settings ({len(errors)} {problems}):"]
    for error in errors:
        loc = error["loc"]
        where = ".".join(str(part) for part in loc) or "settings"
        line = f"  {where}: {error['msg']} (got {error['input']!r})"
        if error["type"] == "extra_forbidden":
            # Most likely a typo: say what would have worked.
            model = _RegistryFields if len(loc) == 1 else BreakerSettings
            line += f"; valid keys are: {', '.join(model.model_fields)}"
        lines.append(line)
    return "\n".join(lines)
