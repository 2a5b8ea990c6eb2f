"""A breaker named from a request: every place that prints its name stays valid UTF-8.

A JSON body may carry a lone surrogate ("\\udc80"), which Python decodes into the string and
UTF-8 cannot encode. Named after it, a breaker must not turn `/health` or the 503 into a 500.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from fastapi_breaker import BreakerRegistry, CircuitBreaker
from fastapi_breaker.fastapi import get_registry, setup_breakers
from fastapi_breaker.health import health_router
from fastapi_breaker.testing import FakeClock

# What a client sends: JSON's own escape, which json.loads turns into a lone surrogate.
BODY = b'{"tenant": "acme\\udc80"}'
SHOWN = "report:acme\\udc80"  # the same name as printed: the surrogate as the text \udc80


def tenant_app(registry: BreakerRegistry) -> FastAPI:
    app = FastAPI()
    setup_breakers(app, registry, expose_name=True)
    app.include_router(health_router(detail="always"))

    @app.post("/report")
    async def report(request: Request) -> Any:
        tenant = json.loads(await request.body())["tenant"]
        breaker = get_registry(request).get(f"report:{tenant}")
        return await breaker.call(lambda: {"tenant": tenant[:4]})

    return app


async def test_a_name_from_a_json_body_keeps_health_and_the_503_valid() -> None:
    clock = FakeClock()
    registry = BreakerRegistry(clock=clock)
    app = tenant_app(registry)
    transport = httpx.ASGITransport(app=app)

    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        made = await client.post("/report", content=BODY)
        [name] = registry.breakers()
        healthy = await client.get("/health")
        registry.get(name).open()
        clock.advance(12.5)
        refused = await client.post("/report", content=BODY)
        degraded = await client.get("/health")

    assert name == "report:acme\udc80"
    assert (made.status_code, made.json()) == (200, {"tenant": "acme"})
    assert healthy.status_code == 200
    assert list(json.loads(healthy.content.decode("utf-8"))["details"]) == [SHOWN]

    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "18"
    assert json.loads(refused.content.decode("utf-8")) == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": f"Circuit breaker '{SHOWN}' is open; retry after 18 seconds.",
        "breaker": SHOWN,
        "retry_after": 18,
    }

    assert degraded.status_code == 200
    body = json.loads(degraded.content.decode("utf-8"))
    assert body["status"] == "degraded"
    assert body["details"][SHOWN]["state"] == "open"
    assert body["details"][SHOWN]["retry_after"] == 17.5


async def test_log_lines_about_such_a_breaker_encode_as_utf8(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_filter(exc: BaseException) -> bool:
        raise RuntimeError("filter bug")

    breaker = CircuitBreaker(name="acme\udc80", clock=FakeClock(), error_filter=broken_filter)

    async def fail() -> None:
        raise ConnectionError("down")

    with caplog.at_level(logging.ERROR, logger="fastapi_breaker"), pytest.raises(ConnectionError):
        await breaker.call(fail)

    [record] = caplog.records
    assert record.getMessage() == (
        "error_filter of breaker 'acme\\udc80' raised; counting a failure"
    )
    record.getMessage().encode("utf-8")  # repr() wrote the surrogate as text


async def test_the_strict_startup_error_prints_such_a_name_as_text() -> None:
    registry = BreakerRegistry(breakers={"ok": {}}, strict=True)
    app = FastAPI()
    setup_breakers(app, registry)
    app.include_router(health_router(critical=["auth\udc80"]))
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    with pytest.raises(RuntimeError) as caught:
        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)

    assert str(caught.value) == (
        "strict breaker registry: routes depend on unknown breakers: "
        "'auth\\udc80' (critical for GET /health/ready). Configured breakers: 'ok'"
    )
    str(caught.value).encode("utf-8")


# A lone surrogate, and the same name spelled with the text of its escape: two breakers, which
# every exporter must keep apart (one-to-one), each the same way.
SURROGATE, SPELLED = "acme\udc80", "acme\\udc80"
PRINTED = {SURROGATE: "acme\\udc80", SPELLED: "acme\\\\udc80"}


async def test_a_name_and_the_text_of_its_escape_stay_two_breakers_everywhere(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from fastapi_breaker.otel import instrument
    from fastapi_breaker.prometheus import BreakerCollector

    clock = FakeClock()
    registry = BreakerRegistry({"volume_threshold": 0}, clock=clock)
    for name in (SURROGATE, SPELLED):
        registry.get(name)
    registry.get(SURROGATE).force_open()  # hidden before, behind the other's key

    app = FastAPI()
    app.include_router(health_router(registry=registry, detail="always"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        details = json.loads((await client.get("/health")).content)["details"]
    assert {key: entry["state"] for key, entry in details.items()} == {
        PRINTED[SURROGATE]: "open",
        PRINTED[SPELLED]: "closed",
    }

    text = BreakerCollector(registry).render().decode()
    labels = {
        line.split('name="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith("circuit_breaker_state{") and line.endswith(" 1.0")
    }
    # The exposition format escapes a backslash once more.
    assert labels == {"acme\\\\udc80", "acme\\\\\\\\udc80"}

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    caplog.set_level(logging.WARNING)
    caplog.clear()  # the forced open's own log line
    instrumentation = instrument(registry, meter_provider=provider)
    try:
        data = reader.get_metrics_data()
    finally:
        instrumentation.uninstrument()
    assert data is not None
    names = {
        point.attributes["name"]
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "circuit_breaker.state"
        for point in metric.data.data_points
        if point.attributes
    }
    assert names == {PRINTED[SURROGATE], PRINTED[SPELLED]}
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
