"""docs/grafana-dashboard.json: valid, importable, and charting only series the collector writes.

The queries are also run against a real Prometheus by `make test-integration`
(integration/test_prometheus_server.py); here they are checked without one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastapi_breaker import CALL_OUTCOMES, METRIC_STATES, BreakerRegistry
from fastapi_breaker.prometheus import BreakerCollector

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
GRAFANA_VARIABLES = {"__rate_interval"}

# A metric name and its label matchers, if any.
SELECTOR = re.compile(r"(circuit_breaker_\w+)\s*(?:\{([^}]*)\})?")
MATCHER = re.compile(r'\s*(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"\s*(?:,|$)')


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return dashboard


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: each panel target's and each template variable's."""
    found = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    found += [variable["query"]["query"] for variable in dashboard["templating"]["list"]]
    return found


def exposed_series() -> dict[str, set[str]]:
    """Each sample name the collector writes, with its label names: read from a scrape."""
    registry = BreakerRegistry()
    registry.get("Billing")
    text = BreakerCollector(registry).render().decode()
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def test_it_is_an_importable_dashboard_with_a_prometheus_input() -> None:
    dashboard = load()

    assert dashboard["schemaVersion"] == 39
    assert dashboard["id"] is None  # Grafana assigns one on import
    assert dashboard["uid"] == "fastapi-breaker"
    assert dashboard["__inputs"] == [
        {
            "name": "DS_PROMETHEUS",
            "label": "Prometheus",
            "description": "The Prometheus that scrapes your services' /metrics",
            "type": "datasource",
            "pluginId": "prometheus",
            "pluginName": "Prometheus",
        }
    ]
    # Every query goes to the data source chosen at import.
    for panel in dashboard["panels"]:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"] == DATASOURCE, variable["name"]


def test_the_panels() -> None:
    panels = load()["panels"]

    assert [(panel["type"], panel["title"]) for panel in panels] == [
        ("state-timeline", "State per breaker"),
        ("timeseries", "Calls per second by outcome"),
        ("timeseries", "Failure rate vs threshold"),
        ("timeseries", "Call latency p50 and p99"),
        ("timeseries", "State transitions"),
        ("timeseries", "Rejected calls per second"),
    ]
    assert sorted(panel["id"] for panel in panels) == list(range(1, len(panels) + 1))
    # On Grafana's 24-column grid, no two panels overlap.
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, panel["title"]
        cells |= area


def test_the_state_timeline_maps_each_state_to_its_code() -> None:
    (panel,) = [p for p in load()["panels"] if p["type"] == "state-timeline"]
    (mapping,) = panel["fieldConfig"]["defaults"]["mappings"]
    expr = panel["targets"][0]["expr"]

    # The query gives each state a number (its weight), the mapping turns it back to text.
    weights = dict(re.findall(r'state="(\w+)"\}\s*\*\s*(\d+)', expr))
    assert set(weights) == set(METRIC_STATES)
    assert {code: text["text"] for code, text in mapping["options"].items()} == {
        code: state for state, code in weights.items()
    }


def test_every_query_names_only_series_and_labels_the_collector_writes() -> None:
    series = exposed_series()
    used: set[str] = set()

    for expr in queries(load()):
        selectors = SELECTOR.findall(expr)
        assert selectors, expr
        for metric, matchers in selectors:
            assert metric in series, f"{metric} is not written by the collector"
            used.add(metric)
            parsed = MATCHER.findall(matchers)
            assert "".join(m.group(0) for m in MATCHER.finditer(matchers)) == matchers, expr
            for label, _, value in parsed:
                assert label in series[metric] | TARGET_LABELS, f"{metric} has no label {label}"
                if label == "state":
                    assert value in METRIC_STATES, expr
                if label == "outcome":
                    assert set(value.split("|")) <= set(CALL_OUTCOMES), expr

    assert used == {
        "circuit_breaker_state",
        "circuit_breaker_calls_total",
        "circuit_breaker_failure_rate",
        "circuit_breaker_failure_rate_threshold",
        "circuit_breaker_call_duration_seconds_bucket",
        "circuit_breaker_transitions_total",
    }


@pytest.mark.parametrize("expr", queries(load()))
def test_every_query_is_well_formed(expr: str) -> None:
    # promtool cannot read PromQL inside JSON; the integration test runs each query on a real
    # Prometheus. Here: brackets balance, and each variable is one the dashboard defines.
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in re.sub(r'"[^"]*"', '""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs:
            assert stack[-1:] == [pairs[char]], expr
            stack.pop()
    assert stack == [], expr
    assert expr.count('"') % 2 == 0, expr

    defined = {variable["name"] for variable in load()["templating"]["list"]}
    assert set(re.findall(r"\$(\w+)", expr)) <= defined | GRAFANA_VARIABLES, expr
