from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from supervisor.config import (
    ConfigError,
    EventBridgeChannel,
    PolicyConfig,
    SessionLimits,
    Settings,
    SnsChannel,
    WebhookChannel,
    load_config,
    load_settings,
    parse_settings,
)
from supervisor.config.sources import scalar_variables

REPO = Path(__file__).resolve().parent.parent
POLICY: dict[str, Any] = {"name": "p", "calculation": {"max_runtime": "30m"}}
BUDGET: dict[str, Any] = {
    "name": "b", "period": "daily", "limit_usd": 10, "thresholds": [{"at_percent": 100, "action": "notify"}],
}


def problems(data: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(data, source="c.yaml", environ=environ or {})
    lines = str(caught.value).splitlines()
    assert len(lines) == len(caught.value.problems)
    return lines


def only_problem(data: dict[str, Any], environ: dict[str, str] | None = None) -> str:
    lines = problems(data, environ)
    assert len(lines) == 1, lines
    return lines[0]


# --- defaults and the shipped files ------------------------------------------------------------------


def test_empty_mapping_gives_documented_defaults() -> None:
    settings = parse_settings({}, environ={})
    assert settings.aws.region == "us-east-1"
    assert settings.aws.endpoint_url is None
    assert settings.aws.max_requests_per_second == 20
    assert settings.aws.max_attempts == 8
    assert settings.workgroups == ("*",)
    assert settings.mode == "enforce"
    assert settings.discovery_interval == timedelta(seconds=10)
    assert settings.journal.path == Path("athena-supervisor.db")
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 9464)
    assert settings.pricing.dpu_hour_usd == 0.35
    assert settings.escalation.stop_grace == timedelta(seconds=30)
    assert settings.escalation.terminate_grace == timedelta(minutes=2)
    assert settings.escalation.retry_backoff_max == timedelta(minutes=5)
    assert settings.safety.max_actions_per_minute == 60
    assert settings.safety.exempt_tag == "athena-supervisor/exempt"
    assert settings.safety.circuit_breaker_fraction == 0.5
    assert settings.safety.circuit_breaker_min_targets == 10
    assert (settings.policies, settings.budgets, settings.notifications) == ((), (), ())
    assert settings.log_level == "info"
    assert Settings() == settings


def test_example_yaml_loads_every_section() -> None:
    settings = load_settings(REPO / "config" / "example.yaml", environ={})
    assert [policy.name for policy in settings.policies] == ["etl-limits", "everything-else"]
    etl = settings.policies[0]
    assert etl.calculation is not None and etl.calculation.max_runtime == timedelta(minutes=30)
    assert etl.session is not None and etl.session.max_age == timedelta(hours=8)
    assert settings.budgets[0].thresholds[-1].action == "disable_workgroup"
    assert [type(c) for c in settings.notifications] == [WebhookChannel, SnsChannel, EventBridgeChannel]
    assert settings.journal.path == REPO / "config" / "athena-supervisor.db"


def test_demo_yaml_matches_the_demo_script() -> None:
    settings = load_settings(REPO / "config" / "demo.yaml", environ={})
    assert settings.aws.endpoint_url is None
    assert settings.workgroups == ("demo-*",)
    limits, idle, cost, connect = settings.policies
    assert limits.name == "demo-limits" and limits.workgroups == ("demo-etl*",)
    assert connect.engines == ("Apache Spark version 3.5",)
    assert connect.session is not None and connect.session.max_busy == timedelta(seconds=8)
    assert limits.calculation is not None and limits.calculation.max_runtime == timedelta(seconds=6)
    assert limits.action == "stop"
    assert idle.session is not None and idle.session.max_idle == timedelta(seconds=10)
    assert cost.calculation is not None and cost.calculation.max_cost_usd == 0.01
    assert cost.notify_before == timedelta(seconds=3)
    assert settings.escalation.stop_grace == timedelta(seconds=3)
    assert settings.escalation.terminate_grace == timedelta(seconds=5)
    assert settings.discovery_interval == timedelta(seconds=2)
    assert settings.http.port == 9464
    assert settings.journal.path == REPO / "config" / "athena-supervisor-demo.db"
    assert settings.safety.exempt_tag == "athena-supervisor/exempt"


# --- per-field validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"aws": {"region": " "}}, "c.yaml: aws.region: must not be empty; got ' '"),
        ({"aws": {"endpoint_url": "localhost:4566"}},
         "c.yaml: aws.endpoint_url: not an http(s) URL; got 'localhost:4566'"),
        ({"aws": {"max_requests_per_second": 0}},
         "c.yaml: aws.max_requests_per_second: out of range; got 0; must be greater than 0"),
        ({"aws": {"max_requests_per_second": True}},
         "c.yaml: aws.max_requests_per_second: a boolean is not a number; got True"),
        ({"aws": {"max_requests_per_second": float("inf")}}, "c.yaml: aws.max_requests_per_second: "),
        ({"aws": {"max_attempts": 0}}, "c.yaml: aws.max_attempts: out of range; got 0; must be at least 1"),
        ({"aws": {"max_attempts": 2.5}}, "c.yaml: aws.max_attempts: wrong type; got 2.5; expected a whole"),
        ({"workgroups": "etl-*"}, "c.yaml: workgroups: wrong type; got 'etl-*'; expected a list"),
        ({"workgroups": []}, "c.yaml: workgroups: empty list matches no workgroup; got []"),
        ({"workgroups": ["a", ""]}, "c.yaml: workgroups[1]: empty workgroup glob; got ''"),
        ({"mode": "enforcing"},
         "c.yaml: mode: not an accepted value; got 'enforcing'; accepted values: enforce, dry-run; "
         "did you mean 'enforce'?"),
        ({"discovery_interval": 10},
         "c.yaml: discovery_interval: a number without a unit is not a duration; got 10; add a unit"),
        ({"discovery_interval": "0s"}, "c.yaml: discovery_interval: must be longer than zero; got '0s'"),
        ({"discovery_interval": [1]}, "c.yaml: discovery_interval: not a duration; got [1]"),
        ({"journal": {"path": 5}}, "c.yaml: journal.path: wrong type; got 5; expected a file path"),
        ({"journal": {"path": ""}}, "c.yaml: journal.path: must not be empty; got ''; write a file path"),
        ({"journal": {"path": "  "}}, "c.yaml: journal.path: must not be empty; got '  '"),
        ({"journal": {"backend": "dynamo"}}, "c.yaml: journal.backend: not an accepted value; got 'dynamo'; "
         "accepted values: sqlite, dynamodb; did you mean 'dynamodb'?"),
        ({"journal": {"backend": "dynamodb"}}, "c.yaml: journal.table: missing required key; backend dynamodb "
         "needs the table's name, e.g. table: athena-supervisor (create it with athena-supervisor setup-dynamodb"),
        ({"journal": {"backend": "dynamodb", "table": "athena supervisor"}},
         "c.yaml: journal.table: not a DynamoDB table name; got 'athena supervisor'; use 3-255 letters, digits"),
        ({"journal": {"backend": "dynamodb", "table": "athena-supervisor", "path": "j.db"}},
         "c.yaml: journal.path: not used with backend dynamodb (the journal is the DynamoDB table); got 'j.db'; "
         "remove journal.path, or set journal.backend: sqlite"),
        ({"journal": {"table": "athena-supervisor"}}, "c.yaml: journal.table: only used with backend dynamodb; "
         "got 'athena-supervisor'; remove journal.table, or set journal.backend: dynamodb"),
        ({"journal": {"region": "eu-west-1"}}, "c.yaml: journal.region: only used with backend dynamodb"),
        ({"journal": {"endpoint_url": "http://localhost:8000"}},
         "c.yaml: journal.endpoint_url: only used with backend dynamodb"),
        ({"journal": {"backend": "dynamodb", "table": "athena-supervisor", "endpoint_url": "localhost:8000"}},
         "c.yaml: journal.endpoint_url: not an http(s) URL; got 'localhost:8000'"),
        ({"journal": {"retention": "12h"}}, "c.yaml: journal.retention: too short; got '12h'; must be at least 1d"),
        ({"journal": {"retention": 90}}, "c.yaml: journal.retention: a number without a unit is not a duration"),
        ({"aws": {"account_id": "1234"}},
         "c.yaml: aws.account_id: not an AWS account id; got '1234'; write the 12-digit account number in quotes"),
        ({"aws": {"account_id": 1234}}, "c.yaml: aws.account_id: not an AWS account id; got 1234"),
        ({"aws": {"account_id": True}}, "c.yaml: aws.account_id: not an AWS account id; got True"),
        ({"aws": {"connect_timeout": "0s"}}, "c.yaml: aws.connect_timeout: must be longer than zero; got '0s'"),
        ({"aws": {"connect_timeout": 2}},
         "c.yaml: aws.connect_timeout: a number without a unit is not a duration; got 2"),
        ({"aws": {"read_timeout": "301s"}},
         "c.yaml: aws.read_timeout: too long; got '301s'; must be at most 5m"),
        ({"aws": {"connect_timeout": "1h"}}, "c.yaml: aws.connect_timeout: too long; got '1h'; must be at most 5m"),
        ({"aws": {"sts_endpoint_url": "sts.example.com"}},
         "c.yaml: aws.sts_endpoint_url: not an http(s) URL; got 'sts.example.com'"),
        ({"http": {"port": 65536}}, "c.yaml: http.port: out of range; got 65536; must be at most 65535"),
        ({"http": {"port": -1}}, "c.yaml: http.port: out of range; got -1; must be at least 0"),
        ({"pricing": {"dpu_hour_usd": 0}}, "c.yaml: pricing.dpu_hour_usd: out of range; got 0"),
        ({"pricing": {"regions": {"eu-west-1": -1}}}, "c.yaml: pricing.regions.eu-west-1: out of range"),
        ({"escalation": {"stop_grace": "soon"}},
         "c.yaml: escalation.stop_grace: not a duration; got 'soon'; use a number with a unit"),
        ({"safety": {"max_actions_per_minute": 0}}, "c.yaml: safety.max_actions_per_minute: out of range"),
        ({"safety": {"circuit_breaker_fraction": 1.5}},
         "c.yaml: safety.circuit_breaker_fraction: out of range; got 1.5; must be at most 1"),
        ({"safety": {"circuit_breaker_fraction": 0}},
         "c.yaml: safety.circuit_breaker_fraction: out of range"),
        ({"safety": {"circuit_breaker_min_targets": 0}},
         "c.yaml: safety.circuit_breaker_min_targets: out of range"),
        ({"log_level": "verbose"}, "c.yaml: log_level: not an accepted value; got 'verbose'; "
         "accepted values: debug, info, warning, error"),
        ({"policies": {"name": "x"}}, "c.yaml: policies: wrong type"),
    ],
)
def test_field_validation_message(data: dict[str, Any], expected: str) -> None:
    assert only_problem(data).startswith(expected)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"name": ""}, "c.yaml: policies[0].name: must not be empty; got ''"),
        ({"calculation": {"max_runtime": "30 minutes"}},
         "c.yaml: policies[0].calculation.max_runtime: not a duration; got '30 minutes'; "
         "use a number with a unit (ms, s, m, h, d), e.g. 45s, 15m, 2h"),
        ({"calculation": {"max_queued": "5"}},
         "c.yaml: policies[0].calculation.max_queued: a number without a unit is not a duration; got '5'"),
        ({"calculation": {"max_dpu_hours": 0}},
         "c.yaml: policies[0].calculation.max_dpu_hours: out of range; got 0; must be greater than 0"),
        ({"calculation": {"max_cost_usd": -1}}, "c.yaml: policies[0].calculation.max_cost_usd: out of range"),
        ({"session": {"max_idle": "1x"}}, "c.yaml: policies[0].session.max_idle: not a duration"),
        ({"session": {"max_cost_usd": "cheap"}},
         "c.yaml: policies[0].session.max_cost_usd: wrong type; got 'cheap'; expected a number"),
        ({"action": "kill"}, "c.yaml: policies[0].action: not an accepted value; got 'kill'; "
         "accepted values: stop, terminate, notify"),
        ({"mode": "dry_run"}, "c.yaml: policies[0].mode: not an accepted value; got 'dry_run'; "
         "accepted values: enforce, dry-run; did you mean 'dry-run'?"),
        ({"notify_before": "5 min"}, "c.yaml: policies[0].notify_before: not a duration"),
        ({"workgroups": []}, "c.yaml: policies[0].workgroups: empty list matches no workgroup"),
        ({"calculation": None, "session": {}},
         "c.yaml: policies[0]: policy sets no limit; set at least one of calculation.max_runtime, "),
    ],
)
def test_policy_validation_message(policy: dict[str, Any], expected: str) -> None:
    assert only_problem({"policies": [{**POLICY, **policy}]}).startswith(expected)


def test_policy_name_is_required() -> None:
    line = only_problem({"policies": [{"session": {"max_idle": "1m"}}]})
    assert line == "c.yaml: policies[0].name: missing required key; add it: a string"


def test_policy_names_are_unique() -> None:
    line = only_problem({"policies": [POLICY, {**POLICY, "name": "q"}, POLICY]})
    assert line == "c.yaml: policies[2].name: duplicate policy name; got 'p'; already used by policies[0]; " \
        "names must be unique"


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        ({"period": "dayly"}, "c.yaml: budgets[0].period: not a budget period; got 'dayly'; accepted values: "
         "daily, weekly, monthly, rolling:<duration> (e.g. rolling:24h); did you mean 'daily'?"),
        ({"period": "rolling:1 day"}, "c.yaml: budgets[0].period: rolling window is not a duration"),
        ({"period": "rolling:0h"}, "c.yaml: budgets[0].period: rolling window must be longer than zero"),
        ({"timezone": "Europe/Berln"}, "c.yaml: budgets[0].timezone: unknown time zone; got 'Europe/Berln'; "
         "use an IANA time zone name, e.g. UTC, Europe/Berlin, America/New_York; "
         "did you mean 'Europe/Berlin'?"),
        ({"timezone": "../etc/passwd"}, "c.yaml: budgets[0].timezone: unknown time zone"),
        ({"limit_usd": 0}, "c.yaml: budgets[0].limit_usd: out of range; got 0; must be greater than 0"),
        ({"thresholds": []}, "c.yaml: budgets[0].thresholds: a budget needs at least one threshold; got []"),
        ({"thresholds": [{"at_percent": 0, "action": "notify"}]},
         "c.yaml: budgets[0].thresholds[0].at_percent: out of range; got 0"),
        ({"thresholds": [{"at_percent": 50, "action": "stop"}]},
         "c.yaml: budgets[0].thresholds[0].action: not an accepted value; got 'stop'; accepted values: "
         "notify, stop_calculations, terminate_sessions, disable_workgroup"),
        ({"thresholds": [{"at_percent": 100, "action": "notify"}, {"at_percent": 100, "action": "notify"}]},
         "c.yaml: budgets[0].thresholds[1].at_percent: thresholds must be in strictly ascending order of "
         "at_percent; got 100.0; must be greater than 100 (thresholds[0].at_percent)"),
        ({"notify_before": 300}, "c.yaml: budgets[0].notify_before: a number without a unit"),
    ],
)
def test_budget_validation_message(budget: dict[str, Any], expected: str) -> None:
    assert only_problem({"budgets": [{**BUDGET, **budget}]}).startswith(expected)


def test_budget_required_keys_are_all_reported() -> None:
    lines = problems({"budgets": [{"name": "b"}]})
    assert lines == [
        "c.yaml: budgets[0].period: missing required key; add it: a string",
        "c.yaml: budgets[0].limit_usd: missing required key; add it: a number",
        "c.yaml: budgets[0].thresholds: missing required key; add it: a list, e.g. [a, b] "
        "(write [a] for a single value)",
    ]


def test_budget_names_are_unique() -> None:
    line = only_problem({"budgets": [BUDGET, BUDGET]})
    assert line.startswith(
        "c.yaml: budgets[1].name: duplicate budget name; got 'b'; already used by budgets[0]"
    )


@pytest.mark.parametrize(
    ("period", "kind", "window"),
    [("daily", "daily", None), ("weekly", "weekly", None), ("monthly", "monthly", None),
     ("rolling:24h", "rolling", timedelta(hours=24)), ("rolling:1h30m", "rolling", timedelta(minutes=90))],
)
def test_budget_period_helpers(period: str, kind: str, window: timedelta | None) -> None:
    settings = parse_settings({"budgets": [{**BUDGET, "period": period}]}, environ={})
    assert settings.budgets[0].period_kind == kind
    assert settings.budgets[0].rolling_window == window


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        ({"type": "slack"}, "c.yaml: notifications[0].type: unknown type; got 'slack'; "
         "accepted values: eventbridge, sns, webhook"),
        ({"type": "webhok", "url": "https://x"}, "c.yaml: notifications[0].type: unknown type; got 'webhok'; "
         "accepted values: eventbridge, sns, webhook; did you mean 'webhook'?"),
        ({"url": "https://x"}, "c.yaml: notifications[0].type: missing required key; "
         "accepted values: eventbridge, sns, webhook"),
        ({"type": "webhook"}, "c.yaml: notifications[0].url: missing required key"),
        ({"type": "webhook", "url": "hooks.example.com"}, "c.yaml: notifications[0].url: not an http(s) URL"),
        ({"type": "webhook", "url": "https://x", "timeout": 5},
         "c.yaml: notifications[0].timeout: a number without a unit is not a duration; got 5"),
        ({"type": "webhook", "url": "https://x", "retries": -1},
         "c.yaml: notifications[0].retries: out of range"),
        ({"type": "webhook", "url": "https://x", "headers": {"X": 1}},
         "c.yaml: notifications[0].headers.X: wrong type; expected a string"),
        ({"type": "webhook", "url": "https://x", "events": ["violaton"]},
         "c.yaml: notifications[0].events[0]: not an accepted value; got 'violaton'; "
         "accepted values: warning, violation, stop_requested, escalated, terminated, escalation_failed, "
         "budget_threshold, workgroup_disabled, workgroup_enabled, test; did you mean 'violation'?"),
        ({"type": "webhook", "url": "https://x", "events": []},
         "c.yaml: notifications[0].events: empty list delivers no event; got []; omit 'events'"),
        ({"type": "sns", "topic_arn": "my-topic"},
         "c.yaml: notifications[0].topic_arn: not an SNS topic ARN; got 'my-topic'"),
        ({"type": "eventbridge", "min_severity": "high"}, "c.yaml: notifications[0].min_severity: "
         "not an accepted value; got 'high'; accepted values: info, warning, critical"),
        ({"type": "eventbridge", "endpoint_url": "x"},
         "c.yaml: notifications[0].endpoint_url: not an http(s)"),
    ],
)
def test_notification_validation_message(channel: dict[str, Any], expected: str) -> None:
    assert problems({"notifications": [channel]})[0].startswith(expected)


def test_notification_defaults_and_filter() -> None:
    settings = parse_settings({"notifications": [
        {"type": "webhook", "url": "https://x", "events": ["violation"], "min_severity": "warning"},
        {"type": "sns", "topic_arn": "arn:aws:sns:eu-west-1:123456789012:t"},
        {"type": "eventbridge"},
    ]}, environ={})
    webhook, sns, bus = settings.notifications
    assert isinstance(webhook, WebhookChannel) and webhook.timeout == timedelta(seconds=5)
    assert webhook.retries == 5 and webhook.headers == {}
    assert webhook.wants("violation", "critical") and not webhook.wants("violation", "info")
    assert not webhook.wants("terminated", "critical")
    assert isinstance(sns, SnsChannel) and sns.effective_region == "eu-west-1" and sns.events is None
    assert isinstance(bus, EventBridgeChannel)
    assert (bus.event_bus_name, bus.source, bus.min_severity) == ("default", "athena-supervisor", "info")


# --- unknown keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"polices": []}, "c.yaml: polices: unknown key; accepted keys: accounts, aws, budgets, cluster, "
         "discovery, discovery_interval, escalation, http, journal, log_level, mode, notifications, policies, pricing, "
         "safety, workgroups; "
         "did you mean 'policies'?"),
        ({"aws": {"regoin": "x"}}, "c.yaml: aws.regoin: unknown key; accepted keys: account_id, connect_timeout, "
         "endpoint_url, max_attempts, max_requests_per_second, profile, read_timeout, region, sts_endpoint_url; "
         "did you mean 'region'?"),
        ({"policies": [{**POLICY, "calcualtion": {}}]},
         "c.yaml: policies[0].calcualtion: unknown key; accepted keys: accounts, action, calculation, engines, mode, "
         "name, notify_before, regions, session, workgroups; did you mean 'calculation'?"),
        ({"policies": [{**POLICY, "calculation": {"max_runtime": "1m", "max_run_time": "1m"}}]},
         "c.yaml: policies[0].calculation.max_run_time: unknown key; accepted keys: max_cost_usd, "
         "max_dpu_hours, max_queued, max_runtime; did you mean 'max_runtime'?"),
        ({"budgets": [{**BUDGET, "thresholds": [{"at_percent": 1, "action": "notify", "at": 2}]}]},
         "c.yaml: budgets[0].thresholds[0].at: unknown key; accepted keys: action, at_percent"),
        ({"notifications": [{"type": "sns", "topic_arn": "arn:aws:sns:us-east-1:123456789012:t", "url": 1}]},
         "c.yaml: notifications[0].url: unknown key; accepted keys: endpoint_url, events, min_severity, "
         "region, topic_arn, type"),
        ({"safety": {"zzz": 1}}, "c.yaml: safety.zzz: unknown key; accepted keys: circuit_breaker_fraction, "
         "circuit_breaker_min_targets, exempt_tag, max_actions_per_minute"),
    ],
)
def test_unknown_keys_are_errors_with_suggestion(data: dict[str, Any], expected: str) -> None:
    assert only_problem(data) == expected


def test_every_problem_is_listed_one_per_line() -> None:
    lines = problems({"mode": "x", "http": {"port": "x"}, "policies": [{**POLICY, "actoin": "stop"}]})
    assert [line.split(": ")[1] for line in lines] == ["mode", "http.port", "policies[0].actoin"]


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match=r"^c.yaml: the top level must be a mapping; got \['a'\]"):
        parse_settings(["a"], source="c.yaml", environ={})


def test_aws_timeouts_default_and_accept_the_bounds() -> None:
    aws = parse_settings({}, environ={}).aws
    assert (aws.connect_timeout, aws.read_timeout) == (timedelta(seconds=2), timedelta(seconds=10))
    aws = parse_settings({"aws": {"connect_timeout": "500ms", "read_timeout": "5m"}}, environ={}).aws
    assert (aws.connect_timeout, aws.read_timeout) == (timedelta(milliseconds=500), timedelta(minutes=5))


@pytest.mark.parametrize(
    ("aws", "expected"),
    [
        ({}, None),
        ({"endpoint_url": "http://127.0.0.1:4566"}, "http://127.0.0.1:4566"),
        ({"sts_endpoint_url": "https://sts.eu-west-1.amazonaws.com"}, "https://sts.eu-west-1.amazonaws.com"),
        ({"endpoint_url": "http://127.0.0.1:4566", "sts_endpoint_url": "http://127.0.0.1:4567"},
         "http://127.0.0.1:4567"),
    ],
)
def test_effective_sts_endpoint_url(aws: dict[str, Any], expected: str | None) -> None:
    assert parse_settings({"aws": aws}, environ={}).aws.effective_sts_endpoint_url == expected


def test_an_unquoted_twelve_digit_account_id_is_kept_as_text() -> None:
    assert parse_settings({"aws": {"account_id": 123456789012}}, environ={}).aws.account_id == "123456789012"


# --- environment -------------------------------------------------------------------------------------


def test_env_overrides_the_aws_section() -> None:
    settings = parse_settings({"aws": {"region": "eu-west-1", "max_requests_per_second": 5}}, environ={
        "ATHENA_SUPERVISOR_AWS_REGION": "ap-south-1",
        "ATHENA_SUPERVISOR_AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
        "ATHENA_SUPERVISOR_AWS_MAX_REQUESTS_PER_SECOND": "2.5",
        "ATHENA_SUPERVISOR_AWS_PROFILE": "ops",
        "AWS_REGION": "us-west-2",
    })
    assert settings.aws.region == "ap-south-1"
    assert settings.aws.endpoint_url == "http://127.0.0.1:4566"
    assert settings.aws.max_requests_per_second == 2.5
    assert settings.aws.profile == "ops"


@pytest.mark.parametrize(
    ("file_aws", "environ", "region"),
    [
        ({"region": "eu-west-1"}, {"AWS_REGION": "us-west-2"}, "eu-west-1"),
        ({}, {"AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "eu-north-1"}, "us-west-2"),
        ({}, {"AWS_DEFAULT_REGION": "eu-north-1"}, "eu-north-1"),
        ({}, {"AWS_REGION": ""}, "us-east-1"),
        ({}, {}, "us-east-1"),
        ({}, {"ATHENA_SUPERVISOR_AWS_REGION": "", "AWS_REGION": "us-west-2"}, "us-west-2"),
    ],
)
def test_region_fallback_order(file_aws: dict[str, Any], environ: dict[str, str], region: str) -> None:
    assert parse_settings({"aws": file_aws}, environ=environ).aws.region == region


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"ATHENA_SUPERVISOR_AWS_MAX_REQUESTS_PER_SECOND": "fast"},
         "environment variable ATHENA_SUPERVISOR_AWS_MAX_REQUESTS_PER_SECOND: not a number; got 'fast'"),
        ({"ATHENA_SUPERVISOR_AWS_MAX_REQUESTS_PER_SECOND": "0"},
         "environment variable ATHENA_SUPERVISOR_AWS_MAX_REQUESTS_PER_SECOND: out of range; got '0'"),
        ({"ATHENA_SUPERVISOR_AWS_ENDPOINT_URL": "127.0.0.1:4566"},
         "environment variable ATHENA_SUPERVISOR_AWS_ENDPOINT_URL: not an http(s) URL; got '127.0.0.1:4566'"),
        ({"ATHENA_SUPERVISOR_AWS_REGOIN": "x"}, "environment variable ATHENA_SUPERVISOR_AWS_REGOIN: names no key "
         "of the configuration; a variable is ATHENA_SUPERVISOR_ + a key path in capitals, with _ for each . and "
         "list position (ATHENA_SUPERVISOR_AWS_REGION, ATHENA_SUPERVISOR_POLICIES_0_MODE); a list item must be in "
         "the file; did you mean 'ATHENA_SUPERVISOR_AWS_REGION'?"),
        ({"AWS_REGION": " "}, "environment variable AWS_REGION: must not be empty; got ' '"),
        ({"ATHENA_SUPERVISOR_AWS_ACCOUNT_ID": "1234-5678-9012"},
         "environment variable ATHENA_SUPERVISOR_AWS_ACCOUNT_ID: not an AWS account id; got '1234-5678-9012'; "
         "write the 12 digits"),
        ({"ATHENA_SUPERVISOR_AWS_ACCOUNT_ID": " 123456789012"},
         "environment variable ATHENA_SUPERVISOR_AWS_ACCOUNT_ID: not an AWS account id; got ' 123456789012'"),
        ({"ATHENA_SUPERVISOR_AWS_STS_ENDPOINT_URL": "sts.local:4566"},
         "environment variable ATHENA_SUPERVISOR_AWS_STS_ENDPOINT_URL: not an http(s) URL; got 'sts.local:4566'"),
    ],
)
def test_bad_env_values_name_the_variable(environ: dict[str, str], expected: str) -> None:
    assert only_problem({}, environ).startswith(expected)


def test_env_sets_the_account_id_and_the_sts_endpoint() -> None:
    settings = parse_settings({"aws": {"account_id": "111111111111"}}, environ={
        "ATHENA_SUPERVISOR_AWS_ACCOUNT_ID": "012345678901",
        "ATHENA_SUPERVISOR_AWS_STS_ENDPOINT_URL": "http://127.0.0.1:4567",
    })
    assert settings.aws.account_id == "012345678901"
    assert settings.aws.sts_endpoint_url == "http://127.0.0.1:4567"


def test_environ_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATHENA_SUPERVISOR_AWS_PROFILE", "from-env")
    assert parse_settings({}).aws.profile == "from-env"


# --- files -------------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_relative_journal_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = write(tmp_path / "etc", "journal: {path: data/j.db}\n")
    assert load_settings(path, environ={}).journal.path == tmp_path / "etc" / "data" / "j.db"


def test_absolute_and_memory_journal_paths_are_kept(tmp_path: Path) -> None:
    absolute = tmp_path / "abs.db"
    settings = load_settings(write(tmp_path, f"journal: {{path: {absolute}}}\n"), environ={})
    assert settings.journal.path == absolute
    memory = load_settings(write(tmp_path, "journal: {path: ':memory:'}\n"), environ={}).journal.path
    assert str(memory) == ":memory:"


def test_the_journal_is_sqlite_for_90_days_unless_told_otherwise() -> None:
    journal = parse_settings({}, environ={}).journal
    assert (journal.backend, journal.retention, journal.table, journal.endpoint_url) == (
        "sqlite", timedelta(days=90), None, None)


def test_a_dynamodb_journal_defaults_to_the_aws_region() -> None:
    settings = parse_settings({"aws": {"region": "eu-west-1", "endpoint_url": "http://athena.local:4566"},
                               "journal": {"backend": "dynamodb", "table": "athena-supervisor", "retention": "30d"}},
                              environ={})
    journal = settings.journal
    assert (journal.table, journal.retention, journal.endpoint_url) == (
        "athena-supervisor", timedelta(days=30), None), "never Athena's endpoint"
    assert journal.dynamodb_region(settings.aws) == "eu-west-1"
    other = parse_settings({"journal": {"backend": "dynamodb", "table": "t-1", "region": "us-west-2",
                                        "endpoint_url": "http://127.0.0.1:8000"}}, environ={})
    assert other.journal.dynamodb_region(other.aws) == "us-west-2"


def test_parse_settings_leaves_relative_journal_path_alone() -> None:
    assert parse_settings({"journal": {"path": "x.db"}}, environ={}).journal.path == Path("x.db")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.yaml: config file not found"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_settings(tmp_path, environ={})


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "mode: enforce\npolicies:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert str(caught.value).startswith(f"{path}:4:1: invalid YAML:")


def test_duplicate_yaml_keys_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "mode: enforce\nhttp: {port: 1}\nmode: dry-run\n")
    with pytest.raises(ConfigError, match=r"c.yaml:3:1: invalid YAML: duplicate key 'mode' \(first on line"):
        load_settings(path, environ={})


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the file is empty"):
        load_settings(write(tmp_path, "# nothing\n"), environ={})


def test_errors_name_the_file_as_given(tmp_path: Path) -> None:
    text = "policies:\n  - name: p\n    calculation: {max_runtime: 30 minutes}\n"
    path = write(tmp_path, text, "demo.yaml")
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path), environ={})
    assert str(caught.value) == (
        f"{path}: policies[0].calculation.max_runtime: not a duration; got '30 minutes'; "
        "use a number with a unit (ms, s, m, h, d), e.g. 45s, 15m, 2h"
    )


# --- helpers on the models ---------------------------------------------------------------------------


def test_policy_order_and_mode_helpers() -> None:
    settings = parse_settings({
        "workgroups": ["etl-*", "adhoc"],
        "mode": "dry-run",
        "policies": [
            {**POLICY, "name": "etl-nightly", "workgroups": ["etl-nightly*"], "mode": "enforce"},
            {**POLICY, "name": "etl", "workgroups": ["etl-*"]},
        ],
    }, environ={})
    nightly, etl = settings.policies
    assert settings.policy_for("etl-nightly-1") is nightly
    assert settings.policy_for("etl-daily") is etl
    assert settings.policy_for("adhoc") is None  # watched, but no policy matches
    assert settings.policy_for("other") is None  # not watched
    assert settings.mode_for(nightly) == "enforce" and settings.mode_for(etl) == "dry-run"
    assert etl.effective_mode("enforce") == "enforce"


def test_pricing_per_region() -> None:
    data = {"pricing": {"dpu_hour_usd": 0.5, "regions": {"eu-west-1": 0.44}}}
    pricing = parse_settings(data, environ={}).pricing
    assert pricing.price_for("eu-west-1") == 0.44
    assert pricing.price_for("us-east-1") == 0.5


def test_models_are_frozen_and_accept_timedeltas_directly() -> None:
    policy = PolicyConfig(name="x", session=SessionLimits(max_idle=timedelta(minutes=1)))
    assert policy.session is not None and policy.session.max_idle == timedelta(minutes=1)
    with pytest.raises(ValueError, match="frozen"):
        policy.name = "y"  # type: ignore[misc]


def test_json_dump_formats_durations() -> None:
    settings = parse_settings({"policies": [{**POLICY, "calculation": {"max_runtime": "90s"}}]}, environ={})
    dumped = settings.model_dump(mode="json")
    assert dumped["policies"][0]["calculation"]["max_runtime"] == "1m30s"
    assert dumped["escalation"] == {"stop_grace": "30s", "terminate_grace": "2m", "retry_backoff_max": "5m"}


# --- documentation stays complete --------------------------------------------------------------------


def _all_keys(model: type[BaseModel]) -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        keys.add(name)
        for candidate in _models_in(field.annotation):
            keys |= _all_keys(candidate)
    return keys


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def test_every_key_is_documented_and_in_the_example() -> None:
    docs = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    example = (REPO / "config" / "example.yaml").read_text(encoding="utf-8")
    keys = _all_keys(Settings)
    assert len(keys) > 50
    assert [key for key in sorted(keys) if f"`{key}`" not in docs and f".{key}`" not in docs] == []
    assert [key for key in sorted(keys) if f"{key}:" not in example] == []


# --- every scalar key from the environment; {env: NAME} and {file: PATH} ---------------------------------


def test_every_scalar_key_has_one_variable_by_one_rule() -> None:
    variables = scalar_variables(Settings)
    names = [name for name, _ in variables]
    assert len(names) == len(set(names)), "one variable names one key"
    for name, path in variables:
        expected = path.split(" (")[0].replace("[<N>]", ".<N>").replace(".", "_").upper()
        assert name == f"ATHENA_SUPERVISOR_{expected}", (name, path)
    docs = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert [name for name in names if f"`{name}`" not in docs] == []


def test_any_scalar_key_is_overridden_by_its_variable() -> None:
    data = {"policies": [{"name": "p", "session": {"max_idle": "10m"}}, {"name": "q", "session": {"max_age": "1h"}}],
            "notifications": [{"type": "sns", "topic_arn": "arn:aws:sns:us-east-1:123456789012:t"}],
            "budgets": [{"name": "b", "period": "daily", "limit_usd": 10,
                         "thresholds": [{"at_percent": 100, "action": "notify"}]}]}
    settings = parse_settings(data, environ={
        "ATHENA_SUPERVISOR_HTTP_PORT": "9500", "ATHENA_SUPERVISOR_MODE": "dry-run",
        "ATHENA_SUPERVISOR_JOURNAL_RETENTION": "30d", "ATHENA_SUPERVISOR_DISCOVERY_INTERVAL": "5s",
        "ATHENA_SUPERVISOR_DISCOVERY_WORKGROUP_REFRESH": "2m", "ATHENA_SUPERVISOR_SAFETY_CIRCUIT_BREAKER_FRACTION": "1",
        "ATHENA_SUPERVISOR_POLICIES_1_SESSION_MAX_AGE": "2h",
        "ATHENA_SUPERVISOR_POLICIES_0_CALCULATION_MAX_RUNTIME": "1h",
        "ATHENA_SUPERVISOR_NOTIFICATIONS_0_REGION": "eu-west-1", "ATHENA_SUPERVISOR_BUDGETS_0_LIMIT_USD": "25.5",
        "ATHENA_SUPERVISOR_BUDGETS_0_THRESHOLDS_0_ACTION": "stop_calculations", "ATHENA_SUPERVISOR_LOG_LEVEL": "debug",
    })
    assert (settings.http.port, settings.mode, settings.journal.retention) == (9500, "dry-run", timedelta(days=30))
    assert settings.discovery_interval == timedelta(seconds=5)
    assert settings.discovery.workgroup_refresh == timedelta(minutes=2)
    assert settings.safety.circuit_breaker_fraction == 1.0
    assert settings.policies[1].session is not None and settings.policies[1].session.max_age == timedelta(hours=2)
    assert settings.policies[0].calculation is not None
    assert settings.policies[0].calculation.max_runtime == timedelta(hours=1)
    assert settings.notifications[0].region == "eu-west-1"  # type: ignore[union-attr]
    assert settings.budgets[0].limit_usd == 25.5 and settings.budgets[0].thresholds[0].action == "stop_calculations"
    assert settings.log_level == "debug"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"ATHENA_SUPERVISOR_HTTP_PORT": "http"}, "environment variable ATHENA_SUPERVISOR_HTTP_PORT: not a number; "
         "got 'http'; write a whole number, e.g. 20"),
        ({"ATHENA_SUPERVISOR_HTTP_PORT": "99999"}, "environment variable ATHENA_SUPERVISOR_HTTP_PORT: out of range; "
         "got '99999'; must be at most 65535"),
        ({"ATHENA_SUPERVISOR_MODE": "enforcing"}, "environment variable ATHENA_SUPERVISOR_MODE: not an accepted value; "
         "got 'enforcing'; accepted values: enforce, dry-run; did you mean 'enforce'?"),
        ({"ATHENA_SUPERVISOR_POLICIES_3_MODE": "dry-run"}, "environment variable ATHENA_SUPERVISOR_POLICIES_3_MODE: "
         "names no key of the configuration;"),
        ({"ATHENA_SUPERVISOR_NOTIFICATIONS_0_TYPE": "sns"}, "environment variable "
         "ATHENA_SUPERVISOR_NOTIFICATIONS_0_TYPE: names no key of the configuration;"),
        ({"ATHENA_SUPERVISOR_JOURNAL_RETENTON": "7d"}, "environment variable ATHENA_SUPERVISOR_JOURNAL_RETENTON: names "
         "no key of the configuration;"),
    ],
)
def test_a_bad_override_names_its_variable(environ: dict[str, str], expected: str) -> None:
    data = {"notifications": [{"type": "webhook", "url": "https://hooks.example.com/x"}]}
    assert only_problem(data, environ).startswith(expected)


def test_a_string_may_come_from_a_variable_or_a_file(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text("Bearer s3cret\n", encoding="utf-8")
    path = write(tmp_path, "notifications:\n  - type: webhook\n    url: {env: HOOK_URL}\n"
                           "    headers: {Authorization: {file: secrets/token}, env: plain}\n"
                           "aws: {region: {env: REGION}}\n")
    loaded = load_config(path, environ={"HOOK_URL": "https://hooks.example.com/T0/x", "REGION": "eu-west-1"})
    channel = loaded.settings.notifications[0]
    assert isinstance(channel, WebhookChannel)
    assert channel.url == "https://hooks.example.com/T0/x"
    assert channel.headers == {"Authorization": "Bearer s3cret", "env": "plain"}, "a header named env is a header"
    assert loaded.settings.aws.region == "eu-west-1"
    assert {(o.path, o.describe(), o.secret) for o in loaded.origins} == {
        ("notifications[0].url", "{env: HOOK_URL}", True),
        ("notifications[0].headers.Authorization", "{file: secrets/token}", True),
        ("aws.region", "{env: REGION}", False)}


def test_a_missing_variable_or_file_names_the_key_and_never_a_secret(tmp_path: Path) -> None:
    path = write(tmp_path, "notifications:\n  - type: webhook\n    url: {env: HOOK_URL}\n"
                           "    headers: {Authorization: {file: /nonexistent/token}}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert str(error.value).splitlines() == [
        f"{path}: notifications[0].url: environment variable HOOK_URL is not set; set HOOK_URL, or write the value "
        "in the file",
        f"{path}: notifications[0].headers.Authorization: cannot read {{file: /nonexistent/token}} (No such file or "
        "directory); mount the file there, or fix the path"]
