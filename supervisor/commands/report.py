"""``athena-supervisor report --config FILE [--since 7d] [--until WHEN] [--json] [--no-lookups]``: what a period of
supervision amounts to, per policy and per budget (:mod:`supervisor.report` states the method).

Dry-run targets are looked at once each (``GetCalculationExecution`` / ``GetSession``, read-only: the grants of
``deploy/iam/explain-policy.json``) to measure what they spent after their crossing; ``--no-lookups`` reads the
journal only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from prometheus_client import CollectorRegistry

from supervisor.clock import SystemClock
from supervisor.commands import EXIT_INVALID_CONFIG, load_settings_or_report
from supervisor.commands.instants import INSTANT_HELP, instant, utc_text
from supervisor.config import Settings
from supervisor.core.fleet import Shard
from supervisor.credentials import AssumedRole
from supervisor.gateway import AwsCallError, Gateway, Priority
from supervisor.logs import configure_logging
from supervisor.metrics import Metrics
from supervisor.report import DESTRUCTIVE, Observed, api_calls, collect, summarize
from supervisor.shard import build_gateway
from supervisor.startup import check_aws, check_journal
from supervisor.storage import EventQuery, JournalEntry
from supervisor.storage.factory import open_storage
from supervisor.storage.sqlite import SqliteStorage

DEFAULT_SINCE = timedelta(days=7)
LOOKUP_ATTEMPTS = 2


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report", help="sum up a period per policy and budget: actions taken or that would have been, savings")
    parser.add_argument("--config", required=True, metavar="FILE", help="YAML configuration file")
    parser.add_argument("--since", type=instant, metavar="WHEN",
                        help=f"start of the period (default 7d): {INSTANT_HELP}")
    parser.add_argument("--until", type=instant, metavar="WHEN", help="end of the period (default now)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--no-lookups", action="store_true",
                        help="read the journal only (no look at dry-run targets: no savings measured)")
    parser.set_defaults(func=run)


def _shard_of(scope: str, settings: Settings) -> Shard:
    if not scope:
        return settings.shards()[0]
    account, _, region = scope.partition("/")
    return Shard(account, region)


async def _entries(settings: Settings, query: EventQuery) -> list[JournalEntry]:
    async with open_storage(settings, metrics=Metrics(CollectorRegistry())) as storage:
        return await storage.query_events(query)


async def _look(settings: Settings, targets: list[JournalEntry]) -> tuple[dict[str, Observed | None], int, list[str]]:
    """Each target as it is now; the calls made; the problems (a shard that could not be reached)."""
    aws = settings.aws.model_copy(update={"max_attempts": min(settings.aws.max_attempts, LOOKUP_ATTEMPTS)})
    settings = settings.model_copy(update={"aws": aws})
    clock = SystemClock()
    metrics = Metrics(CollectorRegistry())
    found: dict[str, Observed | None] = {}
    calls = 0
    problems: list[str] = []
    async with AsyncExitStack() as stack:
        own = await stack.enter_async_context(build_gateway(settings, metrics, clock=clock))
        gateways: dict[str, Gateway | None] = {}
        for entry in targets:
            if entry.shard not in gateways:
                shard = _shard_of(entry.shard, settings)
                account = settings.account_for(shard)
                session = None
                try:
                    if account is not None and account.role_arn is not None:
                        session = await AssumedRole(gateway=own, clock=clock, role_arn=account.role_arn,
                                                    external_id=account.external_id).session()
                    gateways[entry.shard] = await stack.enter_async_context(
                        build_gateway(settings.for_shard(shard), metrics, clock=clock, session=session))
                except AwsCallError as error:
                    problems.append(f"{shard}: {error}")
                    gateways[entry.shard] = None
            gateway = gateways[entry.shard]
            if gateway is None:
                continue
            calls += 1
            try:
                found[str(entry.target_id)] = await _observe(gateway, entry)
            except AwsCallError as error:
                if not (error.is_not_found or error.code == "InvalidRequestException"):
                    problems.append(f"{entry.target_kind} {entry.target_id}: {error}")
                found[str(entry.target_id)] = None
    return found, calls, problems


async def _observe(gateway: Gateway, entry: JournalEntry) -> Observed:
    if entry.target_kind == "calculation":
        answer = await gateway.call("GetCalculationExecution", {"CalculationExecutionId": entry.target_id},
                                    priority=Priority.DISCOVER)
        status, live = answer.get("Status") or {}, ("CREATING", "CREATED", "QUEUED", "RUNNING", "CANCELING")
        return Observed(int((answer.get("Statistics") or {}).get("DpuExecutionInMillis") or 0),
                        status.get("SubmissionDateTime"),
                        None if status.get("State") in live else status.get("CompletionDateTime"))
    answer = await gateway.call("GetSession", {"SessionId": entry.target_id}, priority=Priority.DISCOVER)
    status = answer.get("Status") or {}
    return Observed(int((answer.get("Statistics") or {}).get("DpuExecutionInMillis") or 0),
                    status.get("StartDateTime"),
                    status.get("EndDateTime") if status.get("State") in ("TERMINATED", "FAILED") else None)


def run(args: argparse.Namespace) -> int:
    settings = load_settings_or_report(args.config)
    if settings is None:
        return EXIT_INVALID_CONFIG
    until = args.until or datetime.now(UTC)
    since = args.since or until - DEFAULT_SINCE
    if since >= until:
        print(f"--since {utc_text(since)} is not before --until {utc_text(until)}", file=sys.stderr)
        return 2
    query = EventQuery(limit=None, since=since, until=until)
    if settings.journal.backend == "sqlite":
        path = settings.journal.path
        if str(path) != ":memory:" and not path.exists():
            print(f"{path}: no journal here yet; start the daemon first", file=sys.stderr)
            return 2
        check_journal(path, writable=False)
        storage = SqliteStorage(path)
        try:
            entries = storage.journal.query_events(query)
        finally:
            storage.close_now()
    else:
        try:
            entries = anyio.run(_entries, settings, query)
        except AwsCallError as error:
            print(f"cannot read the journal: {error}", file=sys.stderr)
            return 2
    owners = collect(entries, settings)
    dry_targets = [d.entry for owner in owners.values() for d in owner.by_mode("dry-run")
                   if d.entry.action in DESTRUCTIVE and d.entry.target_id]
    observed: dict[str, Observed | None] = {}
    lookups = 0
    problems: list[str] = []
    if dry_targets and not args.no_lookups:
        check_aws(settings.aws)
        configure_logging("error")  # retries would only interleave with the report
        observed, lookups, problems = anyio.run(_look, settings, dry_targets)
    prices = {shard.scope: settings.pricing.price_for(shard.region) for shard in settings.shards()}
    document = {
        "since": utc_text(since), "until": utc_text(until), "mode": settings.mode,
        "journal": str(settings.journal.path) if settings.journal.backend == "sqlite" else settings.journal.table,
        "owners": [summarize(owner, price=prices, observed=None if args.no_lookups else observed)
                   for owner in sorted(owners.values(), key=lambda o: (o.kind != "policy", o.name))],
        "api_calls": {"destructive_sent": api_calls(entries), "report_lookups": lookups},
        "lookups": "skipped (--no-lookups)" if args.no_lookups else "done", "problems": problems,
    }
    print(json.dumps(document, indent=2) if args.json else "\n".join(render(document)))
    return 0


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{value} {key}" for key, value in counts.items()) or "none"


def render(document: dict[str, Any]) -> list[str]:
    lines = [f"report {document['since']} .. {document['until']} (global mode {document['mode']}; journal "
             f"{document['journal']})"]
    if not document["owners"]:
        lines.append("no decision or action in this period")
    for owner in document["owners"]:
        lines.append("")
        lines.append(f"{owner['kind']} {owner['name']}:")
        decisions = owner["decisions"]
        if decisions["enforce"]:
            lines.append(f"  enforced: {_counts(decisions['enforce'])}; calls sent: {_counts(owner['calls_sent'])}")
        if decisions["dry-run"]:
            lines.append(f"  dry-run, would have: {_counts(decisions['dry-run'])}")
        if owner.get("thresholds_crossed"):
            lines.append(f"  thresholds crossed: {_counts(owner['thresholds_crossed'])}")
        if owner["held"]:
            lines.append(f"  held by the safety rails: {_counts(owner['held'])}")
        if owner["errors"]:
            lines.append(f"  failed calls: {_counts(owner['errors'])}")
        enforced = owner.get("enforced")
        if enforced:
            overshoot = enforced["overshoot_seconds"]
            lines.append(f"  crossing to action: median {overshoot['median']:.3f} s, max {overshoot['max']:.3f} s; "
                         f"spent past the limit meanwhile {enforced['overshoot_dpu_hours']:.6f} DPU-hours, "
                         f"{enforced['overshoot_usd']:.6f} USD")
            lines.append(f"  spend rate stopped: {enforced['spend_rate_stopped_usd_per_hour']:.4f} USD/hour "
                         f"({enforced['with_rate']} of {enforced['actions']} actions with a measured rate)")
        saved = owner.get("would_have_saved")
        if saved:
            lines.append(f"  after their crossing, the {saved['targets']} targets went on spending "
                         f"{saved['dpu_hours']:.6f} DPU-hours, {saved['usd']:.6f} USD: what enforcing would have "
                         f"saved, as observed ({saved['measured']} measured, {saved['estimated']} estimated; "
                         f"{saved['ended']} ended, {saved['running']} still running"
                         + (f", {saved['not_found']} not found" if saved["not_found"] else "") + ")")
    calls = document["api_calls"]
    lines += ["", f"API calls: destructive calls sent {_counts(calls['destructive_sent'])}; this report looked at "
                  f"{calls['report_lookups']} targets (one read each)"]
    lines += [f"could not look: {problem}" for problem in document["problems"]]
    return lines
