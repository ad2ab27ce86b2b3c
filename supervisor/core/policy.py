"""Pure policy evaluation: snapshot + rules + price + now → verdict, warnings and the next deadline.

No I/O and no clock reads: ``now`` is always an argument. Policies are evaluated in configuration order
and the first policy whose workgroup globs match a target's workgroup (and whose ``engines``, if any, include
the target's engine) is the one applied to it. Calculation limits apply only where there are calculations
(``PySpark engine version 3``).

Measures (Athena reports no run-start time, so calculation time counts from SubmissionDateTime):
- ``max_queued``: now − SubmissionDateTime while the calculation waits (CREATING, CREATED, QUEUED).
- ``max_runtime``: now − SubmissionDateTime while the calculation is live (waiting, RUNNING, CANCELING).
- ``max_idle``: now − IdleSinceDateTime while the session is IDLE.
- ``max_busy``: now − LastModifiedDateTime while the session is BUSY (its last state change: when it became
  BUSY, so a session BUSY without a break for longer than the limit crosses it; the model's SessionStatus has
  no other state-change time). The limit of engines without calculations, where a runaway Spark Connect job
  shows only as a BUSY session.
- ``max_age``: now − StartDateTime while the session is active.
- ``max_dpu_hours`` / ``max_cost_usd``: Statistics.DpuExecutionInMillis / 3.6e6 (× price). The crossing
  instant is predicted from the accrual rate between two observations (or the average since start) and
  interpolated back once the limit is found crossed.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Literal

from supervisor.config import Settings
from supervisor.core.accrual import MILLIS_PER_HOUR, accrual_rate
from supervisor.core.model import (
    ACCRUING_CALCULATION_STATES,
    PYSPARK_ENGINE,
    WAITING_CALCULATION_STATES,
    ActionName,
    CalculationSnapshot,
    Evaluation,
    LimitWarning,
    ModeName,
    SessionSnapshot,
    SessionState,
    TargetKind,
    TargetRef,
    Verdict,
    WorkgroupSnapshot,
)


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
    max_busy: timedelta | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    workgroups: tuple[str, ...]
    calculation: CalculationRules | None
    session: SessionRules | None
    action: ActionName
    mode: ModeName
    notify_before: timedelta | None = None
    engines: tuple[str, ...] = ()  # empty: every engine

    def matches(self, workgroup: str, engine: str = "") -> bool:
        """Whether it governs ``workgroup`` running ``engine`` (``""``, not reported, is taken for PySpark 3)."""
        return workgroup_matches(workgroup, self.workgroups) and (
            not self.engines or (engine or PYSPARK_ENGINE) in self.engines)


def compile_policies(settings: Settings) -> tuple[Policy, ...]:
    """The config's policies as pure-policy values, in evaluation (file) order."""
    compiled = []
    for config in settings.policies:
        calculation = config.calculation
        session = config.session
        compiled.append(Policy(
            name=config.name, workgroups=tuple(config.workgroups),
            calculation=CalculationRules(
                calculation.max_runtime, calculation.max_queued, calculation.max_dpu_hours, calculation.max_cost_usd
            ) if calculation else None,
            session=SessionRules(
                session.max_idle, session.max_age, session.max_dpu_hours, session.max_cost_usd, session.max_busy
            ) if session else None,
            action=config.action, mode=settings.mode_for(config), notify_before=config.notify_before,
            engines=tuple(config.engines),
        ))
    return tuple(compiled)


def rules_for(kind: TargetKind, policy: Policy) -> CalculationRules | SessionRules | None:
    """The policy's rules for targets of ``kind``."""
    return policy.calculation if kind is TargetKind.CALCULATION else policy.session


def has_limits(rules: CalculationRules | SessionRules | None) -> bool:
    """Whether these rules set any limit."""
    return rules is not None and any(getattr(rules, name) is not None for name in rules.__slots__)


def needs_accrual(rules: CalculationRules | SessionRules | None) -> bool:
    """Do these rules limit DPU-hours or cost (and so need statistics, not just a listing)?"""
    return rules is not None and (rules.max_dpu_hours is not None or rules.max_cost_usd is not None)


def match_policy(policies: Sequence[Policy], workgroup: str, engine: str = "") -> Policy | None:
    """The first policy, in configuration order, whose workgroup globs (and engines) match."""
    return next((policy for policy in policies if policy.matches(workgroup, engine)), None)


def workgroup_matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def workgroup_in_scope(workgroup: WorkgroupSnapshot, patterns: Iterable[str], exempt_tag: str | None) -> str | None:
    """Return why a workgroup is not watched (None when it is). With tag exemptions on, a workgroup whose tags
    could not be read is not watched: it might be exempt, and nothing is done that cannot be explained."""
    if not workgroup_matches(workgroup.name, patterns):
        return "out_of_scope"
    if not workgroup.is_spark:
        return "not_spark"
    if exempt_tag and workgroup.tags is None:
        return "tags_unknown"
    if exempt_tag and workgroup.is_exempt(exempt_tag):
        return "exempt_workgroup"
    return None


@dataclass(frozen=True, slots=True)
class Position:
    """One rule's position relative to its limit at the evaluation instant."""

    rule: str
    observed: float
    limit: float
    unit: str
    crossed_at: datetime | None  # when crossed (past), or predicted crossing (future), or None


def _time_crossing(rule: str, since: datetime | None, limit: timedelta | None, now: datetime) -> Position | None:
    if since is None or limit is None:
        return None
    return Position(rule, (now - since).total_seconds(), limit.total_seconds(), "seconds", since + limit)


def _accrual_crossings(
    dpu_millis: int | None,
    observed_at: datetime,
    rate: float | None,
    max_dpu_hours: float | None,
    max_cost_usd: float | None,
    dpu_hour_usd: float,
) -> list[Position]:
    crossings: list[Position] = []
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
        crossings.append(Position(rule, dpu_hours * per_dpu_hour, limit, unit, crossed_at))
    return crossings


def _conclude(
    assessment: Assessment, target: TargetRef, policy: Policy, action: ActionName, now: datetime, engine: str = ""
) -> Evaluation:
    present = list(assessment.positions)
    needs_statistics, missing = assessment.needs_statistics, assessment.missing
    crossed = [c for c in present if c.crossed_at is not None and (c.observed >= c.limit)]
    if crossed:
        first = min(crossed, key=lambda c: c.crossed_at or now)
        verdict = Verdict(
            target=target, policy=policy.name, rule=first.rule, observed=first.observed, limit=first.limit,
            unit=first.unit, crossed_at=min(first.crossed_at or now, now), decided_at=now,
            action=action, mode=policy.mode, engine=engine,
        )
        return Evaluation(verdict=verdict, missing=missing)
    upcoming = [c for c in present if c.crossed_at is not None and c.crossed_at > now]
    # A predicted accrual crossing already behind us, on an observation below the limit: look again now.
    stale = any(c.crossed_at is not None and c.crossed_at <= now and c.observed < c.limit for c in present)
    warnings: list[LimitWarning] = []
    wake_times: list[datetime] = []
    for crossing in upcoming:
        assert crossing.crossed_at is not None
        wake_times.append(crossing.crossed_at)
        if policy.notify_before is None:
            continue
        warn_from = crossing.crossed_at - policy.notify_before
        if warn_from <= now:
            warnings.append(LimitWarning(
                target=target, policy=policy.name, rule=crossing.rule, observed=crossing.observed,
                limit=crossing.limit, unit=crossing.unit, predicted_at=crossing.crossed_at,
            ))
        else:
            wake_times.append(warn_from)
    return Evaluation(
        next_check_at=min(wake_times, default=None), needs_statistics=needs_statistics or stale,
        warnings=tuple(warnings), missing=missing,
    )


@dataclass(frozen=True, slots=True)
class Assessment:
    """Where a live target stands against each limit of its rules: what evaluation and ``explain`` both read."""

    positions: tuple[Position, ...]
    needs_statistics: bool
    missing: tuple[str, ...]


def assess_calculation(
    calculation: CalculationSnapshot, rules: CalculationRules, now: datetime, *, dpu_hour_usd: float,
    previous_statistics: tuple[int, datetime] | None = None,
) -> Assessment | None:
    """Each calculation limit's position; None when the calculation is not live (or in an unknown state)."""
    if calculation.state is None or not calculation.is_live:
        return None
    waiting = calculation.state in WAITING_CALCULATION_STATES
    crossings: list[Position | None] = [
        _time_crossing("max_queued", calculation.submitted_at, rules.max_queued if waiting else None, now),
        _time_crossing("max_runtime", calculation.submitted_at, rules.max_runtime, now),
    ]
    needs_statistics = False
    if needs_accrual(rules) and calculation.state in ACCRUING_CALCULATION_STATES:
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
    missing = ("SubmissionDateTime",) if calculation.submitted_at is None and (
        rules.max_runtime is not None or (waiting and rules.max_queued is not None)) else ()
    return Assessment(tuple(c for c in crossings if c is not None), needs_statistics, missing)


def assess_session(
    session: SessionSnapshot, rules: SessionRules, now: datetime, *, dpu_hour_usd: float,
    previous_statistics: tuple[int, datetime] | None = None,
) -> Assessment | None:
    """Each session limit's position; None when the session is not active (or in an unknown state)."""
    if session.state is None or not session.is_active:
        return None
    idle_since = session.idle_since if session.state is SessionState.IDLE else None
    busy = session.state is SessionState.BUSY
    busy_since = session.last_modified_at if busy else None
    crossings: list[Position | None] = [
        _time_crossing("max_idle", idle_since, rules.max_idle, now),
        _time_crossing("max_age", session.started_at, rules.max_age, now),
        _time_crossing("max_busy", busy_since, rules.max_busy, now),
    ]
    needs_statistics = False
    if needs_accrual(rules):
        if session.dpu_millis is None:
            needs_statistics = True
        else:
            rate = accrual_rate(session.dpu_millis, session.observed_at, previous_statistics, session.started_at)
            crossings.extend(_accrual_crossings(
                session.dpu_millis, session.observed_at, rate, rules.max_dpu_hours, rules.max_cost_usd,
                dpu_hour_usd,
            ))
    missing = tuple(name for name, value, limit in (
        ("IdleSinceDateTime", idle_since if session.state is SessionState.IDLE else True, rules.max_idle),
        ("StartDateTime", session.started_at, rules.max_age),
        ("LastModifiedDateTime", busy_since if busy else True, rules.max_busy),
    ) if limit is not None and value is None)
    return Assessment(tuple(c for c in crossings if c is not None), needs_statistics, missing)


UNITS = {"max_dpu_hours": "dpu_hours", "max_cost_usd": "usd"}  # the other limits are durations, in seconds
DormantReason = Literal["ended", "not_waiting", "not_accruing", "not_idle", "missing_field", "unknown_state"]


@dataclass(frozen=True, slots=True)
class Dormant:
    """A limit of the rules that does not count at this instant, and why: what ``explain`` says of it.

    ``ended``: the target is no longer live/active, no limit applies to it any more; ``not_waiting``:
    ``max_queued`` counts only while a calculation waits; ``not_accruing``: DPU and cost limits count once the
    calculation runs; ``not_idle``: ``max_idle`` counts only while the session is IDLE (a BUSY session's
    idle time starts when its calculations end); ``missing_field``: the answer lacks what it is measured from;
    ``unknown_state``: the target's state is unknown to this version (never acted on).
    """

    rule: str
    limit: float
    unit: str
    reason: DormantReason


def limits_of(rules: CalculationRules | SessionRules) -> list[tuple[str, float, str]]:
    """The limits the rules set: (rule, limit, unit), durations in seconds."""
    limits = []
    for field in fields(rules):
        value = getattr(rules, field.name)
        if isinstance(value, timedelta):
            limits.append((field.name, value.total_seconds(), "seconds"))
        elif value is not None:
            limits.append((field.name, float(value), UNITS[field.name]))
    return limits


def dormant_limits(target: CalculationSnapshot | SessionSnapshot, rules: CalculationRules | SessionRules,
                   assessment: Assessment | None) -> list[Dormant]:
    """The limits of ``rules`` that ``assessment`` (of ``target``, by :func:`assess_calculation` or
    :func:`assess_session`) does not count, each with the reason."""
    counting = {position.rule for position in assessment.positions} if assessment is not None else set()
    return [Dormant(rule, limit, unit, _dormant_reason(target, rule))
            for rule, limit, unit in limits_of(rules) if rule not in counting]


def _dormant_reason(target: CalculationSnapshot | SessionSnapshot, rule: str) -> DormantReason:
    if target.state is None:
        return "unknown_state"
    if isinstance(target, CalculationSnapshot):
        if not target.is_live:
            return "ended"
        if rule == "max_queued" and target.state not in WAITING_CALCULATION_STATES:
            return "not_waiting"
        if rule in UNITS and target.state not in ACCRUING_CALCULATION_STATES:
            return "not_accruing"
        return "missing_field"
    if not target.is_active:
        return "ended"
    if rule == "max_idle" and target.state is not SessionState.IDLE:
        return "not_idle"
    return "missing_field"


def evaluate_calculation(
    calculation: CalculationSnapshot,
    policy: Policy,
    now: datetime,
    *,
    dpu_hour_usd: float,
    previous_statistics: tuple[int, datetime] | None = None,
    engine: str = "",
) -> Evaluation:
    """Judge one calculation. ``previous_statistics`` is (DpuExecutionInMillis, observed_at) of an earlier
    detailed observation, used for the accrual rate; ``engine`` (its session's) is named in the verdict."""
    rules = policy.calculation
    assessment = assess_calculation(calculation, rules, now, dpu_hour_usd=dpu_hour_usd,
                                    previous_statistics=previous_statistics) if rules else None
    if assessment is None:
        return Evaluation()
    return _conclude(assessment, TargetRef.of_calculation(calculation), policy, policy.action, now, engine)


def evaluate_session(
    session: SessionSnapshot,
    policy: Policy,
    now: datetime,
    *,
    dpu_hour_usd: float,
    previous_statistics: tuple[int, datetime] | None = None,
    engine: str = "",
) -> Evaluation:
    """Judge one session. Session limits terminate the session (unless the policy only notifies). ``engine``
    (default: the one the session reported) is named in the verdict."""
    rules = policy.session
    assessment = assess_session(session, rules, now, dpu_hour_usd=dpu_hour_usd,
                                previous_statistics=previous_statistics) if rules else None
    if assessment is None:
        return Evaluation()
    action: ActionName = "notify" if policy.action == "notify" else "terminate"
    return _conclude(assessment, TargetRef.of_session(session), policy, action, now, engine or session.engine)
