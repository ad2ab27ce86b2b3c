"""The journal's tables in SQLite: escalations, the event history, one-off notices.

``escalations`` holds the current state of every enforcement, one row per target key, ever, so a target is
never acted on twice (the unique claim); ``events`` is the append-only history of every decision and step,
written before each API call and after its answer; ``notices`` remembers one-off notices (warnings) so they
are sent once. A restart reads ``open_escalations()`` and resumes each from where it stopped.

Every row carries its shard's scope (``''``: the implicit shard). Tables built for a shard read and write only
its rows; built for the root (``shard=None``) they read every shard's and write the implicit shard's. A target
key is unique per shard (workgroup names repeat across accounts).

The methods are synchronous and short; :class:`~supervisor.storage.sqlite.SqliteStorage` runs them in a
worker thread.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from supervisor.core.escalation import Escalation, Phase
from supervisor.core.model import Origin, TargetKey, TargetKind, TargetRef, Verdict
from supervisor.storage.records import EventQuery, JournalEntry
from supervisor.storage.sqlite_db import Database

__all__ = ["JournalEntry", "JournalTables", "in_shard"]


def in_shard(shard: str | None, column: str = "shard") -> tuple[str, tuple[str, ...]]:
    """The SQL condition (and its parameters) selecting ``shard``'s rows; every row for the root (None)."""
    return ("1=1", ()) if shard is None else (f"{column} = ?", (shard,))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="microseconds") if value is not None else None


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class JournalTables:
    """Escalations (one row per shard and target key, ever: the unique claim), the event history and notices.

    Args:
        shard: the scope of the shard whose rows these are; None for the root (reads every shard, writes ``''``).
    """

    def __init__(self, db: Database, shard: str | None = None) -> None:
        self._db = db
        self._shard = shard
        self._writes_to = shard or ""

    # -- escalations ---------------------------------------------------------------------------------

    def begin_escalation(
        self, escalation: Escalation, event: str | None, detail: Mapping[str, Any] | None = None
    ) -> bool:
        """Record a new escalation and its decision event (at ``created_at``; none if ``event`` is None); False
        if the target already has one."""
        try:
            with self._db.transaction() as db:
                row = {**_escalation_row(escalation, escalation.created_at), "shard": self._writes_to}
                db.execute(f"INSERT INTO escalations ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})",
                           row)
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
                "WHERE escalation_id=:escalation_id AND shard=:shard",
                {**row, "shard": self._writes_to},
            )
            self._append(db, event, escalation, detail, time)

    def claimed_targets(self) -> set[TargetKey]:
        where, params = in_shard(self._shard)
        with self._db.reading() as db:
            return {TargetKey.parse(row[0]) for row in db.execute(f"SELECT target_key FROM escalations WHERE {where}",
                                                                   params)}

    def open_escalations(self) -> list[Escalation]:
        where, params = in_shard(self._shard)
        with self._db.reading() as db:
            rows = db.execute(
                f"SELECT * FROM escalations WHERE phase != 'done' AND {where} ORDER BY created_at", params
            ).fetchall()
        return [_escalation_from_row(row) for row in rows]

    def escalation_for(self, key: TargetKey) -> Escalation | None:
        """This shard's escalation of ``key``; for the root, the implicit shard's first, else any shard's."""
        where, params = in_shard(self._shard)
        with self._db.reading() as db:
            row = db.execute(f"SELECT * FROM escalations WHERE target_key=? AND {where} ORDER BY shard != '' LIMIT 1",
                             (str(key), *params)).fetchone()
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
                "detail, shard) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (_iso(time), event, target.kind.value if target else None, target.target_id if target else None,
                 target.session_id if target else None, target.workgroup if target else None, policy, rule,
                 json.dumps(dict(detail or {}), default=str), self._writes_to),
            )

    def mark_once(self, notice_key: str, time: datetime) -> bool:
        """True the first time ``notice_key`` is marked, False ever after."""
        with self._db.transaction() as db:
            cursor = db.execute("INSERT OR IGNORE INTO notices VALUES (?, ?)", (notice_key, _iso(time)))
            return cursor.rowcount == 1

    def recent_events(self, limit: int = 50, *, target_id: str | None = None) -> list[JournalEntry]:
        """The newest ``limit`` events, newest first (optionally only those about one target or session)."""
        where, params = in_shard(self._shard)
        query = f"SELECT * FROM events WHERE {where}"
        if target_id is not None:
            query += " AND (target_id=? OR session_id=?)"
            params = (*params, target_id, target_id)
        with self._db.reading() as db:
            rows = db.execute(query + " ORDER BY seq DESC LIMIT ?", (*params, limit)).fetchall()
        return [_entry(row) for row in rows]

    def query_events(self, query: EventQuery) -> list[JournalEntry]:
        """The events ``query`` matches, newest first: narrowed in SQL by time, target and policy, then matched
        one by one (modes and event globs are the entries' own rule)."""
        where, params = in_shard(self._shard)
        conditions, values = [where], list[str | None](params)
        if query.since is not None:
            conditions.append("time >= ?")
            values.append(_iso(query.since.astimezone(UTC)))
        if query.until is not None:
            conditions.append("time < ?")
            values.append(_iso(query.until.astimezone(UTC)))
        if query.target_id is not None:
            conditions.append("(target_id = ? OR session_id = ?)")
            values += [query.target_id, query.target_id]
        if query.policy is not None:
            conditions.append("policy = ?")
            values.append(query.policy)
        found: list[JournalEntry] = []
        with self._db.reading() as db:
            cursor = db.execute(f"SELECT * FROM events WHERE {' AND '.join(conditions)} ORDER BY seq DESC", values)
            while not query.full(len(found)):
                rows = cursor.fetchmany(500)
                if not rows:
                    break
                found += [entry for entry in map(_entry, rows) if query.matches(entry)]
        return found[:query.limit] if query.limit is not None else found

    def target_ids(self, prefix: str, limit: int = 20) -> list[str]:
        """Calculation and session ids of the events and claims that start with ``prefix``."""
        where, params = in_shard(self._shard)
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._db.reading() as db:
            rows = db.execute(
                f"SELECT target_id FROM events WHERE target_kind IN ('calculation', 'session') AND {where} "
                f"AND target_id LIKE ? ESCAPE '\\' UNION SELECT session_id FROM events WHERE {where} "
                f"AND session_id LIKE ? ESCAPE '\\' UNION SELECT target_id FROM escalations WHERE target_kind IN "
                f"('calculation', 'session') AND {where} AND target_id LIKE ? ESCAPE '\\' ORDER BY 1 LIMIT ?",
                (*params, pattern, *params, pattern, *params, pattern, limit)).fetchall()
        return [row[0] for row in rows if row[0]]

    def prune_events(self, before: datetime) -> int:
        """Delete this view's events older than ``before``; how many were deleted."""
        where, params = in_shard(self._shard)
        with self._db.transaction() as db:
            # Stored times are UTC (as the daemon's clock gives them), so the text compares as the instant does.
            return db.execute(f"DELETE FROM events WHERE time < ? AND {where}",
                              (_iso(before.astimezone(UTC)), *params)).rowcount

    def _append(
        self, db: sqlite3.Connection, event: str, escalation: Escalation, detail: Mapping[str, Any] | None,
        time: datetime,
    ) -> None:
        verdict = escalation.verdict
        db.execute(
            "INSERT INTO events (time, event, escalation_id, target_kind, target_id, session_id, workgroup, policy, "
            "rule, phase, detail, shard) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (_iso(time), event, escalation.escalation_id, verdict.target.kind.value,
             verdict.target.target_id, verdict.target.session_id, verdict.target.workgroup, verdict.policy,
             verdict.rule, escalation.phase.value, json.dumps(dict(detail or {}), default=str), self._writes_to),
        )


def _entry(row: sqlite3.Row) -> JournalEntry:
    return JournalEntry(
        seq=row["seq"], time=datetime.fromisoformat(row["time"]), event=row["event"],
        escalation_id=row["escalation_id"], target_kind=row["target_kind"], target_id=row["target_id"],
        session_id=row["session_id"], workgroup=row["workgroup"], policy=row["policy"], rule=row["rule"],
        phase=row["phase"], detail=json.loads(row["detail"]), shard=row["shard"],
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
