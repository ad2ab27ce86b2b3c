"""``athena-supervisor check-config --config FILE`` (or ``check-config FILE``): validate a config file and print
the effective settings.

Exit 0 with a summary (or ``--json``) when valid; exit 2 with every problem on stderr when not. The region
must be one ``run`` accepts (:func:`supervisor.startup.check_region`); the profile, journal and HTTP address
are only checked by ``run``, on the machine that runs it.
Secrets never reach the output: webhook URLs keep only scheme and host, header values are masked.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from supervisor.config import (
    BudgetConfig,
    ConfigError,
    EventBridgeChannel,
    LoadedConfig,
    NotificationChannel,
    PolicyConfig,
    Settings,
    SnsChannel,
    WebhookChannel,
    load_config,
)
from supervisor.config.models import ENGINES
from supervisor.core.model import PYSPARK_ENGINE, SPARK_CONNECT_ENGINE
from supervisor.durations import format_duration
from supervisor.redaction import MASK, redact_headers, redact_url, redact_value
from supervisor.startup import StartupError, check_region

EXIT_OK = 0
EXIT_INVALID = 2


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check-config", help="validate a config file and print the effective policies"
    )
    parser.add_argument("file", metavar="FILE", nargs="?", help="the YAML config file (or --config FILE)")
    parser.add_argument("--config", metavar="FILE", help="the YAML config file, as every other command takes it")
    parser.add_argument("--json", action="store_true", help="print the effective config as JSON")
    parser.set_defaults(func=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    if (args.file is None) == (args.config is None):
        both = "pass the config file once" if args.file else "the config file is required"
        args.parser.error(f"{both}: check-config --config FILE (or check-config FILE)")
    return check_config(args.config or args.file, as_json=args.json, out=sys.stdout, err=sys.stderr)


def check_config(path: str, *, as_json: bool = False, out: TextIO, err: TextIO,
                 environ: Mapping[str, str] | None = None) -> int:
    """Validate ``path``; print the summary (or JSON) to ``out`` or the problems to ``err``.

    Returns:
        0 when the config is valid, 2 when it is not.
    """
    try:
        loaded = load_config(path, environ=environ)
    except ConfigError as exc:
        print(exc, file=err)
        return EXIT_INVALID
    settings = loaded.settings
    try:
        check_region(settings.aws, environ=environ)
    except StartupError as exc:
        print(f"{path}: {exc}", file=err)
        return EXIT_INVALID
    if as_json:
        print(json.dumps(redacted(settings), indent=2), file=out)
    else:
        print(summarize(settings, source=path), file=out)
        print("\n".join(["", *origins(loaded, source=path)]), file=out)
    return EXIT_OK


# --- redaction ---------------------------------------------------------------------------------------


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective settings as JSON-ready data (durations as ``30s``) with secrets masked: webhook URLs
    keep scheme, host and port; header values go; any other URL or token is redacted too."""
    data: dict[str, Any] = settings.model_dump(mode="json")
    for key in ("endpoint_url", "sts_endpoint_url"):
        if data["aws"][key] is not None:
            data["aws"][key] = redact_url(data["aws"][key])
    for account in data["accounts"]:
        if account["external_id"] is not None:
            account["external_id"] = "<redacted>"
    for channel in data["notifications"]:
        if channel["type"] == "webhook":
            channel["url"] = redact_url(channel["url"])
            channel["headers"] = redact_headers(channel["headers"])
    masked: dict[str, Any] = redact_value(data)
    return masked


def origins(loaded: LoadedConfig, *, source: str) -> list[str]:
    """Each value set outside the file (an ``ATHENA_SUPERVISOR_…`` variable, ``{env: NAME}``, ``{file: PATH}``),
    where it came from, and the value (a secret key's masked; any URL or token redacted)."""
    if not loaded.origins:
        return [f"values from outside {source}: none (every value is the file's or the default)"]
    data: Any = loaded.settings.model_dump(mode="json")
    lines = [f"values from outside {source}:"]
    for origin in sorted(loaded.origins, key=lambda o: o.path):
        value: Any = data
        for step in origin.location:
            if isinstance(value, dict):
                value = value.get(str(step))
            elif isinstance(value, list) and isinstance(step, int) and step < len(value):
                value = value[step]
        if origin.secret:
            shown = redact_url(value) if origin.path.endswith(".url") and isinstance(value, str) else MASK
        else:
            shown = json.dumps(redact_value(value))
        lines.append(f"  {origin.path}: {shown} (from {origin.describe()})")
    return lines


# --- the human summary -------------------------------------------------------------------------------


def _duration(value: Any) -> str:
    return format_duration(value)


def _money(value: float) -> str:
    """Cents when they say it exactly (``1.50 USD``), else every digit that matters (``0.025 USD``)."""
    text = f"{value:,.2f}"
    if abs(float(text.replace(",", "")) - value) > 1e-9:
        text = f"{value:,.6f}".rstrip("0")
    return f"{text} USD"


def _limits(policy: PolicyConfig) -> list[str]:
    lines: list[str] = []
    if policy.calculation is not None and not policy.calculation.is_empty():
        calc = policy.calculation
        parts = [
            f"max runtime {_duration(calc.max_runtime)}" if calc.max_runtime else "",
            f"max queued {_duration(calc.max_queued)}" if calc.max_queued else "",
            f"max {calc.max_dpu_hours:g} DPU-hours" if calc.max_dpu_hours else "",
            f"max cost {_money(calc.max_cost_usd)}" if calc.max_cost_usd else "",
        ]
        lines.append("each calculation: " + ", ".join(part for part in parts if part))
    if policy.session is not None and not policy.session.is_empty():
        sess = policy.session
        parts = [
            f"max idle {_duration(sess.max_idle)}" if sess.max_idle else "",
            f"max age {_duration(sess.max_age)}" if sess.max_age else "",
            f"max busy {_duration(sess.max_busy)} without a break" if sess.max_busy else "",
            f"max {sess.max_dpu_hours:g} DPU-hours" if sess.max_dpu_hours else "",
            f"max cost {_money(sess.max_cost_usd)}" if sess.max_cost_usd else "",
        ]
        lines.append("each session: " + ", ".join(part for part in parts if part))
    return lines


def _action(policy: PolicyConfig, settings: Settings) -> str:
    grace = settings.escalation
    if policy.action == "notify":
        return "notify only"
    terminate = (f"TerminateSession (still alive {_duration(grace.terminate_grace)} later -> escalation failed, "
                 "alert, retry with backoff)")
    parts = []
    if policy.calculation is not None:
        if policy.action == "stop":
            parts.append(f"a calculation over a limit: StopCalculationExecution; still running "
                         f"{_duration(grace.stop_grace)} after the stop -> {terminate}")
        else:
            parts.append(f"a calculation over a limit: {terminate} of its session")
    if policy.session is not None:
        parts.append(f"a session over a limit: {terminate}")
    return "; ".join(parts)


def _policy_block(index: int, policy: PolicyConfig, settings: Settings) -> list[str]:
    mode = settings.mode_for(policy)
    origin = "set on the policy" if policy.mode is not None else "global"
    lines = [f"  {index}. {policy.name}", f"     workgroups: {', '.join(policy.workgroups)}"]
    lines += _selectors(policy.accounts, policy.regions)
    if policy.engines:
        lines.append(f"     engines: {', '.join(policy.engines)}")
    lines += [f"     {line}" for line in _limits(policy)]
    lines.append(f"     action: {_action(policy, settings)}")
    lines.append(f"     mode: {mode} ({origin})")
    if policy.notify_before is not None:
        lines.append(f"     warn {_duration(policy.notify_before)} before a predicted crossing")
    return lines


def _selectors(accounts: tuple[str, ...], regions: tuple[str, ...]) -> list[str]:
    lines = [f"     accounts: {', '.join(accounts)}"] if accounts else []
    return lines + ([f"     regions: {', '.join(regions)}"] if regions else [])


def _shards(settings: Settings) -> list[str]:
    """What is supervised: the account of the credentials, or each account-region and how it is reached."""
    if not settings.accounts:
        return [f"supervised: the account of the credentials in {settings.aws.region}"]
    lines = [f"supervised: {len(settings.shards())} account-regions"]
    for account in settings.accounts:
        how = f"role {account.role_arn}" if account.role_arn else "the supervisor's own credentials"
        if account.external_id is not None:
            how += " (with an external id)"  # never shown: a shared secret
        lines.append(f"  {account.account_id} in {', '.join(account.regions or (settings.aws.region,))}: {how}")
    cluster = settings.cluster
    if cluster is not None:
        lines.append(f"cluster: replicas lease the account-regions for {_duration(cluster.lease_duration)} "
                     f"(renewed every {_duration(cluster.lease_duration / 3)}), clock skew allowance "
                     f"{_duration(cluster.max_clock_skew)}, replica id "
                     f"{cluster.replica_id or 'host name and process id'}")
    return lines


def _budget_block(budget: BudgetConfig) -> list[str]:
    window = budget.rolling_window
    if window is not None:
        period = f"rolling {_duration(window)} window"
    else:
        unit = {"daily": "day", "weekly": "week", "monthly": "month"}[budget.period_kind]
        period = f"calendar {unit} in time zone {budget.timezone}"
    lines = [
        f"  - {budget.name}: {_money(budget.limit_usd)} per {period}",
        f"     workgroups: {', '.join(budget.workgroups)}",
        *_selectors(budget.accounts, budget.regions),
    ]
    for threshold in budget.thresholds:
        spent = budget.limit_usd * threshold.at_percent / 100
        lines.append(f"     at {threshold.at_percent:g}% ({_money(spent)}): {threshold.action}")
    if budget.notify_before is not None:
        lines.append(f"     warn {_duration(budget.notify_before)} before a predicted crossing")
    return lines


def _channel_line(channel: NotificationChannel) -> str:
    if isinstance(channel, WebhookChannel):
        text = (f"webhook {redact_url(channel.url)} (timeout {_duration(channel.timeout)}, "
                f"{channel.retries} retries")
        if channel.headers:
            text += ", headers " + ", ".join(f"{name}: {MASK}" for name in sorted(channel.headers))
        text += ")"
    elif isinstance(channel, SnsChannel):
        text = f"sns {channel.topic_arn} (region {channel.effective_region})"
    else:
        assert isinstance(channel, EventBridgeChannel)
        text = f"eventbridge bus {channel.event_bus_name}, source {channel.source}"
    events = ", ".join(channel.events) if channel.events is not None else "all events"
    return f"  - {text}; {events}; severity {channel.min_severity} and above"


def _journal(settings: Settings) -> str:
    journal = settings.journal
    kept = _duration(journal.retention)
    if journal.backend == "sqlite":
        return f"journal: {journal.path} (SQLite); events kept {kept}"
    endpoint = redact_url(journal.endpoint_url) if journal.endpoint_url else "AWS default"
    return (f"journal: DynamoDB table {journal.table} in {journal.dynamodb_region(settings.aws)}, endpoint "
            f"{endpoint}; events expire {kept} after they happen (TTL)")


def summarize(settings: Settings, *, source: str) -> str:
    """A readable account of what the supervisor will do with ``settings``."""
    aws, safety, esc = settings.aws, settings.safety, settings.escalation
    endpoint = redact_url(str(aws.endpoint_url)) if aws.endpoint_url else "AWS default"
    sts = aws.effective_sts_endpoint_url
    lines = [
        f"{source}: valid",
        "",
        f"mode: {settings.mode}    log level: {settings.log_level}",
        f"aws: region {aws.region}, endpoint {endpoint}, profile {aws.profile or 'default chain'}, "
        f"at most {aws.max_requests_per_second:g} requests/s, {aws.max_attempts} attempts per call",
        f"     timeouts per attempt: connect {_duration(aws.connect_timeout)}, read {_duration(aws.read_timeout)}; "
        f"STS endpoint {redact_url(sts) if sts else 'AWS default'}",
        *_shards(settings),
        f"watched workgroups (Spark only): {', '.join(settings.workgroups)}",
        f"discovery interval: at most {_duration(settings.discovery_interval)}",
        _journal(settings),
        f"http: {settings.http.host}:{settings.http.port} (/metrics /healthz /readyz)",
        f"pricing: {settings.pricing.dpu_hour_usd:g} USD per DPU-hour"
        + "".join(f"; {region}: {price:g}" for region, price in sorted(settings.pricing.regions.items())),
        f"escalation: stop grace {_duration(esc.stop_grace)}, terminate grace "
        f"{_duration(esc.terminate_grace)}, retry backoff up to {_duration(esc.retry_backoff_max)}",
        f"safety: at most {safety.max_actions_per_minute} actions/minute; "
        + (f"workgroups tagged {safety.exempt_tag}=true are not watched" if safety.exempt_tag
           else "tag exemptions off (workgroup tags are not read)")
        + "; circuit breaker opens when the sessions hit within a "
        f"minute exceed {safety.circuit_breaker_fraction:.0%} of watched active sessions (and at least "
        f"{safety.circuit_breaker_min_targets})",
        "",
    ]
    if settings.policies:
        lines.append("policies (in evaluation order: the first whose workgroups match a target's "
                     "workgroup wins; a target matched by none is not acted on):")
        for index, policy in enumerate(settings.policies, start=1):
            lines += _policy_block(index, policy, settings)
    else:
        lines.append("policies: none (nothing is stopped by policy)")
    for index, name in shadowed_policies(settings):
        lines.append(f"  warning: policy {index}. {name} can never match: earlier policies cover "
                     "all of its workgroups")
    for index, name in engine_blind_policies(settings):
        lines.append(f"  warning: policy {index}. {name}: its calculation limits never apply to {SPARK_CONNECT_ENGINE} "
                     "workgroups (their sessions have no calculations; a workgroup's engine is known only at run "
                     "time, where this is reported once per workgroup): add session.max_busy to stop runaway "
                     f"Spark Connect jobs, or engines: [{PYSPARK_ENGINE}]")
    lines.append("")
    if settings.budgets:
        lines.append("budgets (every matching budget applies):")
        for budget in settings.budgets:
            lines += _budget_block(budget)
        for name in calculation_only_budgets(settings):
            lines.append(f"  warning: budget {name}: stop_calculations stops nothing in {SPARK_CONNECT_ENGINE} "
                         "workgroups (their sessions have no calculations; a workgroup's engine is known only at run "
                         "time, where this is reported once per workgroup) and no terminate_sessions or "
                         "disable_workgroup threshold follows: add one to stop their spending")
    else:
        lines.append("budgets: none")
    lines.append("")
    if settings.notifications:
        lines.append("notifications:")
        lines += [_channel_line(channel) for channel in settings.notifications]
    else:
        lines.append("notifications: none (violations are only logged, journaled and counted)")
    return "\n".join(lines)


def _covers(earlier: str, later: str) -> bool:
    """Whether every workgroup matched by glob ``later`` is matched by glob ``earlier``.

    Sound (never a false warning) for an ``earlier`` glob made only of literals and ``*``.
    """
    if any(char in earlier for char in "?["):
        return earlier == later
    return fnmatch.fnmatchcase(later, earlier)


def shadowed_policies(settings: Settings) -> list[tuple[int, str]]:
    """Policies (1-based index, name) that no workgroup can reach because earlier ones match first (earlier
    policies count only when their engines include every engine of the later one)."""
    shadowed: list[tuple[int, str]] = []
    for index, policy in enumerate(settings.policies):
        engines = set(policy.engines or ENGINES)
        earlier = [glob for prior in settings.policies[:index] if engines <= set(prior.engines or ENGINES)
                   for glob in prior.workgroups]
        if all(any(_covers(glob, own) for glob in earlier) for own in policy.workgroups):
            shadowed.append((index + 1, policy.name))
    return shadowed


def engine_blind_policies(settings: Settings) -> list[tuple[int, str]]:
    """Policies (1-based index, name) with calculation limits that may govern workgroups of an engine without
    calculations (known only at run time) and nothing to stop a busy session there (no session.max_busy)."""
    return [(index + 1, policy.name) for index, policy in enumerate(settings.policies)
            if policy.has_calculation_limits and policy.may_govern_engines_without_calculations
            and (policy.session is None or policy.session.max_busy is None)]


def calculation_only_budgets(settings: Settings) -> list[str]:
    """Budgets whose only way to stop spending is stop_calculations, which stops nothing where sessions have no
    calculations (Apache Spark version 3.5; a budget has no engine selector, so that is known only at run time)."""
    return [budget.name for budget in settings.budgets
            if any(t.action == "stop_calculations" for t in budget.thresholds)
            and not any(t.action in ("terminate_sessions", "disable_workgroup") for t in budget.thresholds)]
