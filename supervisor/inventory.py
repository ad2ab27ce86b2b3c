"""What the daemon currently knows: the latest snapshot of every watched target, and the deadlines.

Plain in-memory structures owned by the supervisor loop; no I/O.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from supervisor.model import CalculationSnapshot, SessionSnapshot, WorkgroupSnapshot


class CheckKind(Enum):
    """Why a target is looked at: a predicted crossing (urgent) or statistics it lacks (routine)."""

    CROSSING = "crossing"
    STATISTICS = "statistics"


@dataclass(order=True, slots=True)
class _Deadline:
    when: datetime
    seq: int
    key: str = field(compare=False)
    kind: CheckKind = field(compare=False)


class Deadlines:
    """A heap of (when, target key); rescheduling a key supersedes its earlier entry."""

    def __init__(self) -> None:
        self._heap: list[_Deadline] = []
        self._current: dict[str, _Deadline] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._current)

    def schedule(self, key: str, when: datetime, kind: CheckKind) -> bool:
        """Schedule ``key`` at ``when``; True if this is now the earliest deadline overall."""
        existing = self._current.get(key)
        if existing is not None and existing.when <= when and existing.kind is kind:
            return False
        entry = _Deadline(when, next(self._seq), key, kind)
        self._current[key] = entry
        heapq.heappush(self._heap, entry)
        return self._heap[0] is entry

    def cancel(self, key: str) -> None:
        self._current.pop(key, None)

    def _drop_superseded(self) -> None:
        while self._heap and self._current.get(self._heap[0].key) is not self._heap[0]:
            heapq.heappop(self._heap)

    def next_at(self) -> datetime | None:
        self._drop_superseded()
        return self._heap[0].when if self._heap else None

    def pop_due(self, now: datetime) -> list[tuple[str, CheckKind]]:
        due: list[tuple[str, CheckKind]] = []
        while True:
            self._drop_superseded()
            if not self._heap or self._heap[0].when > now:
                return due
            entry = heapq.heappop(self._heap)
            del self._current[entry.key]
            due.append((entry.key, entry.kind))


@dataclass(slots=True)
class Inventory:
    workgroups: dict[str, WorkgroupSnapshot] = field(default_factory=dict)
    sessions: dict[str, SessionSnapshot] = field(default_factory=dict)
    calculations: dict[str, CalculationSnapshot] = field(default_factory=dict)
    calculations_by_session: dict[str, set[str]] = field(default_factory=dict)
    # target key -> the last two detailed observations (DpuExecutionInMillis, observed_at), newest last.
    # List summaries carry no statistics, so these outlive the snapshots that list calls replace.
    statistics: dict[str, tuple[tuple[int, datetime], ...]] = field(default_factory=dict)

    def record_statistics(self, key: str, dpu_millis: int | None, observed_at: datetime) -> None:
        if dpu_millis is not None:
            self.statistics[key] = (*self.statistics.get(key, ())[-1:], (dpu_millis, observed_at))

    def put_session(self, session: SessionSnapshot) -> SessionSnapshot | None:
        previous = self.sessions.get(session.session_id)
        self.sessions[session.session_id] = session
        self.record_statistics(f"session:{session.session_id}", session.dpu_millis, session.observed_at)
        return previous

    def put_calculation(self, calculation: CalculationSnapshot) -> CalculationSnapshot | None:
        previous = self.calculations.get(calculation.calculation_id)
        self.calculations[calculation.calculation_id] = calculation
        self.record_statistics(
            f"calculation:{calculation.calculation_id}", calculation.dpu_millis, calculation.observed_at
        )
        self.calculations_by_session.setdefault(calculation.session_id, set()).add(calculation.calculation_id)
        return previous

    def drop_calculation(self, calculation_id: str) -> None:
        calculation = self.calculations.pop(calculation_id, None)
        self.statistics.pop(f"calculation:{calculation_id}", None)
        if calculation is not None:
            self.calculations_by_session.get(calculation.session_id, set()).discard(calculation_id)

    def drop_session(self, session_id: str) -> list[str]:
        """Forget a session and its calculations; returns the forgotten calculation ids."""
        self.sessions.pop(session_id, None)
        self.statistics.pop(f"session:{session_id}", None)
        calculation_ids = list(self.calculations_by_session.pop(session_id, set()))
        for calculation_id in calculation_ids:
            self.calculations.pop(calculation_id, None)
            self.statistics.pop(f"calculation:{calculation_id}", None)
        return calculation_ids

    def sessions_of(self, workgroup: str) -> Iterable[SessionSnapshot]:
        return (s for s in self.sessions.values() if s.workgroup == workgroup)

    def counts_by_workgroup(self) -> tuple[Counter[str], Counter[str]]:
        sessions = Counter(s.workgroup for s in self.sessions.values() if s.is_active)
        calculations = Counter(c.workgroup for c in self.calculations.values() if c.is_live)
        return sessions, calculations
