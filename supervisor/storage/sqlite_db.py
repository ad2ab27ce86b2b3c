"""The SQLite database behind the storage: one connection, one lock, the schema and its migrations.

Every statement of the storage runs through :meth:`Database.transaction` (an immediate write transaction)
or :meth:`Database.reading`, both under one lock: this is the one place access is serialised.
WAL mode; ``synchronous=FULL`` so a commit is on disk before the API call it precedes is sent.

Schema history: 1 journal (escalations, events, notices); 2 adds the budget ledger (session_spend,
budget_spend, budget_episodes, disabled_workgroups, settings_kv); 3 adds ``escalations.origin`` (policy or
budget) and ``escalations.intent_at`` (workgroup updates); 4 adds shards (a ``shard`` column on escalations,
events, session_spend and disabled_workgroups, part of their unique keys; ``''`` is the implicit shard, which
is every row of an older journal) and the ``watch`` table. A journal of schema 1-3 is migrated in place, in one
transaction, when it is opened.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA_VERSION = 4

TABLES = {
    "escalations": """CREATE TABLE IF NOT EXISTS escalations (
    escalation_id TEXT PRIMARY KEY,
    shard TEXT NOT NULL DEFAULT '',
    target_key TEXT NOT NULL,
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
    updated_at TEXT NOT NULL,
    origin TEXT NOT NULL DEFAULT 'policy',
    intent_at TEXT,
    UNIQUE (shard, target_key)
)""",
    "events": """CREATE TABLE IF NOT EXISTS events (
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
    detail TEXT NOT NULL DEFAULT '{}',
    shard TEXT NOT NULL DEFAULT ''
)""",
    "notices": """CREATE TABLE IF NOT EXISTS notices (
    notice_key TEXT PRIMARY KEY,
    time TEXT NOT NULL
)""",
    "session_spend": """CREATE TABLE IF NOT EXISTS session_spend (
    shard TEXT NOT NULL DEFAULT '',
    session_id TEXT NOT NULL,
    workgroup TEXT NOT NULL,
    counted_millis INTEGER NOT NULL,
    observed_at TEXT NOT NULL,
    ended INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (shard, session_id)
)""",
    "budget_spend": """CREATE TABLE IF NOT EXISTS budget_spend (
    budget TEXT NOT NULL,
    bucket_start TEXT NOT NULL,
    usd REAL NOT NULL,
    PRIMARY KEY (budget, bucket_start)
)""",
    "budget_episodes": """CREATE TABLE IF NOT EXISTS budget_episodes (
    episode_id INTEGER PRIMARY KEY AUTOINCREMENT,
    budget TEXT NOT NULL,
    at_percent REAL NOT NULL,
    action TEXT NOT NULL,
    period_key TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    spent_usd REAL NOT NULL,
    closed_at TEXT,
    UNIQUE (budget, at_percent, period_key)
)""",
    "disabled_workgroups": """CREATE TABLE IF NOT EXISTS disabled_workgroups (
    shard TEXT NOT NULL DEFAULT '',
    workgroup TEXT NOT NULL,
    episode_id INTEGER NOT NULL,
    budget TEXT NOT NULL,
    disabled_at TEXT NOT NULL,
    enabled_at TEXT,
    PRIMARY KEY (shard, workgroup, episode_id)
)""",
    "settings_kv": """CREATE TABLE IF NOT EXISTS settings_kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
)""",
    "watch": """CREATE TABLE IF NOT EXISTS watch (
    shard TEXT NOT NULL,
    target_key TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    workgroup TEXT NOT NULL,
    next_check_at TEXT NOT NULL,
    PRIMARY KEY (shard, target_key)
)""",
}

INDEXES = (
    "CREATE INDEX IF NOT EXISTS escalations_open ON escalations (phase) WHERE phase != 'done'",
    "CREATE INDEX IF NOT EXISTS escalations_session ON escalations (session_id)",
    "CREATE INDEX IF NOT EXISTS events_target ON events (target_id)",
    "CREATE INDEX IF NOT EXISTS events_session ON events (session_id)",
    "CREATE INDEX IF NOT EXISTS events_shard ON events (shard, seq)",
    "CREATE INDEX IF NOT EXISTS events_time ON events (time)",
    "CREATE INDEX IF NOT EXISTS session_spend_open ON session_spend (ended) WHERE ended = 0",
)

SCHEMA = ";\n".join((*TABLES.values(), *INDEXES)) + ";\n"
"""The current schema, every statement idempotent (``IF NOT EXISTS``)."""

# Columns added to an existing table by ALTER TABLE (schema 3: origin, intent_at; schema 4: events.shard).
ADDED_COLUMNS = (
    ("escalations", "origin", "TEXT NOT NULL DEFAULT 'policy'"),
    ("escalations", "intent_at", "TEXT"),
    ("events", "shard", "TEXT NOT NULL DEFAULT ''"),
)

# Tables whose unique key gains ``shard`` in schema 4: SQLite cannot change a key in place, so they are copied
# into a new table (their rows land in the implicit shard, ``''``).
REKEYED_TABLES = ("escalations", "session_spend", "disabled_workgroups")


class SchemaTooNew(RuntimeError):
    """The journal was written by a newer version of athena-supervisor."""


class Database:
    """The SQLite file at ``path`` (``":memory:"`` for a throwaway one), created and migrated on open."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._connection.row_factory = sqlite3.Row
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=FULL")
            self._connection.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except BaseException:
            self._connection.close()
            raise

    def _migrate(self) -> None:
        db = self._connection
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"journal {self.path} has schema version {version}, newer than this version of "
                f"athena-supervisor understands ({SCHEMA_VERSION}); upgrade athena-supervisor"
            )
        if version == SCHEMA_VERSION:
            return
        # One transaction (SQLite's DDL is transactional): a crash half way leaves the journal as it was.
        db.execute("BEGIN IMMEDIATE")
        try:
            _upgrade(db)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def copy_into(self, other: Database) -> None:
        """Copy every table into ``other`` (SQLite's online backup), e.g. a scratch in-memory database."""
        with self._lock, other._lock:
            self._connection.backup(other._connection)

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An immediate write transaction, committed on success and rolled back on any error."""
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, for reads, under the lock."""
        with self._lock:
            yield self._connection


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row["name"] for row in db.execute(f"PRAGMA table_info({table})")]


def _upgrade(db: sqlite3.Connection) -> None:
    """Bring a journal of any older schema (or an empty file) to :data:`SCHEMA_VERSION`, keeping every row."""
    existing = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table, column, declaration in ADDED_COLUMNS:
        if table in existing and column not in _columns(db, table):
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    if "escalations" in existing:
        db.execute("UPDATE escalations SET origin='budget' WHERE rule LIKE 'budget:%' AND origin='policy'")
    for table in REKEYED_TABLES:
        if table in existing and "shard" not in _columns(db, table):
            kept = ", ".join(_columns(db, table))
            db.execute(f"ALTER TABLE {table} RENAME TO {table}_before_v4")
            db.execute(TABLES[table])
            db.execute(f"INSERT INTO {table} ({kept}) SELECT {kept} FROM {table}_before_v4")
            db.execute(f"DROP TABLE {table}_before_v4")  # and its indexes, created again below
    for statement in (*TABLES.values(), *INDEXES):
        db.execute(statement)
