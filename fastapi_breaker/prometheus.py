"""Prometheus metrics of every breaker in a registry, read when Prometheus scrapes.

    app = FastAPI()
    setup_breakers(app, BreakerRegistry(...))
    mount_metrics(app)  # GET /metrics

Nothing is recorded per call: at each scrape the collector reads `breaker.metrics()` of every
breaker the registry holds, whose cost does not grow with traffic. The series, per breaker
(label `name`, the breaker's name as it is):

- `circuit_breaker_state{state}`: 1 for the current state, 0 for the other four of closed,
  open, half_open, forced_open, disabled;
- `circuit_breaker_calls_total{outcome}`: success, failure, timeout, rejected,
  capacity_rejected, fallback, counted since the breaker was made;
- `circuit_breaker_call_duration_seconds`: a histogram of the calls that ran;
- `circuit_breaker_failure_rate`: the rolling window's failed calls, in percent (0-100);
- `circuit_breaker_transitions_total{from_state,to_state}`;
- the settings that decide a trip, as gauges: `circuit_breaker_failure_rate_threshold`
  (percent), `circuit_breaker_volume_threshold` (calls), `circuit_breaker_window_seconds`,
  `circuit_breaker_reset_timeout_seconds`, `circuit_breaker_call_timeout_seconds` (+Inf when
  calls have no time limit).

`BreakerCollector` is a plain `prometheus_client` collector, for any `CollectorRegistry`.
`mount_metrics` serves it on a FastAPI app without going through one: `generate_latest` builds
an object per sample, 41,000 of them at 1,000 breakers, and takes several times as long as
writing the same text directly, which the endpoint does (`BreakerCollector.render()`, tested
equal to `generate_latest`'s text byte for byte).
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint's annotations at run
# time, and `Request` is imported inside `mount_metrics`, where a string could not be resolved.

import asyncio
import gzip
import itertools
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import Collector, CollectorRegistry
    from prometheus_client.utils import floatToGoString as _untyped_go_string
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "fastapi_breaker.prometheus needs prometheus_client: "
        "pip install 'fastapi_breaker[prometheus]'"
    ) from exc

from . import (
    CALL_OUTCOMES,
    LATENCY_BOUNDS,
    METRIC_STATES,
    BreakerMetrics,
    BreakerOptions,
    CircuitBreaker,
)
from ._names import printable_name

# How generate_latest writes a number ("1.0", "+Inf", "1.234567e+06"); untyped upstream.
_number: Callable[[float], str] = _untyped_go_string

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.params import Depends

__all__ = ["CONTENT_TYPE", "DEFAULT_BUCKETS", "BreakerCollector", "mount_metrics"]

# One bucket per power of two from ~1 ms to 32 s: HTTP calls from a fast cache hit to a slow
# upstream (the default time limit is 10 s), 19 series per breaker with _sum and _count.
# histogram_quantile() interpolates within a bucket, so a quantile is off by at most 2x.
DEFAULT_BUCKETS: tuple[float, ...] = tuple(2.0**k for k in range(-10, 6))

# The classic text format, what `generate_latest` writes and what every Prometheus reads.
# (prometheus_client's CONTENT_TYPE_LATEST names version 1.0.0 in recent releases, whose
# escaping rules only matter for names outside [a-zA-Z0-9_:], which ours never are.)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Every transition a breaker makes by itself or by hand, always shown, at 0 until it happens:
# a counter that appears at its first increment hides that increment from rate().
_TRANSITIONS: tuple[tuple[str, str], ...] = (
    ("closed", "open"),
    ("open", "half_open"),
    ("half_open", "closed"),
    ("half_open", "open"),
    ("open", "closed"),
)
_USUAL = frozenset(_TRANSITIONS)

# Breakers read between two turns of the event loop in `render_async`: about 2 ms of work.
_SLICE = 64

_HELP = {
    "state": "1 for the breaker's current state, 0 for the others. forced_open: opened by "
    "hand until closed; disabled: every call let through, uncounted.",
    "calls": "Calls by outcome since the breaker was made. failure excludes timeouts; "
    "rejected: refused while open or with no trial permit; capacity_rejected: refused "
    "because capacity calls were running; fallback: answered by the fallback, also counted "
    "under the outcome that led to it.",
    "duration": "Seconds per call that ran (successes, failures and timeouts) since the "
    "breaker was made.",
    "failure_rate": "Percentage (0-100) of the calls in the rolling window that failed, "
    "timeouts included; 0 with no calls.",
    "transitions": "State changes since the breaker was made; a forced open counts as "
    "closed to open.",
    "failure_rate_threshold": "The breaker opens when its failure rate is above this percentage.",
    "volume_threshold": "The fewest calls (successes and failures) in the window with which "
    "the breaker may open.",
    "window_seconds": "The rolling window's length in seconds.",
    "reset_timeout_seconds": "Seconds an open breaker waits before a trial call.",
    "call_timeout_seconds": "Each call's time limit in seconds; +Inf for none.",
}
# The settings, each a gauge: (name suffix, how to read it from the options).
_SETTINGS: tuple[tuple[str, Callable[[BreakerOptions], float]], ...] = (
    ("failure_rate_threshold", lambda o: o.error_threshold_percentage),
    ("volume_threshold", lambda o: o.volume_threshold),
    ("window_seconds", lambda o: o.rolling_count_timeout),
    ("reset_timeout_seconds", lambda o: o.reset_timeout),
    ("call_timeout_seconds", lambda o: float("inf") if o.timeout is None else o.timeout),
)
_READ = [read for _, read in _SETTINGS]
_KNOWN_OPTIONS = 256  # distinct settings whose texts are kept


class _BreakerSource(Protocol):
    """What the collector reads: `BreakerRegistry` has it."""

    def breakers(self) -> Mapping[str, CircuitBreaker]: ...


class BreakerCollector(Collector):
    """A prometheus_client collector of every breaker that `registry` holds at scrape time.

    `buckets`: the histogram's upper bounds in seconds, ascending, each one of
    `fastapi_breaker.LATENCY_BOUNDS` (the bounds the breaker counts latencies in), so that
    every bucket count is exact. Checked here, with an error that names a bad value.

        prometheus_client.REGISTRY.register(BreakerCollector(registry))
    """

    def __init__(
        self, registry: _BreakerSource, *, buckets: Iterable[float] = DEFAULT_BUCKETS
    ) -> None:
        if not callable(getattr(registry, "breakers", None)):
            raise TypeError(f"registry must have a breakers() method, got {registry!r}")
        self.registry = registry
        self.buckets = _check_buckets(buckets)
        self._le = [_number(bound) for bound in self.buckets]
        self._text = _Text(self.buckets, self._le)

    def __repr__(self) -> str:
        return f"<BreakerCollector registry={self.registry!r} buckets={len(self.buckets)}>"

    def describe(self) -> Iterator[Metric]:
        """The families without samples: a `CollectorRegistry` checks names with these."""
        return iter(self._families([]))

    def collect(self) -> Iterator[Metric]:
        return iter(self._families(self._read(self.registry)))

    def render(self, registry: _BreakerSource | None = None) -> bytes:
        """The text `generate_latest` writes for this collector alone, several times faster.

        `registry` reads another source this once (what `mount_metrics` does when the app's
        registry is found at request time).
        """
        source = self.registry if registry is None else registry
        text = self._text
        families = text.start()
        for breaker in source.breakers().values():
            text.add(families, breaker.metrics())
        return text.finish(families)

    async def render_async(self, registry: _BreakerSource | None = None) -> bytes:
        """`render()`, letting the event loop run other work between slices of breakers.

        A scrape of 1,000 breakers takes tens of milliseconds: in one piece, every request
        the app is serving would wait for it.
        """
        source = self.registry if registry is None else registry
        text = self._text
        families = text.start()
        for index, breaker in enumerate(source.breakers().values()):
            if index and not index % _SLICE:
                await asyncio.sleep(0)
            text.add(families, breaker.metrics())
        return text.finish(families)

    def _read(self, registry: _BreakerSource) -> list[BreakerMetrics]:
        return [breaker.metrics() for breaker in registry.breakers().values()]

    def _families(self, all_metrics: Sequence[BreakerMetrics]) -> list[Metric]:
        state = GaugeMetricFamily("circuit_breaker_state", _HELP["state"], labels=["name", "state"])
        calls = CounterMetricFamily(
            "circuit_breaker_calls", _HELP["calls"], labels=["name", "outcome"]
        )
        duration = HistogramMetricFamily(
            "circuit_breaker_call_duration_seconds", _HELP["duration"], labels=["name"]
        )
        failure_rate = GaugeMetricFamily(
            "circuit_breaker_failure_rate", _HELP["failure_rate"], labels=["name"]
        )
        transitions = CounterMetricFamily(
            "circuit_breaker_transitions",
            _HELP["transitions"],
            labels=["name", "from_state", "to_state"],
        )
        settings = [
            GaugeMetricFamily(f"circuit_breaker_{key}", _HELP[key], labels=["name"])
            for key, _ in _SETTINGS
        ]
        for metrics in all_metrics:
            name = printable_name(metrics.name)
            for one in METRIC_STATES:
                state.add_metric([name, one], 1.0 if one == metrics.state else 0.0)
            for outcome in CALL_OUTCOMES:
                calls.add_metric([name, outcome], metrics.calls[outcome])
            latency = metrics.latency
            counts = latency.cumulative(self.buckets)
            duration.add_metric(
                [name],
                [*zip(self._le, counts, strict=True), ("+Inf", latency.count)],
                latency.sum,
            )
            failure_rate.add_metric([name], metrics.error_percentage)
            for (source, target), count in _transitions(metrics):
                transitions.add_metric([name, source, target], count)
            for family, (_, read) in zip(settings, _SETTINGS, strict=True):
                family.add_metric([name], read(metrics.options))
        return [state, calls, duration, failure_rate, transitions, *settings]


def mount_metrics(
    app: "FastAPI",
    registry: _BreakerSource | None = None,
    *,
    path: str = "/metrics",
    buckets: Iterable[float] = DEFAULT_BUCKETS,
    prometheus_registry: CollectorRegistry | None = None,
    dependencies: Sequence["Depends"] = (),
    include_in_schema: bool = False,
) -> BreakerCollector:
    """Serve the breakers' metrics at `GET` and `HEAD` `path`; return the collector.

    - `registry`: None reads the app's registry (what `setup_breakers` attaches) at each
      request.
    - `buckets`: the histogram's bounds; see `BreakerCollector`.
    - `prometheus_registry`: None serves the breakers' series alone, written directly (the
      fast path). Given (`prometheus_client.REGISTRY`, say, for the process metrics and your
      own), the collector is registered in it, and the endpoint serves all of it through
      `generate_latest`; with a `registry` of None, the collector then reads
      `app.state.breaker_registry` wherever that registry is scraped.
    - `dependencies`: FastAPI dependencies run before each answer, to require credentials:
      the series name every breaker, and names can describe internal services.

    Each answer is the classic text format (`CONTENT_TYPE`), gzipped when the client accepts
    it (Prometheus does), with `Cache-Control: no-store`.
    """
    try:
        from fastapi import Request, Response
        from fastapi.responses import PlainTextResponse
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "mount_metrics needs FastAPI: pip install 'fastapi_breaker[fastapi]'"
        ) from exc
    from .fastapi import get_registry

    _check_path(path)
    if registry is not None and not callable(getattr(registry, "breakers", None)):
        raise TypeError(f"registry must have a breakers() method, got {registry!r}")
    if prometheus_registry is not None and not isinstance(prometheus_registry, CollectorRegistry):
        raise TypeError(
            f"prometheus_registry must be a prometheus_client CollectorRegistry or None, "
            f"got {prometheus_registry!r}"
        )
    source = _AppRegistry(app) if registry is None else registry
    collector = BreakerCollector(source, buckets=buckets)
    if prometheus_registry is not None:
        prometheus_registry.register(collector)

    async def metrics(request: Request) -> Response:
        if prometheus_registry is not None:
            body = generate_latest(prometheus_registry)
        else:
            # Looked up per request, as Depends(get_breaker(...)) does: both see one registry.
            source = get_registry(request) if registry is None else registry
            body = await collector.render_async(source)
        headers = {"Cache-Control": "no-store", "Vary": "Accept-Encoding"}
        if _accepts_gzip(request.headers.get("accept-encoding", "")):
            # Level 1: a twentieth of the size for a few ms at 1,000 breakers; level 9 would
            # take several times longer for little more. In a thread, since zlib lets the
            # event loop run meanwhile.
            body = await asyncio.to_thread(gzip.compress, body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        if request.method == "HEAD":
            # The same headers as GET, Content-Length included, and no body (RFC 9110 9.3.2).
            headers["Content-Length"] = str(len(body))
            return Response(headers=headers, media_type=CONTENT_TYPE)
        return Response(body, headers=headers, media_type=CONTENT_TYPE)

    for method, schema in (("GET", include_in_schema), ("HEAD", False)):
        # HEAD is a route of its own, kept out of the schema: one route with both methods would
        # give OpenAPI two operations with the same operationId.
        app.add_api_route(
            path,
            metrics,
            methods=[method],
            name="metrics",
            dependencies=list(dependencies),
            include_in_schema=schema,
            response_class=PlainTextResponse,  # what the schema says the answer is
        )
    return collector


class _AppRegistry:
    """The app's registry, read when the collector is: `setup_breakers` may come later."""

    def __init__(self, app: Any) -> None:
        self._app = app

    def __repr__(self) -> str:
        return "<the app's registry>"

    def breakers(self) -> Mapping[str, CircuitBreaker]:
        registry = getattr(self._app.state, "breaker_registry", None)
        if registry is None:
            raise RuntimeError(
                "this app has no breaker registry: call fastapi_breaker.fastapi.setup_breakers"
                "(app) or pass registry= to mount_metrics"
            )
        breakers: Mapping[str, CircuitBreaker] = registry.breakers()
        return breakers


def _check_path(path: object) -> None:
    # A plain path: braces would make a path parameter, '?' and '#' a path no request has.
    if (
        not isinstance(path, str)
        or not path.startswith("/")
        or any(c in "{}?#" or c.isspace() or not c.isprintable() for c in path)
    ):
        raise ValueError(
            "path must start with '/' and hold no '{', '}', '?', '#', whitespace or control "
            f"characters, got {path!r}"
        )


def _check_buckets(buckets: Iterable[float]) -> tuple[float, ...]:
    allowed = (
        "each must be one of fastapi_breaker.LATENCY_BOUNDS: 2**-20 s, then four per power of "
        "two, 2**k * (1 + j/4) for k = -20..9 and j = 1..4, up to 1024 s"
    )
    if isinstance(buckets, str | bytes) or not isinstance(buckets, Iterable):
        raise TypeError(f"buckets must be a sequence of seconds, got {buckets!r}")
    values = tuple(buckets)
    if not values:
        raise ValueError(f"buckets must hold at least one bound; {allowed}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"buckets must hold numbers of seconds, got {value!r}")
        if value not in LATENCY_BOUNDS:
            below = [b for b in LATENCY_BOUNDS if b < value][-1:]
            above = [b for b in LATENCY_BOUNDS if b > value][:1]
            near = " and ".join(repr(b) for b in below + above)
            raise ValueError(f"buckets: {value!r} is not allowed (nearest: {near}); {allowed}")
    for before, after in itertools.pairwise(values):
        if after <= before:
            raise ValueError(f"buckets must be strictly ascending: {after!r} follows {before!r}")
    return tuple(float(value) for value in values)


def _transitions(metrics: BreakerMetrics) -> list[tuple[tuple[str, str], int]]:
    counted = metrics.transitions
    return [(key, counted.get(key, 0)) for key in (*_TRANSITIONS, *_unusual(counted))]


def _unusual(counted: Mapping[tuple[str, str], int]) -> list[tuple[str, str]]:
    """The transitions counted beside the usual five, sorted (normally none)."""
    return sorted(key for key in counted if key not in _USUAL)


def _escape(value: str) -> str:
    # The text format's escapes for a label value; the same as generate_latest's.
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _count(value: float) -> str:
    # _number's text for a count, without its repr() and search in the usual case.
    if type(value) is int and 0 <= value < _EXPONENT:
        return f"{value}.0"
    return _number(value)


# From a million up, _number writes a count with an exponent (1.234567e+06), as Go does.
_EXPONENT = 1_000_000


def _templates(families: str | list[str], labels: list[str]) -> list[str]:
    """Lines of `families` (one, or one per line) with `labels`: the "%d.0" and "%s" forms."""
    if isinstance(families, str):
        families = [families] * len(labels)
    pairs = list(zip(families, labels, strict=True))
    return ["".join(f"{f}{{{label}}} {value}\n" for f, label in pairs) for value in ("%d.0", "%s")]


def _fill(templates: list[str], counts: tuple[int, ...], most: int) -> str:
    fast, general = templates
    return fast % counts if most < _EXPONENT else general % tuple(map(_count, counts))


def _header(name: str, kind: str, help_key: str) -> str:
    text = _HELP[help_key].replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {name} {text}\n# TYPE {name} {kind}\n"


_NAME = "\x00"  # where a template takes the breaker's name, put in after the values


class _Text:
    """Writes the exposition line for line as `generate_latest` does: families and samples in
    the same order, labels sorted by name, numbers in `_number`'s text. `start()`, then
    `add()` for each breaker (its lines are made as soon as it is read, so that only strings
    outlive its metrics), then `finish()`.

    Each family has a template of one breaker's lines, filled with one `%` for the values and
    one `replace` for the name: a thousand breakers' 41,000 lines take a few milliseconds,
    where a format per line took four times as long. The name goes in last, so that a `%` in
    it is only text (and the values never hold the placeholder).
    """

    def __init__(self, buckets: tuple[float, ...], le: list[str]) -> None:
        name = f'name="{_NAME}"'
        self.state = {
            current: "".join(
                f'circuit_breaker_state{{{name},state="{one}"}} '
                f"{'1.0' if one == current else '0.0'}\n"
                for one in METRIC_STATES
            )
            for current in METRIC_STATES
        }
        # Each template of counts in two forms: "%d.0" takes the ints themselves, which is
        # _number's text below a million; "%s" takes _count's text, for any count.
        self.calls = _templates(
            "circuit_breaker_calls_total", [f'{name},outcome="{o}"' for o in CALL_OUTCOMES]
        )
        family = "circuit_breaker_call_duration_seconds"
        self.duration = [
            template + f"{family}_sum{{{name}}} %s\n"
            for template in _templates(
                [f"{family}_bucket"] * (len(le) + 1) + [f"{family}_count"],
                [f'le="{bound}",{name}' for bound in [*le, "+Inf"]] + [name],
            )
        ]
        # The bins of LATENCY_BOUNDS whose running totals are the buckets' counts.
        self.bins = operator.itemgetter(*[LATENCY_BOUNDS.index(bound) for bound in buckets])
        self.transitions = _templates(
            "circuit_breaker_transitions_total",
            [f'from_state="{a}",{name},to_state="{b}"' for a, b in _TRANSITIONS],
        )
        self.settings = [f"circuit_breaker_{key}" for key, _ in _SETTINGS]
        self.headers = [
            _header("circuit_breaker_state", "gauge", "state"),
            _header("circuit_breaker_calls_total", "counter", "calls"),
            _header("circuit_breaker_call_duration_seconds", "histogram", "duration"),
            _header("circuit_breaker_failure_rate", "gauge", "failure_rate"),
            _header("circuit_breaker_transitions_total", "counter", "transitions"),
            *(_header(f"circuit_breaker_{key}", "gauge", key) for key, _ in _SETTINGS),
        ]
        # The settings' texts by options object: breakers made from equal settings share one.
        # The options are kept beside their texts, so that no id is reused meanwhile.
        self.known: dict[int, tuple[BreakerOptions, list[str]]] = {}

    def start(self) -> list[list[str]]:
        """One list of lines per family, in the order they are written."""
        return [[header] for header in self.headers]

    def add(self, families: list[list[str]], metrics: BreakerMetrics) -> None:
        """Append one breaker's lines to each family."""
        state, calls, duration, rate, transitions, *settings = families
        name = _escape(printable_name(metrics.name))
        state.append(self.state[metrics.state].replace(_NAME, name))

        values = tuple(map(metrics.calls.__getitem__, CALL_OUTCOMES))
        calls.append(_fill(self.calls, values, max(values)).replace(_NAME, name))

        latency = metrics.latency
        running = list(itertools.accumulate(latency.counts))
        picked = self.bins(running)
        total = running[-1]
        values = (*picked, total, total) if type(picked) is tuple else (picked, total, total)
        fast, general = self.duration
        if total < _EXPONENT:
            text = fast % (*values, _number(latency.sum))
        else:
            text = general % (*map(_count, values), _number(latency.sum))
        duration.append(text.replace(_NAME, name))

        error = _number(metrics.error_percentage)
        rate.append(f'circuit_breaker_failure_rate{{name="{name}"}} {error}\n')

        counted = metrics.transitions
        values = tuple(counted.get(key, 0) for key in _TRANSITIONS)
        transitions.append(_fill(self.transitions, values, max(values)).replace(_NAME, name))
        for source, target in _unusual(counted):
            transitions.append(
                f'circuit_breaker_transitions_total{{from_state="{source}",name="{name}",'
                f'to_state="{target}"}} {_count(counted[source, target])}\n'
            )

        options = metrics.options
        known = self.known.get(id(options))
        if known is None:
            if len(self.known) >= _KNOWN_OPTIONS:
                self.known.clear()  # settings made and dropped over and over: start again
            known = self.known[id(options)] = (options, [_number(read(options)) for read in _READ])
        for lines, family, value in zip(settings, self.settings, known[1], strict=True):
            lines.append(f'{family}{{name="{name}"}} {value}\n')

    def finish(self, families: list[list[str]]) -> bytes:
        return "".join(itertools.chain.from_iterable(families)).encode("utf-8")


def _accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding header allows gzip: named, or `*`, with a quality above 0."""
    qualities: dict[str, float] = {}
    for item in header.lower().split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        qualities.setdefault(coding, quality)
    return qualities.get("gzip", qualities.get("*", 0.0)) > 0
