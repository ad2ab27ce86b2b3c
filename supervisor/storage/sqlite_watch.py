"""The watch list in SQLite: each shard's watched targets and the next instant each must be looked at.

A save writes only the rows that changed (a target added or its deadline moved) or were removed since the table
last held what this view knows (read once, by its first save), in one transaction, so a reader (a new owner of the
shard) sees either the old list or the new one; a save that changed nothing writes nothing (no transaction, no
fsync), so saving often costs nothing at rest. The methods are synchronous and short; callers run them in a worker
thread.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime

from supervisor.core.fleet import WatchEntry
from supervisor.core.model import TargetKey, TargetKind, TargetRef
from supervisor.storage.sqlite_db import Database
from supervisor.storage.sqlite_journal import in_shard

Row = tuple[str, str, str, str, str, str, str]  # the columns of ``watch``, in order


class WatchTable:
    """One shard's watch list (``shard``: its scope; None for the root, which reads every shard's and writes the
    implicit shard's)."""

    def __init__(self, db: Database, shard: str | None = None) -> None:
        self._db = db
        self._shard = shard
        self._writes_to = shard or ""
        self._stored: dict[str, Row] | None = None  # the rows the table holds for this shard (None: not read yet)
        self._saving = threading.Lock()

    def save(self, entries: Sequence[WatchEntry]) -> None:
        rows = {str(entry.target.key): self._row(entry) for entry in entries}
        with self._saving:
            stored = self._stored if self._stored is not None else self._read()
            changed = [row for key, row in rows.items() if stored.get(key) != row]
            removed = [(self._writes_to, key) for key in stored if key not in rows]
            if changed or removed:
                self._stored = None  # unknown until the transaction has committed
                with self._db.transaction() as db:
                    db.executemany("DELETE FROM watch WHERE shard=? AND target_key=?", removed)
                    db.executemany("INSERT OR REPLACE INTO watch VALUES (?, ?, ?, ?, ?, ?, ?)", changed)
            self._stored = rows

    def _row(self, entry: WatchEntry) -> Row:
        target = entry.target
        return (self._writes_to, str(target.key), target.kind.value, target.target_id, target.session_id,
                target.workgroup, _text(entry.next_check_at))

    def _read(self) -> dict[str, Row]:
        with self._db.reading() as db:
            found = db.execute("SELECT shard, target_key, target_kind, target_id, session_id, workgroup, "
                               "next_check_at FROM watch WHERE shard=?", (self._writes_to,)).fetchall()
        return {row["target_key"]: (row[0], row[1], row[2], row[3], row[4], row[5], row[6]) for row in found}

    def entries(self, *, due_before: datetime | None = None, due_from: datetime | None = None) -> list[WatchEntry]:
        where, params = in_shard(self._shard)
        # next_check_at is stored as ISO-8601 with microseconds in UTC, so text order is time order.
        if due_before is not None:
            where, params = f"{where} AND next_check_at < ?", (*params, _text(due_before))
        if due_from is not None:
            where, params = f"{where} AND next_check_at >= ?", (*params, _text(due_from))
        with self._db.reading() as db:
            rows = db.execute(f"SELECT * FROM watch WHERE {where} ORDER BY shard, target_key", params).fetchall()
        return [WatchEntry(TargetRef(TargetKind(row["target_kind"]), row["target_id"], row["session_id"],
                                     row["workgroup"], TargetKey.parse(row["target_key"]).scope),
                           datetime.fromisoformat(row["next_check_at"]))
                for row in rows]


def _text(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat(timespec="microseconds")
