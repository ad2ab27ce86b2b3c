"""deploy/prometheus/: ``promtool check rules`` and ``promtool test rules`` on the alerting rules, and
every metric they read is one the daemon exports.

promtool comes from Debian's ``prometheus`` package (.ci/run installs it). Without it these tests skip
locally and fail under CI (``CI`` set), so a missing install cannot pass unnoticed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from supervisor.metrics import Metrics, exported_metric_names
from tests.deploy_promql import EVENT_METRICS, FLEET_METRICS, metric_names

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "deploy" / "prometheus" / "alerts.yaml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "alerts_test.yaml"
FLEET_DOC = REPO / "docs" / "fleet.md"
EVENTS_DOC = REPO / "docs" / "events.md"
SERVICE = REPO / "deploy" / "kubernetes" / "service.yaml"
# Series Prometheus itself makes, not the daemon.
PROMETHEUS_SERIES = frozenset({"up"})


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not found: install Debian's prometheus package (apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message + "; .ci/run should have installed it")
        pytest.skip(message)
    return path


# One Go thread and a quarter as many garbage collections: ``promtool test rules`` works on one thing at a
# time, and its other threads and collections cost CPU the rest of the suite needs (measured: promtool alone
# 4.5 s -> 3.6 s of CPU, 4 runs each, wall time no longer; this file 8.0 s -> 6.2 s, 3 runs each).
PROMTOOL_ENV = {"GOMAXPROCS": "1", "GOGC": "400"}


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, **PROMTOOL_ENV})


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_promtool_check_rules() -> None:
    result = run_promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    document = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    assert document["rule_files"] == [RULES.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in document["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in rules()}
    assert alerts - firing == set(), "alerts no unit test sees firing"
    assert alerts - quiet == set(), "alerts no unit test sees quiet"
    assert (firing | quiet) <= alerts, "unit tests for alerts that do not exist"


def test_rules_read_only_metrics_the_daemon_exports() -> None:
    exported = exported_metric_names(Metrics())
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        unknown = names - exported - PROMETHEUS_SERIES
        assert not unknown, f"{rule['alert']} reads metrics the daemon does not export: {sorted(unknown)}"


def test_the_issue_s_alerts_are_all_there() -> None:
    exprs = {rule["alert"]: " ".join(rule["expr"].split()) for rule in rules()}
    joined = "\n".join(exprs.values())
    for fragment in (
        'sum by (job, account, region) (increase(athena_supervisor_escalations_total{outcome="failed"}[10m])) > 0',
        "time() - max by (job, account, region) (athena_supervisor_last_discovery_timestamp_seconds",
        "absent(athena_supervisor_",
        'up{job="athena-supervisor"} == 0',
        'sum by (job, account, region) (rate(athena_supervisor_aws_api_calls_total{outcome="throttled"}[5m]))',
        "max by (job, budget) (athena_supervisor_budget_spent_usd) / max by (job, budget) "
        "(athena_supervisor_budget_limit_usd) > 0.8",
        "histogram_quantile(0.99,",
        "athena_supervisor_circuit_breaker_open",
        "athena_supervisor_notifications_total",
        # fleets
        "sum by (job, account, region) (athena_supervisor_shard_owned",
        "athena_supervisor_shard_credentials_failing",
        "athena_supervisor_lease_changes_total",
        # event-fed discovery
        "increase(athena_supervisor_discovery_missed_events_total",
        "athena_supervisor_events_last_received_timestamp_seconds",
        "athena_supervisor_events_queue_depth",
    ):
        assert fragment in joined, fragment


def test_aggregations_keep_the_shard() -> None:
    """A rule that aggregates a metric of targets keeps account and region, so a fleet alerts per shard."""
    per_target = {
        "athena_supervisor_escalations_total", "athena_supervisor_enforcement_lag_seconds_bucket",
        "athena_supervisor_enforcement_failing", "athena_supervisor_skipped_workgroups",
        "athena_supervisor_circuit_breaker_open", "athena_supervisor_held_actions_total",
        "athena_supervisor_aws_api_calls_total", "athena_supervisor_last_discovery_timestamp_seconds",
        "athena_supervisor_shard_owned", "athena_supervisor_shard_credentials_failing",
        "athena_supervisor_discovery_missed_events_total",
    }
    for rule in rules():
        expr = " ".join(rule["expr"].split())
        if not metric_names(expr) & per_target or rule["alert"] == "AthenaSupervisorLeaseChurn":
            continue
        for match in re.finditer(r"\b(?:sum|max|min|avg|group) by \(([^)]*)\) ?\(", expr):
            if not metric_names(argument(expr, match.end() - 1)) & per_target:
                continue  # e.g. max by (job) of a process-wide gauge (the last event received)
            labels = {label.strip() for label in match.group(1).split(",")}
            assert {"account", "region"} <= labels, f"{rule['alert']}: by ({match.group(1)}) drops the shard"


def argument(expr: str, start: int) -> str:
    """The text between the parenthesis at ``start`` and the one that closes it."""
    depth = 0
    for index in range(start, len(expr)):
        depth += {"(": 1, ")": -1}.get(expr[index], 0)
        if depth == 0:
            return expr[start + 1:index]
    raise AssertionError(f"unbalanced parentheses in {expr!r}")


def test_fleet_metrics_are_documented() -> None:
    doc = FLEET_DOC.read_text(encoding="utf-8")
    section = doc[doc.index("\n## Metrics\n"):]
    section = section[:section.find("\n## ", 1)]
    for name, labels in FLEET_METRICS.items():
        assert f"`{name}`" in section, f"docs/fleet.md's Metrics section lacks {name}"
        for label in labels:
            assert f"`{label}`" in section, label


def section(path: Path, title: str) -> str:
    doc = path.read_text(encoding="utf-8")
    start = doc.index(f"\n## {title}\n")
    end = doc.find("\n## ", start + 1)
    return doc[start:end if end != -1 else None]


def test_event_metrics_and_alerts_are_documented() -> None:
    metrics = section(EVENTS_DOC, "Metrics")
    for name, labels in EVENT_METRICS.items():
        assert f"`{name}`" in metrics, f"docs/events.md's Metrics section lacks {name}"
        for label in labels:
            assert f"`{label}`" in metrics, label
    alerts = section(EVENTS_DOC, "Alerts")
    for rule in rules():
        if "events" in rule["alert"].lower():
            assert f"`{rule['alert']}`" in alerts, f"docs/events.md's Alerts section lacks {rule['alert']}"


def test_rules_are_labelled_and_annotated() -> None:
    for rule in rules():
        assert rule["alert"].startswith(("AthenaSupervisor", "AthenaSpark")), rule["alert"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert {"summary", "description"} <= set(rule["annotations"])


def test_job_label_is_the_kubernetes_service_name() -> None:
    service = yaml.safe_load(SERVICE.read_text(encoding="utf-8"))["metadata"]["name"]
    jobs = set(re.findall(r'job="([^"]*)"', RULES.read_text(encoding="utf-8")))
    assert jobs == {service}, "the ServiceMonitor names the job after the Service"


@pytest.mark.parametrize(("expr", "expected"), [
    ('increase(a_total{outcome="failed"}[10m]) > 0', {"a_total"}),
    ("time() - b_seconds > 300", {"b_seconds"}),
    ("histogram_quantile(0.99, sum by (le, x) (rate(c_bucket[$__rate_interval])))", {"c_bucket"}),
    ("sum(rate(d_total[5m])) by (workgroup) / ignoring(x) group_left e", {"d_total", "e"}),
    ('absent(f{job="g"}) or vector(1e3) offset 5m', {"f"}),
])
def test_metric_name_extraction(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected
