"""In-memory state of one emulated account/region: records, indexes and cached session plans."""

from __future__ import annotations

import bisect
import itertools
import uuid
from dataclasses import replace
from typing import Any

from athena_spark_emulator.paging import NewestFirstIndex
from athena_spark_emulator.pragma import CalculationPragma, SessionPragma
from athena_spark_emulator.records import (
    SPARK_ENGINE,
    CalculationRecord,
    NotebookRecord,
    SessionRecord,
    WorkGroupRecord,
)
from athena_spark_emulator.timeline import (
    CalculationView,
    SessionPlan,
    SessionView,
    calculation_view,
    plan_session,
    session_view,
)

DEFAULT_IDLE_TIMEOUT_MINUTES = 20


class Store:
    """Records and indexes; derived state is computed on read from cached, time-independent plans."""

    def __init__(self) -> None:
        self.workgroups: dict[str, WorkGroupRecord] = {}
        self.sessions: dict[str, SessionRecord] = {}
        self.calculations: dict[str, CalculationRecord] = {}
        self.notebooks: dict[str, NotebookRecord] = {}
        self._sessions_by_workgroup: dict[str, NewestFirstIndex] = {}
        self._calculations_by_session: dict[str, NewestFirstIndex] = {}
        self._plans: dict[str, SessionPlan] = {}
        self._tokens: dict[tuple[str, str], str] = {}
        self._seq = itertools.count(1)

    # -- workgroups -------------------------------------------------------------------------------
    def put_workgroup(self, record: WorkGroupRecord) -> None:
        self.workgroups[record.name] = record
        self._sessions_by_workgroup.setdefault(record.name, NewestFirstIndex())

    def delete_workgroup(self, name: str) -> None:
        del self.workgroups[name]
        self._sessions_by_workgroup.pop(name, None)
        for notebook_id in [nid for nid, notebook in self.notebooks.items() if notebook.workgroup == name]:
            del self.notebooks[notebook_id]

    def workgroup_sessions(self, name: str) -> NewestFirstIndex:
        return self._sessions_by_workgroup.setdefault(name, NewestFirstIndex())

    # -- sessions ---------------------------------------------------------------------------------
    def add_session(self, *, workgroup: str, description: str | None, engine_configuration: dict[str, Any],
                    request: dict[str, Any], idle_timeout_minutes: int, pragma: SessionPragma,
                    created_at: float, tags: dict[str, str], engine: str = SPARK_ENGINE) -> SessionRecord:
        record = SessionRecord(
            id=str(uuid.uuid4()), seq=next(self._seq), workgroup=workgroup, description=description,
            engine_configuration=engine_configuration, request=request,
            idle_timeout_minutes=idle_timeout_minutes, pragma=pragma, created_at=created_at, tags=tags,
            engine=engine,
        )
        self.sessions[record.id] = record
        self._calculations_by_session[record.id] = NewestFirstIndex()
        self.workgroup_sessions(workgroup).add(record.order_key, record.id)
        return record

    def request_terminate(self, session_id: str, at: float) -> SessionRecord:
        record = replace(self.sessions[session_id], terminate_requested_at=at)
        self.sessions[session_id] = record
        self._plans.pop(session_id, None)
        return record

    def session_calculations(self, session_id: str) -> list[CalculationRecord]:
        """The session's calculations, oldest first."""
        return [self.calculations[cid] for cid in self._calculations_by_session[session_id].ids()]

    def calculation_index(self, session_id: str) -> NewestFirstIndex:
        return self._calculations_by_session[session_id]

    def plan(self, session_id: str) -> SessionPlan:
        plan = self._plans.get(session_id)
        if plan is None:
            plan = plan_session(self.sessions[session_id], self.session_calculations(session_id))
            self._plans[session_id] = plan
        return plan

    def session_view(self, session_id: str, t: float) -> SessionView:
        plan = self.plan(session_id)
        session = self.sessions[session_id]
        calculations = [self.calculations[cid] for cid in plan.calculations]
        return session_view(session, calculations, plan, t)

    def session_state(self, session_id: str, t: float) -> str:
        return self.session_view(session_id, t).state

    # -- calculations -----------------------------------------------------------------------------
    def add_calculation(self, *, session_id: str, description: str | None, code: str,
                        pragma: CalculationPragma, submitted_at: float) -> CalculationRecord:
        record = CalculationRecord(
            id=str(uuid.uuid4()), seq=next(self._seq), session_id=session_id, description=description,
            code=code, pragma=pragma, submitted_at=submitted_at,
        )
        self.calculations[record.id] = record
        self._calculations_by_session[session_id].add(record.order_key, record.id)
        self._plans.pop(session_id, None)
        return record

    def request_stop(self, calculation_id: str, at: float) -> CalculationRecord:
        record = replace(self.calculations[calculation_id], stop_requested_at=at)
        self.calculations[calculation_id] = record
        self._plans.pop(record.session_id, None)
        return record

    def calculation_view(self, calculation_id: str, t: float) -> CalculationView:
        record = self.calculations[calculation_id]
        return calculation_view(record, self.plan(record.session_id).calculations[calculation_id], t)

    # -- idempotency ------------------------------------------------------------------------------
    def token_target(self, operation: str, token: str | None) -> str | None:
        return self._tokens.get((operation, token)) if token else None

    def remember_token(self, operation: str, token: str | None, target: str) -> None:
        if token:
            self._tokens[(operation, token)] = target


def sorted_names(names: list[str], after: str | None) -> list[str]:
    """Names in order, strictly after ``after`` (workgroup pagination)."""
    ordered = sorted(names)
    return ordered[bisect.bisect_right(ordered, after):] if after else ordered
