"""The durable journal: SQLite in WAL mode; the only module that touches the database.

Two tables: ``escalations`` holds the current state of every enforcement (one row per target, ever, so a
target is never acted on twice), ``events`` is the append-only history of every decision and every step,
written before each API call and after its answer. ``notices`` remembers one-off notices (warnings) so
they are sent once. A restart reads ``open_escalations()`` and resumes each from where it stopped.
Schema 2 adds the budget tables (``session_spend``, ``budget_spend``, ``budget_episodes``,
``disabled_workgroups``, ``settings_kv``); their queries live in :mod:`supervisor.ledger`, which works
through :meth:`Journal.transaction` and :meth:`Journal.reading`.

The methods are synchronous and short; the daemon calls them from a worker thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from supervisor.machine import Escalation, Phase
from supervisor.model import TargetRef, Verdict

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS escalations (
    escalation_id TEXT PRIMARY KEY,
    target_key TEXT NOT NULL UNIQUE,
    target_kind TEXT NOT NULL,
    target_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    workgroup TEXT NOT NULL,
    policy TEXT NOT NULL,
    rule TEXT NOT NULL,
    observed REAL NOT NULL,
    limit_value REAL NOT NULL,
    unit TEXT NOT NULL,
    crossed_at TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    action TEXT NOT NULL,
    mode TEXT NOT NULL,
    phase TEXT NOT NULL,
    created_at TEXT NOT NULL,
    next_step_at TEXT NOT NULL,
    stop_intent_at TEXT,
    stop_sent_at TEXT,
    terminate_intent_at TEXT,
    terminate_sent_at TEXT,
    terminate_attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    outcome TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS escalations_open ON escalations (phase) WHERE phase != 'done';
CREATE INDEX IF NOT EXISTS escalations_session ON escalations (session_id);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    event TEXT NOT NULL,
    escalation_id TEXT,
    target_kind TEXT,
    target_id TEXT,
    session_id TEXT,
    workgroup TEXT,
    policy TEXT,
    rule TEXT,
    phase TEXT,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_target ON events (target_id);
CREATE INDEX IF NOT EXISTS events_session ON events (session_id);
CREATE TABLE IF NOT EXISTS notices (
    notice_key TEXT PRIMARY KEY,
    time TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS session_spend (
    session_id TEXT PRIMARY KEY,
    workgroup TEXT NOT NULL,
    counted_millis INTEGER NOT NULL,
    observed_at TEXT NOT NULL,
    ended INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS session_spend_open ON session_spend (ended) WHERE ended = 0;
CREATE TABLE IF NOT EXISTS budget_spend (
    budget TEXT NOT NULL,
    bucket_start TEXT NOT NULL,
    usd REAL NOT NULL,
    PRIMARY KEY (budget, bucket_start)
);
CREATE TABLE IF NOT EXISTS budget_episodes (
    episode_id INTEGER PRIMARY KEY AUTOINCREMENT,
    budget TEXT NOT NULL,
    at_percent REAL NOT NULL,
    action TEXT NOT NULL,
    period_key TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    spent_usd REAL NOT NULL,
    closed_at TEXT,
    UNIQUE (budget, at_percent, period_key)
);
CREATE TABLE IF NOT EXISTS disabled_workgroups (
    workgroup TEXT NOT NULL,
    episode_id INTEGER NOT NULL,
    budget TEXT NOT NULL,
    disabled_at TEXT NOT NULL,
    enabled_at TEXT,
    PRIMARY KEY (workgroup, episode_id)
);
CREATE TABLE IF NOT EXISTS settings_kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


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


class Journal:
    """The journal at ``path`` (``":memory:"`` for a throwaway one)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before the API call it precedes is sent.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"journal {self.path} has schema version {version}, newer than this version of "
                f"athena-supervisor understands ({SCHEMA_VERSION}); upgrade athena-supervisor"
            )
        if version < SCHEMA_VERSION:
            # executescript commits by itself; every statement is idempotent (IF NOT EXISTS).
            self._db.executescript(SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION};")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An immediate write transaction (for :mod:`supervisor.ledger`)."""
        with self._transaction() as db:
            yield db

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, for reads, under the journal's lock (for :mod:`supervisor.ledger`)."""
        with self._lock:
            yield self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- escalations ---------------------------------------------------------------------------------

    def begin_escalation(self, escalation: Escalation, event: str, detail: Mapping[str, Any] | None = None) -> bool:
        """Record a new escalation and its decision event (at ``created_at``); False if the target already has
        one."""
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO escalations VALUES (:escalation_id, :target_key, :target_kind, :target_id, "
                    ":session_id, :workgroup, :policy, :rule, :observed, :limit_value, :unit, :crossed_at, "
                    ":decided_at, :action, :mode, :phase, :created_at, :next_step_at, :stop_intent_at, "
                    ":stop_sent_at, :terminate_intent_at, :terminate_sent_at, :terminate_attempts, :failures, "
                    ":outcome, :updated_at)",
                    _escalation_row(escalation, escalation.created_at),
                )
                self._append(db, event, escalation, detail, escalation.created_at)
        except sqlite3.IntegrityError:
            return False
        return True

    def save(
        self, escalation: Escalation, event: str, detail: Mapping[str, Any] | None = None, *, time: datetime
    ) -> None:
        """Store the new state of an escalation and append the event that led to it, atomically."""
        row = _escalation_row(escalation, time)
        with self._transaction() as db:
            db.execute(
                "UPDATE escalations SET phase=:phase, next_step_at=:next_step_at, stop_intent_at=:stop_intent_at, "
                "stop_sent_at=:stop_sent_at, terminate_intent_at=:terminate_intent_at, "
                "terminate_sent_at=:terminate_sent_at, terminate_attempts=:terminate_attempts, "
                "failures=:failures, outcome=:outcome, updated_at=:updated_at WHERE escalation_id=:escalation_id",
                row,
            )
            self._append(db, event, escalation, detail, time)

    def has_escalation(self, target_key: str) -> bool:
        with self._lock:
            found = self._db.execute("SELECT 1 FROM escalations WHERE target_key=?", (target_key,)).fetchone()
        return found is not None

    def known_targets(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT target_key FROM escalations")}

    def open_escalations(self) -> list[Escalation]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM escalations WHERE phase != 'done' ORDER BY created_at"
            ).fetchall()
        return [_escalation_from_row(row) for row in rows]

    def escalation_for(self, target_key: str) -> Escalation | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM escalations WHERE target_key=?", (target_key,)).fetchone()
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
        with self._transaction() as db:
            db.execute(
                "INSERT INTO events (time, event, target_kind, target_id, session_id, workgroup, policy, rule, "
                "detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (_iso(time), event, target.kind if target else None, target.target_id if target else None,
                 target.session_id if target else None, target.workgroup if target else None, policy, rule,
                 json.dumps(dict(detail or {}), default=str)),
            )

    def mark_once(self, notice_key: str, time: datetime) -> bool:
        """True the first time ``notice_key`` is marked, False ever after."""
        with self._transaction() as db:
            cursor = db.execute("INSERT OR IGNORE INTO notices VALUES (?, ?)", (notice_key, _iso(time)))
            return cursor.rowcount == 1

    def recent_events(self, limit: int = 50, *, target_id: str | None = None) -> list[JournalEntry]:
        """The newest ``limit`` events, newest first (optionally only those about one target or session)."""
        query = "SELECT * FROM events"
        params: tuple[Any, ...] = ()
        if target_id is not None:
            query += " WHERE target_id=? OR session_id=?"
            params = (target_id, target_id)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY seq DESC LIMIT ?", (*params, limit)).fetchall()
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
            (_iso(time), event, escalation.escalation_id, verdict.target.kind,
             verdict.target.target_id, verdict.target.session_id, verdict.target.workgroup, verdict.policy,
             verdict.rule, escalation.phase.value, json.dumps(dict(detail or {}), default=str)),
        )


def _escalation_row(escalation: Escalation, updated_at: datetime) -> dict[str, Any]:
    verdict = escalation.verdict
    return {
        "escalation_id": escalation.escalation_id, "target_key": verdict.target.key,
        "target_kind": verdict.target.kind, "target_id": verdict.target.target_id,
        "session_id": verdict.target.session_id, "workgroup": verdict.target.workgroup, "policy": verdict.policy,
        "rule": verdict.rule, "observed": verdict.observed, "limit_value": verdict.limit, "unit": verdict.unit,
        "crossed_at": _iso(verdict.crossed_at), "decided_at": _iso(verdict.decided_at), "action": verdict.action,
        "mode": verdict.mode, "phase": escalation.phase.value, "created_at": _iso(escalation.created_at),
        "next_step_at": _iso(escalation.next_step_at), "stop_intent_at": _iso(escalation.stop_intent_at),
        "stop_sent_at": _iso(escalation.stop_sent_at), "terminate_intent_at": _iso(escalation.terminate_intent_at),
        "terminate_sent_at": _iso(escalation.terminate_sent_at), "terminate_attempts": escalation.terminate_attempts,
        "failures": escalation.failures, "outcome": escalation.outcome,
        "updated_at": _iso(updated_at),
    }


def _escalation_from_row(row: sqlite3.Row) -> Escalation:
    verdict = Verdict(
        target=TargetRef(row["target_kind"], row["target_id"], row["session_id"], row["workgroup"]),
        policy=row["policy"], rule=row["rule"], observed=row["observed"], limit=row["limit_value"],
        unit=row["unit"], crossed_at=datetime.fromisoformat(row["crossed_at"]),
        decided_at=datetime.fromisoformat(row["decided_at"]), action=row["action"], mode=row["mode"],
    )
    return Escalation(
        escalation_id=row["escalation_id"], verdict=verdict, phase=Phase(row["phase"]),
        created_at=datetime.fromisoformat(row["created_at"]),
        next_step_at=datetime.fromisoformat(row["next_step_at"]),
        stop_intent_at=_time(row["stop_intent_at"]), stop_sent_at=_time(row["stop_sent_at"]),
        terminate_intent_at=_time(row["terminate_intent_at"]), terminate_sent_at=_time(row["terminate_sent_at"]),
        terminate_attempts=row["terminate_attempts"], failures=row["failures"], outcome=row["outcome"],
    )
