"""Frozen snapshots of what the API reported, and the verdicts the policy draws from them.

API dicts are parsed into these types once, at the edge (``from_api``); everything past the gateway works
on these immutable values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

MILLIS_PER_HOUR = 3_600_000

ActionName = Literal["stop", "terminate", "notify", "disable_workgroup", "enable_workgroup"]
ModeName = Literal["enforce", "dry-run"]


class TargetKind(StrEnum):
    CALCULATION = "calculation"
    SESSION = "session"
    WORKGROUP = "workgroup"


class Origin(StrEnum):
    """What a verdict enforces: a policy limit of one target, or a budget threshold."""

    POLICY = "policy"
    BUDGET = "budget"


class CalculationState(StrEnum):
    CREATING = "CREATING"
    CREATED = "CREATED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class SessionState(StrEnum):
    CREATING = "CREATING"
    CREATED = "CREATED"
    IDLE = "IDLE"
    BUSY = "BUSY"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    DEGRADED = "DEGRADED"
    FAILED = "FAILED"


WAITING_CALCULATION_STATES = frozenset(
    {CalculationState.CREATING, CalculationState.CREATED, CalculationState.QUEUED}
)
ACCRUING_CALCULATION_STATES = frozenset({CalculationState.RUNNING, CalculationState.CANCELING})
LIVE_CALCULATION_STATES = WAITING_CALCULATION_STATES | ACCRUING_CALCULATION_STATES
ACTIVE_SESSION_STATES = frozenset(
    {SessionState.CREATING, SessionState.CREATED, SessionState.IDLE, SessionState.BUSY, SessionState.DEGRADED}
)
ENDED_SESSION_STATES = frozenset({SessionState.TERMINATED, SessionState.FAILED})
EXEMPT_DESCRIPTION_MARKER = "[supervisor:exempt]"

# Athena's Spark engines (release versions), as the API names them in EngineVersion.
PYSPARK_ENGINE = "PySpark engine version 3"  # notebooks and the calculation API
SPARK_CONNECT_ENGINE = "Apache Spark version 3.5"  # Spark Connect (GetSessionEndpoint); no calculation API


def runs_calculations(engine: str) -> bool:
    """Whether sessions of ``engine`` have calculations: only ``PySpark engine version 3`` has the calculation
    API (Athena documents StartCalculationExecution, ListCalculationExecutions and GetCalculationExecution as
    not supported on Apache Spark version 3.5, and later engines are Spark Connect ones). An engine the API did
    not report (``""``) is taken for PySpark 3, the engine of every session before 3.5."""
    return engine in ("", PYSPARK_ENGINE)


def engine_name(engine: object) -> str:
    """The engine of an API answer's ``EngineVersion``: a name (GetSession) or an ``EngineVersion`` structure
    (ListSessions, ListWorkGroups: the effective version, else the selected one); ``""`` when absent."""
    if isinstance(engine, Mapping):
        engine = engine.get("EffectiveEngineVersion") or engine.get("SelectedEngineVersion")
    return engine if isinstance(engine, str) else ""


class MalformedItem(ValueError):
    """An API item lacks a field nothing can be done without (an id); it is skipped, logged and counted."""

    def __init__(self, shape: str, field: str) -> None:
        super().__init__(f"{shape} without {field}")
        self.shape = shape
        self.field = field


def _required_id(data: Mapping[str, Any], field: str, shape: str, fallback: str = "") -> str:
    value = data.get(field) or fallback
    if not value or not isinstance(value, str):
        raise MalformedItem(shape, field)
    return value


def parse_calculation_state(raw: object) -> CalculationState | None:
    """Return the state, or None for a state this version does not know (never acted upon)."""
    try:
        return CalculationState(str(raw))
    except ValueError:
        return None


def parse_session_state(raw: object) -> SessionState | None:
    try:
        return SessionState(str(raw))
    except ValueError:
        return None


def _dpu_millis(statistics: Mapping[str, Any] | None) -> int | None:
    if not statistics or statistics.get("DpuExecutionInMillis") is None:
        return None
    return int(statistics["DpuExecutionInMillis"])


@dataclass(frozen=True, slots=True)
class WorkgroupSnapshot:
    name: str
    enabled: bool
    is_spark: bool
    tags: Mapping[str, str] | None = field(default_factory=dict)  # None: could not be read
    engine: str = ""  # the effective engine version, e.g. "Apache Spark version 3.5"; "" when not reported

    def is_exempt(self, exempt_tag: str) -> bool:
        return self.tags is not None and self.tags.get(exempt_tag, "").strip().lower() == "true"


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """A session as last seen. ``dpu_millis`` is None when only a list summary was seen; ``engine`` is ``""``
    when the answer did not name it (GetSessionStatus)."""

    session_id: str
    workgroup: str
    state: SessionState | None
    raw_state: str
    description: str
    started_at: datetime | None
    idle_since: datetime | None
    ended_at: datetime | None
    last_modified_at: datetime | None
    observed_at: datetime
    dpu_millis: int | None = None
    engine: str = ""

    @classmethod
    def from_api(cls, workgroup: str, data: Mapping[str, Any], observed_at: datetime) -> SessionSnapshot:
        """Parse a SessionSummary (ListSessions) or a GetSession/GetSessionStatus response."""
        status: Mapping[str, Any] = data.get("Status") or {}
        raw_state = str(status.get("State", ""))
        return cls(
            session_id=_required_id(data, "SessionId", "session"),
            workgroup=str(data.get("WorkGroup") or workgroup),
            state=parse_session_state(raw_state),
            raw_state=raw_state,
            description=str(data.get("Description") or ""),
            started_at=status.get("StartDateTime"),
            idle_since=status.get("IdleSinceDateTime"),
            ended_at=status.get("EndDateTime"),
            last_modified_at=status.get("LastModifiedDateTime"),
            observed_at=observed_at,
            dpu_millis=_dpu_millis(data.get("Statistics")),
            engine=engine_name(data.get("EngineVersion")),
        )

    @property
    def is_exempt(self) -> bool:
        return EXEMPT_DESCRIPTION_MARKER in self.description

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_SESSION_STATES


@dataclass(frozen=True, slots=True)
class CalculationSnapshot:
    """A calculation as last seen. ``dpu_millis`` is None when only a list summary was seen."""

    calculation_id: str
    session_id: str
    workgroup: str
    state: CalculationState | None
    raw_state: str
    submitted_at: datetime | None
    completed_at: datetime | None
    observed_at: datetime
    dpu_millis: int | None = None
    progress: str | None = None

    @classmethod
    def from_api(
        cls, session_id: str, workgroup: str, data: Mapping[str, Any], observed_at: datetime
    ) -> CalculationSnapshot:
        """Parse a CalculationSummary or a GetCalculationExecution(Status) response."""
        status: Mapping[str, Any] = data.get("Status") or {}
        raw_state = str(status.get("State", ""))
        statistics: Mapping[str, Any] | None = data.get("Statistics")
        return cls(
            calculation_id=_required_id(data, "CalculationExecutionId", "calculation"),
            session_id=_required_id(data, "SessionId", "calculation", session_id),
            workgroup=workgroup,
            state=parse_calculation_state(raw_state),
            raw_state=raw_state,
            submitted_at=status.get("SubmissionDateTime"),
            completed_at=status.get("CompletionDateTime"),
            observed_at=observed_at,
            dpu_millis=_dpu_millis(statistics),
            progress=(statistics or {}).get("Progress"),
        )

    @property
    def is_live(self) -> bool:
        return self.state in LIVE_CALCULATION_STATES


@dataclass(frozen=True, slots=True, order=True)
class TargetKey:
    """The identity of a target: what "claimed", deadlines and statistics are keyed by.

    ``scope`` tells apart several actions on one workgroup (one per budget episode and direction); it is
    empty for calculations and sessions. ``str()`` is the stored form, ``parse`` reads it back.
    """

    kind: TargetKind
    target_id: str
    scope: str = ""

    def __str__(self) -> str:
        base = f"{self.kind.value}:{self.target_id}"
        return f"{base}#{self.scope}" if self.scope else base

    @classmethod
    def parse(cls, text: str) -> TargetKey:
        kind, _, rest = text.partition(":")
        target_id, _, scope = rest.partition("#")
        return cls(TargetKind(kind), target_id, scope)

    @classmethod
    def calculation(cls, calculation_id: str) -> TargetKey:
        return cls(TargetKind.CALCULATION, calculation_id)

    @classmethod
    def session(cls, session_id: str) -> TargetKey:
        return cls(TargetKind.SESSION, session_id)


@dataclass(frozen=True, slots=True)
class TargetRef:
    """What an action is aimed at. A session target has ``target_id == session_id``; a workgroup target has
    ``target_id == workgroup`` and an empty ``session_id``."""

    kind: TargetKind
    target_id: str
    session_id: str
    workgroup: str
    scope: str = ""

    @property
    def key(self) -> TargetKey:
        return TargetKey(self.kind, self.target_id, self.scope)

    def describe(self) -> dict[str, Any]:
        return {"target_kind": self.kind.value, "target_id": self.target_id, "session_id": self.session_id,
                "workgroup": self.workgroup}

    @classmethod
    def of_calculation(cls, calculation: CalculationSnapshot) -> TargetRef:
        return cls(TargetKind.CALCULATION, calculation.calculation_id, calculation.session_id, calculation.workgroup)

    @classmethod
    def of_session(cls, session: SessionSnapshot) -> TargetRef:
        return cls(TargetKind.SESSION, session.session_id, session.session_id, session.workgroup)

    @classmethod
    def of_workgroup(cls, workgroup: str, scope: str) -> TargetRef:
        return cls(TargetKind.WORKGROUP, workgroup, "", workgroup, scope)


@dataclass(frozen=True, slots=True)
class LimitFacts:
    """A target's value against one limit of one policy (or budget): what every explanation starts with."""

    target: TargetRef
    policy: str
    rule: str
    observed: float
    limit: float
    unit: str

    def describe_limit(self) -> dict[str, Any]:
        return {**self.target.describe(), "policy": self.policy, "rule": self.rule,
                "observed": round(self.observed, 6), "limit": self.limit, "unit": self.unit}


@dataclass(frozen=True, slots=True)
class Verdict(LimitFacts):
    """A limit a target has crossed, with everything needed to explain the action taken on it.

    ``observed`` and ``limit`` are in ``unit`` (seconds, dpu_hours or usd). ``crossed_at`` is the instant
    the limit was crossed: exact for time limits, interpolated from the accrual rate for DPU/cost limits.
    """

    crossed_at: datetime
    decided_at: datetime
    action: ActionName
    mode: ModeName
    origin: Origin = Origin.POLICY
    engine: str = ""  # the target's engine when known ("Apache Spark version 3.5"); not kept by the journal row

    def describe(self) -> dict[str, Any]:
        """The stable explanation of this verdict, used in logs, journal details and notifications."""
        described = {**self.describe_limit(), "crossed_at": self.crossed_at.isoformat(),
                     "decided_at": self.decided_at.isoformat(), "action": self.action, "mode": self.mode}
        return {**described, "engine": self.engine} if self.engine else described


@dataclass(frozen=True, slots=True)
class LimitWarning(LimitFacts):
    """A crossing predicted within a policy's ``notify_before`` window."""

    predicted_at: datetime

    @property
    def notice_key(self) -> str:
        """Marks this warning as sent, once per target and rule."""
        return f"warning:{self.target.key}:{self.rule}"

    def describe(self) -> dict[str, Any]:
        return {**self.describe_limit(), "predicted_at": self.predicted_at.isoformat()}


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The policy's answer for one target at one instant.

    ``next_check_at`` is the earliest instant at which a limit may be crossed (exact for time limits,
    predicted for accrual limits); None when nothing can be crossed any more. ``needs_statistics`` says
    an accrual limit applies but no statistics have been fetched yet. ``missing`` names the API fields whose
    absence keeps a limit from being judged (the other limits still apply).
    """

    verdict: Verdict | None = None
    next_check_at: datetime | None = None
    needs_statistics: bool = False
    warnings: tuple[LimitWarning, ...] = ()
    missing: tuple[str, ...] = ()
