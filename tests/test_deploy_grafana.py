"""deploy/grafana/dashboard.json: well-formed, laid out without overlaps, every query on the selected
Prometheus data source, and every metric it reads exported by the daemon."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.metrics import Metrics, exported_metric_names
from tests.deploy_promql import EVENT_METRICS, FLEET_METRICS, SHARD_LABELS, metric_names

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
LABEL_VALUES = re.compile(r"^label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*(?:\{[^}]*\})?\s*,\s*(\w+)\s*\)$")

Panel = dict[str, Any]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def all_panels(panels: list[Panel]) -> Iterator[Panel]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))  # panels inside collapsed rows


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every panel target."""
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def test_dashboard_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "athena-spark-supervisor"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard.get("id") is None, "an exported id breaks import into another Grafana"


def test_panels_have_unique_ids_and_do_not_overlap(dashboard: dict[str, Any]) -> None:
    panels = list(all_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_every_query_uses_the_selected_prometheus_data_source(dashboard: dict[str, Any]) -> None:
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in all_panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_every_metric_a_panel_or_variable_reads_is_exported(dashboard: dict[str, Any]) -> None:
    exported = exported_metric_names(Metrics())
    read: set[str] = set()
    for title, expr in queries(dashboard):
        names = metric_names(expr)
        assert names, f"{title}: no metric found in {expr!r}"
        assert not names - exported, f"{title} reads metrics the daemon does not export: {names - exported}"
        read |= names
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = LABEL_VALUES.match(variable["query"]["query"])
        assert match, f"${variable['name']}: expected label_values(metric, label)"
        assert match.group(1) in exported, f"${variable['name']} reads {match.group(1)}"
    # The dashboard's subject matter, as the issue lists it.
    assert read >= {
        "athena_supervisor_estimated_cost_usd_total", "athena_supervisor_budget_spent_usd",
        "athena_supervisor_budget_limit_usd", "athena_supervisor_budget_forecast_usd",
        "athena_supervisor_actions_total", "athena_supervisor_escalations_total",
        "athena_supervisor_enforcement_lag_seconds_bucket", "athena_supervisor_aws_api_calls_total",
        "athena_supervisor_active_sessions", "athena_supervisor_active_calculations",
    }


def test_lag_panel_shows_p50_and_p99(dashboard: dict[str, Any]) -> None:
    lag = [expr for _, expr in queries(dashboard) if "enforcement_lag_seconds_bucket" in expr]
    quantiles = {q for expr in lag for q in re.findall(r"histogram_quantile\((0\.\d+)", expr)}
    assert quantiles == {"0.5", "0.99"}
    for expr in lag:
        assert "by (le)" in expr, "aggregate buckets by le before histogram_quantile"


def test_throttling_is_shown(dashboard: dict[str, Any]) -> None:
    assert any('outcome="throttled"' in expr for _, expr in queries(dashboard))


def test_counters_are_never_graphed_raw(dashboard: dict[str, Any]) -> None:
    for title, expr in queries(dashboard):
        for name in metric_names(expr):
            if name.endswith(("_total", "_bucket", "_sum", "_count")):
                assert re.search(rf"(rate|increase)\(\s*{name}\b", expr), f"{title}: wrap {name} in rate()"


# --- fleets: account and region ------------------------------------------------------------------------------

# Metrics of things that happen in a shard (an account-region); budgets, notifications and lease changes span
# shards.
SHARD_METRICS = frozenset({
    "athena_supervisor_active_sessions", "athena_supervisor_active_calculations",
    "athena_supervisor_estimated_cost_usd_total", "athena_supervisor_last_discovery_timestamp_seconds",
    "athena_supervisor_escalations_in_flight", "athena_supervisor_circuit_breaker_open",
    "athena_supervisor_actions_total", "athena_supervisor_violations_total", "athena_supervisor_warnings_total",
    "athena_supervisor_escalations_total", "athena_supervisor_held_actions_total",
    "athena_supervisor_enforcement_lag_seconds_bucket", "athena_supervisor_enforcement_lag_seconds_sum",
    "athena_supervisor_enforcement_lag_seconds_count", "athena_supervisor_unknown_states_total",
    "athena_supervisor_aws_api_calls_total", "athena_supervisor_shard_owned",
    "athena_supervisor_shard_credentials_failing", "athena_supervisor_discovery_missed_events_total",
})
SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?")


def test_account_and_region_variables(dashboard: dict[str, Any]) -> None:
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    for label in SHARD_LABELS:
        variable = variables[label]
        match = LABEL_VALUES.match(variable["query"]["query"])
        assert match and match.group(2) == label, variable["query"]
        # "All" must also match series without the label (one process, no fleet): .* matches the empty value.
        assert variable["includeAll"] is True and variable["allValue"] == ".*" and variable["multi"] is True
    assert '$account' in variables["region"]["query"]["query"], "regions of the chosen accounts"


def test_every_shard_metric_is_filtered_by_account_and_region(dashboard: dict[str, Any]) -> None:
    for title, expr in queries(dashboard):
        for match in SELECTOR.finditer(expr):
            if match.group(1) not in SHARD_METRICS:
                continue
            matchers = match.group(2) or ""
            for label in SHARD_LABELS:
                assert f'{label}=~"${label}"' in matchers, f"{title}: {match.group(1)} not filtered by ${label}"


def test_per_workgroup_panels_tell_shards_apart(dashboard: dict[str, Any]) -> None:
    """Two accounts may have workgroups of the same name."""
    for title, expr in queries(dashboard):
        for grouping in re.findall(r"\bby \(([^)]*)\)", expr):
            labels = {label.strip() for label in grouping.split(",")}
            if "workgroup" in labels:
                assert set(SHARD_LABELS) <= labels, f"{title}: by ({grouping})"


def test_the_fleet_row_shows_ownership_credentials_and_lease_changes(dashboard: dict[str, Any]) -> None:
    read = {name for _, expr in queries(dashboard) for name in metric_names(expr)}
    assert set(FLEET_METRICS) <= read


def test_the_events_row_shows_every_event_metric(dashboard: dict[str, Any]) -> None:
    read = {name for _, expr in queries(dashboard) for name in metric_names(expr)}
    histogram = "athena_supervisor_event_delivery_seconds"
    expected = {f"{name}_bucket" if name == histogram else name for name in EVENT_METRICS}
    assert expected <= read, expected - read
