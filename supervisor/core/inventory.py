"""What the daemon currently knows: the latest snapshot of every watched workgroup, session and calculation.

A plain in-memory structure: discovery puts listings in, checks put fresh looks in; no I/O.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime

from supervisor.core.model import CalculationSnapshot, SessionSnapshot, TargetKey, WorkgroupSnapshot


@dataclass(slots=True)
class Inventory:
    workgroups: dict[str, WorkgroupSnapshot] = field(default_factory=dict)
    sessions: dict[str, SessionSnapshot] = field(default_factory=dict)
    calculations: dict[str, CalculationSnapshot] = field(default_factory=dict)
    calculations_by_session: dict[str, set[str]] = field(default_factory=dict)
    # target key -> the last two detailed observations (DpuExecutionInMillis, observed_at), newest last.
    # List summaries carry no statistics, so these outlive the snapshots that list calls replace.
    statistics: dict[TargetKey, tuple[tuple[int, datetime], ...]] = field(default_factory=dict)
    # Whether a sweep has listed the watched workgroups' sessions since this process began supervising the shard.
    # Before that, the sessions known are only those a restart or takeover resumed, or that events announced.
    listed: bool = False

    def record_statistics(self, key: TargetKey, dpu_millis: int | None, observed_at: datetime) -> None:
        if dpu_millis is not None:
            self.statistics[key] = (*self.statistics.get(key, ())[-1:], (dpu_millis, observed_at))

    def put_session(self, session: SessionSnapshot) -> SessionSnapshot | None:
        previous = self.sessions.get(session.session_id)
        if not session.engine and previous is not None and previous.engine:
            session = replace(session, engine=previous.engine)  # GetSessionStatus does not name the engine
        self.sessions[session.session_id] = session
        self.record_statistics(TargetKey.session(session.session_id), session.dpu_millis, session.observed_at)
        return previous

    def engine_of(self, session: SessionSnapshot) -> str:
        """The session's engine: as it reported it, else its workgroup's; ``""`` when neither is known."""
        workgroup = self.workgroups.get(session.workgroup)
        return session.engine or (workgroup.engine if workgroup is not None else "")

    def put_calculation(self, calculation: CalculationSnapshot) -> CalculationSnapshot | None:
        previous = self.calculations.get(calculation.calculation_id)
        self.calculations[calculation.calculation_id] = calculation
        self.record_statistics(
            TargetKey.calculation(calculation.calculation_id), calculation.dpu_millis, calculation.observed_at
        )
        self.calculations_by_session.setdefault(calculation.session_id, set()).add(calculation.calculation_id)
        return previous

    def drop_calculation(self, calculation_id: str) -> None:
        calculation = self.calculations.pop(calculation_id, None)
        self.statistics.pop(TargetKey.calculation(calculation_id), None)
        if calculation is not None:
            self.calculations_by_session.get(calculation.session_id, set()).discard(calculation_id)

    def drop_session(self, session_id: str) -> list[str]:
        """Forget a session and its calculations; returns the forgotten calculation ids."""
        self.sessions.pop(session_id, None)
        self.statistics.pop(TargetKey.session(session_id), None)
        calculation_ids = list(self.calculations_by_session.pop(session_id, set()))
        for calculation_id in calculation_ids:
            self.calculations.pop(calculation_id, None)
            self.statistics.pop(TargetKey.calculation(calculation_id), None)
        return calculation_ids

    def active_sessions(self) -> int:
        return sum(1 for session in self.sessions.values() if session.is_active)

    def listed_active_sessions(self) -> int | None:
        """The active sessions, once a sweep has listed them (None before: a count of the few sessions resumed
        or announced would make every action look like a large share of them)."""
        return self.active_sessions() if self.listed else None

    def counts_by_workgroup(self) -> tuple[Counter[str], Counter[str]]:
        sessions = Counter(s.workgroup for s in self.sessions.values() if s.is_active)
        calculations = Counter(c.workgroup for c in self.calculations.values() if c.is_live)
        return sessions, calculations
