"""The watch list in SQLite: each shard's watched targets and the next instant each must be looked at.

A save replaces the shard's whole list in one transaction, so a reader (a new owner of the shard) sees either
the old list or the new one. The methods are synchronous and short; callers run them in a worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from supervisor.core.fleet import WatchEntry
from supervisor.core.model import TargetKey, TargetKind, TargetRef
from supervisor.storage.sqlite_db import Database
from supervisor.storage.sqlite_journal import in_shard


class WatchTable:
    """One shard's watch list (``shard``: its scope; None for the root, which reads every shard's and writes the
    implicit shard's)."""

    def __init__(self, db: Database, shard: str | None = None) -> None:
        self._db = db
        self._shard = shard
        self._writes_to = shard or ""

    def save(self, entries: Sequence[WatchEntry]) -> None:
        rows = [(self._writes_to, str(entry.target.key), entry.target.kind.value, entry.target.target_id,
                 entry.target.session_id, entry.target.workgroup,
                 entry.next_check_at.isoformat(timespec="microseconds"))
                for entry in entries]
        with self._db.transaction() as db:
            db.execute("DELETE FROM watch WHERE shard=?", (self._writes_to,))
            db.executemany("INSERT OR REPLACE INTO watch VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def entries(self) -> list[WatchEntry]:
        where, params = in_shard(self._shard)
        with self._db.reading() as db:
            rows = db.execute(f"SELECT * FROM watch WHERE {where} ORDER BY shard, target_key", params).fetchall()
        return [WatchEntry(TargetRef(TargetKind(row["target_kind"]), row["target_id"], row["session_id"],
                                     row["workgroup"], TargetKey.parse(row["target_key"]).scope),
                           datetime.fromisoformat(row["next_check_at"]))
                for row in rows]
