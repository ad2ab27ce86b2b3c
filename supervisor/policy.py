"""Pure policy evaluation: snapshot + rules + price + now → verdict, warnings and the next deadline.

No I/O and no clock reads: ``now`` is always an argument. Policies are evaluated in configuration order
and the first policy whose workgroup globs match a target's workgroup is the one applied to it.

Measures (Athena reports no run-start time, so calculation time counts from SubmissionDateTime):
- ``max_queued``: now − SubmissionDateTime while the calculation waits (CREATING, CREATED, QUEUED).
- ``max_runtime``: now − SubmissionDateTime while the calculation is live (waiting, RUNNING, CANCELING).
- ``max_idle``: now − IdleSinceDateTime while the session is IDLE.
- ``max_age``: now − StartDateTime while the session is active.
- ``max_dpu_hours`` / ``max_cost_usd``: Statistics.DpuExecutionInMillis / 3.6e6 (× price). The crossing
  instant is predicted from the accrual rate between two observations (or the average since start) and
  interpolated back once the limit is found crossed.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from supervisor.model import (
    MILLIS_PER_HOUR,
    ActionName,
    CalculationSnapshot,
    CalculationState,
    Evaluation,
    ModeName,
    SessionSnapshot,
    SessionState,
    TargetRef,
    Verdict,
    Warning,
    WorkgroupSnapshot,
)

ACCRUING_CALCULATION_STATES = frozenset({CalculationState.RUNNING, CalculationState.CANCELING})
WAITING_STATES = frozenset({CalculationState.CREATING, CalculationState.CREATED, CalculationState.QUEUED})


@dataclass(frozen=True, slots=True)
class CalculationRules:
    max_runtime: timedelta | None = None
    max_queued: timedelta | None = None
    max_dpu_hours: float | None = None
    max_cost_usd: float | None = None


@dataclass(frozen=True, slots=True)
class SessionRules:
    max_idle: timedelta | None = None
    max_age: timedelta | None = None
    max_dpu_hours: float | None = None
    max_cost_usd: float | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    workgroups: tuple[str, ...]
    calculation: CalculationRules | None
    session: SessionRules | None
    action: ActionName
    mode: ModeName
    notify_before: timedelta | None = None

    def matches(self, workgroup: str) -> bool:
        return any(fnmatch.fnmatchcase(workgroup, pattern) for pattern in self.workgroups)


def match_policy(policies: Sequence[Policy], workgroup: str) -> Policy | None:
    """The first policy, in configuration order, whose workgroup globs match."""
    return next((policy for policy in policies if policy.matches(workgroup)), None)


def workgroup_in_scope(workgroup: WorkgroupSnapshot, patterns: Iterable[str], exempt_tag: str) -> str | None:
    """Return why a workgroup is not watched (None when it is)."""
    if not any(fnmatch.fnmatchcase(workgroup.name, pattern) for pattern in patterns):
        return "out_of_scope"
    if not workgroup.is_spark:
        return "not_spark"
    if workgroup.is_exempt(exempt_tag):
        return "exempt_workgroup"
    return None


@dataclass(frozen=True, slots=True)
class _Crossing:
    """One rule's position relative to its limit at the evaluation instant."""

    rule: str
    observed: float
    limit: float
    unit: str
    crossed_at: datetime | None  # when crossed (past), or predicted crossing (future), or None


def _time_crossing(rule: str, since: datetime | None, limit: timedelta | None, now: datetime) -> _Crossing | None:
    if since is None or limit is None:
        return None
    return _Crossing(rule, (now - since).total_seconds(), limit.total_seconds(), "seconds", since + limit)


def accrual_rate(
    current: int, observed_at: datetime, previous: tuple[int, datetime] | None, accruing_since: datetime | None
) -> float | None:
    """DPU-milliseconds accrued per millisecond: between two observations if possible, else on average."""
    if previous is not None:
        previous_millis, previous_at = previous
        elapsed = (observed_at - previous_at).total_seconds() * 1000
        if elapsed > 0 and current > previous_millis:
            return (current - previous_millis) / elapsed
    if accruing_since is not None:
        elapsed = (observed_at - accruing_since).total_seconds() * 1000
        if elapsed > 0 and current > 0:
            return current / elapsed
    return None


def _accrual_crossings(
    dpu_millis: int | None,
    observed_at: datetime,
    rate: float | None,
    max_dpu_hours: float | None,
    max_cost_usd: float | None,
    dpu_hour_usd: float,
) -> list[_Crossing]:
    crossings: list[_Crossing] = []
    if dpu_millis is None:
        return crossings
    dpu_hours = dpu_millis / MILLIS_PER_HOUR
    limits = (
        ("max_dpu_hours", max_dpu_hours, 1.0, "dpu_hours"),
        ("max_cost_usd", max_cost_usd, dpu_hour_usd, "usd"),
    )
    for rule, limit, per_dpu_hour, unit in limits:
        if limit is None:
            continue
        limit_millis = limit / per_dpu_hour * MILLIS_PER_HOUR
        crossed_at: datetime | None = None
        if rate:
            crossed_at = observed_at + timedelta(milliseconds=(limit_millis - dpu_millis) / rate)
        elif dpu_millis >= limit_millis:
            crossed_at = observed_at
        crossings.append(_Crossing(rule, dpu_hours * per_dpu_hour, limit, unit, crossed_at))
    return crossings


def _conclude(
    crossings: Iterable[_Crossing | None],
    target: TargetRef,
    policy: Policy,
    action: ActionName,
    now: datetime,
    needs_statistics: bool,
) -> Evaluation:
    present = [c for c in crossings if c is not None]
    crossed = [c for c in present if c.crossed_at is not None and (c.observed >= c.limit)]
    if crossed:
        first = min(crossed, key=lambda c: c.crossed_at or now)
        verdict = Verdict(
            target=target, policy=policy.name, rule=first.rule, observed=first.observed, limit=first.limit,
            unit=first.unit, crossed_at=min(first.crossed_at or now, now), decided_at=now,
            action=action, mode=policy.mode,
        )
        return Evaluation(verdict=verdict)
    upcoming = [c for c in present if c.crossed_at is not None and c.crossed_at > now]
    # A predicted accrual crossing already behind us, on an observation below the limit: look again now.
    stale = any(c.crossed_at is not None and c.crossed_at <= now and c.observed < c.limit for c in present)
    warnings: list[Warning] = []
    wake_times: list[datetime] = []
    for crossing in upcoming:
        assert crossing.crossed_at is not None
        wake_times.append(crossing.crossed_at)
        if policy.notify_before is None:
            continue
        warn_from = crossing.crossed_at - policy.notify_before
        if warn_from <= now:
            warnings.append(Warning(
                target=target, policy=policy.name, rule=crossing.rule, observed=crossing.observed,
                limit=crossing.limit, unit=crossing.unit, predicted_at=crossing.crossed_at,
            ))
        else:
            wake_times.append(warn_from)
    return Evaluation(
        next_check_at=min(wake_times, default=None), needs_statistics=needs_statistics or stale,
        warnings=tuple(warnings),
    )


def evaluate_calculation(
    calculation: CalculationSnapshot,
    policy: Policy,
    now: datetime,
    *,
    dpu_hour_usd: float,
    previous_statistics: tuple[int, datetime] | None = None,
) -> Evaluation:
    """Judge one calculation. ``previous_statistics`` is (DpuExecutionInMillis, observed_at) of an earlier
    detailed observation, used for the accrual rate."""
    rules = policy.calculation
    if rules is None or calculation.state is None or not calculation.is_live:
        return Evaluation()
    target = TargetRef("calculation", calculation.calculation_id, calculation.session_id, calculation.workgroup)
    action: ActionName = policy.action
    waiting = calculation.state in WAITING_STATES
    crossings: list[_Crossing | None] = [
        _time_crossing("max_queued", calculation.submitted_at, rules.max_queued if waiting else None, now),
        _time_crossing("max_runtime", calculation.submitted_at, rules.max_runtime, now),
    ]
    wants_accrual = rules.max_dpu_hours is not None or rules.max_cost_usd is not None
    accruing = calculation.state in ACCRUING_CALCULATION_STATES
    needs_statistics = False
    if wants_accrual and accruing:
        if calculation.dpu_millis is None:
            needs_statistics = True
        else:
            rate = accrual_rate(
                calculation.dpu_millis, calculation.observed_at, previous_statistics, calculation.submitted_at
            )
            crossings.extend(_accrual_crossings(
                calculation.dpu_millis, calculation.observed_at, rate, rules.max_dpu_hours,
                rules.max_cost_usd, dpu_hour_usd,
            ))
    return _conclude(crossings, target, policy, action, now, needs_statistics)


def evaluate_session(
    session: SessionSnapshot,
    policy: Policy,
    now: datetime,
    *,
    dpu_hour_usd: float,
    previous_statistics: tuple[int, datetime] | None = None,
) -> Evaluation:
    """Judge one session. Session limits terminate the session (unless the policy only notifies)."""
    rules = policy.session
    if rules is None or session.state is None or not session.is_active:
        return Evaluation()
    target = TargetRef("session", session.session_id, session.session_id, session.workgroup)
    action: ActionName = "notify" if policy.action == "notify" else "terminate"
    idle_since = session.idle_since if session.state is SessionState.IDLE else None
    crossings: list[_Crossing | None] = [
        _time_crossing("max_idle", idle_since, rules.max_idle, now),
        _time_crossing("max_age", session.started_at, rules.max_age, now),
    ]
    needs_statistics = False
    if rules.max_dpu_hours is not None or rules.max_cost_usd is not None:
        if session.dpu_millis is None:
            needs_statistics = True
        else:
            rate = accrual_rate(session.dpu_millis, session.observed_at, previous_statistics, session.started_at)
            crossings.extend(_accrual_crossings(
                session.dpu_millis, session.observed_at, rate, rules.max_dpu_hours, rules.max_cost_usd,
                dpu_hour_usd,
            ))
    return _conclude(crossings, target, policy, action, now, needs_statistics)
