"""Health endpoints for dashboards and Kubernetes probes, built from a registry's breakers.

`health_router()` returns an `APIRouter` with three endpoints (prefix `/health` by default):

- `GET /health`: every breaker's state, stats and retry-after (and, when a coordinator shares
  it with a fleet, the fleet's state: the status then follows the worse of the two), and an
  overall status:

  - `healthy`: every breaker is closed (or none exists yet);
  - `degraded`: some breaker is open or half-open, but no *critical* breaker is open;
  - `unhealthy`: a critical breaker is open. A half-open critical breaker is only `degraded`:
    it is already letting a trial through.

  The HTTP status is 200 for `healthy` and `degraded`, 503 for `unhealthy`. This endpoint is for
  monitoring, not for probes: tools that only read the status code (uptime checks, load-balancer
  checks) should see the one case where the service cannot do its job, and an open breaker on
  an optional dependency is not that case, since its calls get fallbacks or fast 503s. The 503
  comes exactly when `/health/ready` fails, so the two never disagree.
- `GET /health/live`: always 200. It never looks at breakers: a downstream's outage is no
  reason to restart this process, and restarting every pod at once would make it worse.
- `GET /health/ready`: 503 only while a breaker named in `critical` is open, else 200. A shared
  downstream that is not critical must not fail readiness, or every pod leaves the Service at
  once. A critical breaker that was never used is closed.

Each endpoint answers HEAD too (same status and headers, no body), and every response, errors
raised by `authorize` included, carries `Cache-Control: no-store`: a cached health answer lies.

By default no endpoint names a breaker (`detail="never"`), as Spring Boot's actuator shows no
details by default: names and traffic describe internal services. A name is printed with each
lone surrogate written as the text `\\udXXX`, so that the body is always valid UTF-8.
"""

from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Literal, Protocol

try:
    from fastapi import APIRouter, Depends, HTTPException, Request, Response
    from fastapi.responses import JSONResponse
    from fastapi.routing import APIRoute
    from pydantic import BaseModel, Field
    from pydantic_core import to_json
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "fastapi_breaker.health needs FastAPI: pip install 'fastapi_breaker[fastapi]'"
    ) from exc

from ._breaker import CircuitBreaker
from ._names import printable_name
from ._registry import BreakerRegistry
from ._state import State
from .fastapi import _CRITICAL_ATTRIBUTE, get_registry

__all__ = [
    "BreakerHealth",
    "BreakerStatsModel",
    "HealthReport",
    "LivenessReport",
    "ReadinessReport",
    "health_router",
]

_DETAIL_MODES = ("always", "never", "authorized")
_NO_STORE = "no-store"


class BreakerStatsModel(BaseModel):
    """`Stats.to_dict()` of one breaker: its rolling window, as `/health` shows it."""

    fires: int
    successes: int
    failures: int
    rejects: int
    timeouts: int
    fallbacks: int
    semaphore_rejections: int
    error_percentage: float
    latency_mean: float = Field(description="Seconds.")
    percentiles: dict[str, float] = Field(
        description='Latency in seconds by percentile; the keys are "0.0", "0.25", ... "1.0".'
    )


class BreakerHealth(BaseModel):
    state: State
    stats: BreakerStatsModel
    retry_after: float | None = Field(
        description="Seconds until the breaker admits a call; null while closed."
    )


class HealthReport(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    details: dict[str, BreakerHealth] = Field(
        default_factory=dict,
        description="Each breaker created so far, by name. Left out when details are hidden.",
    )


class LivenessReport(BaseModel):
    status: Literal["alive"]


class ReadinessReport(BaseModel):
    status: Literal["ready", "not_ready"]
    critical: dict[str, State] = Field(
        default_factory=dict,
        description='The critical breakers\' states. Shown only with detail="always".',
    )


class _BreakerSource(Protocol):
    # What the router needs from a registry: `BreakerRegistry` has it.
    def breakers(self) -> Mapping[str, CircuitBreaker]: ...


class _HealthRoute(APIRoute):
    """Adds `Cache-Control: no-store` to every answer and drops the body of HEAD answers.

    Wrapping the route handler is FastAPI's documented hook, and it also sees the
    `HTTPException` that an `authorize` dependency raises.
    """

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def health_handler(request: Request) -> Response:
            try:
                response: Response = await handler(request)
            except HTTPException as exc:
                exc.headers = {**(exc.headers or {}), "Cache-Control": _NO_STORE}
                raise
            response.headers["Cache-Control"] = _NO_STORE
            if request.method == "HEAD":
                # Same status and headers as GET, Content-Length included (RFC 9110 9.3.2).
                head = Response(status_code=response.status_code, background=response.background)
                head.raw_headers = response.raw_headers
                return head
            return response

        return health_handler


def health_router(
    *,
    registry: _BreakerSource | None = None,
    critical: Iterable[str] = (),
    detail: Literal["always", "never", "authorized"] = "never",
    authorize: Callable[..., Any] | None = None,
    prefix: str = "/health",
    tags: Iterable[str] = ("health",),
) -> APIRouter:
    """Build the health router; see the module docstring for what each endpoint answers.

    - `registry`: where the breakers come from; None reads `app.state.breaker_registry` at
      each request (what `fastapi_breaker.fastapi.setup_breakers` attaches).
    - `critical`: names of the breakers whose opening makes the service unready/unhealthy. A
      strict `BreakerRegistry` must configure each: checked here when `registry` is given, else
      at startup by `setup_breakers` when the app's registry is strict.
    - `detail`: how much `/health` shows. "never" (the default): only `status`; "always": every
      breaker, to anyone who can reach the endpoint; "authorized": breakers only when the
      FastAPI dependency `authorize` returns exactly True (anything else, or an
      `HTTPException` it raises, hides them or refuses the call). `/health/ready` lists the
      critical breakers only with "always": probes carry no credentials, and breaker names can
      name internal services.
    - `prefix`: a plain path: it starts with '/', does not end with one, and holds no path
      parameter, query, fragment, whitespace or control character.
    """
    if detail not in _DETAIL_MODES:
        raise ValueError(
            f"detail must be one of {', '.join(map(repr, _DETAIL_MODES))}, got {detail!r}"
        )
    if detail == "authorized":
        if authorize is None:
            raise ValueError('detail="authorized" needs authorize=, a dependency returning bool')
        if not callable(authorize):
            raise TypeError(f"authorize must be a callable FastAPI dependency, got {authorize!r}")
    elif authorize is not None:
        # Silently ignoring it would show every detail to a caller the user meant to check.
        raise ValueError(f'authorize= is only used with detail="authorized", not {detail!r}')
    critical_names = _names("critical", critical)
    tag_list = list(_names("tags", tags))
    _check_prefix(prefix)
    if registry is not None and not callable(getattr(registry, "breakers", None)):
        raise TypeError(f"registry must have a breakers() method, got {registry!r}")
    if isinstance(registry, BreakerRegistry) and registry.strict:
        _check_configured(critical_names, registry)

    critical_set = frozenset(critical_names)

    def source(request: Request) -> _BreakerSource:
        if registry is not None:
            return registry
        # The same lookup as `Depends(get_breaker(...))`, so both always see one registry.
        return get_registry(request)

    def health_response(request: Request, show: bool) -> Response:
        status, details = _health(source(request).breakers(), critical_set, show)
        # pydantic-core's encoder, not json.dumps: with 1,000 breakers the report is ~0.5 MB,
        # mostly floats, and json.dumps spends most of the request formatting them.
        body = b'{"status":"' + status.encode() + b'"'
        if show:
            body += b',"details":' + details
        return Response(
            body + b"}",
            status_code=503 if status == "unhealthy" else 200,
            media_type="application/json",
        )

    health: Callable[..., Any]
    if authorize is not None:

        async def health_if_authorized(
            request: Request, allowed: Annotated[Any, Depends(authorize)]
        ) -> Response:
            return health_response(request, allowed is True)

        health = health_if_authorized
    else:
        show_always = detail == "always"

        async def health_for_all(request: Request) -> Response:
            return health_response(request, show_always)

        health = health_for_all

    async def live() -> Response:
        return JSONResponse({"status": "alive"})

    show_critical = detail == "always"

    async def ready(request: Request) -> Response:
        breakers = source(request).breakers()
        states: dict[str, State] = {}
        for name in critical_names:
            breaker = breakers.get(name)
            states[name] = State.CLOSED if breaker is None else breaker.state
        failing = State.OPEN in states.values()
        body: dict[str, Any] = {"status": "not_ready" if failing else "ready"}
        if show_critical:
            body["critical"] = {printable_name(name): state.value for name, state in states.items()}
        return JSONResponse(body, status_code=503 if failing else 200)

    if registry is None and critical_names:
        # The app's registry is known only at startup: setup_breakers' strict check reads this.
        setattr(ready, _CRITICAL_ATTRIBUTE, critical_names)

    router = APIRouter(route_class=_HealthRoute)
    endpoints: list[tuple[str, str, Callable[..., Any], type[BaseModel], str]] = [
        ("", "health", health, HealthReport, "A critical breaker is open."),
        ("/live", "health_live", live, LivenessReport, ""),
        ("/ready", "health_ready", ready, ReadinessReport, "A critical breaker is open."),
    ]
    for path, name, endpoint, model, unavailable in endpoints:
        responses: dict[int | str, dict[str, Any]] = {}
        if unavailable:
            responses[503] = {"model": model, "description": unavailable}
        router.add_api_route(
            prefix + path,
            endpoint,
            methods=["GET"],
            name=name,
            tags=list(tag_list),
            response_model=model,
            responses=responses,
        )
        # HEAD is its own route, kept out of the schema: one route with both methods would give
        # OpenAPI two operations with the same operationId (FastAPI warns about that).
        router.add_api_route(
            prefix + path,
            endpoint,
            methods=["HEAD"],
            name=name,
            response_model=None,
            include_in_schema=False,
        )
    return router


# How far from closed a state is, for the worse of a process's and its fleet's.
_WORSE = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}


def _health(
    breakers: Mapping[str, CircuitBreaker], critical: frozenset[str], show: bool
) -> tuple[str, bytes]:
    """The overall status, and the JSON of `details` (b"" when hidden).

    Each breaker's entry is encoded as soon as it is built, so that only bytes outlive it. Held
    as dicts until the end, a thousand entries would survive into the collector's oldest
    generation and trigger the full collections that made /health's p99 three times its p50.
    """
    status = "healthy"
    entries: list[bytes] = []
    closed = State.CLOSED
    for name, breaker in breakers.items():
        state = breaker.state
        # With a fleet, the status follows the worse of the fleet's state and this process's:
        # every worker answers the same for the fleet's decisions, and a worker that refuses
        # on its own evidence (or holds a fleet open the fleet forgot) is not called healthy.
        fleet = breaker.fleet_state
        decided = state if fleet is None or _WORSE[state] >= _WORSE[fleet] else fleet
        if decided is not closed:
            if decided is State.OPEN and name in critical:
                status = "unhealthy"
            elif status == "healthy":
                status = "degraded"
        if show:
            entry = {
                "state": state.value,
                "stats": breaker.stats.to_dict(),
                "retry_after": None if state is closed else breaker.retry_after,
            }
            if breaker.core.fleet is not None:
                entry["fleet"] = None if fleet is None else fleet.value
            key = to_json(printable_name(name))
            entries.append(key + b":" + to_json(entry, inf_nan_mode="null"))
        elif status == "unhealthy":
            break  # nothing left to learn
    return status, b"{" + b",".join(entries) + b"}" if show else b""


def _check_prefix(prefix: object) -> None:
    if not isinstance(prefix, str) or not prefix.startswith("/") or prefix.endswith("/"):
        raise ValueError(f"prefix must start with '/' and not end with '/', got {prefix!r}")
    # Braces would make a path parameter, '?' and '#' a path no request has; whitespace and
    # control characters (surrogates included) have no place in a route.
    if any(c in "{}?#" or c.isspace() or not c.isprintable() for c in prefix):
        raise ValueError(
            "prefix must be a plain path: no '{', '}', '?', '#', whitespace or control "
            f"characters, got {prefix!r}"
        )


def _check_configured(critical: tuple[str, ...], registry: BreakerRegistry) -> None:
    unknown = sorted(name for name in critical if name not in registry.configured)
    if unknown:
        known = ", ".join(repr(name) for name in sorted(registry.configured)) or "none"
        raise ValueError(
            "critical names breakers that the strict registry does not have: "
            f"{', '.join(map(repr, unknown))}; configured breakers: {known}"
        )


def _names(field: str, value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str | bytes):
        raise TypeError(
            f"{field} must be a collection of names, not one string: {field}=({value!r},)"
        )
    try:
        names = tuple(value)
    except TypeError:
        raise TypeError(f"{field} must be a collection of names, got {value!r}") from None
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{field} must hold strings, got {name!r}")
        if not name:
            raise ValueError(f"{field} must not hold an empty name")
    return tuple(dict.fromkeys(names))  # in order, without repeats
