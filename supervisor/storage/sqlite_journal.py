"""The journal's tables in SQLite: escalations, the event history, one-off notices.

``escalations`` holds the current state of every enforcement, one row per target key, ever, so a target is
never acted on twice (the unique claim); ``events`` is the append-only history of every decision and step,
written before each API call and after its answer; ``notices`` remembers one-off notices (warnings) so they
are sent once. A restart reads ``open_escalations()`` and resumes each from where it stopped.

The methods are synchronous and short; :class:`~supervisor.storage.sqlite.SqliteStorage` runs them in a
worker thread.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from supervisor.core.escalation import Escalation, Phase
from supervisor.core.model import Origin, TargetKey, TargetKind, TargetRef, Verdict
from supervisor.storage.sqlite_db import Database


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One row of the event history."""

    seq: int
    time: datetime
    event: str
    escalation_id: str | None
    target_kind: str | None
    target_id: str | None
    session_id: str | None
    workgroup: str | None
    policy: str | None
    rule: str | None
    phase: str | None
    detail: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "time": _iso(self.time), "event": self.event, "escalation_id": self.escalation_id,
            "target_kind": self.target_kind, "target_id": self.target_id, "session_id": self.session_id,
            "workgroup": self.workgroup, "policy": self.policy, "rule": self.rule, "phase": self.phase,
            "detail": dict(self.detail),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="microseconds") if value is not None else None


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class JournalTables:
    """Escalations (one row per target key, ever: the unique claim), the event history and notices."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- escalations ---------------------------------------------------------------------------------

    def begin_escalation(
        self, escalation: Escalation, event: str | None, detail: Mapping[str, Any] | None = None
    ) -> bool:
        """Record a new escalation and its decision event (at ``created_at``; none if ``event`` is None); False
        if the target already has one."""
        try:
            with self._db.transaction() as db:
                db.execute(
                    "INSERT INTO escalations VALUES (:escalation_id, :target_key, :target_kind, :target_id, "
                    ":session_id, :workgroup, :policy, :rule, :observed, :limit_value, :unit, :crossed_at, "
                    ":decided_at, :action, :mode, :phase, :created_at, :next_step_at, :stop_intent_at, "
                    ":stop_sent_at, :terminate_intent_at, :terminate_sent_at, :terminate_attempts, :failures, "
                    ":outcome, :updated_at, :origin, :intent_at)",
                    _escalation_row(escalation, escalation.created_at),
                )
                if event is not None:
                    self._append(db, event, escalation, detail, escalation.created_at)
        except sqlite3.IntegrityError:
            return False
        return True

    def save(
        self, escalation: Escalation, event: str, detail: Mapping[str, Any] | None = None, *, time: datetime
    ) -> None:
        """Store the new state of an escalation and append the event that led to it, atomically."""
        row = _escalation_row(escalation, time)
        with self._db.transaction() as db:
            db.execute(
                "UPDATE escalations SET phase=:phase, next_step_at=:next_step_at, stop_intent_at=:stop_intent_at, "
                "stop_sent_at=:stop_sent_at, terminate_intent_at=:terminate_intent_at, "
                "terminate_sent_at=:terminate_sent_at, terminate_attempts=:terminate_attempts, "
                "failures=:failures, outcome=:outcome, updated_at=:updated_at, intent_at=:intent_at "
                "WHERE escalation_id=:escalation_id",
                row,
            )
            self._append(db, event, escalation, detail, time)

    def claimed_targets(self) -> set[TargetKey]:
        with self._db.reading() as db:
            return {TargetKey.parse(row[0]) for row in db.execute("SELECT target_key FROM escalations")}

    def open_escalations(self) -> list[Escalation]:
        with self._db.reading() as db:
            rows = db.execute(
                "SELECT * FROM escalations WHERE phase != 'done' ORDER BY created_at"
            ).fetchall()
        return [_escalation_from_row(row) for row in rows]

    def escalation_for(self, key: TargetKey) -> Escalation | None:
        with self._db.reading() as db:
            row = db.execute("SELECT * FROM escalations WHERE target_key=?", (str(key),)).fetchone()
        return _escalation_from_row(row) if row else None

    # -- other events ----------------------------------------------------------------------------------

    def record(
        self,
        event: str,
        *,
        target: TargetRef | None = None,
        policy: str | None = None,
        rule: str | None = None,
        detail: Mapping[str, Any] | None = None,
        time: datetime,
    ) -> None:
        """Append an event that is not an escalation step (warning, skipped action, unknown state...)."""
        with self._db.transaction() as db:
            db.execute(
                "INSERT INTO events (time, event, target_kind, target_id, session_id, workgroup, policy, rule, "
                "detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (_iso(time), event, target.kind.value if target else None, target.target_id if target else None,
                 target.session_id if target else None, target.workgroup if target else None, policy, rule,
                 json.dumps(dict(detail or {}), default=str)),
            )

    def mark_once(self, notice_key: str, time: datetime) -> bool:
        """True the first time ``notice_key`` is marked, False ever after."""
        with self._db.transaction() as db:
            cursor = db.execute("INSERT OR IGNORE INTO notices VALUES (?, ?)", (notice_key, _iso(time)))
            return cursor.rowcount == 1

    def recent_events(self, limit: int = 50, *, target_id: str | None = None) -> list[JournalEntry]:
        """The newest ``limit`` events, newest first (optionally only those about one target or session)."""
        query = "SELECT * FROM events"
        params: tuple[Any, ...] = ()
        if target_id is not None:
            query += " WHERE target_id=? OR session_id=?"
            params = (target_id, target_id)
        with self._db.reading() as db:
            rows = db.execute(query + " ORDER BY seq DESC LIMIT ?", (*params, limit)).fetchall()
        return [
            JournalEntry(
                seq=row["seq"], time=datetime.fromisoformat(row["time"]), event=row["event"],
                escalation_id=row["escalation_id"], target_kind=row["target_kind"], target_id=row["target_id"],
                session_id=row["session_id"], workgroup=row["workgroup"], policy=row["policy"], rule=row["rule"],
                phase=row["phase"], detail=json.loads(row["detail"]),
            )
            for row in rows
        ]

    @staticmethod
    def _append(
        db: sqlite3.Connection, event: str, escalation: Escalation, detail: Mapping[str, Any] | None, time: datetime
    ) -> None:
        verdict = escalation.verdict
        db.execute(
            "INSERT INTO events (time, event, escalation_id, target_kind, target_id, session_id, workgroup, policy, "
            "rule, phase, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (_iso(time), event, escalation.escalation_id, verdict.target.kind.value,
             verdict.target.target_id, verdict.target.session_id, verdict.target.workgroup, verdict.policy,
             verdict.rule, escalation.phase.value, json.dumps(dict(detail or {}), default=str)),
        )


def _escalation_row(escalation: Escalation, updated_at: datetime) -> dict[str, Any]:
    verdict = escalation.verdict
    return {
        "escalation_id": escalation.escalation_id, "target_key": str(verdict.target.key),
        "target_kind": verdict.target.kind.value, "target_id": verdict.target.target_id,
        "session_id": verdict.target.session_id, "workgroup": verdict.target.workgroup, "policy": verdict.policy,
        "rule": verdict.rule, "observed": verdict.observed, "limit_value": verdict.limit, "unit": verdict.unit,
        "crossed_at": _iso(verdict.crossed_at), "decided_at": _iso(verdict.decided_at), "action": verdict.action,
        "mode": verdict.mode, "phase": escalation.phase.value, "created_at": _iso(escalation.created_at),
        "next_step_at": _iso(escalation.next_step_at), "stop_intent_at": _iso(escalation.stop_intent_at),
        "stop_sent_at": _iso(escalation.stop_sent_at), "terminate_intent_at": _iso(escalation.terminate_intent_at),
        "terminate_sent_at": _iso(escalation.terminate_sent_at), "terminate_attempts": escalation.terminate_attempts,
        "failures": escalation.failures, "outcome": escalation.outcome,
        "updated_at": _iso(updated_at), "origin": verdict.origin.value, "intent_at": _iso(escalation.intent_at),
    }


def _escalation_from_row(row: sqlite3.Row) -> Escalation:
    key = TargetKey.parse(row["target_key"])
    verdict = Verdict(
        target=TargetRef(TargetKind(row["target_kind"]), row["target_id"], row["session_id"], row["workgroup"],
                         key.scope),
        policy=row["policy"], rule=row["rule"], observed=row["observed"], limit=row["limit_value"],
        unit=row["unit"], crossed_at=datetime.fromisoformat(row["crossed_at"]),
        decided_at=datetime.fromisoformat(row["decided_at"]), action=row["action"], mode=row["mode"],
        origin=Origin(row["origin"]),
    )
    return Escalation(
        escalation_id=row["escalation_id"], verdict=verdict, phase=Phase(row["phase"]),
        created_at=datetime.fromisoformat(row["created_at"]),
        next_step_at=datetime.fromisoformat(row["next_step_at"]),
        stop_intent_at=_time(row["stop_intent_at"]), stop_sent_at=_time(row["stop_sent_at"]),
        terminate_intent_at=_time(row["terminate_intent_at"]), terminate_sent_at=_time(row["terminate_sent_at"]),
        terminate_attempts=row["terminate_attempts"], failures=row["failures"], outcome=row["outcome"],
        intent_at=_time(row["intent_at"]),
    )
