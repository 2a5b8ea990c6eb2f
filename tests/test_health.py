"""health_router(): /health, /health/live and /health/ready, their bodies, statuses and headers."""

import json
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Header, HTTPException

from fastapi_breaker import BreakerRegistry, CircuitBreaker, CircuitOpenError
from fastapi_breaker.health import (
    BreakerHealth,
    BreakerStatsModel,
    HealthReport,
    LivenessReport,
    ReadinessReport,
    health_router,
)
from fastapi_breaker.testing import FakeClock

PATHS = ("/health", "/health/live", "/health/ready")


class StandInRegistry:
    """The only stand-in registry: just the `breakers()` that health_router reads."""

    def __init__(self, *breakers: CircuitBreaker) -> None:
        self._breakers = {b.name: b for b in breakers}

    def breakers(self) -> dict[str, CircuitBreaker]:
        return dict(self._breakers)


class ExplodingRegistry:
    """Fails the test if anything reads its breakers."""

    def breakers(self) -> dict[str, CircuitBreaker]:
        raise AssertionError("the breakers were read")


def make_app(**options: Any) -> FastAPI:
    app = FastAPI()
    app.include_router(health_router(**options))
    return app


async def send(app: FastAPI, path: str, method: str = "GET", **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.request(method, path, **kwargs)


async def raw_asgi(app: FastAPI, path: str, method: str) -> tuple[int, dict[str, str], bytes]:
    # Straight ASGI, because httpx's ASGITransport drops any body that a HEAD answer sends.
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send_message(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send_message)
    start, *bodies = sent
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in bodies)


def stats_body(
    *,
    fires: int = 0,
    successes: int = 0,
    failures: int = 0,
    rejects: int = 0,
    error_percentage: float = 0.0,
    latency: float = 0.0,
) -> dict[str, Any]:
    # Written out by hand (not through Stats.to_dict) so that the wire format itself is checked.
    return {
        "fires": fires,
        "successes": successes,
        "failures": failures,
        "rejects": rejects,
        "timeouts": 0,
        "fallbacks": 0,
        "semaphore_rejections": 0,
        "error_percentage": error_percentage,
        "latency_mean": latency,
        # Percentiles are read from latency bins: 0.5 s is in (0.4375, 0.5], whose middle
        # is 0.46875; no latency reads as 0.
        "percentiles": {
            key: {0.5: 0.46875, 0.0: 0.0}[latency]
            for key in ("0.0", "0.25", "0.5", "0.75", "0.9", "0.95", "0.99", "0.995", "1.0")
        },
    }


async def fail() -> None:
    raise ConnectionError("auth service down")


# ------------------------------------------------------------------ /health statuses and bodies


async def test_no_breakers_yet_is_healthy() -> None:
    response = await send(make_app(detail="always", registry=StandInRegistry()), "/health")

    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "details": {}}


async def test_every_breaker_closed_is_healthy_with_stats() -> None:
    clock = FakeClock()
    auth = CircuitBreaker(name="auth", clock=clock)
    users = CircuitBreaker(name="users", clock=clock)

    async def answer_slowly() -> str:
        clock.advance(0.5)  # the call's latency, by the breaker's clock
        return "ok"

    assert await auth.call(answer_slowly) == "ok"
    app = make_app(detail="always", registry=StandInRegistry(auth, users), critical=["auth"])

    response = await send(app, "/health")

    assert response.status_code == 200
    assert response.json() == {
        "status": "healthy",
        "details": {
            "auth": {
                "state": "closed",
                "stats": stats_body(fires=1, successes=1, latency=0.5),
                "retry_after": None,
            },
            "users": {"state": "closed", "stats": stats_body(), "retry_after": None},
        },
    }


async def test_open_non_critical_breaker_is_degraded_and_200() -> None:
    clock = FakeClock()
    auth = CircuitBreaker(name="auth", clock=clock, reset_timeout=30.0)
    users = CircuitBreaker(name="users", clock=clock, volume_threshold=0)
    with pytest.raises(ConnectionError):
        await users.call(fail)  # 1 failure of 1: 100% > 50%, opens
    clock.advance(5.0)
    with pytest.raises(CircuitOpenError):
        await users.call(fail)
    app = make_app(detail="always", registry=StandInRegistry(auth, users), critical=["auth"])

    response = await send(app, "/health")

    assert response.status_code == 200
    assert response.json() == {
        "status": "degraded",
        "details": {
            "auth": {"state": "closed", "stats": stats_body(), "retry_after": None},
            "users": {
                "state": "open",
                "stats": stats_body(fires=2, failures=1, rejects=1, error_percentage=100.0),
                "retry_after": 25.0,
            },
        },
    }


async def test_half_open_critical_breaker_is_only_degraded() -> None:
    clock = FakeClock()
    auth = CircuitBreaker(name="auth", clock=clock, reset_timeout=30.0)
    auth.open()
    clock.advance(30.0)  # the reset timeout passed: the next look sees half-open
    app = make_app(detail="always", registry=StandInRegistry(auth), critical=["auth"])

    response = await send(app, "/health")

    assert response.status_code == 200
    assert response.json() == {
        "status": "degraded",
        "details": {"auth": {"state": "half_open", "stats": stats_body(), "retry_after": 0.0}},
    }


async def test_open_critical_breaker_is_unhealthy_and_503() -> None:
    clock = FakeClock()
    auth = CircuitBreaker(name="auth", clock=clock, reset_timeout=30.0)
    users = CircuitBreaker(name="users", clock=clock)
    auth.open()
    clock.advance(12.0)
    app = make_app(detail="always", registry=StandInRegistry(auth, users), critical=["auth"])

    response = await send(app, "/health")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unhealthy",
        "details": {
            "auth": {"state": "open", "stats": stats_body(), "retry_after": 18.0},
            "users": {"state": "closed", "stats": stats_body(), "retry_after": None},
        },
    }


async def test_force_opened_critical_breaker_is_unhealthy() -> None:
    auth = CircuitBreaker(name="auth", clock=FakeClock(), reset_timeout=30.0)
    auth.force_open()
    app = make_app(detail="always", registry=StandInRegistry(auth), critical=["auth"])

    response = await send(app, "/health")

    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    # A forced-open breaker has no release time: retry_after is reset_timeout, as a hint.
    assert response.json()["details"]["auth"]["retry_after"] == 30.0


async def test_health_body_validates_against_its_model() -> None:
    clock = FakeClock()
    auth = CircuitBreaker(name="auth", clock=clock)
    auth.open()
    app = make_app(detail="always", registry=StandInRegistry(auth), critical=["auth"])

    body = (await send(app, "/health")).json()

    report = HealthReport.model_validate(body)
    assert report.status == "unhealthy"
    assert report.details["auth"].state == "open"
    assert report.details["auth"].stats.percentiles["0.995"] == 0.0


async def test_a_thousand_breakers_are_all_reported() -> None:
    clock = FakeClock()
    breakers = [CircuitBreaker(name=f"svc-{i}", clock=clock) for i in range(1000)]
    breakers[500].open()
    app = make_app(detail="always", registry=StandInRegistry(*breakers))

    body = (await send(app, "/health")).json()

    assert body["status"] == "degraded"
    assert list(body["details"]) == [f"svc-{i}" for i in range(1000)]
    assert [n for n, d in body["details"].items() if d["state"] != "closed"] == ["svc-500"]


# ------------------------------------------------------------------ /health/live


async def test_live_never_reads_the_breakers() -> None:
    app = make_app(registry=ExplodingRegistry())

    for method in ("GET", "HEAD"):
        response = await send(app, "/health/live", method)
        assert response.status_code == 200
    assert (await send(app, "/health/live")).json() == {"status": "alive"}
    # The same registry does explode when /health reads it, so the check above means something.
    with pytest.raises(AssertionError, match="the breakers were read"):
        await send(app, "/health")


async def test_live_needs_no_registry_on_the_app() -> None:
    response = await send(make_app(), "/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


# ------------------------------------------------------------------ /health/ready


async def test_ready_while_critical_breakers_are_closed() -> None:
    clock = FakeClock()
    auth = CircuitBreaker(name="auth", clock=clock)
    app = make_app(detail="always", registry=StandInRegistry(auth), critical=["auth"])

    response = await send(app, "/health/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "critical": {"auth": "closed"}}


async def test_ready_ignores_open_breakers_that_are_not_critical() -> None:
    clock = FakeClock()
    auth = CircuitBreaker(name="auth", clock=clock)
    users = CircuitBreaker(name="users", clock=clock)
    users.force_open()
    app = make_app(detail="always", registry=StandInRegistry(auth, users), critical=["auth"])

    response = await send(app, "/health/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "critical": {"auth": "closed"}}


async def test_ready_with_nothing_critical_is_ready_whatever_is_open() -> None:
    users = CircuitBreaker(name="users", clock=FakeClock())
    users.open()
    app = make_app(detail="always", registry=StandInRegistry(users))

    response = await send(app, "/health/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "critical": {}}


async def test_not_ready_while_a_critical_breaker_is_open() -> None:
    clock = FakeClock()
    auth = CircuitBreaker(name="auth", clock=clock, reset_timeout=30.0)
    payments = CircuitBreaker(name="payments", clock=clock)
    auth.open()
    app = make_app(
        detail="always", registry=StandInRegistry(auth, payments), critical=["auth", "payments"]
    )

    response = await send(app, "/health/ready")

    assert response.status_code == 503
    assert response.json() == {
        "status": "not_ready",
        "critical": {"auth": "open", "payments": "closed"},
    }


async def test_ready_again_once_the_critical_breaker_is_half_open() -> None:
    clock = FakeClock()
    auth = CircuitBreaker(name="auth", clock=clock, reset_timeout=30.0)
    auth.open()
    app = make_app(detail="always", registry=StandInRegistry(auth), critical=["auth"])
    assert (await send(app, "/health/ready")).status_code == 503

    clock.advance(30.0)
    response = await send(app, "/health/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "critical": {"auth": "half_open"}}


async def test_critical_breaker_never_used_counts_as_closed() -> None:
    app = make_app(detail="always", registry=StandInRegistry(), critical=["auth"])

    response = await send(app, "/health/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "critical": {"auth": "closed"}}


async def test_ready_body_validates_against_its_model() -> None:
    auth = CircuitBreaker(name="auth", clock=FakeClock())
    auth.open()
    app = make_app(detail="always", registry=StandInRegistry(auth), critical=["auth"])

    body = (await send(app, "/health/ready")).json()

    assert ReadinessReport.model_validate(body).critical == {"auth": "open"}
    assert LivenessReport.model_validate((await send(app, "/health/live")).json()).status == "alive"


# ------------------------------------------------------------------ HEAD and Cache-Control


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("critical_open", [False, True])
async def test_head_has_gets_status_and_headers_and_no_body(path: str, critical_open: bool) -> None:
    auth = CircuitBreaker(name="auth", clock=FakeClock())
    if critical_open:
        auth.open()
    app = make_app(registry=StandInRegistry(auth), critical=["auth"])

    get = await raw_asgi(app, path, "GET")
    head = await raw_asgi(app, path, "HEAD")

    get_status, get_headers, get_body = get
    assert head == (get_status, get_headers, b"")
    assert get_status == (503 if critical_open and path != "/health/live" else 200)
    assert get_headers["cache-control"] == "no-store"
    assert int(get_headers["content-length"]) == len(get_body) > 0


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("critical_open", [False, True])
async def test_every_answer_is_no_store(path: str, method: str, critical_open: bool) -> None:
    auth = CircuitBreaker(name="auth", clock=FakeClock())
    if critical_open:
        auth.open()
    app = make_app(registry=StandInRegistry(auth), critical=["auth"])

    response = await send(app, path, method)

    expected = 503 if critical_open and path != "/health/live" else 200
    assert response.status_code == expected
    assert response.headers["cache-control"] == "no-store"


async def test_other_methods_are_refused() -> None:
    app = make_app(registry=StandInRegistry())

    assert (await send(app, "/health", "POST")).status_code == 405


# ------------------------------------------------------------------ detail


async def test_detail_never_shows_only_the_status() -> None:
    clock = FakeClock()
    auth = CircuitBreaker(name="auth", clock=clock)
    users = CircuitBreaker(name="users", clock=clock)
    users.open()
    app = make_app(registry=StandInRegistry(auth, users), critical=["auth"], detail="never")

    health = await send(app, "/health")
    ready = await send(app, "/health/ready")

    assert (health.status_code, health.json()) == (200, {"status": "degraded"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


async def test_detail_never_still_reports_unhealthy() -> None:
    clock = FakeClock()
    auth = CircuitBreaker(name="auth", clock=clock)
    users = CircuitBreaker(name="users", clock=clock)
    auth.open()
    app = make_app(registry=StandInRegistry(auth, users), critical=["auth"], detail="never")

    health = await send(app, "/health")
    ready = await send(app, "/health/ready")

    assert (health.status_code, health.json()) == (503, {"status": "unhealthy"})
    assert (ready.status_code, ready.json()) == (503, {"status": "not_ready"})


def token_is_secret(x_token: Annotated[str | None, Header()] = None) -> bool:
    return x_token == "secret"


def require_token(x_token: Annotated[str | None, Header()] = None) -> bool:
    if x_token != "secret":
        raise HTTPException(401, "a token is needed", headers={"WWW-Authenticate": "Token"})
    return True


def authorized_app(authorize: Any) -> FastAPI:
    auth = CircuitBreaker(name="auth", clock=FakeClock())
    auth.open()
    return make_app(
        registry=StandInRegistry(auth), critical=["auth"], detail="authorized", authorize=authorize
    )


async def test_detail_authorized_shows_details_when_authorize_returns_true() -> None:
    app = authorized_app(token_is_secret)

    response = await send(app, "/health", headers={"X-Token": "secret"})

    assert response.status_code == 503
    assert response.json() == {
        "status": "unhealthy",
        "details": {"auth": {"state": "open", "stats": stats_body(), "retry_after": 30.0}},
    }


async def test_detail_authorized_hides_details_when_authorize_returns_false() -> None:
    app = authorized_app(token_is_secret)

    response = await send(app, "/health", headers={"X-Token": "wrong"})

    assert response.status_code == 503
    assert response.json() == {"status": "unhealthy"}


async def test_detail_authorized_wants_exactly_true() -> None:
    # Fail closed: a truthy value that is not True (a user object, a string) shows nothing.
    app = authorized_app(lambda: "yes")

    assert (await send(app, "/health")).json() == {"status": "unhealthy"}


async def test_authorize_raising_http_exception_refuses_with_no_store() -> None:
    app = authorized_app(require_token)

    response = await send(app, "/health")

    assert response.status_code == 401
    assert response.json() == {"detail": "a token is needed"}
    assert response.headers["www-authenticate"] == "Token"
    assert response.headers["cache-control"] == "no-store"


async def test_authorize_is_an_ordinary_dependency_that_tests_can_override() -> None:
    app = authorized_app(require_token)
    app.dependency_overrides[require_token] = lambda: True

    response = await send(app, "/health")

    assert response.status_code == 503
    assert list(response.json()["details"]) == ["auth"]


async def test_live_and_ready_never_run_authorize() -> None:
    # Probes carry no credentials: an authorize that refuses everyone must not fail them.
    app = authorized_app(require_token)

    live = await send(app, "/health/live")
    ready = await send(app, "/health/ready")

    assert (live.status_code, live.json()) == (200, {"status": "alive"})
    # Only detail="always" names the critical breakers in /ready.
    assert (ready.status_code, ready.json()) == (503, {"status": "not_ready"})


async def test_details_are_hidden_by_default() -> None:
    # As Spring Boot's actuator (show-details: never): names and traffic are internal.
    clock = FakeClock()
    auth = CircuitBreaker(name="auth", clock=clock)
    users = CircuitBreaker(name="users", clock=clock)
    auth.open()
    app = make_app(registry=StandInRegistry(auth, users), critical=["auth"])

    health = await send(app, "/health")
    ready = await send(app, "/health/ready")

    assert (health.status_code, health.json()) == (503, {"status": "unhealthy"})
    assert (ready.status_code, ready.json()) == (503, {"status": "not_ready"})


# ------------------------------------------------------------------ where the registry comes from


async def test_registry_defaults_to_the_apps() -> None:
    registry = BreakerRegistry(breakers={"auth": {}}, clock=FakeClock())
    registry.get("auth").open()
    app = make_app(detail="always", critical=["auth"])
    app.state.breaker_registry = registry

    response = await send(app, "/health/ready")

    assert response.status_code == 503
    assert response.json() == {"status": "not_ready", "critical": {"auth": "open"}}


async def test_missing_app_registry_is_a_clear_error() -> None:
    app = make_app()

    with pytest.raises(RuntimeError, match=r"setup_breakers.*app\.state\.breaker_registry"):
        await send(app, "/health")


async def test_prefix_and_tags_are_used() -> None:
    app = FastAPI()
    router = health_router(registry=StandInRegistry(), prefix="/ops/status", tags=["ops"])
    app.include_router(router, prefix="/internal")

    for path in ("/internal/ops/status", "/internal/ops/status/live", "/internal/ops/status/ready"):
        assert (await send(app, path)).status_code == 200
        assert (await send(app, path, "HEAD")).headers["cache-control"] == "no-store"
    assert app.openapi()["paths"]["/internal/ops/status"]["get"]["tags"] == ["ops"]


# ------------------------------------------------------------------ OpenAPI


def test_openapi_shows_the_response_models() -> None:
    schema = make_app(registry=StandInRegistry()).openapi()

    models = (BreakerHealth, BreakerStatsModel, HealthReport, LivenessReport, ReadinessReport)
    assert {m.__name__ for m in models} <= set(schema["components"]["schemas"])

    def ref(path: str, status: str) -> str:
        operation = schema["paths"][path]["get"]
        return str(operation["responses"][status]["content"]["application/json"]["schema"]["$ref"])

    assert ref("/health", "200") == "#/components/schemas/HealthReport"
    assert ref("/health", "503") == "#/components/schemas/HealthReport"
    assert ref("/health/ready", "200") == "#/components/schemas/ReadinessReport"
    assert ref("/health/ready", "503") == "#/components/schemas/ReadinessReport"
    assert ref("/health/live", "200") == "#/components/schemas/LivenessReport"
    assert "503" not in schema["paths"]["/health/live"]["get"]["responses"]
    # HEAD routes stay out of the schema: one operation per path, no duplicate operationIds.
    assert {path: list(ops) for path, ops in schema["paths"].items()} == {
        "/health": ["get"],
        "/health/live": ["get"],
        "/health/ready": ["get"],
    }
    details = schema["components"]["schemas"]["HealthReport"]["properties"]["details"]
    assert details["additionalProperties"] == {"$ref": "#/components/schemas/BreakerHealth"}


# ------------------------------------------------------------------ bad arguments


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        (
            {"detail": "sometimes"},
            ValueError,
            r"detail must be one of 'always', 'never', 'authorized', got 'sometimes'",
        ),
        ({"detail": "authorized"}, ValueError, r'detail="authorized" needs authorize='),
        (
            {"detail": "authorized", "authorize": "admin"},
            TypeError,
            r"authorize must be a callable FastAPI dependency, got 'admin'",
        ),
        (
            {"detail": "always", "authorize": token_is_secret},
            ValueError,
            r'authorize= is only used with detail="authorized", not \'always\'',
        ),
        (
            {"detail": "never", "authorize": token_is_secret},
            ValueError,
            r'authorize= is only used with detail="authorized", not \'never\'',
        ),
        (
            {"critical": "auth"},
            TypeError,
            r"critical must be a collection of names, not one string: critical=\('auth',\)",
        ),
        ({"critical": ["auth", 3]}, TypeError, r"critical must hold strings, got 3"),
        ({"critical": 3}, TypeError, r"critical must be a collection of names, got 3"),
        ({"critical": [""]}, ValueError, r"critical must not hold an empty name"),
        ({"tags": "health"}, TypeError, r"tags must be a collection of names, not one string"),
        ({"prefix": "health"}, ValueError, r"prefix must start with '/'.*got 'health'"),
        ({"prefix": "/health/"}, ValueError, r"not end with '/', got '/health/'"),
        ({"prefix": ""}, ValueError, r"prefix must start with '/'"),
        ({"registry": object()}, TypeError, r"registry must have a breakers\(\) method"),
    ],
)
def test_bad_arguments_are_refused_when_the_router_is_built(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        health_router(**options)


def strict_registry() -> BreakerRegistry:
    return BreakerRegistry(breakers={"auth": {}, "users": {}}, strict=True, clock=FakeClock())


def test_critical_names_unknown_to_a_strict_registry_are_refused() -> None:
    with pytest.raises(ValueError, match=r"^critical names breakers") as caught:
        health_router(registry=strict_registry(), critical=["auth", "Sidecar", "Cache"])

    assert str(caught.value) == (
        "critical names breakers that the strict registry does not have: 'Cache', 'Sidecar'; "
        "configured breakers: 'auth', 'users'"
    )


def test_critical_names_known_to_a_strict_registry_are_accepted() -> None:
    health_router(registry=strict_registry(), critical=["users", "auth"])


def test_a_lenient_registry_accepts_any_critical_name() -> None:
    # Any name exists in a lenient registry, created on first use.
    health_router(registry=BreakerRegistry(), critical=["Sidecar"])
    health_router(registry=StandInRegistry(), critical=["Sidecar"])


@pytest.mark.parametrize(
    "prefix",
    [
        "/health/{name}",
        "/ops{",
        "/ops}",
        "/he alth",
        "/health\t",
        "/health\n",
        "/health\x00",
        "/health\x7f",
        "/health\u200b",
        "/health\u2028",
        "/health\udc80",
        "/health?x=1",
        "/health#top",
    ],
)
def test_a_prefix_that_no_request_path_could_match_safely_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match=r"^prefix must be a plain path") as caught:
        health_router(prefix=prefix)

    assert str(caught.value) == (
        "prefix must be a plain path: no '{', '}', '?', '#', whitespace or control "
        f"characters, got {prefix!r}"
    )


async def test_a_prefix_with_unicode_letters_is_accepted() -> None:
    app = make_app(registry=StandInRegistry(), prefix="/sant\u00e9")

    assert (await send(app, "/sant%C3%A9/live")).status_code == 200


# ------------------------------------------------------------------ names UTF-8 cannot carry


async def test_health_with_a_lone_surrogate_name_is_valid_utf8_json() -> None:
    clock = FakeClock()
    registry = BreakerRegistry(clock=clock)
    registry.get("tenant-\udc80").open()
    registry.get("tenant-\udc81")
    registry.get("tenant-\u00e9")
    app = make_app(registry=registry, detail="always")

    response = await send(app, "/health")

    assert response.status_code == 200
    body = json.loads(response.content.decode("utf-8"))  # strict: no surrogate on the wire
    assert body["status"] == "degraded"
    assert {name: entry["state"] for name, entry in body["details"].items()} == {
        "tenant-\\udc80": "open",
        "tenant-\\udc81": "closed",
        "tenant-\u00e9": "closed",
    }


async def test_ready_with_a_lone_surrogate_critical_name_is_valid_utf8_json() -> None:
    registry = BreakerRegistry(breakers={"auth\udc80": {}}, strict=True, clock=FakeClock())
    registry.get("auth\udc80").open()
    app = make_app(registry=registry, critical=["auth\udc80"], detail="always")

    response = await send(app, "/health/ready")

    assert response.status_code == 503
    assert json.loads(response.content.decode("utf-8")) == {
        "status": "not_ready",
        "critical": {"auth\\udc80": "open"},
    }


# ------------------------------------------------------------------ with the real BreakerRegistry


async def test_real_registry_from_app_state() -> None:
    from fastapi_breaker import BreakerRegistry

    clock = FakeClock()
    registry = BreakerRegistry(
        {"reset_timeout": 20.0, "volume_threshold": 0}, {"auth": {}}, clock=clock
    )
    app = make_app(detail="always", critical=["auth", "users"])
    app.state.breaker_registry = registry

    # Configured but never used: not created, so /health lists nothing and /ready is ready.
    assert (await send(app, "/health")).json() == {"status": "healthy", "details": {}}
    ready = await send(app, "/health/ready")
    assert (ready.status_code, ready.json()) == (
        200,
        {"status": "ready", "critical": {"auth": "closed", "users": "closed"}},
    )

    with pytest.raises(ConnectionError):
        await registry.get("auth").call(fail)
    registry.get("catalog")
    clock.advance(4.0)

    health = await send(app, "/health")
    assert health.status_code == 503
    assert health.json() == {
        "status": "unhealthy",
        "details": {
            "auth": {
                "state": "open",
                "stats": stats_body(fires=1, failures=1, error_percentage=100.0),
                "retry_after": 16.0,
            },
            "catalog": {"state": "closed", "stats": stats_body(), "retry_after": None},
        },
    }
    ready = await send(app, "/health/ready")
    assert (ready.status_code, ready.json()) == (
        503,
        {"status": "not_ready", "critical": {"auth": "open", "users": "closed"}},
    )


async def test_real_registry_passed_explicitly_and_shut_down() -> None:
    from fastapi_breaker import BreakerRegistry

    clock = FakeClock()
    registry = BreakerRegistry(clock=clock)
    registry.get("users").open()
    app = make_app(detail="always", registry=registry)

    degraded = await send(app, "/health")
    assert (degraded.status_code, degraded.json()["status"]) == (200, "degraded")

    # shutdown() forgets every breaker: the next app lifespan starts from nothing.
    registry.shutdown()
    assert (await send(app, "/health")).json() == {"status": "healthy", "details": {}}
