"""Named breakers in FastAPI routes, and the one call that wires them into an app.

    app = FastAPI()
    setup_breakers(app, BreakerRegistry(breakers={"AuthService": {"timeout": 5}}, strict=True))

    @app.get("/me")
    async def me(auth: CircuitBreaker = Depends(get_breaker("AuthService"))) -> dict[str, str]:
        return await auth.call(fetch_user)

While the breaker would refuse a call, `get_breaker(name)` refuses the request before the route
runs, and the 503 goes out without the route building anything; `refuse_early=False`, or a
fallback on the breaker, lets the route run and answer the refusal itself.

`setup_breakers` attaches the registry at `app.state.breaker_registry`, checks at startup that a
strict registry knows every breaker a route depends on (and every critical breaker of a
`health_router` that reads the app's registry), shuts every breaker down when the app's lifespan
ends, answers refusals with a 503 whatever exception handlers the app has, and documents the 503
in the OpenAPI schema.
"""

# No `from __future__ import annotations` here: FastAPI reads the annotations of
# `BreakerDependency.__call__` at run time, and a callable object has no `__globals__` in which
# a string annotation could be resolved.

import copy
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

try:
    import fastapi.routing
    from fastapi import FastAPI
    from starlette.requests import HTTPConnection
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(
        "fastapi_breaker.fastapi needs FastAPI: pip install 'fastapi_breaker[fastapi]'"
    ) from exc

from ._breaker import CircuitBreaker
from ._errors import CircuitOpenError
from ._registry import BreakerRegistry

__all__ = [
    "CIRCUIT_OPEN_RESPONSE",
    "BreakerDependency",
    "get_breaker",
    "get_registry",
    "setup_breakers",
]

_STATE_KEY = "breaker_registry"

# Set by health_router on its readiness endpoint when it reads the app's registry: the critical
# names, which the strict startup check must find configured.
_CRITICAL_ATTRIBUTE = "_fastapi_breaker_critical"

# The JSON Schema of the body that `fastapi_breaker.middleware.problem_response` sends.
_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "CircuitOpenProblem",
    "description": "An RFC 9457 problem document: the circuit is open and the call was refused.",
    "type": "object",
    "properties": {
        "type": {"title": "Type", "type": "string", "example": "about:blank"},
        "title": {"title": "Title", "type": "string", "example": "Service Unavailable"},
        "status": {"title": "Status", "type": "integer", "example": 503},
        "detail": {"title": "Detail", "type": "string"},
        "retry_after": {
            "title": "Retry After",
            "type": "integer",
            "minimum": 1,
            "description": "Seconds to wait before retrying, as in the Retry-After header.",
        },
        "breaker": {
            "title": "Breaker",
            "type": "string",
            "description": "The breaker's name; present only when the app chose to expose it.",
        },
    },
    "required": ["type", "title", "status", "detail", "retry_after"],
}

CIRCUIT_OPEN_RESPONSE: Mapping[str, Any] = {
    "description": "Circuit open: the call was refused; retry after the Retry-After header",
    "headers": {
        "Retry-After": {
            "description": "Whole seconds until the circuit admits a trial call; at least 1.",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
    "content": {"application/problem+json": {"schema": _PROBLEM_SCHEMA}},
}
"""The OpenAPI response documented as the 503 of every route that depends on a breaker.

Give it to routes that reach a breaker another way (an httpx transport, say):
`@app.get("/x", responses={503: dict(CIRCUIT_OPEN_RESPONSE)})`.
"""


def get_registry(request: HTTPConnection) -> BreakerRegistry:
    """The app's registry: `app.state.breaker_registry`, else the lifespan state's."""
    registry = getattr(request.app.state, _STATE_KEY, None)
    if registry is None:
        # An app may also yield {"breaker_registry": registry} from its own lifespan.
        registry = getattr(request.state, _STATE_KEY, None)
    if not isinstance(registry, BreakerRegistry):
        raise RuntimeError(
            "this app has no breaker registry: call fastapi_breaker.fastapi.setup_breakers(app) "
            "or set app.state.breaker_registry to a BreakerRegistry"
        )
    return registry


@dataclasses.dataclass(frozen=True, slots=True)
class BreakerDependency:
    """A FastAPI dependency that gives a route the app's breaker called `name`.

    With `refuse_early` (the default), an HTTP request meets the breaker's refusal here, before
    the route runs: `breaker.check()` raises the `CircuitOpenError` that a call would meet now
    (counted as a rejection; in half-open the free trial permit is left to the route's call), and
    the app's handler answers 503. A breaker with a fallback is never refused here, since its
    calls answer a refusal with the fallback; nor is a websocket, whose route decides what a
    refusal means for its connection.

    Equal arguments make equal, hashable objects, so `app.dependency_overrides[get_breaker(name)]`
    replaces it. The two forms stay unequal: `typing.Annotated` caches its aliases by equal
    metadata, and would hand a route the other form's dependency. `__call__` is a coroutine so
    that FastAPI calls it on the event loop rather than on a worker thread.
    """

    name: str
    refuse_early: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a breaker name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.refuse_early, bool):
            raise TypeError(f"refuse_early must be True or False, got {self.refuse_early!r}")

    async def __call__(self, request: HTTPConnection) -> CircuitBreaker:
        breaker = get_registry(request).get(self.name)
        if self.refuse_early and request.scope["type"] == "http" and not breaker.has_fallback:
            breaker.check()
        return breaker


def get_breaker(name: str, *, refuse_early: bool = True) -> BreakerDependency:
    """`Depends(get_breaker("AuthService"))`: the app's breaker called `name`.

    While the breaker would refuse a call, the request is refused before the route runs (503
    with `Retry-After`), unless the breaker has a fallback. Pass `refuse_early=False` for a
    route that answers the refusal itself or only reads the breaker (a status page).
    """
    return BreakerDependency(name, refuse_early)


def setup_breakers(
    app: FastAPI,
    registry: BreakerRegistry | None = None,
    *,
    middleware: bool = True,
    expose_name: bool = False,
) -> BreakerRegistry:
    """Wire a registry into `app` and return it; call once per app, before it starts.

    - the registry (a new non-strict one if None) goes to `app.state.breaker_registry`;
    - at startup, a strict registry must know every breaker that a route depends on, and every
      `critical` name of a `health_router` that reads the app's registry, or startup fails
      naming each unknown one;
    - when the app starts, the registry's coordinator (if any) starts sharing the breakers'
      state with the fleet; when the lifespan ends, even by an error, it stops, and every
      breaker is shut down;
    - `middleware=True` adds `CircuitBreakerMiddleware(expose_name=expose_name)`, and the same
      answer as the app's exception handler for `CircuitOpenError`, unless the app has its own:
      Starlette runs exception handlers inside every middleware, so without it a handler for a
      wider class (`httpx.HTTPError`, say, that an httpx refusal also is) would answer first;
    - the OpenAPI schema documents a 503 on every route that depends on a breaker.
    """
    if registry is None:
        registry = BreakerRegistry()
    elif not isinstance(registry, BreakerRegistry):
        raise TypeError(f"registry must be a BreakerRegistry or None, got {registry!r}")
    if getattr(app.state, _STATE_KEY, None) is not None:
        raise RuntimeError(
            "setup_breakers() was already called for this app (app.state.breaker_registry is set)"
        )
    app.state.breaker_registry = registry

    if middleware:
        # Imported only when wanted: an app that answers the 503 itself never loads it.
        from .middleware import CircuitBreakerMiddleware

        app.add_middleware(CircuitBreakerMiddleware, expose_name=expose_name)
        _handle_refusals(app, expose_name)

    app.router.lifespan_context = _with_breakers(app, registry, app.router.lifespan_context)
    app.openapi = _with_503(app, app.openapi)  # type: ignore[method-assign]
    return registry


def _handle_refusals(app: FastAPI, expose_name: bool) -> None:
    """Make the app's exception handlers answer a refusal with our 503.

    Starlette picks a handler by walking the exception's MRO, and `CircuitOpenError` comes
    before any other base of a refusal (`HTTPCircuitOpenError`'s MRO puts it before
    `httpx.TransportError` and `httpx.HTTPError`), so a handler for it wins over any handler for
    a wider class, added before setup or after. A handler the app registered for
    `CircuitOpenError` itself is its explicit choice and stays.
    """
    from .middleware import circuit_open_handler_factory

    handler = circuit_open_handler_factory(expose_name=expose_name)
    handlers = app.exception_handlers
    if CircuitOpenError not in handlers:
        app.add_exception_handler(CircuitOpenError, handler)
    build = app.build_middleware_stack

    def build_middleware_stack() -> Any:
        # The handlers are copied into the stack when it is built, at the first request or the
        # lifespan's start: ours must be there then, even if the dict was replaced since.
        if CircuitOpenError not in app.exception_handlers:
            app.add_exception_handler(CircuitOpenError, handler)
        return build()

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]


def _with_breakers(
    app: FastAPI,
    registry: BreakerRegistry,
    lifespan: Callable[[Any], AbstractAsyncContextManager[Any]],
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    @asynccontextmanager
    async def breaker_lifespan(scope_app: Any) -> AsyncIterator[Any]:
        if registry.strict:
            _check_known(app, registry)
        try:
            await registry.start()  # the coordinator's background work, if there is one
            async with lifespan(scope_app) as state:
                yield state
        finally:
            try:
                await registry.stop()
            finally:
                registry.shutdown()

    return breaker_lifespan


def _check_known(app: FastAPI, registry: BreakerRegistry) -> None:
    overridden = app.dependency_overrides
    # name -> how it is used ("used by", "critical for") -> where.
    users: dict[str, dict[str, list[str]]] = {}

    def note(name: str, how: str, where: str) -> None:
        if name not in registry:
            seen = users.setdefault(name, {}).setdefault(how, [])
            if where not in seen:
                seen.append(where)

    for route in _routes(app):
        methods = sorted(getattr(route, "methods", None) or ["WEBSOCKET"])
        endpoint = getattr(getattr(route, "original_route", route), "endpoint", None)
        # HEAD shares the readiness endpoint with GET: naming GET is enough.
        if "GET" in methods:
            for name in getattr(endpoint, _CRITICAL_ATTRIBUTE, ()):
                note(name, "critical for", f"GET {route.path_format}")
        dependant = getattr(route, "dependant", None)
        if dependant is None:
            continue
        # An overridden dependency never runs, nor do its own dependencies: a test may well
        # replace a breaker that the test's registry does not configure.
        for name in _breaker_names(dependant, overridden):
            note(name, "used by", f"{','.join(methods)} {route.path_format}")
    if users:
        unknown = "; ".join(
            f"{name!r} ("
            + "; ".join(f"{how} {', '.join(where)}" for how, where in sorted(users[name].items()))
            + ")"
            for name in sorted(users)
        )
        known = ", ".join(repr(name) for name in sorted(registry.configured)) or "none"
        raise RuntimeError(
            f"strict breaker registry: routes depend on unknown breakers: {unknown}. "
            f"Configured breakers: {known}"
        )


def _with_503(app: FastAPI, openapi: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    # Patched when the schema is made, not at setup, so that routes added later are covered.
    def openapi_with_503() -> dict[str, Any]:
        schema = openapi()
        _document_503(app, schema)
        return schema

    return openapi_with_503


def _document_503(app: FastAPI, schema: dict[str, Any]) -> None:
    paths = schema.get("paths") or {}
    for route in _routes(app):
        if not isinstance(getattr(route, "original_route", route), fastapi.routing.APIRoute):
            continue
        if not route.include_in_schema or not any(_breaker_names(route.dependant, {})):
            continue
        operations = paths.get(route.path_format) or {}
        for method in route.methods or ():
            operation = operations.get(method.lower())
            if operation is not None:
                # A 503 the user documented, or ours from an earlier call, stays as it is.
                responses = operation.setdefault("responses", {})
                if "503" not in responses:
                    responses["503"] = copy.deepcopy(dict(CIRCUIT_OPEN_RESPONSE))


def _routes(app: FastAPI) -> Iterator[Any]:
    """Every route of the app, with included routers' prefixes and dependencies applied."""
    # Newer FastAPI keeps included routers whole and resolves them lazily; older FastAPI copies
    # their routes into app.routes, already complete.
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    yield from (app.routes if iterate is None else iterate(app.routes))


def _breaker_names(dependant: Any, overridden: Mapping[Any, Any]) -> Iterator[str]:
    stack = list(dependant.dependencies)
    while stack:
        sub = stack.pop()
        if overridden and _is_overridden(sub.call, overridden):
            continue
        if isinstance(sub.call, BreakerDependency):
            yield sub.call.name
        stack.extend(sub.dependencies)


def _is_overridden(call: Any, overridden: Mapping[Any, Any]) -> bool:
    try:
        return call in overridden
    except TypeError:  # an unhashable callable object cannot be a key of the overrides
        return False
