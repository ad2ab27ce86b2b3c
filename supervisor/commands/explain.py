"""``athena-supervisor explain --config FILE (--session ID | --calculation ID)``: what the daemon sees for one
target, which policy and budgets apply, each limit and the time left to it, and what it did or would do.

A fresh look (GetSession / GetCalculationExecution) judged by the same pure policy functions as the daemon,
plus the journal's record of the target.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio
from prometheus_client import CollectorRegistry

from supervisor import athena
from supervisor.clock import Clock, SystemClock
from supervisor.commands import EXIT_INVALID_CONFIG, load_settings_or_report
from supervisor.commands.budgets import open_storage, preview_budgets
from supervisor.config import Settings
from supervisor.core.accrual import cost_usd, dpu_hours
from supervisor.core.budgets import BudgetStatus
from supervisor.core.model import (
    CalculationSnapshot,
    Evaluation,
    SessionSnapshot,
    SessionState,
    TargetKey,
    runs_calculations,
)
from supervisor.core.policy import (
    Assessment,
    Dormant,
    Policy,
    assess_calculation,
    assess_session,
    compile_policies,
    dormant_limits,
    evaluate_calculation,
    evaluate_session,
    has_limits,
    match_policy,
    workgroup_in_scope,
)
from supervisor.gateway import AwsCallError, Gateway, Priority
from supervisor.logs import configure_logging
from supervisor.metrics import Metrics
from supervisor.service import build_gateway
from supervisor.startup import check_aws
from supervisor.storage.sqlite import SqliteStorage


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


async def _look(settings: Settings, storage: SqliteStorage, session_id: str | None,
                calculation_id: str | None, clock: Clock) -> Look:
    async with build_gateway(settings, Metrics(CollectorRegistry()), clock=clock) as gateway:
        calculation = None
        if calculation_id is not None:
            response = await gateway.call("GetCalculationExecution", {"CalculationExecutionId": calculation_id},
                                          priority=Priority.DISCOVER)
            session_id = str(response["SessionId"])
            calculation = CalculationSnapshot.from_api(session_id, "", response, clock.now())
        assert session_id is not None
        session = await athena.get_session(gateway, session_id, "", clock, priority=Priority.DISCOVER,
                                           statistics=True)
        if calculation is not None:
            calculation = CalculationSnapshot.from_api(session_id, session.workgroup, response, calculation.observed_at)
        exempt = await _exempt_reason(settings, gateway, session)
        budgets = [s for s in await preview_budgets(settings, gateway, storage, clock)
                   if any(b.name == s.name for b in settings.budgets_for(session.workgroup))] \
            if settings.budgets_for(session.workgroup) else []
    return Look(session, calculation, exempt, budgets)


async def _exempt_reason(settings: Settings, gateway: Gateway, session: SessionSnapshot) -> str | None:
    """Why the daemon leaves this session alone, judged by the daemon's own scope rule."""
    if session.is_exempt:
        return "the session's description carries [supervisor:exempt]"
    exempt_tag = settings.safety.exempt_tag
    summary = next((w for w in await athena.list_workgroups(gateway) if w.get("Name") == session.workgroup),
                   {"Name": session.workgroup})
    tags = None
    if exempt_tag:
        account = settings.aws.account_id
        if account is None:
            identity = await gateway.call("GetCallerIdentity", {}, priority=Priority.DISCOVER, service="sts")
            account = str(identity["Account"])
        tags = await athena.workgroup_tags(gateway, athena.workgroup_arn(gateway.region, account, session.workgroup))
    reason = workgroup_in_scope(athena.workgroup_snapshot(summary, tags), settings.workgroups, exempt_tag)
    return {
        None: None,
        "out_of_scope": f"workgroup {session.workgroup} is not matched by the top-level workgroups "
                        f"{list(settings.workgroups)}",
        "not_spark": f"workgroup {session.workgroup} is not a Spark workgroup",
        "exempt_workgroup": f"workgroup {session.workgroup} is tagged {exempt_tag}=true",
        "tags_unknown": f"the tags of workgroup {session.workgroup} cannot be read",
    }.get(reason, reason)


def _assessment(look: Look, policy: Policy, now: datetime, price: float) -> Assessment | None:
    if look.calculation is not None:
        return assess_calculation(look.calculation, policy.calculation, now, dpu_hour_usd=price) \
            if policy.calculation else None
    return assess_session(look.session, policy.session, now, dpu_hour_usd=price) if policy.session else None


def _rules(look: Look, policy: Policy) -> Any:
    return policy.calculation if look.calculation is not None else policy.session


DORMANT_NOTES = {
    "ended": "does not apply: the {kind} ended ({state})",
    "not_waiting": "does not apply: it counts only while the calculation waits, and it started",
    "not_accruing": "counts once the calculation runs ({state} accrues nothing)",
    "not_idle": "applies once the session is idle: idle time starts when its calculations end ({state})",
    "missing_field": "cannot be judged: the answer lacks the field it is measured from",
    "unknown_state": "not judged: state {state} is unknown to this version (never acted on)",
}


def _final_value(look: Look, rule: str, price: float) -> float | None:
    """What an ended target reached against ``rule``: its runtime or age, DPU-hours or cost."""
    session, calculation = look.session, look.calculation
    millis = calculation.dpu_millis if calculation is not None else session.dpu_millis
    if rule == "max_dpu_hours":
        return round(dpu_hours(millis), 6) if millis is not None else None
    if rule == "max_cost_usd":
        return round(cost_usd(millis, price), 6) if millis is not None else None
    if calculation is not None and rule == "max_runtime" and calculation.submitted_at and calculation.completed_at:
        return _seconds(calculation.completed_at - calculation.submitted_at)
    if calculation is None and rule == "max_age" and session.started_at and session.ended_at:
        return _seconds(session.ended_at - session.started_at)
    return None


def _dormant(look: Look, dormant: Dormant, price: float) -> dict[str, Any]:
    target = look.calculation or look.session
    kind = "calculation" if look.calculation is not None else "session"
    return {"rule": dormant.rule, "unit": dormant.unit, "limit": dormant.limit,
            "observed": _final_value(look, dormant.rule, price) if dormant.reason == "ended" else None,
            "left_seconds": None, "status": dormant.reason,
            "note": DORMANT_NOTES[dormant.reason].format(kind=kind, state=target.raw_state)}


def _limits(look: Look, policy: Policy | None, now: datetime, price: float) -> list[dict[str, Any]]:
    """Every limit of the policy for this kind of target: those that count now, from the daemon's own assessment
    (observed, limit, and the time left to the crossing: negative, crossed that long ago; None, not predictable
    yet), then those that do not count now, and why (the target ended, the session is busy...)."""
    rules = _rules(look, policy) if policy is not None else None
    if policy is None or rules is None:
        return []
    assessment = _assessment(look, policy, now, price)
    counting = [
        {"rule": position.rule, "unit": position.unit, "limit": position.limit,
         "observed": round(position.observed, 6),
         "left_seconds": _seconds(position.crossed_at - now) if position.crossed_at is not None else None,
         "status": "crossed" if position.observed >= position.limit else "counting", "note": None}
        for position in (assessment.positions if assessment is not None else ())
    ]
    target = look.calculation or look.session
    return counting + [_dormant(look, dormant, price) for dormant in dormant_limits(target, rules, assessment)]


def _ended(look: Look) -> str | None:
    """How the target ended (``COMPLETED at ..., after 12.5 s``), or None while it is live."""
    if look.calculation is not None:
        calculation = look.calculation
        if calculation.state is None or calculation.is_live:
            return None
        end, start = calculation.completed_at, calculation.submitted_at
    else:
        session = look.session
        if session.state is None or session.is_active:
            return None
        end, start = session.ended_at, session.started_at
    text = (look.calculation or look.session).raw_state
    if end is not None:
        text += f" at {end.isoformat()}"
        if start is not None:
            text += f", after {(end - start).total_seconds():.1f} s"
    return text


def explain_verdict(evaluation: Evaluation) -> dict[str, Any]:
    """A JSON-ready view of an evaluation."""
    return {
        "verdict": evaluation.verdict.describe() if evaluation.verdict else None,
        "next_check_at": evaluation.next_check_at.isoformat() if evaluation.next_check_at else None,
        "needs_statistics": evaluation.needs_statistics,
        "missing": list(evaluation.missing),
    }


def explain(settings: Settings, storage: SqliteStorage, look: Look, now: datetime) -> dict[str, Any]:
    price = settings.pricing.price_for(settings.aws.region)
    session, calculation = look.session, look.calculation
    watched = settings.watches(session.workgroup)
    engine = session.engine  # GetSession names it
    policy = match_policy(compile_policies(settings), session.workgroup, engine) if watched else None
    if calculation is not None:
        key = TargetKey.calculation(calculation.calculation_id)
        millis = calculation.dpu_millis
        evaluation = evaluate_calculation(calculation, policy, now, dpu_hour_usd=price, engine=engine) \
            if policy else None
        end = calculation.completed_at or now
        seen: dict[str, Any] = {
            "kind": "calculation", "id": calculation.calculation_id, "session_id": session.session_id,
            "workgroup": session.workgroup, "engine": engine or None, "state": calculation.raw_state,
            "submitted_at": calculation.submitted_at.isoformat() if calculation.submitted_at else None,
            "runtime_seconds": _seconds(end - calculation.submitted_at) if calculation.submitted_at else None,
            "progress": calculation.progress,
        }
    else:
        key = TargetKey.session(session.session_id)
        millis = session.dpu_millis
        evaluation = evaluate_session(session, policy, now, dpu_hour_usd=price) if policy else None
        seen = {
            "kind": "session", "id": session.session_id, "workgroup": session.workgroup, "engine": engine or None,
            "state": session.raw_state,
            "started_at": session.started_at.isoformat() if session.started_at else None,
            "age_seconds": _seconds((session.ended_at or now) - session.started_at) if session.started_at else None,
            "idle_seconds": _seconds(now - session.idle_since)
            if session.idle_since and session.state is SessionState.IDLE else None,
            "busy_seconds": _seconds(now - session.last_modified_at)
            if session.last_modified_at and session.state is SessionState.BUSY else None,
        }
    seen["ended"] = _ended(look)
    seen["dpu_hours"] = round(dpu_hours(millis or 0), 6)
    seen["cost_usd"] = round(cost_usd(millis or 0, price), 6)
    limits = _limits(look, policy, now, price)
    escalation = storage.journal.escalation_for(key)
    events = storage.journal.recent_events(20, target_id=seen["id"])
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
        decision = "nothing: no policy matches this workgroup" + (f" and engine ({engine})" if engine else "") \
            + " (budgets still count its spend)"
    else:
        decision = _nothing_yet(look, policy, evaluation, limits)
    notes = []
    if policy is not None and has_limits(policy.calculation) and not runs_calculations(engine):
        notes.append(f"the calculation limits of {policy.name} never apply here: {engine} sessions have no "
                     "calculations (session limits such as max_busy do)")
    return {
        "target": seen, "policy": policy.name if policy else None, "notes": notes,
        "policy_action": policy.action if policy else None, "mode": policy.mode if policy else settings.mode,
        "limits": limits,
        "evaluation": explain_verdict(evaluation) if evaluation else None,
        "budgets": [status.as_dict() for status in look.budgets],
        "decision": decision,
        "escalation": {"phase": escalation.phase.value, "outcome": escalation.outcome,
                       "rule": escalation.verdict.rule, "policy": escalation.verdict.policy}
        if escalation else None,
        "journal": [entry.as_dict() for entry in events],
    }


def _nothing_yet(look: Look, policy: Policy, evaluation: Evaluation | None, limits: list[dict[str, Any]]) -> str:
    """The decision when no limit is crossed: the target ended, or when the next crossing is, and which limits
    wait for the target to change (a BUSY session's max_idle)."""
    kind = "calculation" if look.calculation is not None else "session"
    ended = _ended(look)
    if ended is not None:
        return f"nothing: the {kind} ended ({ended}); no limit applies to it any more"
    if _rules(look, policy) is None:
        return f"nothing: policy {policy.name} sets no {kind} limit"
    parts = []
    if evaluation is not None and evaluation.next_check_at is not None:
        parts.append(f"next limit crossing at {evaluation.next_check_at.isoformat()}")
    later = [limit["rule"] for limit in limits if limit["status"] in ("not_idle", "not_accruing")]
    if later:
        state = (look.calculation or look.session).raw_state
        when = "once its calculations end" if kind == "session" else "once it runs"
        parts.append(f"{', '.join(later)} {'applies' if len(later) == 1 else 'apply'} {when} (now {state})")
    if not parts:
        return "nothing: no limit of the policy can be crossed in this state"
    return "nothing yet; " + "; ".join(parts)


async def explain_target(settings: Settings, storage: SqliteStorage, *, clock: Clock, session_id: str | None = None,
                         calculation_id: str | None = None) -> dict[str, Any]:
    """What ``explain`` reports on one target (a session or a calculation), as of ``clock``'s instant (the
    command's: the system clock).

    Raises:
        AwsCallError: the target could not be looked at (not found, or Athena failing).
    """
    look = await _look(settings, storage, session_id, calculation_id, clock)
    return explain(settings, storage, look, clock.now())


def render(report: dict[str, Any]) -> list[str]:
    """The lines ``explain`` prints for ``report`` without ``--json``."""
    target = report["target"]
    lines = [f"{target['kind']} {target['id']} in workgroup {target['workgroup']}: {target['state']}"]
    for key in ("engine", "session_id", "submitted_at", "runtime_seconds", "progress", "started_at", "age_seconds",
                "idle_seconds", "busy_seconds", "ended", "dpu_hours", "cost_usd"):
        if target.get(key) is not None:
            lines.append(f"  {key:<16} {target[key]}")
    lines.append(f"policy: {report['policy'] or '(none)'}"
                 + (f" (action {report['policy_action']}, {report['mode']})" if report["policy"] else ""))
    for limit in report["limits"]:
        left = limit["left_seconds"]
        observed = "-" if limit["observed"] is None else limit["observed"]
        if limit["note"] is not None:
            when = limit["note"]
        else:
            when = "-" if left is None else (f"{left:.1f}s left" if left >= 0 else f"crossed {-left:.1f}s ago")
        lines.append(f"  {limit['rule']:<14} {observed} / {limit['limit']:g} {limit['unit']}  {when}")
    for budget in report["budgets"]:
        lines.append(f"budget {budget['budget']}: {budget['spent_usd']} of {budget['limit_usd']} USD "
                     f"({budget['percent']}%), forecast {budget['forecast_usd']} USD")
        for threshold in budget["thresholds"]:
            state = "crossed" if threshold["crossed"] else (
                f"predicted at {threshold['predicted_at']}" if threshold["predicted_at"] else "not predicted")
            lines.append(f"  {threshold['at_percent']:g}% {threshold['action']}: {state}")
    lines += [f"note: {note}" for note in report["notes"]]
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
    configure_logging("error")  # on stderr: a retry's warning would land in the output (--json too)
    storage = open_storage(settings)
    try:
        try:
            report = anyio.run(functools.partial(explain_target, settings, storage, clock=SystemClock(),
                                                 session_id=args.session, calculation_id=args.calculation))
        except AwsCallError as error:
            if error.is_not_found or error.code == "InvalidRequestException":
                print(f"{args.session or args.calculation}: not found ({error.message})", file=sys.stderr)
                return 2
            print(f"cannot look at Athena: {error}", file=sys.stderr)
            return 1
    finally:
        storage.close_now()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print("\n".join(render(report)))
    return 0
