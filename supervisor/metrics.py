"""Prometheus instruments of the daemon, created on an injected registry (no global REGISTRY).

Label values are bounded: operation names, policy/budget/rule names from the config, workgroup names,
fixed outcome words. Session and calculation ids are never labels.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "athena_supervisor"

# Crossing → Stop/Terminate sent; the interesting range is tens of milliseconds to minutes.
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Metrics:
    """All instruments, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.actions = Counter(
            f"{PREFIX}_actions", "Enforcement actions by action, policy and outcome "
            "(sent, dry_run, notified, error).",
            ("action", "policy", "outcome"), registry=r,
        )
        self.violations = Counter(
            f"{PREFIX}_violations", "Limit crossings detected, by policy and rule.",
            ("policy", "rule"), registry=r,
        )
        self.warnings = Counter(
            f"{PREFIX}_warnings", "Crossings predicted within notify_before, by policy and rule.",
            ("policy", "rule"), registry=r,
        )
        self.escalations = Counter(
            f"{PREFIX}_escalations", "Escalation steps and results: escalated (stop ignored, terminating), "
            "failed (session alive after terminate_grace), and the final outcomes stopped, terminated, completed, "
            "calculation_failed, gone, voided.",
            ("outcome",), registry=r,
        )
        self.escalations_in_flight = Gauge(
            f"{PREFIX}_escalations_in_flight", "Escalations not yet settled.", registry=r,
        )
        self.active_sessions = Gauge(
            f"{PREFIX}_active_sessions", "Active sessions in watched workgroups.", ("workgroup",), registry=r,
        )
        self.active_calculations = Gauge(
            f"{PREFIX}_active_calculations", "Live calculations in watched workgroups.",
            ("workgroup",), registry=r,
        )
        self.estimated_cost = Counter(
            f"{PREFIX}_estimated_cost_usd",
            "Estimated cost of DPU time in workgroups covered by a budget (counted by budget accounting), USD.",
            ("workgroup",), registry=r,
        )
        self.budget_spent = Gauge(
            f"{PREFIX}_budget_spent_usd", "Spend in the current budget period, USD.", ("budget",), registry=r,
        )
        self.budget_limit = Gauge(
            f"{PREFIX}_budget_limit_usd", "Budget limit per period, USD.", ("budget",), registry=r,
        )
        self.budget_forecast = Gauge(
            f"{PREFIX}_budget_forecast_usd", "Forecast spend at the end of the budget period, USD.",
            ("budget",), registry=r,
        )
        self.notifications = Counter(
            f"{PREFIX}_notifications", "Notification deliveries by channel and outcome.",
            ("channel", "outcome"), registry=r,
        )
        self.aws_api_calls = Counter(
            f"{PREFIX}_aws_api_calls", "AWS API call attempts by operation and outcome "
            "(success, throttled, client_error, server_error, network_error).",
            ("operation", "outcome"), registry=r,
        )
        self.enforcement_lag = Histogram(
            f"{PREFIX}_enforcement_lag_seconds", "Limit crossing to Stop/Terminate call sent, seconds.",
            buckets=LAG_BUCKETS, registry=r,
        )
        self.last_discovery = Gauge(
            f"{PREFIX}_last_discovery_timestamp_seconds", "Unix time of the last completed discovery sweep.",
            registry=r,
        )
        self.unknown_states = Counter(
            f"{PREFIX}_unknown_states",
            "Targets reported in a state this version does not know; never acted on.",
            ("kind",), registry=r,
        )
        self.held_actions = Counter(
            f"{PREFIX}_held_actions", "Destructive actions held back by a safety rail, by reason.",
            ("reason",), registry=r,
        )
        self.enforcement_failing = Gauge(
            f"{PREFIX}_enforcement_failing", "1 while the last destructive call of this operation failed "
            "(it is retried with backoff); /readyz reports degraded meanwhile.",
            ("operation",), registry=r,
        )
        self.malformed_items = Counter(
            f"{PREFIX}_malformed_items", "Listed items skipped because a required field (an id) was missing.",
            ("operation",), registry=r,
        )
        self.unjudgeable_targets = Counter(
            f"{PREFIX}_unjudgeable_targets", "Targets a limit could not be judged for, because the API answer "
            "lacked a field (counted once per target and field; the other limits still apply).",
            ("kind", "field"), registry=r,
        )
        self.listing_failures = Counter(
            f"{PREFIX}_listing_failures", "Discovery listings that failed after retries (the rest of the sweep "
            "goes on; the next sweep retries).", ("operation",), registry=r,
        )
        self.skipped_workgroups = Gauge(
            f"{PREFIX}_skipped_workgroups", "Workgroups not watched, by reason: out_of_scope, not_spark, "
            "exempt_workgroup, disabled, tags_unknown (its exemption tags could not be read: not enforced).",
            ("reason",), registry=r,
        )
        self.circuit_breaker_open = Gauge(
            f"{PREFIX}_circuit_breaker_open", "1 while the circuit breaker holds destructive actions.",
            registry=r,
        )


SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_metric_names(metrics: Metrics) -> frozenset[str]:
    """Every sample name the registry exposes, whether or not a labelled child exists yet."""
    names: set[str] = set()
    for family in metrics.registry.collect():
        names.update(family.name + suffix for suffix in SAMPLE_SUFFIXES.get(family.type, ("",)))
    return frozenset(names)
