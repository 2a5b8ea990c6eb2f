"""Breaker options from environment variables, `.env` files or a mapping, validated by pydantic.

    FASTAPI_BREAKER_STRICT=true
    FASTAPI_BREAKER_DEFAULTS__TIMEOUT=5
    FASTAPI_BREAKER_BREAKERS='{"AuthService": {"timeout": 5, "reset_timeout": 20}}'

    registry = registry_from_settings()              # reads the environment
    registry = registry_from_settings(RegistrySettings(_env_file=".env"))  # and a .env file
    registry = registry_from_settings({"breakers": {"AuthService": {"timeout": 5}}})

Per-breaker variables also work, `FASTAPI_BREAKER_BREAKERS__AuthService__TIMEOUT=5`, and keep
the name's case as written, in the environment and in `.env` files alike. A per-breaker entry
overrides the defaults only in the keys it sets. Set `timeout` or `half_open_timeout` to `null`
to disable them. `error_filter` is code, not configuration: pass it to `BreakerRegistry`.

Nothing is silently ignored: a `FASTAPI_BREAKER_*` variable that means nothing (a typo such as
`FASTAPI_BREAKER_STRCT`) fails, naming it; a number must be a number (`true` is not 1).
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

try:
    from dotenv import dotenv_values  # pydantic-settings' own dependency
    from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, ValidationError
    from pydantic.fields import FieldInfo
    from pydantic_core import PydanticCustomError
    from pydantic_settings import (
        BaseSettings,
        PydanticBaseSettingsSource,
        SettingsConfigDict,
    )
    from pydantic_settings import SettingsError as _PydanticSettingsError
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(
        "fastapi_breaker.settings needs pydantic-settings: pip install 'fastapi_breaker[fastapi]'"
    ) from exc

from ._clock import Clock
from ._options import MAX_BUCKETS, MAX_COUNT, MAX_SECONDS, BreakerOptions, shown
from ._redis_url import check_redis_url
from ._registry import DEFAULT_MAX_BREAKERS, DEFAULT_MAX_NAME_LENGTH, BreakerRegistry

__all__ = ["BreakerSettings", "BreakerSettingsError", "RegistrySettings", "registry_from_settings"]

# The same ranges that BreakerOptions checks, as constraints, so that pydantic's errors state
# them and list every problem at once. Strict: a bool is not a number (`timeout: true` is not
# 1 second), nor is a string; an int is a valid float. Infinity and NaN are refused by the
# model config. Text from environment variables is turned into numbers before validation.
_Seconds = Annotated[float, Strict(), Field(gt=0, le=MAX_SECONDS)]
_Percent = Annotated[float, Strict(), Field(ge=0, le=100)]
_Buckets = Annotated[int, Strict(), Field(ge=1, le=MAX_BUCKETS)]
_Count = Annotated[int, Strict(), Field(ge=1, le=MAX_COUNT)]
_Volume = Annotated[int, Strict(), Field(ge=0, le=MAX_COUNT)]
_MaxBreakers = Annotated[int, Strict(), Field(ge=1)]
_MaxNameLength = Annotated[int, Strict(), Field(ge=1)]


def _readable_url(url: str) -> str:
    try:
        check_redis_url(url)
    except ValueError as exc:
        # Its message never holds the URL; pydantic's own text would not be shown either.
        raise PydanticCustomError("redis_url", str(exc)) from None
    return url


# A Redis URL (redis://, rediss:// with TLS, or a unix socket), user and password included, that
# redis-py reads as written: checked when the settings are read, not when the app starts.
_RedisUrl = Annotated[
    str, Field(pattern=r"^(redis|rediss|unix)://", min_length=9), AfterValidator(_readable_url)
]
_Namespace = Annotated[str, Field(min_length=1, max_length=200)]

# BreakerOptions stays the one source of defaults.
_DEFAULT = BreakerOptions()


class BreakerSettingsError(ValueError):
    """The settings are invalid; the message lists every problem as `where.field: what`."""


class BreakerSettings(BaseModel):
    """The options of one breaker: `BreakerOptions` without `error_filter`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    timeout: _Seconds | None = _DEFAULT.timeout
    reset_timeout: _Seconds = _DEFAULT.reset_timeout
    error_threshold_percentage: _Percent = _DEFAULT.error_threshold_percentage
    rolling_count_timeout: _Seconds = _DEFAULT.rolling_count_timeout
    rolling_count_buckets: _Buckets = _DEFAULT.rolling_count_buckets
    volume_threshold: _Volume = _DEFAULT.volume_threshold
    allow_warm_up: bool = _DEFAULT.allow_warm_up
    capacity: _Count | None = _DEFAULT.capacity
    enabled: bool = _DEFAULT.enabled
    half_open_max_calls: _Count = _DEFAULT.half_open_max_calls
    half_open_timeout: _Seconds | None = _DEFAULT.half_open_timeout


def _named(breakers: dict[str, BreakerSettings]) -> dict[str, BreakerSettings]:
    if "" in breakers:
        # The registry would refuse it later with a bare ValueError; say it here, with the rest.
        raise PydanticCustomError("breaker_name", "a breaker name must be a non-empty string")
    return breakers


_Breakers = Annotated[dict[str, BreakerSettings], AfterValidator(_named)]


class _RegistryFields(BaseModel):
    # What a mapping is checked against: the fields of RegistrySettings, without the environment.
    model_config = ConfigDict(extra="forbid")

    defaults: BreakerSettings = Field(default_factory=BreakerSettings)
    breakers: _Breakers = Field(default_factory=dict)
    strict: bool = False
    max_breakers: _MaxBreakers | None = DEFAULT_MAX_BREAKERS
    max_name_length: _MaxNameLength | None = DEFAULT_MAX_NAME_LENGTH
    redis_url: _RedisUrl | None = None
    redis_namespace: _Namespace | None = None


class RegistrySettings(BaseSettings):
    """A registry's configuration, read from `FASTAPI_BREAKER_*` variables.

    From the environment, and from `.env` files given as pydantic-settings takes them
    (`RegistrySettings(_env_file=".env")`, or `env_file` in a subclass's `model_config`); the
    environment wins. Only the variables with the prefix are read, so a `.env` file may hold
    the rest of the app's settings too.
    """

    model_config = SettingsConfigDict(
        env_prefix="FASTAPI_BREAKER_",
        env_nested_delimiter="__",
        env_parse_none_str="null",
        extra="forbid",
    )

    defaults: BreakerSettings = Field(default_factory=BreakerSettings)
    breakers: _Breakers = Field(default_factory=dict)
    strict: bool = False
    max_breakers: _MaxBreakers | None = DEFAULT_MAX_BREAKERS
    max_name_length: _MaxNameLength | None = DEFAULT_MAX_NAME_LENGTH
    # A fleet coordinator through Redis (the `redis` extra): the URL, and this app's namespace.
    redis_url: _RedisUrl | None = None
    redis_namespace: _Namespace | None = None

    def __init__(self, **values: Any) -> None:
        # Built by the app itself (`RegistrySettings(_env_file=".env")`), not only inside
        # registry_from_settings(): pydantic's ValidationError must not reach the app either,
        # since its text quotes each bad value, a Redis URL's password included.
        try:
            super().__init__(**values)
        except ValidationError as exc:
            prefix = self.model_config.get("env_prefix") or ""
            raise BreakerSettingsError(_describe(exc, prefix)) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Our one source replaces pydantic-settings' environment and dotenv sources: they
        # lower-case every variable name (a breaker called AuthService would become
        # authservice) and pass over variables that match no field (a typo goes unnoticed).
        config = settings_cls.model_config
        variables = _Variables(
            settings_cls,
            prefix=getattr(env_settings, "env_prefix", None) or config.get("env_prefix") or "",
            env_files=getattr(dotenv_settings, "env_file", None),
            encoding=getattr(dotenv_settings, "env_file_encoding", None),
        )
        return init_settings, variables, file_secret_settings


# The fields set by one variable each: <prefix>FIELD=...
_WHOLE_FIELDS = (
    "strict",
    "max_breakers",
    "max_name_length",
    "redis_url",
    "redis_namespace",
    "defaults",
    "breakers",
)

# What each option is, for reading it from text.
_FLAGS = frozenset(
    name for name, field in BreakerSettings.model_fields.items() if field.annotation is bool
)
_OPTIONS = tuple(BreakerSettings.model_fields)
_DELIMITER = "__"
_NONE = "null"


class _Variables(PydanticBaseSettingsSource):
    """`<prefix>*` variables from `.env` files and the environment, breaker names as written.

    Their names are matched without regard to case, except a breaker's name. Each variable is
    one of: `<prefix>STRICT`, `<prefix>MAX_BREAKERS`, `<prefix>DEFAULTS` (JSON),
    `<prefix>DEFAULTS__<option>`, `<prefix>BREAKERS` (JSON), `<prefix>BREAKERS__<name>` (JSON)
    and `<prefix>BREAKERS__<name>__<option>`; any other with the prefix is an error.
    """

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        *,
        prefix: str,
        env_files: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None,
        encoding: str | None,
    ) -> None:
        super().__init__(settings_cls)
        self.prefix = prefix
        self.env_files = env_files
        self.encoding = encoding

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ reads every field at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        origins = [
            *((str(path), variables) for path, variables in self._dotenv()),
            ("", os.environ),
        ]
        unknown: list[str] = []
        spellings: dict[str, set[str]] = {}
        merged: dict[str, Any] = {}
        for where, variables in origins:
            data = self._read(variables, where, unknown, spellings)
            # The environment over the files, and a later file over an earlier one, key by key.
            merged = _merge(merged, data)
        if unknown:
            label = "unknown variable" if len(unknown) == 1 else "unknown variables"
            raise BreakerSettingsError(
                f"invalid circuit breaker settings: {label} {', '.join(sorted(unknown))}; "
                f"the variables are {', '.join(self._forms())}"
            )
        for names in spellings.values():
            if len(names) > 1:
                raise BreakerSettingsError(
                    "one breaker is spelled in several ways in the environment: "
                    f"{', '.join(sorted(names))}; breaker names are case-sensitive, so write "
                    "each name one way"
                )
        return merged

    def _dotenv(self) -> list[tuple[Path, Mapping[str, str | None]]]:
        files = self.env_files
        if files is None:
            return []
        paths = [files] if isinstance(files, str | os.PathLike) else list(files)
        found: list[tuple[Path, Mapping[str, str | None]]] = []
        for path in map(Path, paths):
            path = path.expanduser()
            # A missing file is skipped, as pydantic-settings does: .env is for development.
            if path.is_file():
                found.append((path, dotenv_values(path, encoding=self.encoding or "utf-8")))
        return found

    def _read(
        self,
        variables: Mapping[str, str | None],
        where: str,
        unknown: list[str],
        spellings: dict[str, set[str]],
    ) -> dict[str, Any]:
        head = self.prefix.lower()
        # Three layers, each over the one before: <prefix>FIELD=..., <prefix>BREAKERS__<name>=
        # JSON, and one option per variable, whatever their order in `variables`.
        whole: dict[str, Any] = {}
        named: dict[str, Any] = {}
        parts: dict[str, Any] = {}
        for variable, text in variables.items():
            if variable[: len(head)].lower() != head:
                continue
            if text is None:  # a .env line with no "=": a variable that sets nothing
                raise BreakerSettingsError(
                    f"invalid circuit breaker settings: {variable}{self._hint(variable)} in "
                    f"{where} has no value: write {variable}=<value>, or remove the line"
                )
            field, *rest = variable[len(head) :].split(_DELIMITER)
            field = field.lower()
            if field in _WHOLE_FIELDS and not rest:
                whole[field] = self._value(field, variable, text)
            elif field == "defaults" and len(rest) == 1 and rest[0].lower() in _OPTIONS:
                option = rest[0].lower()
                parts.setdefault("defaults", {})[option] = _option(option, text)
            elif field == "breakers" and (len(rest) == 1 or _is_option(rest)):
                name = rest[0]
                if not name:
                    raise BreakerSettingsError(
                        f"invalid circuit breaker settings: {variable} names no breaker: write "
                        f"{self.prefix}BREAKERS{_DELIMITER}<name>{_DELIMITER}<option>"
                    )
                spellings.setdefault(name.lower(), set()).add(name)
                if len(rest) == 1:
                    named.setdefault("breakers", {})[name] = _json(variable, text)
                else:
                    option = rest[1].lower()
                    entry = parts.setdefault("breakers", {}).setdefault(name, {})
                    entry[option] = _option(option, text)
            else:
                unknown.append(variable + self._hint(variable) + (f" in {where}" if where else ""))
        json_breakers = whole.get("breakers")
        if isinstance(json_breakers, dict):
            for name in json_breakers:
                if isinstance(name, str):
                    spellings.setdefault(name.lower(), set()).add(name)
        merged: dict[str, Any] = _merge(_merge(whole, named), parts)
        return merged

    def _value(self, field: str, variable: str, text: str) -> Any:
        if field in ("defaults", "breakers"):
            return _json(variable, text)
        if field in ("max_breakers", "max_name_length"):
            return None if text == _NONE else _number(text)
        return text  # strict: pydantic reads "true", "false", "1", "0", "yes", "no"...

    def _forms(self) -> list[str]:
        p, d = self.prefix, _DELIMITER
        return [
            f"{p}STRICT",
            f"{p}MAX_BREAKERS",
            f"{p}MAX_NAME_LENGTH",
            f"{p}REDIS_URL",
            f"{p}REDIS_NAMESPACE",
            f"{p}DEFAULTS",
            f"{p}DEFAULTS{d}<option>",
            f"{p}BREAKERS",
            f"{p}BREAKERS{d}<name>",
            f"{p}BREAKERS{d}<name>{d}<option>",
        ]

    def _hint(self, variable: str) -> str:
        """` (did you mean X?)` when a valid variable is close to `variable`."""
        p, d = self.prefix, _DELIMITER
        options = [option.upper() for option in _OPTIONS]
        candidates = [f"{p}{field.upper()}" for field in _WHOLE_FIELDS]
        candidates += [f"{p}DEFAULTS{d}{option}" for option in options]
        rest = variable[len(p) :].split(d)
        if len(rest) >= 3 and rest[0].lower() == "breakers":
            # Same breaker name, as written: only the option can be the typo.
            candidates += [f"{p}BREAKERS{d}{rest[1]}{d}{option}" for option in options]
        by_upper = {candidate.upper(): candidate for candidate in candidates}
        close = difflib.get_close_matches(variable.upper(), list(by_upper), n=1, cutoff=0.9)
        return f" (did you mean {by_upper[close[0]]}?)" if close else ""


def _is_option(rest: list[str]) -> bool:
    # BREAKERS__<name>__<option>: exactly a name and an option.
    return len(rest) == 2 and rest[1].lower() in _OPTIONS


def _option(option: str, text: str) -> Any:
    if text == _NONE:
        return None
    return text if option in _FLAGS else _number(text)


def _number(text: str) -> Any:
    """The number `text` spells, else `text` itself, for pydantic to refuse with its reason."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _json(variable: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise BreakerSettingsError(
            f"invalid circuit breaker settings: {variable} is not valid JSON: {exc}"
        ) from None


def _merge(base: Any, top: Any) -> Any:
    """`top` over `base`, key by key in nested dicts."""
    if not isinstance(base, dict) or not isinstance(top, dict):
        return top if top is not None or base is None else base
    merged = dict(base)
    for key, value in top.items():
        merged[key] = _merge(merged.get(key), value) if key in merged else value
    return merged


def registry_from_settings(
    source: Mapping[str, Any] | RegistrySettings | None = None, *, clock: Clock | None = None
) -> BreakerRegistry:
    """A `BreakerRegistry` from settings: the environment (None), a mapping, or `RegistrySettings`.

    Raises `BreakerSettingsError` (a `ValueError`) naming each breaker and field that is wrong,
    or the variable that means nothing.
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
        # Not chained: the ValidationError's text quotes each bad value, a password included.
        raise BreakerSettingsError(_describe(exc)) from None
    except _PydanticSettingsError as exc:
        if isinstance(exc.__cause__, BreakerSettingsError):
            raise exc.__cause__ from None
        # A secrets directory that cannot be read, say; the cause holds the reader's own words.
        cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
        raise BreakerSettingsError(f"invalid circuit breaker settings: {exc}{cause}") from exc
    coordinator = _coordinator(settings.redis_url, settings.redis_namespace)
    try:
        return BreakerRegistry(
            # Only the keys that were set, so that BreakerOptions stays the one source of
            # defaults and a breaker's own entry overrides the defaults in exactly its keys.
            settings.defaults.model_dump(exclude_unset=True),
            {
                name: options.model_dump(exclude_unset=True)
                for name, options in settings.breakers.items()
            },
            strict=settings.strict,
            clock=clock,
            max_breakers=settings.max_breakers,
            max_name_length=settings.max_name_length,
            coordinator=coordinator,
        )
    except ValueError as exc:
        # What needs several options together (the bucket width) or the names (max_breakers).
        raise BreakerSettingsError(f"invalid circuit breaker settings: {exc}") from exc


def _coordinator(url: str | None, namespace: str | None) -> Any:
    """A `RedisCoordinator` when a Redis URL is set, else None."""
    if url is None:
        if namespace is not None:
            raise BreakerSettingsError(
                "invalid circuit breaker settings: redis_namespace is set but redis_url is "
                "not: set FASTAPI_BREAKER_REDIS_URL too, or neither"
            )
        return None
    if namespace is None:
        raise BreakerSettingsError(
            "invalid circuit breaker settings: redis_url needs redis_namespace, this app's "
            "name in Redis (FASTAPI_BREAKER_REDIS_NAMESPACE=user-service, say)"
        )
    # Imported only when asked for: without the redis extra, its ImportError names the extra.
    from .redis import RedisCoordinator

    return RedisCoordinator(url, namespace=namespace)


def _describe(exc: ValidationError, prefix: str = "") -> str:
    """Every problem as `where: what (got value)`; `prefix`: the variables' (they are named)."""
    errors = exc.errors(include_url=False)
    problems = "problem" if len(errors) == 1 else "problems"
    lines = [f"invalid circuit breaker settings ({len(errors)} {problems}):"]
    for error in errors:
        loc = error["loc"]
        where = ".".join(str(part) for part in loc) or "settings"
        if prefix and loc and len(loc) == 1:
            where += f" ({prefix}{str(loc[0]).upper()})"
        line = f"  {where}: {error['msg']}"
        if loc and loc[0] == "redis_url":
            pass  # a URL may hold a password: never echoed
        elif error["type"] != "breaker_name":  # its input is the whole mapping of breakers
            line += f" (got {shown(error['input'])})"
        if error["type"] == "extra_forbidden":
            # Most likely a typo: say what would have worked.
            model = _RegistryFields if len(loc) == 1 else BreakerSettings
            line += f"; valid keys are: {', '.join(model.model_fields)}"
        lines.append(line)
    return "\n".join(lines)
