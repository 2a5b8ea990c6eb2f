"""OpenTelemetry for a registry's breakers: observable instruments, and span events.

    from opentelemetry.sdk.metrics import MeterProvider
    from fastapi_breaker.otel import instrument

    instrumentation = instrument(registry, meter_provider=MeterProvider(metric_readers=[...]))
    ...
    instrumentation.uninstrument()

Metrics are observable instruments: the SDK runs their callbacks when it collects, and each
callback reads `breaker.metrics()` of every breaker the registry holds then. Nothing runs per
call. Instruments are made once per meter provider and shared by every `instrument()` on it,
because the SDK answers a second instrument of the same name with the first one and drops the
second one's callback: re-instrumenting after `uninstrument()` would otherwise export nothing.

Span events go on the span current where the breaker emits (the request that was refused, that
timed out, or whose call moved the state), through registry-wide handlers, and only when that
span is recording. Handling `reject` turns off the breaker's lock-free path for refusals while
it is open; the state events and `timeout` cost nothing per call.

Needs the `otel` extra: `pip install "fastapi_breaker[otel]"` (the API only; the app brings the
SDK and its exporters).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without opentelemetry
    raise ImportError(
        "fastapi_breaker.otel needs opentelemetry-api: pip install 'fastapi_breaker[otel]'"
    ) from exc

from . import (
    CALL_OUTCOMES,
    METRIC_STATES,
    BreakerMetrics,
    BreakerOptions,
    BreakerRegistry,
    CallTimeoutError,
    CapacityExceededError,
    CircuitBreaker,
    CircuitOpenError,
    Event,
    EventName,
    __version__,
)
from ._names import printable_name

__all__ = ["SCOPE_NAME", "Instrumentation", "instrument"]

SCOPE_NAME = "fastapi_breaker"  # the instrumentation scope of every instrument

# Span event attributes are namespaced: a tracing backend indexes them beside every other
# attribute of the span. Metric attributes are the Prometheus collector's label names (`name`,
# `state`, `outcome`, ...), so that metrics exported through the OpenTelemetry Collector to
# Prometheus give the same `circuit_breaker_state{name,state}` and
# `circuit_breaker_transitions_total{name,from_state,to_state}` series as the collector does.
_NAME = "circuit_breaker.name"
_STATE = "circuit_breaker.state"
_RETRY_AFTER = "circuit_breaker.retry_after"
_TIMEOUT = "circuit_breaker.timeout"
_CAPACITY = "circuit_breaker.capacity"

_REJECTED = "circuit_breaker.rejected"
_CAPACITY_REJECTED = "circuit_breaker.capacity_rejected"
_TIMED_OUT = "circuit_breaker.timeout"
_STATE_CHANGE = "circuit_breaker.state_change"

# The window's latency percentiles exported as gauges, with their attribute values.
_QUANTILES: dict[float, str] = {0.5: "0.5", 0.9: "0.9", 0.99: "0.99"}

# The state a transition event names, as `circuit_breaker.state` spells it.
_MOVED_TO = {"open": "open", "half_open": "half_open", "close": "closed"}

_Subscription = tuple[EventName, Callable[[Event], None]]
_Callback = Callable[[CallbackOptions], Iterator[Observation]]
_Observe = Callable[[list[BreakerMetrics]], Iterator[Observation]]

# The options that decide a trip, each a gauge: (name, unit, description, how to read it).
_SETTINGS: tuple[tuple[str, str, str, Callable[[BreakerOptions], float | None]], ...] = (
    (
        "circuit_breaker.failure_rate_threshold",
        "1",
        "The failure rate above which the breaker opens, 0 to 1",
        lambda o: o.error_threshold_percentage / 100,
    ),
    (
        "circuit_breaker.volume_threshold",
        "{call}",
        "Calls the window must hold before the breaker may open",
        lambda o: o.volume_threshold,
    ),
    (
        "circuit_breaker.window",
        "s",
        "The rolling window's length in seconds",
        lambda o: o.rolling_count_timeout,
    ),
    (
        "circuit_breaker.reset_timeout",
        "s",
        "Seconds an open breaker waits before it admits a trial",
        lambda o: o.reset_timeout,
    ),
    (
        "circuit_breaker.call_timeout",
        "s",
        "Each call's time limit (no value when calls have none)",
        lambda o: o.timeout,
    ),
)


def _states(snapshot: list[BreakerMetrics]) -> Iterator[Observation]:
    for m in snapshot:
        for state in METRIC_STATES:
            yield Observation(
                1 if state == m.state else 0, {"name": printable_name(m.name), "state": state}
            )


def _calls(snapshot: list[BreakerMetrics]) -> Iterator[Observation]:
    for m in snapshot:
        for outcome in CALL_OUTCOMES:
            yield Observation(
                m.calls[outcome], {"name": printable_name(m.name), "outcome": outcome}
            )


def _call_time(snapshot: list[BreakerMetrics]) -> Iterator[Observation]:
    for m in snapshot:
        yield Observation(m.latency.sum, {"name": printable_name(m.name)})


def _transitions(snapshot: list[BreakerMetrics]) -> Iterator[Observation]:
    for m in snapshot:
        for (before, after), count in m.transitions.items():
            attributes = {"name": printable_name(m.name), "from_state": before, "to_state": after}
            yield Observation(count, attributes)


def _failure_rate(snapshot: list[BreakerMetrics]) -> Iterator[Observation]:
    for m in snapshot:
        yield Observation(m.error_percentage / 100, {"name": printable_name(m.name)})


def _latency(snapshot: list[BreakerMetrics]) -> Iterator[Observation]:
    for m in snapshot:
        window = m.window
        # An empty window's percentiles read 0: reporting no value is the honest answer.
        if window.successes + window.failures == 0:
            continue
        for quantile, label in _QUANTILES.items():
            yield Observation(
                window.percentiles[quantile], {"name": printable_name(m.name), "quantile": label}
            )


def _setting(read: Callable[[BreakerOptions], float | None]) -> _Observe:
    def observe(snapshot: list[BreakerMetrics]) -> Iterator[Observation]:
        for m in snapshot:
            value = read(m.options)
            if value is not None:
                yield Observation(value, {"name": printable_name(m.name)})

    return observe


class _Feed:
    """The observable instruments of one meter, and the registries they report.

    Made once per meter provider and never dropped while it lives (the SDK offers no way to
    remove an instrument); `uninstrument()` takes its registry out of `registries`, and the
    callbacks then report nothing for it.

    One collection runs every callback once, and they share one `metrics()` of each breaker,
    so that the instruments agree with each other and the breakers are read once: a callback
    that already read the current snapshot starts a new collection and takes a new one, and
    the last callback to read it lets it go. Any order of callbacks works; two readers
    collecting at the same time at worst read the breakers once more.
    """

    def __init__(self, meter: Meter) -> None:
        # A tuple replaced whole: a collection on the exporter's thread reads a stable one.
        self._registries: tuple[BreakerRegistry, ...] = ()
        self._snapshot: list[BreakerMetrics] | None = None
        self._readers: set[str] = set()  # the instruments that read `_snapshot`
        counter = meter.create_observable_counter
        gauge = meter.create_observable_gauge
        # (how to make it, name, unit, description, what it observes in a snapshot)
        instruments: list[tuple[Callable[..., object], str, str, str, _Observe]] = [
            # An up-down counter, not a gauge: a state's 1s add up, over breakers, to how
            # many breakers are in it.
            (
                meter.create_observable_up_down_counter,
                "circuit_breaker.state",
                "{breaker}",
                "1 for the state each breaker is in, 0 for the others",
                _states,
            ),
            (
                counter,
                "circuit_breaker.calls",
                "{call}",
                "Calls by outcome since the breaker was made",
                _calls,
            ),
            (
                counter,
                "circuit_breaker.call_time",
                "s",
                "Seconds spent in the calls that ran (successes, failures, timeouts)",
                _call_time,
            ),
            (
                counter,
                "circuit_breaker.transitions",
                "{transition}",
                "State changes since the breaker was made",
                _transitions,
            ),
            (
                gauge,
                "circuit_breaker.failure_rate",
                "1",
                "Failed share of the calls counted in the rolling window, 0 to 1",
                _failure_rate,
            ),
            (
                gauge,
                "circuit_breaker.call_latency",
                "s",
                "Latency percentiles of the calls in the rolling window (approximate)",
                _latency,
            ),
            *((gauge, name, unit, text, _setting(read)) for name, unit, text, read in _SETTINGS),
        ]
        self._instruments = len(instruments)
        for create, name, unit, description, observe in instruments:
            create(name, [self._callback(name, observe)], unit=unit, description=description)

    @property
    def registries(self) -> tuple[BreakerRegistry, ...]:
        return self._registries

    @registries.setter
    def registries(self, registries: tuple[BreakerRegistry, ...]) -> None:
        self._registries = registries
        self._snapshot = None  # the next callback reads the new set of breakers

    def _callback(self, name: str, observe: _Observe) -> _Callback:
        def callback(options: CallbackOptions) -> Iterator[Observation]:
            return observe(self._metrics(name))

        return callback

    def _metrics(self, reader: str) -> list[BreakerMetrics]:
        snapshot = self._snapshot
        if snapshot is None or reader in self._readers:
            snapshot = [
                breaker.metrics()
                for registry in self._registries
                for breaker in registry.breakers().values()
            ]
            self._snapshot = snapshot
            self._readers = set()
        self._readers.add(reader)
        if len(self._readers) == self._instruments:
            self._snapshot = None  # every instrument has it: hold no copy until the next one
        return snapshot


# Feeds by meter provider; the global provider (`meter_provider=None`) has a key of its own,
# since `get_meter()` on it may return a fresh proxy meter on every call.
_FEEDS: weakref.WeakKeyDictionary[MeterProvider, _Feed] = weakref.WeakKeyDictionary()
_GLOBAL_FEED: list[_Feed] = []
_LOCK = threading.Lock()
# Instrumentations not yet uninstrumented, to refuse doing the same work twice.
_ACTIVE: list[Instrumentation] = []


def _feed_for(meter_provider: MeterProvider | None) -> _Feed:
    """The feed of `meter_provider`, made on first use. Called with `_LOCK` held."""
    if meter_provider is None or meter_provider is otel_metrics.get_meter_provider():
        if not _GLOBAL_FEED:
            _GLOBAL_FEED.append(_Feed(otel_metrics.get_meter(SCOPE_NAME, __version__)))
        return _GLOBAL_FEED[0]
    feed = _FEEDS.get(meter_provider)
    if feed is None:
        feed = _FEEDS[meter_provider] = _Feed(meter_provider.get_meter(SCOPE_NAME, __version__))
    return feed


def _state_of(breaker: CircuitBreaker) -> str:
    return "forced_open" if breaker.forced_open else breaker.state.value


class Instrumentation:
    """What `instrument()` attached to a registry; `uninstrument()` takes it all off."""

    __slots__ = ("_feed", "_handlers", "registry")

    def __init__(
        self, registry: BreakerRegistry, feed: _Feed | None, handlers: tuple[_Subscription, ...]
    ) -> None:
        self.registry = registry
        self._feed = feed
        self._handlers = handlers

    @property
    def active(self) -> bool:
        """True until `uninstrument()`."""
        return self in _ACTIVE

    def uninstrument(self) -> None:
        """Remove the span-event handlers and stop reporting this registry's breakers.

        Their instruments stay with the meter provider (the SDK cannot remove one) and report
        nothing for this registry from the next collection on. Calling it again does nothing.
        """
        with _LOCK:
            if self not in _ACTIVE:
                return
            _ACTIVE.remove(self)
            feed = self._feed
            if feed is not None:
                feed.registries = tuple(r for r in feed.registries if r is not self.registry)
        for event, handler in self._handlers:
            self.registry.off(event, handler)

    def __repr__(self) -> str:
        what = [k for k, on in (("metrics", self._feed), ("span_events", self._handlers)) if on]
        return f"<Instrumentation {'+'.join(what)} of {self.registry!r}>"


def instrument(
    registry: BreakerRegistry,
    *,
    meter_provider: MeterProvider | None = None,
    metrics: bool = True,
    span_events: bool = True,
    refusal_events: bool = True,
) -> Instrumentation:
    """Export `registry`'s breakers to OpenTelemetry, present and future ones alike.

    - `meter_provider`: where the instruments go; None for the global one
      (`opentelemetry.metrics.set_meter_provider()`, which may also be set later).
    - `metrics`: the observable instruments, read when the SDK collects.
    - `span_events`: an event on the current span for each refusal, timeout and state change.
      Span events need no tracer provider: they go on whichever span is current, if it records.
    - `refusal_events`: with `span_events`, the events of refusals too. Hearing them takes
      refusals off the breaker's lock-free path (about 5 us per refused call instead of 0.8);
      False leaves them out, and refusals on that path.

    A registry is instrumented once per meter provider, and gets span events once: asking
    again before `uninstrument()` raises `RuntimeError`.
    """
    if not isinstance(registry, BreakerRegistry):
        raise TypeError(f"registry must be a BreakerRegistry, got {registry!r}")
    if meter_provider is not None and not callable(getattr(meter_provider, "get_meter", None)):
        raise TypeError(
            "meter_provider must be an opentelemetry.metrics.MeterProvider or None, "
            f"got {meter_provider!r}"
        )
    flags = (("metrics", metrics), ("span_events", span_events), ("refusal_events", refusal_events))
    for flag, value in flags:
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be True or False, got {value!r}")
    if not (metrics or span_events):
        raise ValueError("metrics and span_events are both False: there is nothing to instrument")

    with _LOCK:
        feed = _feed_for(meter_provider) if metrics else None
        for other in _ACTIVE:
            if other.registry is not registry:
                continue
            if feed is not None and other._feed is feed:
                raise RuntimeError(
                    f"{registry!r} already reports to this meter provider; call uninstrument() "
                    "on its Instrumentation first"
                )
            if span_events and other._handlers:
                raise RuntimeError(
                    f"{registry!r} already gets span events; call uninstrument() on its "
                    "Instrumentation first, or pass span_events=False"
                )
        handlers: tuple[_Subscription, ...] = ()
        if span_events:
            handlers = _STATE_AND_TIMEOUT_HANDLERS
            if refusal_events:
                handlers += _REFUSAL_HANDLERS
        instrumentation = Instrumentation(registry, feed, handlers)
        if feed is not None:
            feed.registries = (*feed.registries, registry)
        _ACTIVE.append(instrumentation)
    for event, handler in handlers:
        registry.on(event, handler)
    return instrumentation


# ---------------------------------------------------------------------- span events
# Module functions, not closures: `registry.on()` keeps a handler once, so two registries share
# them harmlessly, and each reads everything it needs from the event.


def _on_reject(event: Event) -> None:
    span = trace.get_current_span()
    if not span.is_recording():
        return
    breaker = event.breaker
    attributes: dict[str, Any] = {_NAME: printable_name(breaker.name), _STATE: _state_of(breaker)}
    if isinstance(event.error, CircuitOpenError):
        attributes[_RETRY_AFTER] = event.error.retry_after
    span.add_event(_REJECTED, attributes)


def _on_capacity(event: Event) -> None:
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attributes: dict[str, Any] = {_NAME: printable_name(event.breaker.name)}
    if isinstance(event.error, CapacityExceededError):
        attributes[_CAPACITY] = event.error.capacity
    span.add_event(_CAPACITY_REJECTED, attributes)


def _on_timeout(event: Event) -> None:
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attributes: dict[str, Any] = {_NAME: printable_name(event.breaker.name)}
    if isinstance(event.error, CallTimeoutError):
        attributes[_TIMEOUT] = event.error.timeout
    span.add_event(_TIMED_OUT, attributes)


def _on_state_change(event: Event) -> None:
    span = trace.get_current_span()
    if not span.is_recording():
        return
    breaker = event.breaker
    state = _MOVED_TO[event.name]
    if state == "open" and breaker.forced_open:
        state = "forced_open"  # no release time: its retry_after would only be a hint
    attributes: dict[str, Any] = {_NAME: printable_name(breaker.name), _STATE: state}
    if state == "open":
        retry_after = breaker.retry_after
        if retry_after is not None:
            attributes[_RETRY_AFTER] = retry_after
    span.add_event(_STATE_CHANGE, attributes)


_STATE_AND_TIMEOUT_HANDLERS: tuple[_Subscription, ...] = (
    ("timeout", _on_timeout),
    ("open", _on_state_change),
    ("half_open", _on_state_change),
    ("close", _on_state_change),
)
_REFUSAL_HANDLERS: tuple[_Subscription, ...] = (
    ("reject", _on_reject),
    ("semaphore_locked", _on_capacity),
)
