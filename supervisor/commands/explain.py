"""``athena-supervisor explain --config FILE (--session ID | --calculation ID)``: what the daemon sees for one
target, which policy and budgets apply, each limit and the time left to it, and what it did or would do.

A fresh look (GetSession / GetCalculationExecution) judged by the same pure policy functions as the daemon,
plus the journal's record of the target.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio
from prometheus_client import CollectorRegistry

from supervisor.budgets import BudgetStatus
from supervisor.clock import SystemClock
from supervisor.commands import EXIT_INVALID_CONFIG, load_settings_or_report
from supervisor.commands.budgets import budget_statuses, open_journal
from supervisor.config import Settings
from supervisor.daemon import compile_policies, explain_verdict
from supervisor.discovery import get_session, workgroup_arn, workgroup_tags
from supervisor.gateway import AwsCallError, Gateway, Priority
from supervisor.journal import Journal
from supervisor.metrics import Metrics
from supervisor.model import MILLIS_PER_HOUR, CalculationSnapshot, SessionSnapshot, SessionState
from supervisor.policy import Policy, evaluate_calculation, evaluate_session, match_policy
from supervisor.service import build_gateway
from supervisor.startup import check_aws


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "explain", help="explain what the supervisor sees and does for one session or calculation")
    parser.add_argument("--config", required=True, metavar="FILE", help="YAML configuration file")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--session", metavar="ID", help="a session id")
    target.add_argument("--calculation", metavar="ID", help="a calculation execution id")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


@dataclass(frozen=True, slots=True)
class Look:
    session: SessionSnapshot
    calculation: CalculationSnapshot | None
    exempt_reason: str | None
    budgets: list[BudgetStatus]


def _seconds(value: timedelta | None) -> float | None:
    return round(value.total_seconds(), 3) if value is not None else None


async def _look(settings: Settings, journal: Journal, session_id: str | None, calculation_id: str | None) -> Look:
    clock = SystemClock()
    async with build_gateway(settings, Metrics(CollectorRegistry())) as gateway:
        calculation = None
        if calculation_id is not None:
            response = await gateway.call("GetCalculationExecution", {"CalculationExecutionId": calculation_id},
                                          priority=Priority.DISCOVER)
            session_id = str(response["SessionId"])
            calculation = CalculationSnapshot.from_api(session_id, "", response, clock.now())
        assert session_id is not None
        session = await get_session(gateway, session_id, "", clock, priority=Priority.DISCOVER, statistics=True)
        if calculation is not None:
            calculation = CalculationSnapshot.from_api(session_id, session.workgroup, response, calculation.observed_at)
        exempt = await _exempt_reason(settings, gateway, session)
        budgets = [s for s in await budget_statuses(settings, gateway, journal, clock.now())
                   if any(b.name == s.name for b in settings.budgets_for(session.workgroup))]
    return Look(session, calculation, exempt, budgets)


async def _exempt_reason(settings: Settings, gateway: Gateway, session: SessionSnapshot) -> str | None:
    if not settings.watches(session.workgroup):
        return f"workgroup {session.workgroup} is not matched by the top-level workgroups {list(settings.workgroups)}"
    if session.is_exempt:
        return "the session's description carries [supervisor:exempt]"
    account = settings.aws.account_id
    if account is None:
        identity = await gateway.call("GetCallerIdentity", {}, priority=Priority.DISCOVER, service="sts")
        account = str(identity["Account"])
    tags = await workgroup_tags(gateway, workgroup_arn(gateway.region, account, session.workgroup))
    if tags.get(settings.safety.exempt_tag, "").strip().lower() == "true":
        return f"workgroup {session.workgroup} is tagged {settings.safety.exempt_tag}=true"
    return None


def _limits(look: Look, policy: Policy | None, now: datetime, price: float) -> list[dict[str, Any]]:
    """Each limit of the applicable policy: observed, limit, and the time left (negative: crossed that long ago)."""
    rows: list[dict[str, Any]] = []
    if policy is None:
        return rows
    calculation, session = look.calculation, look.session

    def time_rule(rule: str, since: datetime | None, limit: timedelta | None, applies: bool) -> None:
        if limit is None:
            return
        observed = now - since if since is not None and applies else None
        rows.append({"rule": rule, "unit": "seconds", "limit": limit.total_seconds(),
                     "observed": _seconds(observed), "left_seconds": _seconds(limit - observed) if observed else None})

    def accrual_rule(rule: str, millis: int | None, since: datetime | None, limit: float | None, usd: bool) -> None:
        if limit is None:
            return
        per_hour = price if usd else 1.0
        observed = (millis or 0) / MILLIS_PER_HOUR * per_hour
        left = None
        if millis and since is not None and (now - since).total_seconds() > 0:
            rate = observed / (now - since).total_seconds()  # average since start
            left = (limit - observed) / rate if rate > 0 else None
        rows.append({"rule": rule, "unit": "usd" if usd else "dpu_hours", "limit": limit,
                     "observed": round(observed, 6), "left_seconds": round(left, 3) if left is not None else None})

    if calculation is not None and policy.calculation is not None:
        rules = policy.calculation
        live = calculation.is_live
        waiting = calculation.state is not None and calculation.state.value in ("CREATING", "CREATED", "QUEUED")
        time_rule("max_queued", calculation.submitted_at, rules.max_queued, waiting)
        time_rule("max_runtime", calculation.submitted_at, rules.max_runtime, live)
        accrual_rule("max_dpu_hours", calculation.dpu_millis, calculation.submitted_at, rules.max_dpu_hours, False)
        accrual_rule("max_cost_usd", calculation.dpu_millis, calculation.submitted_at, rules.max_cost_usd, True)
    if calculation is None and policy.session is not None:
        rules_s = policy.session
        time_rule("max_idle", session.idle_since, rules_s.max_idle, session.state is SessionState.IDLE)
        time_rule("max_age", session.started_at, rules_s.max_age, session.is_active)
        accrual_rule("max_dpu_hours", session.dpu_millis, session.started_at, rules_s.max_dpu_hours, False)
        accrual_rule("max_cost_usd", session.dpu_millis, session.started_at, rules_s.max_cost_usd, True)
    return rows


def explain(settings: Settings, journal: Journal, look: Look, now: datetime) -> dict[str, Any]:
    price = settings.pricing.price_for(settings.aws.region)
    session, calculation = look.session, look.calculation
    watched = settings.watches(session.workgroup)
    policy = match_policy(compile_policies(settings), session.workgroup) if watched else None
    if calculation is not None:
        key = f"calculation:{calculation.calculation_id}"
        millis = calculation.dpu_millis
        evaluation = evaluate_calculation(calculation, policy, now, dpu_hour_usd=price) if policy else None
        end = calculation.completed_at or now
        seen: dict[str, Any] = {
            "kind": "calculation", "id": calculation.calculation_id, "session_id": session.session_id,
            "workgroup": session.workgroup, "state": calculation.raw_state,
            "submitted_at": calculation.submitted_at.isoformat() if calculation.submitted_at else None,
            "runtime_seconds": _seconds(end - calculation.submitted_at) if calculation.submitted_at else None,
            "progress": calculation.progress,
        }
    else:
        key = f"session:{session.session_id}"
        millis = session.dpu_millis
        evaluation = evaluate_session(session, policy, now, dpu_hour_usd=price) if policy else None
        seen = {
            "kind": "session", "id": session.session_id, "workgroup": session.workgroup, "state": session.raw_state,
            "started_at": session.started_at.isoformat() if session.started_at else None,
            "age_seconds": _seconds((session.ended_at or now) - session.started_at) if session.started_at else None,
            "idle_seconds": _seconds(now - session.idle_since)
            if session.idle_since and session.state is SessionState.IDLE else None,
        }
    seen["dpu_hours"] = round((millis or 0) / MILLIS_PER_HOUR, 6)
    seen["cost_usd"] = round((millis or 0) / MILLIS_PER_HOUR * price, 6)
    escalation = journal.escalation_for(key)
    events = journal.recent_events(20, target_id=seen["id"])
    if look.exempt_reason:
        decision = f"nothing: {look.exempt_reason}"
    elif escalation is not None:
        verdict = escalation.verdict
        decision = (f"acted: {verdict.action} ({verdict.mode}) for {verdict.rule} of {verdict.policy}; "
                    f"phase {escalation.phase.value}, outcome {escalation.outcome or 'pending'}")
    elif evaluation is not None and evaluation.verdict is not None:
        verdict = evaluation.verdict
        decision = (f"would {verdict.action} ({verdict.mode}): {verdict.rule} crossed "
                    f"({verdict.observed:g} > {verdict.limit:g} {verdict.unit})")
    elif policy is None:
        decision = "nothing: no policy matches this workgroup (budgets still count its spend)"
    elif evaluation is not None and evaluation.next_check_at is not None:
        decision = f"nothing yet; next limit crossing at {evaluation.next_check_at.isoformat()}"
    else:
        decision = "nothing: no limit of the policy can be crossed any more"
    return {
        "target": seen, "policy": policy.name if policy else None,
        "policy_action": policy.action if policy else None, "mode": policy.mode if policy else settings.mode,
        "limits": _limits(look, policy, now, price),
        "evaluation": explain_verdict(evaluation) if evaluation else None,
        "budgets": [status.as_dict() for status in look.budgets],
        "decision": decision,
        "escalation": {"phase": escalation.phase.value, "outcome": escalation.outcome,
                       "rule": escalation.verdict.rule, "policy": escalation.verdict.policy}
        if escalation else None,
        "journal": [entry.as_dict() for entry in events],
    }


def _render(report: dict[str, Any]) -> list[str]:
    target = report["target"]
    lines = [f"{target['kind']} {target['id']} in workgroup {target['workgroup']}: {target['state']}"]
    for key in ("session_id", "submitted_at", "runtime_seconds", "progress", "started_at", "age_seconds",
                "idle_seconds", "dpu_hours", "cost_usd"):
        if target.get(key) is not None:
            lines.append(f"  {key:<16} {target[key]}")
    lines.append(f"policy: {report['policy'] or '(none)'}"
                 + (f" (action {report['policy_action']}, {report['mode']})" if report["policy"] else ""))
    for limit in report["limits"]:
        left = limit["left_seconds"]
        when = "-" if left is None else (f"{left:.1f}s left" if left >= 0 else f"crossed {-left:.1f}s ago")
        lines.append(f"  {limit['rule']:<14} {limit['observed']} / {limit['limit']} {limit['unit']}  {when}")
    for budget in report["budgets"]:
        lines.append(f"budget {budget['budget']}: {budget['spent_usd']} of {budget['limit_usd']} USD "
                     f"({budget['percent']}%), forecast {budget['forecast_usd']} USD")
        for threshold in budget["thresholds"]:
            state = "crossed" if threshold["crossed"] else (
                f"predicted at {threshold['predicted_at']}" if threshold["predicted_at"] else "not predicted")
            lines.append(f"  {threshold['at_percent']:g}% {threshold['action']}: {state}")
    lines.append(f"decision: {report['decision']}")
    if report["journal"]:
        lines.append("journal:")
        for entry in reversed(report["journal"]):
            lines.append(f"  {entry['time']}  {entry['event']}  {entry['rule'] or ''}".rstrip())
    return lines


def run(args: argparse.Namespace) -> int:
    settings = load_settings_or_report(args.config)
    if settings is None:
        return EXIT_INVALID_CONFIG
    check_aws(settings.aws)
    journal = open_journal(settings) or Journal(":memory:")
    try:
        try:
            look = anyio.run(_look, settings, journal, args.session, args.calculation)
        except AwsCallError as error:
            if error.is_not_found or error.code == "InvalidRequestException":
                print(f"{args.session or args.calculation}: not found ({error.message})", file=sys.stderr)
                return 2
            print(f"cannot look at Athena: {error}", file=sys.stderr)
            return 1
        report = explain(settings, journal, look, SystemClock().now())
    finally:
        journal.close()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print("\n".join(_render(report)))
    return 0
