"""Prometheus instruments of the daemon, created on an injected registry (no global REGISTRY).

Label values are bounded: operation names, policy/budget/rule names from the config, workgroup names,
account ids and regions from the config, fixed outcome words. Session and calculation ids are never labels.

Every instrument that concerns a target or an account-region (a shard) carries ``account`` and ``region``
labels first. A :class:`Metrics` is a view bound to one shard's label values (:meth:`Metrics.for_shard`), so
the activities of a shard label their samples without knowing about shards: ``metrics.actions.labels(action,
policy, outcome)`` and ``metrics.last_discovery.set(t)`` fill in the account and region. The root view (no
shard: notifications, the journal's own calls) has both empty.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from supervisor import __version__
from supervisor.core.fleet import Shard

PREFIX = "athena_supervisor"
SHARD_LABELS = ("account", "region")

# Crossing → Stop/Terminate sent; the interesting range is tens of milliseconds to minutes.
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class ShardCounter:
    """A counter family with the shard's label values filled in."""

    family: Counter
    shard: tuple[str, str]

    def labels(self, *values: str) -> Counter:
        return self.family.labels(*self.shard, *values)

    def inc(self, amount: float = 1.0) -> None:
        self.family.labels(*self.shard).inc(amount)


@dataclass(frozen=True, slots=True)
class ShardGauge:
    """A gauge family with the shard's label values filled in."""

    family: Gauge
    shard: tuple[str, str]

    def labels(self, *values: str) -> Gauge:
        return self.family.labels(*self.shard, *values)

    def set(self, value: float) -> None:
        self.family.labels(*self.shard).set(value)


@dataclass(frozen=True, slots=True)
class ShardHistogram:
    """A histogram family with the shard's label values filled in."""

    family: Histogram
    shard: tuple[str, str]

    def observe(self, value: float) -> None:
        self.family.labels(*self.shard).observe(value)


class Families:
    """The instruments themselves, registered once on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        shard = SHARD_LABELS
        self.actions = Counter(
            f"{PREFIX}_actions", "Enforcement actions by action, policy and outcome "
            "(sent, dry_run, notified, error).",
            (*shard, "action", "policy", "outcome"), registry=r,
        )
        self.violations = Counter(
            f"{PREFIX}_violations", "Limit crossings detected, by policy and rule.",
            (*shard, "policy", "rule"), registry=r,
        )
        self.warnings = Counter(
            f"{PREFIX}_warnings", "Crossings predicted within notify_before, by policy and rule.",
            (*shard, "policy", "rule"), registry=r,
        )
        self.escalations = Counter(
            f"{PREFIX}_escalations", "Escalation steps and results: escalated (stop ignored, terminating), "
            "failed (session alive after terminate_grace), and the final outcomes stopped, terminated, completed, "
            "calculation_failed, gone, voided.",
            (*shard, "outcome"), registry=r,
        )
        self.escalations_in_flight = Gauge(
            f"{PREFIX}_escalations_in_flight", "Escalations not yet settled.", labelnames=shard, registry=r,
        )
        self.active_sessions = Gauge(
            f"{PREFIX}_active_sessions", "Active sessions in watched workgroups.", (*shard, "workgroup"), registry=r,
        )
        self.active_calculations = Gauge(
            f"{PREFIX}_active_calculations", "Live calculations in watched workgroups.",
            (*shard, "workgroup"), registry=r,
        )
        self.estimated_cost = Counter(
            f"{PREFIX}_estimated_cost_usd",
            "Estimated cost of DPU time in workgroups covered by a budget (counted by budget accounting), USD.",
            (*shard, "workgroup"), registry=r,
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
            "(success, throttled, client_error, server_error, network_error, condition_failed).",
            (*shard, "operation", "outcome"), registry=r,
        )
        # By operation only (no account, region, outcome): a histogram per shard would multiply its buckets by
        # every account-region of a fleet; where the time goes is a question about the kind of call.
        self.aws_api_call_seconds = Histogram(
            f"{PREFIX}_aws_api_call_seconds", "Time an AWS API call attempt took, from its token to its answer or "
            "error, seconds.", ("operation",), buckets=CALL_BUCKETS, registry=r,
        )
        self.enforcement_lag = Histogram(
            f"{PREFIX}_enforcement_lag_seconds", "Limit crossing to Stop/Terminate call sent, seconds.",
            buckets=LAG_BUCKETS, labelnames=shard, registry=r,
        )
        self.last_discovery = Gauge(
            f"{PREFIX}_last_discovery_timestamp_seconds", "Unix time of the last completed discovery sweep.",
            labelnames=shard, registry=r,
        )
        self.discovery_interval = Gauge(
            f"{PREFIX}_discovery_interval_seconds", "How often full discovery sweeps run: discovery_interval, or "
            "discovery.backstop_interval with event-fed discovery.", labelnames=shard, registry=r,
        )
        self.unknown_states = Counter(
            f"{PREFIX}_unknown_states",
            "Targets reported in a state this version does not know; never acted on.",
            (*shard, "kind"), registry=r,
        )
        self.held_actions = Counter(
            f"{PREFIX}_held_actions", "Destructive actions held back by a safety rail, by reason.",
            (*shard, "reason"), registry=r,
        )
        self.enforcement_failing = Gauge(
            f"{PREFIX}_enforcement_failing", "1 while the last destructive call of this operation failed "
            "(it is retried with backoff); /readyz reports degraded meanwhile.",
            (*shard, "operation"), registry=r,
        )
        self.malformed_items = Counter(
            f"{PREFIX}_malformed_items", "Listed items skipped because a required field (an id) was missing.",
            (*shard, "operation"), registry=r,
        )
        self.unjudgeable_targets = Counter(
            f"{PREFIX}_unjudgeable_targets", "Targets a limit could not be judged for, because the API answer "
            "lacked a field (counted once per target and field; the other limits still apply).",
            (*shard, "kind", "field"), registry=r,
        )
        self.listing_failures = Counter(
            f"{PREFIX}_listing_failures", "Discovery listings that failed after retries (the rest of the sweep "
            "goes on; the next sweep retries).", (*shard, "operation"), registry=r,
        )
        self.skipped_workgroups = Gauge(
            f"{PREFIX}_skipped_workgroups", "Workgroups not watched, by reason: out_of_scope, not_spark, "
            "exempt_workgroup, disabled, tags_unknown (its exemption tags could not be read: not enforced).",
            (*shard, "reason"), registry=r,
        )
        self.inapplicable_limits = Gauge(
            f"{PREFIX}_inapplicable_limits", "1 for each watched workgroup whose engine has no calculations "
            "(Apache Spark version 3.5) while the configuration limits them: kind calculation_limits (its policy's "
            "calculation limits never apply) or budget_stop_calculations (a budget's stop_calculations threshold "
            "stops nothing there).", (*shard, "workgroup", "kind"), registry=r,
        )
        self.circuit_breaker_open = Gauge(
            f"{PREFIX}_circuit_breaker_open", "1 while the circuit breaker holds destructive actions.",
            labelnames=shard, registry=r,
        )
        self.shard_owned = Gauge(
            f"{PREFIX}_shard_owned", "1 while this process supervises the account-region (holds its lease, "
            "or runs alone), else 0.", labelnames=shard, registry=r,
        )
        self.shard_credentials_failing = Gauge(
            f"{PREFIX}_shard_credentials_failing", "1 while the account-region's role cannot be assumed (retried "
            "with backoff; nothing is supervised there meanwhile).", labelnames=shard, registry=r,
        )
        self.lease_changes = Counter(
            f"{PREFIX}_lease_changes", "Shard lease changes of this replica: acquired, released (rebalancing or "
            "shutdown), lost (not renewed in time, or taken), refused (held by another replica).",
            ("outcome",), registry=r,
        )
        self.replicas = Gauge(
            f"{PREFIX}_replicas", "Live replicas this replica sees in the cluster (heartbeats in the table).",
            registry=r,
        )
        self.build_info = Gauge(
            f"{PREFIX}_build_info", "Always 1; the labels say which version runs on which Python.",
            ("version", "python"), registry=r,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.config_reloads = Counter(
            f"{PREFIX}_config_reloads", "Configuration reloads (SIGHUP, POST /-/reload) by outcome: success, "
            "failure (the file was invalid: the running configuration stays).", ("outcome",), registry=r,
        )
        self.config_last_reload_success = Gauge(
            f"{PREFIX}_config_last_reload_success_timestamp_seconds", "Unix time the configuration in force was "
            "loaded (at start, or by the last successful reload).", registry=r,
        )
        self.events_pruned = Counter(
            f"{PREFIX}_journal_events_pruned", "Journal events deleted because they were older than "
            "journal.retention (SQLite; a DynamoDB table expires them by its TTL, uncounted).", registry=r,
        )
        # Event-fed discovery (docs/events.md).
        self.events_received = Counter(
            f"{PREFIX}_events_received", "Messages drained from the event queue, by outcome: applied (a look or "
            "a workgroup refresh was made), known (already known: nothing to do), duplicate (an event id seen "
            "before), unknown_event, malformed, unwatched (a workgroup or session not supervised), failed_call "
            "(a refused API call: it changed nothing), unknown_shard (an account-region not configured), "
            "not_owned (a shard another replica holds: handed back), retried (its look failed: redelivered).",
            ("outcome",), registry=r,
        )
        self.missed_events = Counter(
            f"{PREFIX}_discovery_missed_events", "Sessions and calculations a backstop sweep found first although "
            "their start event should have arrived (started after the event path was up, longer ago than "
            "discovery.events.late_after): events are being lost.", (*shard, "kind"), registry=r,
        )
        self.events_queue_depth = Gauge(
            f"{PREFIX}_events_queue_depth", "Messages waiting in the event queue (ApproximateNumberOfMessages).",
            registry=r,
        )
        self.events_last_received = Gauge(
            f"{PREFIX}_events_last_received_timestamp_seconds", "Unix time the last event message was received.",
            registry=r,
        )
        self.event_delivery = Histogram(
            f"{PREFIX}_event_delivery_seconds", "From an API call (its CloudTrail eventTime, whole seconds) to "
            "the daemon receiving its event.", registry=r,
            buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
        )


class Metrics:
    """The instruments as one shard's activities use them (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, shard: Shard | None = None,
                 families: Families | None = None) -> None:
        self.families = families if families is not None else Families(
            registry if registry is not None else CollectorRegistry())
        self.registry = self.families.registry
        self.shard = shard
        f, labels = self.families, shard.labels if shard is not None else ("", "")
        self.actions = ShardCounter(f.actions, labels)
        self.violations = ShardCounter(f.violations, labels)
        self.warnings = ShardCounter(f.warnings, labels)
        self.escalations = ShardCounter(f.escalations, labels)
        self.escalations_in_flight = ShardGauge(f.escalations_in_flight, labels)
        self.active_sessions = ShardGauge(f.active_sessions, labels)
        self.active_calculations = ShardGauge(f.active_calculations, labels)
        self.estimated_cost = ShardCounter(f.estimated_cost, labels)
        self.budget_spent = f.budget_spent
        self.budget_limit = f.budget_limit
        self.budget_forecast = f.budget_forecast
        self.notifications = f.notifications
        self.aws_api_calls = ShardCounter(f.aws_api_calls, labels)
        self.aws_api_call_seconds = f.aws_api_call_seconds
        self.enforcement_lag = ShardHistogram(f.enforcement_lag, labels)
        self.last_discovery = ShardGauge(f.last_discovery, labels)
        self.discovery_interval = ShardGauge(f.discovery_interval, labels)
        self.unknown_states = ShardCounter(f.unknown_states, labels)
        self.held_actions = ShardCounter(f.held_actions, labels)
        self.enforcement_failing = ShardGauge(f.enforcement_failing, labels)
        self.malformed_items = ShardCounter(f.malformed_items, labels)
        self.unjudgeable_targets = ShardCounter(f.unjudgeable_targets, labels)
        self.listing_failures = ShardCounter(f.listing_failures, labels)
        self.skipped_workgroups = ShardGauge(f.skipped_workgroups, labels)
        self.inapplicable_limits = ShardGauge(f.inapplicable_limits, labels)
        self.circuit_breaker_open = ShardGauge(f.circuit_breaker_open, labels)
        self.missed_events = ShardCounter(f.missed_events, labels)
        self.events_received = f.events_received
        self.events_queue_depth = f.events_queue_depth
        self.events_last_received = f.events_last_received
        self.event_delivery = f.event_delivery

        self.shard_owned = ShardGauge(f.shard_owned, labels)
        self.shard_credentials_failing = ShardGauge(f.shard_credentials_failing, labels)
        self.lease_changes = f.lease_changes
        self.replicas = f.replicas
        self.build_info = f.build_info
        self.events_pruned = f.events_pruned
        self.config_reloads = f.config_reloads
        self.config_last_reload_success = f.config_last_reload_success

    def forget_shard(self) -> None:
        """Drop this shard's gauges (but ``shard_owned``, set to 0): a replica that gave a shard up must not go on
        exporting its last values beside those of the new owner. Counters stay: each replica counts its own."""
        if self.shard is None:
            return
        account, region = self.shard.labels
        for gauge in (self.families.escalations_in_flight, self.families.active_sessions,
                      self.families.active_calculations, self.families.last_discovery,
                      self.families.discovery_interval,
                      self.families.enforcement_failing, self.families.skipped_workgroups,
                      self.families.inapplicable_limits,
                      self.families.circuit_breaker_open, self.families.shard_credentials_failing):
            names = gauge._labelnames  # the family's label names, in order
            for family in gauge.collect():
                for sample in family.samples:
                    if sample.labels.get("account") == account and sample.labels.get("region") == region:
                        gauge.remove(*(sample.labels[name] for name in names))
        self.shard_owned.set(0)

    def for_shard(self, shard: Shard) -> Metrics:
        """The same instruments, labelled with ``shard``'s account and region."""
        return Metrics(shard=shard, families=self.families)


SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_metric_names(metrics: Metrics) -> frozenset[str]:
    """Every sample name the registry exposes, whether or not a labelled child exists yet."""
    names: set[str] = set()
    for family in metrics.registry.collect():
        names.update(family.name + suffix for suffix in SAMPLE_SUFFIXES.get(family.type, ("",)))
    return frozenset(names)


def sum_samples(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels`` (0 when there are none): a total over
    the labels left out, e.g. over every account and region."""
    total = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                total += sample.value
    return total
