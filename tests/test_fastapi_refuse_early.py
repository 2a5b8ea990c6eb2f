"""`Depends(get_breaker(name))` refuses before the route runs while the breaker would refuse.

The README's FastAPI example is run here as the README shows it, under uvicorn on 127.0.0.1:
while its breaker is open, `/login` answers 503 with `Retry-After` and its httpx client never
sees a request. The other tests use small inline apps and a fake clock.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time,
# and some name a dependency built from the test's local variables.

import asyncio
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from example_app.servers import LoopbackServer
from example_app.user_service import create_user_app
from fastapi_breaker import BreakerRegistry, CircuitBreaker, State
from fastapi_breaker.fastapi import BreakerDependency, get_breaker, setup_breakers
from fastapi_breaker.testing import FakeClock

README = Path(__file__).resolve().parent.parent / "README.md"
LOGIN = "/login?token=valid-alice"


def readme_example() -> dict[str, Any]:
    """The namespace of README.md's "Use it in FastAPI" example, run as it is shown."""
    section = README.read_text().partition("## Use it in FastAPI\n")[2]
    source = section.partition("```python\n")[2].partition("```")[0]
    assert "Depends(get_breaker(" in source
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(source, "<README.md example>", "exec"), namespace)
    return namespace


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def open_registry() -> tuple[BreakerRegistry, CircuitBreaker, FakeClock]:
    clock = FakeClock()
    registry = BreakerRegistry(
        breakers={"AuthService": {"reset_timeout": 10.0, "volume_threshold": 0}}, clock=clock
    )
    breaker = registry.get("AuthService")
    breaker.open()
    return registry, breaker, clock


# ---------------------------------------------------------------- the README's route


async def test_the_readme_route_answers_503_without_building_the_request() -> None:
    example = readme_example()
    app, registry = example["app"], example["registry"]
    built: list[httpx.Request] = []

    async def note(request: httpx.Request) -> None:
        built.append(request)

    server = LoopbackServer(app)
    await server.start()
    try:
        # The lifespan made the README's client (to http://auth:8001, never dialled here).
        auth: httpx.AsyncClient = app.state.auth
        auth.event_hooks = {"request": [note], "response": []}
        breaker = registry.get("AuthService")
        breaker.force_open()  # Retry-After is then the whole reset timeout, 20 s
        async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
            first = await http.get(LOGIN)
            second = await http.get(LOGIN)
    finally:
        await server.stop()

    for response in (first, second):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "20"
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["retry_after"] == 20
    assert built == []  # the route body never ran: no request was built or sent
    stats = breaker.stats
    assert (stats.rejects, stats.successes, stats.failures) == (2, 0, 0)


def test_the_readme_route_documents_its_503() -> None:
    app = readme_example()["app"]

    responses = app.openapi()["paths"]["/login"]["get"]["responses"]

    assert responses["503"]["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}


# ---------------------------------------------------------------- what runs while open


def login_app(registry: BreakerRegistry, ran: list[str], **options: Any) -> FastAPI:
    app = FastAPI()
    setup_breakers(app, registry)

    @app.get("/login")
    async def login(
        auth: Annotated[CircuitBreaker, Depends(get_breaker("AuthService", **options))],
    ) -> dict[str, str]:
        ran.append("login")
        return {"user": await auth.call(lambda: "alice")}

    return app


async def test_while_open_the_route_body_does_not_run() -> None:
    registry, breaker, _ = open_registry()
    ran: list[str] = []

    async with client(login_app(registry, ran)) as http:
        response = await http.get("/login")

    assert (response.status_code, response.headers["retry-after"]) == (503, "10")
    assert ran == []
    assert (breaker.stats.rejects, breaker.stats.fires) == (1, 1)


async def test_the_opt_out_form_reaches_the_route_body() -> None:
    registry, breaker, _ = open_registry()
    ran: list[str] = []

    async with client(login_app(registry, ran, refuse_early=False)) as http:
        response = await http.get("/login")

    # The route ran; its own call met the refusal, which the app's handler answered.
    assert (response.status_code, response.headers["retry-after"]) == (503, "10")
    assert ran == ["login"]
    assert breaker.stats.rejects == 1


def status_app(registry: BreakerRegistry, name: str = "AuthService") -> FastAPI:
    app = FastAPI()
    setup_breakers(app, registry)

    @app.get("/status")
    async def status(
        auth: Annotated[CircuitBreaker, Depends(get_breaker(name, refuse_early=False))],
    ) -> dict[str, object]:
        return {"state": auth.state.value, "retry_after": auth.retry_after}

    return app


async def test_a_status_page_reads_an_open_breaker() -> None:
    registry, breaker, _ = open_registry()

    async with client(status_app(registry)) as http:
        response = await http.get("/status")

    assert (response.status_code, response.json()) == (200, {"state": "open", "retry_after": 10.0})
    assert breaker.stats.rejects == 0


async def test_a_breaker_with_a_fallback_is_not_refused_early() -> None:
    registry, breaker, _ = open_registry()
    breaker.fallback(lambda exc: f"fallback after {type(exc).__name__}")
    ran: list[str] = []

    async with client(login_app(registry, ran)) as http:
        response = await http.get("/login")

    assert (response.status_code, response.json()) == (
        200,
        {"user": "fallback after CircuitOpenError"},
    )
    assert ran == ["login"]
    assert (breaker.stats.rejects, breaker.stats.fallbacks) == (1, 1)


async def test_a_closed_breaker_counts_nothing_before_the_route() -> None:
    clock = FakeClock()
    registry = BreakerRegistry(clock=clock)
    ran: list[str] = []

    async with client(login_app(registry, ran)) as http:
        response = await http.get("/login")

    assert (response.status_code, response.json()) == (200, {"user": "alice"})
    stats = registry.get("AuthService").stats
    assert (stats.fires, stats.successes, stats.rejects) == (1, 1, 0)


async def test_half_open_the_check_leaves_the_trial_to_the_route() -> None:
    registry, breaker, clock = open_registry()
    clock.advance(10.0)  # the reset timeout: the next call is the trial
    ran: list[str] = []
    upstream_calls = 0
    answer = asyncio.Event()

    async def verify() -> str:
        nonlocal upstream_calls
        upstream_calls += 1
        await answer.wait()
        return "alice"

    app = FastAPI()
    setup_breakers(app, registry)

    @app.get("/login")
    async def login(
        auth: Annotated[CircuitBreaker, Depends(get_breaker("AuthService"))],
    ) -> dict[str, str]:
        ran.append("login")
        return {"user": await auth.call(verify)}

    async with client(app) as http:
        trial = asyncio.create_task(http.get("/login"))
        for _ in range(1_000):  # bounded: the trial reaches verify() within a few loop turns
            if upstream_calls:
                break
            await asyncio.sleep(0)
        # The trial is in flight: the next request is refused before its route runs.
        refused = await http.get("/login")
        during = breaker.stats
        answer.set()
        passed = await trial

    assert (passed.status_code, passed.json()) == (200, {"user": "alice"})
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "10"  # the trial's time limit, the default timeout
    assert ran == ["login"]
    assert upstream_calls == 1
    # One rejection; the trial in flight is counted when it ends.
    assert (during.fires, during.rejects, during.successes) == (1, 1, 0)
    assert breaker.state is State.CLOSED  # the trial passed


# ---------------------------------------------------------------- the argument


@pytest.mark.parametrize("value", [1, 0, None, "no"])
def test_refuse_early_must_be_a_bool(value: Any) -> None:
    with pytest.raises(TypeError) as caught:
        get_breaker("AuthService", refuse_early=value)

    assert str(caught.value) == f"refuse_early must be True or False, got {value!r}"


def test_the_two_forms_are_different_dependencies() -> None:
    assert get_breaker("AuthService") == BreakerDependency("AuthService", refuse_early=True)
    assert get_breaker("AuthService", refuse_early=False) == get_breaker(
        "AuthService", refuse_early=False
    )
    assert get_breaker("AuthService", refuse_early=False) != get_breaker("AuthService")


async def test_each_route_keeps_its_form_in_one_process() -> None:
    # typing.Annotated caches aliases by equal metadata: were both forms equal, the second
    # route below would be handed the first one's dependency.
    registry, _, _ = open_registry()
    refusing: list[str] = []
    opting_out: list[str] = []
    first = login_app(registry, refusing)
    second = login_app(registry, opting_out, refuse_early=False)

    async with client(first) as http:
        await http.get("/login")
    async with client(second) as http:
        await http.get("/login")

    assert (refusing, opting_out) == ([], ["login"])


async def test_an_override_names_the_form_it_replaces() -> None:
    registry, _, _ = open_registry()
    ran: list[str] = []
    app = login_app(registry, ran, refuse_early=False)
    stand_in = CircuitBreaker(name="stand-in", clock=FakeClock())
    app.dependency_overrides[get_breaker("AuthService", refuse_early=False)] = lambda: stand_in

    async with client(app) as http:
        response = await http.get("/login")

    assert (response.status_code, response.json()) == (200, {"user": "alice"})
    assert stand_in.stats.successes == 1


async def test_the_strict_check_sees_the_opt_out_form() -> None:
    app = status_app(BreakerRegistry(breakers={"AuthService": {}}, strict=True), "Billing")

    with pytest.raises(RuntimeError) as caught:
        async with app.router.lifespan_context(app):
            pass

    assert str(caught.value) == (
        "strict breaker registry: routes depend on unknown breakers: 'Billing' (used by GET "
        "/status). Configured breakers: 'AuthService'"
    )
    assert "503" in app.openapi()["paths"]["/status"]["get"]["responses"]


# ---------------------------------------------------------------- the example app


async def test_the_example_status_page_answers_while_open() -> None:
    app = create_user_app("http://127.0.0.1:1", clock=FakeClock())
    breaker = app.state.breaker_registry.get("AuthService")
    breaker.open()

    async with client(app) as http:
        response = await http.get("/auth-status")

    assert (response.status_code, response.json()) == (200, {"state": "open", "retry_after": 20.0})
    assert breaker.stats.rejects == 0
