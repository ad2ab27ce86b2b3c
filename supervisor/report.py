"""What a period of supervision amounts to, per policy and per budget, from the journal (``athena-supervisor report``).

The method (docs/operations.md#report):

- **Actions** are the journal's decisions in the window, by the policy or budget that decided them and their mode:
  in enforce mode the calls sent (``stop.sent``, ``terminate.sent``: a stop that did not take effect is followed by a
  terminate), in dry-run the actions that would have been taken. Calls held by the safety rails (``*.held``) and
  failed calls (``*.error``) are counted too.
- **What enforcing would have saved (dry-run)**: for each target of a dry-run stop or terminate, what it went on
  spending after its crossing, as observed: its DPU counter now (one ``GetCalculationExecution`` or ``GetSession``
  per target, read-only) minus its counter at the decision (journaled with it), priced at the region's DPU-hour
  price. A decision journaled without a counter (an older journal, or a time limit of a session read without
  statistics) is estimated as a uniform rate over the target's life (counted apart, as ``estimated``). A target
  still running counts what it spent so far.
- **Enforced**: the overshoot is the time from the crossing to the first call sent; at the DPUs the target was
  accruing at the decision (journaled with it), that is the DPU-hours and USD spent past the limit; and the spend
  rate that was stopped is those DPUs at the region's price, in USD per hour.
- **API calls**: the destructive calls sent (their journaled intents, by operation) and the read calls this report
  made itself. The daemon's other calls are in ``athena_supervisor_aws_api_calls_total``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from statistics import median
from typing import Any

from supervisor.config import Settings
from supervisor.core.accrual import MILLIS_PER_HOUR
from supervisor.storage import JournalEntry

INTENT_OPERATIONS = {"stop.intent": "StopCalculationExecution", "terminate.intent": "TerminateSession",
                     "workgroup.disable_intent": "UpdateWorkGroup", "workgroup.enable_intent": "UpdateWorkGroup"}
DESTRUCTIVE = ("stop", "terminate")


@dataclass(frozen=True, slots=True)
class Decision:
    """One target's decision, and what the journal says followed it."""

    entry: JournalEntry
    first_sent: datetime | None = None

    @property
    def crossed_at(self) -> datetime:
        return datetime.fromisoformat(str(self.entry.detail.get("crossed_at") or self.entry.time.isoformat()))

    @property
    def dpus(self) -> float | None:
        value = self.entry.detail.get("dpus")
        return float(value) if isinstance(value, int | float) else None

    @property
    def millis(self) -> int | None:
        value = self.entry.detail.get("dpu_millis")
        return int(value) if isinstance(value, int | float) else None


@dataclass(frozen=True, slots=True)
class Observed:
    """A target as the report's own look found it: its DPU counter, its life (start, end: None while it runs)."""

    millis: int
    started_at: datetime | None
    ended_at: datetime | None


@dataclass
class Owner:
    """One policy's or budget's share of the window."""

    name: str
    kind: str  # policy | budget | unknown (no longer configured)
    decisions: list[Decision] = field(default_factory=list)
    held: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    sent: Counter[str] = field(default_factory=Counter)
    thresholds: Counter[str] = field(default_factory=Counter)

    def by_mode(self, mode: str) -> list[Decision]:
        return [decision for decision in self.decisions if decision.entry.mode == mode]


def collect(entries: Iterable[JournalEntry], settings: Settings) -> dict[str, Owner]:
    """The window's journal entries (any order), grouped by policy or budget."""
    policies = {policy.name for policy in settings.policies}
    budgets = {budget.name for budget in settings.budgets}
    owners: dict[str, Owner] = {}

    def owner(name: str, rule: str | None) -> Owner:
        if name not in owners:
            kind = ("policy" if name in policies else "budget" if name in budgets or (rule or "").startswith(
                ("budget:", "threshold:")) else "unknown")
            owners[name] = Owner(name, kind)
        return owners[name]

    first_sent: dict[str, datetime] = {}
    decisions: list[JournalEntry] = []
    for entry in sorted(entries, key=lambda e: (e.time, e.seq)):
        if entry.policy is None:
            continue
        if entry.event in ("decision", "workgroup.disable", "workgroup.enable"):
            decisions.append(entry)
            owner(entry.policy, entry.rule)
        elif entry.event.endswith(".sent") or entry.event in ("workgroup.disabled", "workgroup.enabled"):
            owner(entry.policy, entry.rule).sent[entry.action or entry.event] += 1
            if entry.escalation_id is not None:
                first_sent.setdefault(entry.escalation_id, entry.time)
        elif entry.event.endswith(".held"):
            owner(entry.policy, entry.rule).held[str(entry.detail.get("reason", "held"))] += 1
        elif entry.event.endswith(("_error", ".error")):
            owner(entry.policy, entry.rule).errors[entry.action or entry.event] += 1
        elif entry.event == "budget_threshold":
            owner(entry.policy, entry.rule).thresholds[
                f"{entry.detail.get('at_percent', '?'):g}% {entry.detail.get('action', '?')}"
                if isinstance(entry.detail.get("at_percent"), int | float) else str(entry.rule)] += 1
    for entry in decisions:
        assert entry.policy is not None
        sent = first_sent.get(entry.escalation_id) if entry.escalation_id else None
        owners[entry.policy].decisions.append(Decision(entry, sent))
    return owners


def api_calls(entries: Iterable[JournalEntry]) -> dict[str, int]:
    """Destructive calls sent in the window, by operation (one journaled intent per attempt)."""
    found: Counter[str] = Counter()
    for entry in entries:
        if entry.event in INTENT_OPERATIONS:
            found[INTENT_OPERATIONS[entry.event]] += 1
    return dict(sorted(found.items()))


def spent_after_crossing(decision: Decision, observed: Observed) -> tuple[float, bool]:
    """DPU-milliseconds the target spent after its crossing, and whether that is estimated (no counter journaled
    at the decision: a uniform rate over the target's life)."""
    at_decision = decision.millis
    if at_decision is not None:
        return float(max(0, observed.millis - at_decision)), False
    start, end = observed.started_at, observed.ended_at
    if start is None or end is None or end <= start:
        return 0.0, True
    after = max(0.0, (end - max(decision.crossed_at, start)).total_seconds())
    return observed.millis * after / (end - start).total_seconds(), True


def summarize(owner: Owner, *, price: Mapping[str, float],
              observed: Mapping[str, Observed | None] | None) -> dict[str, Any]:
    """One policy's or budget's report (JSON-ready). ``price``: USD per DPU-hour by shard scope; ``observed``: the
    report's look at each dry-run target, by target id (None: not found any more); None: no look was taken."""
    def usd(millis: float, decision: Decision) -> float:
        return millis / MILLIS_PER_HOUR * price.get(decision.entry.shard, price.get("", 0.0))

    enforced, dry = owner.by_mode("enforce"), owner.by_mode("dry-run")
    report: dict[str, Any] = {
        "name": owner.name, "kind": owner.kind,
        "decisions": {"enforce": _actions(enforced), "dry-run": _actions(dry)},
        "calls_sent": dict(owner.sent), "held": dict(owner.held), "errors": dict(owner.errors),
    }
    if owner.thresholds:
        report["thresholds_crossed"] = dict(owner.thresholds)
    acted = [d for d in enforced if d.first_sent is not None]
    if acted:
        lags = [(d.first_sent - d.crossed_at).total_seconds() for d in acted if d.first_sent is not None]
        past = [(d, max(0.0, lag) * (d.dpus or 0.0) * 1000) for d, lag in zip(acted, lags, strict=True)]
        rates = [d for d in acted if d.dpus is not None]
        report["enforced"] = {
            "actions": len(acted),
            "overshoot_seconds": {"median": round(median(lags), 3), "max": round(max(lags), 3)},
            "overshoot_dpu_hours": round(sum(millis for _, millis in past) / MILLIS_PER_HOUR, 9),
            "overshoot_usd": round(sum(usd(millis, d) for d, millis in past), 9),
            "spend_rate_stopped_usd_per_hour": round(sum(
                usd((d.dpus or 0.0) * 3_600_000, d) for d in rates), 6),
            "with_rate": len(rates),
        }
    candidates = [d for d in dry if d.entry.action in DESTRUCTIVE and d.entry.target_id]
    if candidates and observed is not None:
        millis_total = usd_total = 0.0
        counts: Counter[str] = Counter()
        for decision in candidates:
            look = observed.get(str(decision.entry.target_id))
            if look is None:
                counts["not_found"] += 1
                continue
            millis, estimated = spent_after_crossing(decision, look)
            millis_total += millis
            usd_total += usd(millis, decision)
            counts["estimated" if estimated else "measured"] += 1
            counts["running" if look.ended_at is None else "ended"] += 1
        report["would_have_saved"] = {
            "targets": len(candidates), "dpu_hours": round(millis_total / MILLIS_PER_HOUR, 9),
            "usd": round(usd_total, 9), **{key: counts[key] for key in (
                "measured", "estimated", "ended", "running", "not_found")},
        }
    return report


def _actions(decisions: list[Decision]) -> dict[str, int]:
    return dict(sorted(Counter(d.entry.action or "?" for d in decisions).items()))
