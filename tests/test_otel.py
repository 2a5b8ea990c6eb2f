"""fastapi_breaker.otel: the observable instruments, read with the SDK's in-memory reader, and
the span events, read with its in-memory span exporter. Every breaker runs on a fake clock, and
every call is a `call_sync` whose action moves that clock, so latencies are exact."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from fastapi_breaker import (
    BreakerRegistry,
    CallTimeoutError,
    CapacityExceededError,
    CircuitBreaker,
    CircuitOpenError,
)
from fastapi_breaker.otel import SCOPE_NAME, Instrumentation, instrument
from fastapi_breaker.testing import FakeClock
from tests import test_optional_imports

# Series by instrument name, then by attribute values in the order the instrument sets them.
Points = dict[str, dict[tuple[Any, ...], float]]


class Boom(Exception):
    pass


class Setup:
    """A registry on a fake clock, a meter provider with an in-memory reader, and a tracer."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.registry = BreakerRegistry(
            defaults={"volume_threshold": 0, "reset_timeout": 10.0, "timeout": 1.0},
            breakers={"pool": {"capacity": 1, "timeout": None}},
            clock=self.clock,
        )
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)
        self.exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = tracer_provider.get_tracer("test")
        self.made: list[Instrumentation] = []

    def instrument(self, **kwargs: Any) -> Instrumentation:
        made = instrument(self.registry, meter_provider=self.meter_provider, **kwargs)
        self.made.append(made)
        return made

    def points(self) -> Points:
        data = self.reader.get_metrics_data()
        found: Points = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == SCOPE_NAME
                for metric in scope.metrics:
                    found[metric.name] = {
                        tuple((p.attributes or {}).values()): p.value
                        for p in metric.data.data_points
                    }
        return found

    def events(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(span, event, attributes) of every finished span, in order."""
        return [
            (span.name, event.name, dict(event.attributes or {}))
            for span in self.exporter.get_finished_spans()
            for event in span.events
        ]

    # ---------------------------------------------------------------- calls that move the clock

    def takes(self, name: str, seconds: float) -> str:
        def action() -> str:
            self.clock.advance(seconds)
            return "ok"

        return self.registry.get(name).call_sync(action)

    def fails(self, name: str, seconds: float) -> None:
        def action() -> None:
            self.clock.advance(seconds)
            raise Boom

        with pytest.raises(Boom):
            self.registry.get(name).call_sync(action)

    def times_out(self, name: str, seconds: float) -> None:
        with pytest.raises(CallTimeoutError):
            self.takes(name, seconds)

    def refused(self, name: str) -> None:
        with pytest.raises(CircuitOpenError):
            self.takes(name, 0.0)

    def over_capacity(self) -> None:
        """A call to "pool" (capacity 1) that calls "pool" again from inside: refused."""

        def action() -> None:
            with pytest.raises(CapacityExceededError):
                self.takes("pool", 0.0)

        self.registry.get("pool").call_sync(action)


@pytest.fixture
def setup() -> Iterator[Setup]:
    made = Setup()
    yield made
    for instrumentation in made.made:
        instrumentation.uninstrument()
    made.registry.shutdown()


def trip(setup: Setup) -> None:
    """closed -> open: 1 success, 1 timeout (50%, not over the threshold), 1 failure (67%)."""
    setup.takes("auth", 0.25)
    setup.times_out("auth", 1.5)
    setup.fails("auth", 0.5)


def settings(name: str, *, timeout: float | None = 1.0) -> Points:
    timeouts = {} if timeout is None else {(name,): timeout}
    return {
        "circuit_breaker.failure_rate_threshold": {(name,): 0.5},
        "circuit_breaker.volume_threshold": {(name,): 0},
        "circuit_breaker.window": {(name,): 10.0},
        "circuit_breaker.reset_timeout": {(name,): 10.0},
        "circuit_breaker.call_timeout": timeouts,
    }


def states(name: str, current: str) -> dict[tuple[Any, ...], float]:
    every = ("closed", "open", "half_open", "forced_open", "disabled")
    return {(name, state): int(state == current) for state in every}


def calls(name: str, **counts: int) -> dict[tuple[Any, ...], float]:
    every = ("success", "failure", "timeout", "rejected", "capacity_rejected", "fallback")
    return {(name, outcome): counts.get(outcome, 0) for outcome in every}


def quantiles(name: str, p50: float, p90: float, p99: float) -> dict[tuple[Any, ...], float]:
    return {(name, "0.5"): p50, (name, "0.9"): p90, (name, "0.99"): p99}


# ---------------------------------------------------------------------- instruments


def test_instruments_through_closed_open_half_open_closed(setup: Setup) -> None:
    setup.instrument(span_events=False)
    assert setup.points() == {}  # no breaker yet

    setup.registry.get("auth")
    assert setup.points() == {
        "circuit_breaker.state": states("auth", "closed"),
        "circuit_breaker.calls": calls("auth"),
        "circuit_breaker.call_time": {("auth",): 0.0},
        "circuit_breaker.failure_rate": {("auth",): 0.0},
        **settings("auth"),
    }

    trip(setup)
    setup.registry.get("auth").fallback(lambda *args: "fallback")
    assert setup.takes("auth", 0.0) == "fallback"  # refused, answered by the fallback
    open_window = setup.registry.get("auth").stats.percentiles
    assert setup.points() == {
        "circuit_breaker.state": states("auth", "open"),
        "circuit_breaker.calls": calls(
            "auth", success=1, failure=1, timeout=1, rejected=1, fallback=1
        ),
        "circuit_breaker.call_time": {("auth",): 2.25},
        "circuit_breaker.transitions": {("auth", "closed", "open"): 1},
        "circuit_breaker.failure_rate": {("auth",): 200 / 3 / 100},  # the percentage, over 100
        "circuit_breaker.call_latency": quantiles(
            "auth", open_window[0.5], open_window[0.9], open_window[0.99]
        ),
        **settings("auth"),
    }
    # Binned percentiles of 0.25, 0.5 and 1.5 s: each within its bin, a quarter of its bound.
    assert 0.4375 <= open_window[0.5] <= 0.5
    assert 1.25 <= open_window[0.99] <= 1.5

    setup.clock.advance(10.0)  # the reset timeout: collecting sees it and turns half-open
    points = setup.points()
    assert points["circuit_breaker.state"] == states("auth", "half_open")
    assert points["circuit_breaker.transitions"] == {
        ("auth", "closed", "open"): 1,
        ("auth", "open", "half_open"): 1,
    }

    assert setup.takes("auth", 0.125) == "ok"  # the trial: closes, and clears the window
    points = setup.points()
    assert points["circuit_breaker.state"] == states("auth", "closed")
    assert points["circuit_breaker.calls"] == calls(
        "auth", success=2, failure=1, timeout=1, rejected=1, fallback=1
    )
    assert points["circuit_breaker.call_time"] == {("auth",): 2.375}
    assert points["circuit_breaker.transitions"] == {
        ("auth", "closed", "open"): 1,
        ("auth", "open", "half_open"): 1,
        ("auth", "half_open", "closed"): 1,
    }
    assert points["circuit_breaker.failure_rate"] == {("auth",): 0.0}
    assert "circuit_breaker.call_latency" not in points  # an empty window has no percentiles

    setup.takes("auth", 0.0625)  # one latency in the window: every percentile estimates it
    window = setup.registry.get("auth").stats.percentiles
    points = setup.points()
    assert points["circuit_breaker.call_latency"] == quantiles(
        "auth", window[0.5], window[0.9], window[0.99]
    )
    assert all(abs(window[q] - 0.0625) <= 0.125 * 0.0625 for q in (0.5, 0.9, 0.99))
    assert points["circuit_breaker.call_time"] == {("auth",): 2.4375}


def test_instrument_kinds_units_and_attributes(setup: Setup) -> None:
    setup.instrument(span_events=False)
    trip(setup)
    data = setup.reader.get_metrics_data()
    assert data is not None
    (scope,) = data.resource_metrics[0].scope_metrics
    assert (scope.scope.name, scope.scope.version) == ("fastapi_breaker", "0.1.0.dev0")
    shapes = {
        m.name: (
            type(m.data).__name__,
            getattr(m.data, "is_monotonic", None),
            m.unit,
            {tuple(p.attributes or {}) for p in m.data.data_points},
        )
        for m in scope.metrics
    }
    named = {("name",)}
    assert shapes == {
        "circuit_breaker.state": ("Sum", False, "{breaker}", {("name", "state")}),
        "circuit_breaker.calls": ("Sum", True, "{call}", {("name", "outcome")}),
        "circuit_breaker.call_time": ("Sum", True, "s", named),
        "circuit_breaker.transitions": (
            "Sum",
            True,
            "{transition}",
            {("name", "from_state", "to_state")},
        ),
        "circuit_breaker.failure_rate": ("Gauge", None, "1", named),
        "circuit_breaker.call_latency": ("Gauge", None, "s", {("name", "quantile")}),
        "circuit_breaker.failure_rate_threshold": ("Gauge", None, "1", named),
        "circuit_breaker.volume_threshold": ("Gauge", None, "{call}", named),
        "circuit_breaker.window": ("Gauge", None, "s", named),
        "circuit_breaker.reset_timeout": ("Gauge", None, "s", named),
        "circuit_breaker.call_timeout": ("Gauge", None, "s", named),
    }
    assert all(m.description for m in scope.metrics)


def test_forced_open_disabled_and_capacity_rejections(setup: Setup) -> None:
    setup.instrument(span_events=False)
    setup.over_capacity()
    auth = setup.registry.get("auth")
    auth.force_open()
    points = setup.points()
    assert points["circuit_breaker.state"] == {
        **states("auth", "forced_open"),
        **states("pool", "closed"),
    }
    assert points["circuit_breaker.calls"] == {
        **calls("auth"),
        **calls("pool", success=1, capacity_rejected=1),
    }
    # A forced open counts as closed -> open; no call timeout means no value.
    assert points["circuit_breaker.transitions"] == {("auth", "closed", "open"): 1}
    assert points["circuit_breaker.call_timeout"] == {("auth",): 1.0}
    auth.disable()
    assert setup.points()["circuit_breaker.state"] == {
        **states("auth", "disabled"),
        **states("pool", "closed"),
    }


def test_breakers_made_after_instrument_and_several_registries_are_reported(
    setup: Setup,
) -> None:
    other = BreakerRegistry(clock=setup.clock)
    setup.instrument(span_events=False)
    instrument(other, meter_provider=setup.meter_provider, span_events=False)
    setup.takes("auth", 0.25)
    other.get("billing").call_sync(lambda: None)
    assert setup.points()["circuit_breaker.calls"] == {
        **calls("auth", success=1),
        **calls("billing", success=1),
    }
    other.shutdown()


def test_breakers_rebuilt_after_a_shutdown_are_reported_and_heard(setup: Setup) -> None:
    setup.instrument()
    setup.takes("auth", 0.25)
    setup.registry.shutdown()  # as an app's lifespan ends: the next get() makes a new breaker
    with setup.tracer.start_as_current_span("request"):
        trip(setup)
    assert setup.points()["circuit_breaker.calls"] == calls("auth", success=1, failure=1, timeout=1)
    assert [event for _, event, _ in setup.events()] == [
        "circuit_breaker.timeout",
        "circuit_breaker.state_change",
    ]


def test_uninstrument_stops_the_callbacks_and_a_new_instrument_reports_again(
    setup: Setup,
) -> None:
    instrumentation = setup.instrument()
    assert instrumentation.active
    setup.takes("auth", 0.25)
    instrumentation.uninstrument()
    assert not instrumentation.active
    assert setup.points() == {}
    instrumentation.uninstrument()  # again: nothing to do

    # The SDK hands back the first instruments for the same names, with their callbacks: the
    # second instrument() must be reported through them.
    setup.instrument(span_events=False)
    assert setup.points()["circuit_breaker.calls"] == calls("auth", success=1)


def test_a_collection_reads_each_breaker_once_and_a_call_nothing(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup.instrument(span_events=False)
    auth = setup.registry.get("auth")
    setup.registry.get("pool")
    reads: list[str] = []
    real = CircuitBreaker.metrics

    def metrics(self: CircuitBreaker) -> Any:
        reads.append(self.name)
        return real(self)

    monkeypatch.setattr(CircuitBreaker, "metrics", metrics)
    for _ in range(100):
        setup.takes("auth", 0.001)
    assert reads == []  # nothing per call
    assert auth.listening == frozenset()  # metrics alone listen to no event
    setup.points()
    assert reads == ["auth", "pool"]  # one snapshot, shared by the eleven instruments
    setup.takes("auth", 0.001)
    assert setup.points()["circuit_breaker.calls"][("auth", "success")] == 101
    assert reads == ["auth", "pool", "auth", "pool"]  # the next collection, a new snapshot


def test_two_readers_of_one_provider_each_get_every_value(setup: Setup) -> None:
    first_reader, second = InMemoryMetricReader(), InMemoryMetricReader()
    readers = [first_reader, second]
    setup.meter_provider = MeterProvider(metric_readers=readers, shutdown_on_exit=False)
    setup.reader = first_reader
    setup.instrument(span_events=False)
    setup.takes("auth", 0.25)
    first = setup.points()
    setup.reader = second
    assert setup.points() == first
    assert first["circuit_breaker.calls"] == calls("auth", success=1)


# ---------------------------------------------------------------------- span events


def test_span_events_in_order_on_the_current_span(setup: Setup) -> None:
    setup.instrument(metrics=False)
    with setup.tracer.start_as_current_span("trip"):
        trip(setup)
    with setup.tracer.start_as_current_span("refused"):
        setup.clock.advance(4.0)
        setup.refused("auth")
    with setup.tracer.start_as_current_span("trial"):
        setup.clock.advance(6.0)
        setup.takes("auth", 0.125)
    with setup.tracer.start_as_current_span("capacity"):
        setup.over_capacity()
    assert setup.events() == [
        (
            "trip",
            "circuit_breaker.timeout",
            {"circuit_breaker.name": "auth", "circuit_breaker.timeout": 1.0},
        ),
        (
            "trip",
            "circuit_breaker.state_change",
            {
                "circuit_breaker.name": "auth",
                "circuit_breaker.state": "open",
                "circuit_breaker.retry_after": 10.0,
            },
        ),
        (
            "refused",
            "circuit_breaker.rejected",
            {
                "circuit_breaker.name": "auth",
                "circuit_breaker.state": "open",
                "circuit_breaker.retry_after": 6.0,
            },
        ),
        (
            "trial",
            "circuit_breaker.state_change",
            {"circuit_breaker.name": "auth", "circuit_breaker.state": "half_open"},
        ),
        (
            "trial",
            "circuit_breaker.state_change",
            {"circuit_breaker.name": "auth", "circuit_breaker.state": "closed"},
        ),
        (
            "capacity",
            "circuit_breaker.capacity_rejected",
            {"circuit_breaker.name": "pool", "circuit_breaker.capacity": 1},
        ),
    ]


def test_span_events_of_a_forced_open_and_a_breaker_made_later(setup: Setup) -> None:
    setup.instrument(metrics=False)
    late = setup.registry.get("late")  # made after instrument(): heard all the same
    with setup.tracer.start_as_current_span("request"):
        late.force_open()
        setup.refused("late")
        late.close()
    assert setup.events() == [
        (
            "request",
            "circuit_breaker.state_change",
            {"circuit_breaker.name": "late", "circuit_breaker.state": "forced_open"},
        ),
        (
            "request",
            "circuit_breaker.rejected",
            {
                "circuit_breaker.name": "late",
                "circuit_breaker.state": "forced_open",
                "circuit_breaker.retry_after": 10.0,
            },
        ),
        (
            "request",
            "circuit_breaker.state_change",
            {"circuit_breaker.name": "late", "circuit_breaker.state": "closed"},
        ),
    ]


class SpySpan(trace.NonRecordingSpan):
    """A span that records nothing, and notes whether anyone tried to add an event to it."""

    def __init__(self) -> None:
        super().__init__(trace.INVALID_SPAN_CONTEXT)
        self.added: list[str] = []

    def add_event(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.added.append(name)


def test_no_event_is_built_for_a_span_that_is_not_recording(setup: Setup) -> None:
    setup.instrument(metrics=False)
    spy = SpySpan()
    with trace.use_span(spy):
        trip(setup)
        setup.refused("auth")
        setup.over_capacity()
    assert spy.added == []
    # Nor with a sampler that records nothing, nor with no span at all.
    unsampled = TracerProvider(sampler=ALWAYS_OFF)
    unsampled.add_span_processor(SimpleSpanProcessor(setup.exporter))
    with unsampled.get_tracer("test").start_as_current_span("dropped"):
        setup.refused("auth")
    setup.refused("auth")
    assert setup.exporter.get_finished_spans() == ()


def test_uninstrument_removes_every_handler(setup: Setup) -> None:
    instrumentation = setup.instrument()
    auth = setup.registry.get("auth")
    heard = {"reject", "semaphore_locked", "timeout", "open", "half_open", "close"}
    assert auth.listening == heard
    instrumentation.uninstrument()
    assert auth.listening == frozenset()
    with setup.tracer.start_as_current_span("request"):
        trip(setup)
        setup.refused("auth")
    assert setup.events() == []


def test_no_handler_costs_closed_calls_and_refusal_events_can_be_left_out(setup: Setup) -> None:
    # Nothing listens to "fire", "success" or "failure": closed calls keep their fast path.
    # "reject" costs each refusal while open, unless refusal events are left out.
    setup.instrument(refusal_events=False)
    auth = setup.registry.get("auth")
    assert auth.listening == {"timeout", "open", "half_open", "close"}
    with setup.tracer.start_as_current_span("request"):
        trip(setup)
        setup.refused("auth")
        setup.over_capacity()
    assert [event for _, event, _ in setup.events()] == [
        "circuit_breaker.timeout",
        "circuit_breaker.state_change",
    ]


# ---------------------------------------------------------------------- arguments and errors


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"registry": {"auth": {}}},
            TypeError,
            "registry must be a BreakerRegistry, got {'auth': {}}",
        ),
        (
            {"meter_provider": "otlp"},
            TypeError,
            "meter_provider must be an opentelemetry.metrics.MeterProvider or None, got 'otlp'",
        ),
        ({"metrics": 1}, TypeError, "metrics must be True or False, got 1"),
        ({"span_events": None}, TypeError, "span_events must be True or False, got None"),
        ({"refusal_events": "no"}, TypeError, "refusal_events must be True or False, got 'no'"),
        (
            {"metrics": False, "span_events": False},
            ValueError,
            "metrics and span_events are both False: there is nothing to instrument",
        ),
    ],
)
def test_bad_arguments_fail_at_construction(
    setup: Setup, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    arguments: dict[str, Any] = {
        "registry": setup.registry,
        "meter_provider": setup.meter_provider,
        **kwargs,
    }
    registry = arguments.pop("registry")
    with pytest.raises(error) as caught:
        instrument(registry, **arguments)
    assert str(caught.value) == message
    assert setup.registry.get("auth").listening == frozenset()  # nothing was attached


def test_the_same_work_twice_is_refused(setup: Setup) -> None:
    first = setup.instrument()
    with pytest.raises(RuntimeError) as caught:
        setup.instrument(span_events=False)
    assert str(caught.value) == (
        f"{setup.registry!r} already reports to this meter provider; call uninstrument() on "
        "its Instrumentation first"
    )
    elsewhere = MeterProvider(shutdown_on_exit=False)
    with pytest.raises(RuntimeError) as caught:
        instrument(setup.registry, meter_provider=elsewhere)
    assert str(caught.value) == (
        f"{setup.registry!r} already gets span events; call uninstrument() on its "
        "Instrumentation first, or pass span_events=False"
    )
    # Metrics to a second provider are fine: one registry, two backends.
    second = instrument(setup.registry, meter_provider=elsewhere, span_events=False)
    second.uninstrument()
    first.uninstrument()


def test_missing_opentelemetry_names_the_extra() -> None:
    test_optional_imports.test_missing_package_names_the_extra(
        "fastapi_breaker.otel",
        ("opentelemetry",),
        "fastapi_breaker.otel needs opentelemetry-api: pip install 'fastapi_breaker[otel]'",
    )


def test_the_global_meter_provider_may_be_set_after_instrument() -> None:
    # In a fresh interpreter: the global provider can be set only once per process.
    code = textwrap.dedent(
        """
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from fastapi_breaker import BreakerRegistry
        from fastapi_breaker.otel import instrument

        registry = BreakerRegistry()
        first = instrument(registry, span_events=False)  # before the SDK is configured
        registry.get("auth").call_sync(lambda: None)
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        first.uninstrument()
        instrument(registry, span_events=False)  # the same instruments, through the proxy
        data = reader.get_metrics_data()
        (scope,) = data.resource_metrics[0].scope_metrics
        calls = {m.name: m for m in scope.metrics}["circuit_breaker.calls"]
        print(sorted((dict(p.attributes)["outcome"], p.value)
                     for p in calls.data.data_points))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "[('capacity_rejected', 0), ('failure', 0), ('fallback', 0), ('rejected', 0), "
        "('success', 1), ('timeout', 0)]"
    )
