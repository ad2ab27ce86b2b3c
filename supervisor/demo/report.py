"""The demo's closing report: what became of each scripted target and why (from the journal), the API calls
made, and where to look next."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisor.core.escalation import Escalation
from supervisor.core.model import TargetKey
from supervisor.demo.narration import RULE_VERBS, limit_text, measured, short_id
from supervisor.demo.scenario import Scenario
from supervisor.demo.workload import Athena
from supervisor.durations import format_duration
from supervisor.storage import Storage

if TYPE_CHECKING:
    from supervisor.demo.runner import Launched

HEADERS = ("TARGET", "PART", "WORKGROUP", "WHAT HAPPENED", "WHY")
WHAT = {
    "stopped": "stopped",
    "escalated": "stop ignored -> session terminated",
    "terminated": "terminated",
    "completed": "left alone",
    "exempt": "left alone",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    target: str
    part: str
    workgroup: str
    what: str
    why: str
    ok: bool


def _seconds_between(later: datetime | None, earlier: datetime | None) -> str:
    if later is None or earlier is None:
        return "?"
    return f"{(later - earlier).total_seconds():.2f} s"


def _reason(escalation: Escalation) -> str:
    verdict = escalation.verdict
    verb = RULE_VERBS.get(verdict.rule, "was at")
    return (f"{verb} {measured(verdict.observed, verdict.unit)} > "
            f"{limit_text(verdict.rule, verdict.limit, verdict.unit)} (policy {verdict.policy})")


async def outcome_of(item: Launched, scenario: Scenario, journal: Storage, athena: Athena) -> Outcome:
    """Describe one scripted part from the journal (why) and the API (the final state)."""
    part = item.part
    calculation_id = item.calculation_id
    target = f"calc {short_id(calculation_id)}" if calculation_id else f"session {short_id(item.session_id)}"
    escalation = await journal.escalation_for(
        TargetKey.calculation(calculation_id) if calculation_id else TargetKey.session(item.session_id))
    status: dict[str, Any] = (await athena.calculation(calculation_id))["Status"] if calculation_id else {}
    what = WHAT[part.expect] if item.problem is None else f"UNEXPECTED ({part.expect} expected)"
    if escalation is None:
        why = part.why_left_alone or "no limit crossed"
        state = status.get("State")
        if state == "COMPLETED":
            why += f"; COMPLETED in {_seconds_between(status.get('CompletionDateTime'), status['SubmissionDateTime'])}"
        elif state == "RUNNING":
            ran = (datetime.now(UTC) - status["SubmissionDateTime"]).total_seconds()
            why += f"; still RUNNING after {ran:.1f} s"
        elif state:
            why += f"; {state} at the end"
    else:
        verdict = escalation.verdict
        why = _reason(escalation)
        if part.expect == "escalated":
            why += (f"; still running {format_duration(scenario.limits.stop_grace)} after the stop, so "
                    f"TerminateSession {_seconds_between(escalation.terminate_intent_at, escalation.stop_sent_at)} "
                    "after it")
        elif escalation.stop_intent_at is not None:
            why += f"; Stop sent {_seconds_between(escalation.stop_intent_at, verdict.crossed_at)} after the crossing"
        elif escalation.terminate_intent_at is not None:
            why += (f"; TerminateSession sent "
                    f"{_seconds_between(escalation.terminate_intent_at, verdict.crossed_at)} after the crossing")
    if item.problem:
        why = item.problem
    return Outcome(target, part.name, part.workgroup, what, why, item.problem is None)


def format_summary(outcomes: list[Outcome]) -> list[str]:
    rows = [(o.target, o.part, o.workgroup, o.what, o.why) for o in outcomes]
    widths = [max(len(header), *(len(row[i]) for row in rows)) for i, header in enumerate(HEADERS[:-1])]
    lines = ["Summary:"]
    for row in [HEADERS, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  " + "  ".join([*cells, row[-1]]).rstrip())
    return lines


def format_footer(
    calls: list[dict[str, Any]], supervisor_calls: dict[str, int], journal_path: Path, seconds: float,
    outcomes: list[Outcome], failures: list[Launched],
) -> list[str]:
    by_supervisor = sum(supervisor_calls.values())
    detail = ", ".join(f"{op} {n}" for op, n in sorted(supervisor_calls.items(), key=lambda kv: (-kv[1], kv[0])))
    served = Counter(str(call["operation"]) for call in calls)
    lines = [
        f"Athena API calls served by the emulator: {len(calls)} "
        f"(StopCalculationExecution {served['StopCalculationExecution']}, "
        f"TerminateSession {served['TerminateSession']})",
        f"  by the supervisor: {by_supervisor} ({detail})",
        f"  by the demo's user and its polling: {len(calls) - by_supervisor}",
        f"Journal: {journal_path}",
        f"  every decision and call, in order:  athena-supervisor journal --path {journal_path}",
    ]
    if failures:
        lines.append(f"Demo FAILED after {seconds:.1f} s:")
        lines += [f"  - {item.problem}" for item in failures]
        return lines
    counts = Counter(outcome.what for outcome in outcomes)
    lines.append(
        f"Demo OK in {seconds:.1f} s: {counts['stopped']} calculations stopped, "
        f"{counts['stop ignored -> session terminated'] + counts['terminated']} sessions terminated, "
        f"{counts['left alone']} targets left alone."
    )
    return lines
