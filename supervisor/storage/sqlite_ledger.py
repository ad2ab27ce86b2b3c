"""The budget ledger's tables in SQLite: spend counted per session and per budget bucket, threshold
episodes, workgroups the daemon disabled.

No DPU-millisecond is counted twice: each session row holds the ``DpuExecutionInMillis`` already counted,
and a new observation adds only the difference, allocated to the budgets' buckets in the same transaction.
Counted sessions, the accounting checkpoint and disabled workgroups belong to a shard (built for the root,
``shard=None``, the tables read every shard's and write the implicit shard's); budget buckets and episodes are
shared by every shard. The methods are synchronous and short; callers run them in a worker thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from datetime import datetime

from supervisor.core.budgets import Allocation, Counted, Episode
from supervisor.storage.sqlite_db import Database
from supervisor.storage.sqlite_journal import in_shard

CHECKPOINT_KEY = "spend_checkpoint"


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


class LedgerTables:
    """The ledger as one shard sees it (``shard``: its scope; None for the root)."""

    def __init__(self, db: Database, shard: str | None = None) -> None:
        self._db = db
        self._shard = shard
        self._writes_to = shard or ""
        # The implicit shard keeps the key older journals have; a named shard's checkpoint is its own.
        self._checkpoint_key = f"{CHECKPOINT_KEY}:{shard}" if shard else CHECKPOINT_KEY

    # -- spend ------------------------------------------------------------------------------------------

    def count(
        self,
        session_id: str,
        workgroup: str,
        millis: int,
        observed_at: datetime,
        allocate: Callable[[int, Counted | None], Allocation],
        *,
        ended: bool = False,
    ) -> tuple[int, Counted | None]:
        """Count a session observation; returns the DPU-milliseconds added and the previous observation.

        ``allocate(delta_millis, previous)`` says which budget buckets receive the delta; it runs inside
        the transaction so the counted total and the buckets always agree.
        """
        with self._db.transaction() as db:
            row = db.execute("SELECT * FROM session_spend WHERE shard=? AND session_id=?",
                             (self._writes_to, session_id)).fetchone()
            previous = _counted(row) if row else None
            counted = previous.millis if previous else 0
            delta = max(0, millis - counted)
            if delta:
                for budget, bucket_start, usd in allocate(delta, previous):
                    db.execute(
                        "INSERT INTO budget_spend VALUES (?, ?, ?) "
                        "ON CONFLICT (budget, bucket_start) DO UPDATE SET usd = usd + excluded.usd",
                        (budget, _iso(bucket_start), usd),
                    )
            db.execute(
                "INSERT INTO session_spend (shard, session_id, workgroup, counted_millis, observed_at, ended) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (shard, session_id) DO UPDATE SET "
                "counted_millis=max(counted_millis, excluded.counted_millis), observed_at=excluded.observed_at, "
                "ended=max(ended, excluded.ended)",
                (self._writes_to, session_id, workgroup, max(millis, counted), _iso(observed_at), int(ended)),
            )
        return delta, previous

    def mark_ended(self, session_id: str, workgroup: str, time: datetime) -> None:
        with self._db.transaction() as db:
            db.execute(
                "INSERT INTO session_spend (shard, session_id, workgroup, counted_millis, observed_at, ended) "
                "VALUES (?, ?, ?, 0, ?, 1) ON CONFLICT (shard, session_id) DO UPDATE SET ended=1",
                (self._writes_to, session_id, workgroup, _iso(time)),
            )

    def open_sessions(self) -> dict[str, Counted]:
        """Sessions counted but not known to have ended."""
        where, params = in_shard(self._shard)
        with self._db.reading() as db:
            rows = db.execute(f"SELECT * FROM session_spend WHERE ended=0 AND {where}", params).fetchall()
        return {row["session_id"]: _counted(row) for row in rows}

    def counted(self, session_ids: Iterable[str]) -> dict[str, Counted]:
        ids = list(session_ids)
        found: dict[str, Counted] = {}
        where, params = in_shard(self._shard)
        with self._db.reading() as db:
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                rows = db.execute(
                    f"SELECT * FROM session_spend WHERE session_id IN ({','.join('?' * len(chunk))}) AND {where}",
                    (*chunk, *params),
                ).fetchall()
                found.update({row["session_id"]: _counted(row) for row in rows})
        return found

    def spent(self, budget: str, since: datetime, until: datetime) -> float:
        """USD in ``budget``'s buckets that start in ``[since, until)``."""
        with self._db.reading() as db:
            row = db.execute(
                "SELECT COALESCE(SUM(usd), 0) FROM budget_spend WHERE budget=? AND bucket_start>=? AND bucket_start<?",
                (budget, _iso(since), _iso(until)),
            ).fetchone()
        return float(row[0])

    def prune(self, budget: str, before: datetime) -> None:
        with self._db.transaction() as db:
            db.execute("DELETE FROM budget_spend WHERE budget=? AND bucket_start<?", (budget, _iso(before)))

    def checkpoint(self) -> datetime | None:
        """When the last complete accounting pass started (ended sessions before it are counted)."""
        with self._db.reading() as db:
            row = db.execute("SELECT value FROM settings_kv WHERE key=?", (self._checkpoint_key,)).fetchone()
        return datetime.fromisoformat(row[0]) if row else None

    def set_checkpoint(self, time: datetime) -> None:
        with self._db.transaction() as db:
            db.execute("INSERT OR REPLACE INTO settings_kv VALUES (?, ?)", (self._checkpoint_key, _iso(time)))

    # -- threshold episodes -----------------------------------------------------------------------------

    def open_episode(
        self, budget: str, at_percent: float, action: str, period_key: str, spent_usd: float, time: datetime
    ) -> Episode | None:
        """Open an episode unless one is open for this threshold or this period already had one."""
        with self._db.transaction() as db:
            if db.execute("SELECT 1 FROM budget_episodes WHERE budget=? AND at_percent=? AND closed_at IS NULL",
                          (budget, at_percent)).fetchone():
                return None
            cursor = db.execute(
                "INSERT OR IGNORE INTO budget_episodes (budget, at_percent, action, period_key, opened_at, spent_usd) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (budget, at_percent, action, period_key or _iso(time), _iso(time), spent_usd),
            )
            if cursor.rowcount != 1:
                return None
            episode_id = cursor.lastrowid
        assert episode_id is not None
        return Episode(episode_id, budget, at_percent, action, period_key or _iso(time), time, spent_usd)

    def open_episodes(self, budget: str | None = None) -> list[Episode]:
        query = "SELECT * FROM budget_episodes WHERE closed_at IS NULL"
        params: tuple[str, ...] = ()
        if budget is not None:
            query += " AND budget=?"
            params = (budget,)
        with self._db.reading() as db:
            rows = db.execute(query + " ORDER BY at_percent", params).fetchall()
        return [_episode(row) for row in rows]

    def episode_count(self, budget: str, at_percent: float) -> int:
        with self._db.reading() as db:
            row = db.execute("SELECT COUNT(*) FROM budget_episodes WHERE budget=? AND at_percent=?",
                             (budget, at_percent)).fetchone()
        return int(row[0])

    def close_episode(self, episode_id: int, time: datetime) -> None:
        with self._db.transaction() as db:
            db.execute("UPDATE budget_episodes SET closed_at=? WHERE episode_id=?", (_iso(time), episode_id))

    # -- disabled workgroups ----------------------------------------------------------------------------

    def record_disabled(self, workgroup: str, episode: Episode, time: datetime) -> None:
        with self._db.transaction() as db:
            db.execute("INSERT OR IGNORE INTO disabled_workgroups (shard, workgroup, episode_id, budget, disabled_at) "
                       "VALUES (?, ?, ?, ?, ?)", (self._writes_to, workgroup, episode.episode_id, episode.budget,
                                                  _iso(time)))

    def disabled_in(self, episode_id: int) -> set[str]:
        """Workgroups the daemon disabled (or meant to) for this episode, enabled since or not."""
        where, params = in_shard(self._shard)
        with self._db.reading() as db:
            rows = db.execute(f"SELECT workgroup FROM disabled_workgroups WHERE episode_id=? AND {where}",
                              (episode_id, *params)).fetchall()
        return {row[0] for row in rows}

    def forget_disabled(self, workgroup: str, episode_id: int) -> None:
        """The disable call failed: nothing to re-enable for it."""
        with self._db.transaction() as db:
            db.execute("DELETE FROM disabled_workgroups WHERE shard=? AND workgroup=? AND episode_id=?",
                       (self._writes_to, workgroup, episode_id))

    def held_disabled(self) -> dict[str, list[str]]:
        """Workgroup → budgets whose open episode keeps it disabled."""
        held: dict[str, list[str]] = {}
        for workgroup, _episode_id, budget in self._disables(episode_closed=False):
            held.setdefault(workgroup, []).append(budget)
        return held

    def releasable(self) -> dict[str, list[tuple[int, str]]]:
        """Workgroup → (episode, budget) of disables whose episode is over and no open episode holds it."""
        held = self.held_disabled()
        released: dict[str, list[tuple[int, str]]] = {}
        for workgroup, episode_id, budget in self._disables(episode_closed=True):
            if workgroup not in held:
                released.setdefault(workgroup, []).append((episode_id, budget))
        return released

    def _disables(self, *, episode_closed: bool) -> list[tuple[str, int, str]]:
        """The workgroups still disabled by a budget episode that is over (or still open): (workgroup, episode,
        budget)."""
        where, params = in_shard(self._shard, "d.shard")
        closed = "IS NOT NULL" if episode_closed else "IS NULL"
        with self._db.reading() as db:
            rows = db.execute(
                "SELECT d.workgroup, d.episode_id, d.budget FROM disabled_workgroups d JOIN budget_episodes e "
                f"ON d.episode_id = e.episode_id WHERE d.enabled_at IS NULL AND e.closed_at {closed} AND {where}",
                params,
            ).fetchall()
        return [(str(row[0]), int(row[1]), str(row[2])) for row in rows]

    def mark_enabled(self, workgroup: str, time: datetime) -> None:
        """Every released disable of ``workgroup`` is undone."""
        with self._db.transaction() as db:
            db.execute(
                "UPDATE disabled_workgroups SET enabled_at=? WHERE shard=? AND workgroup=? AND enabled_at IS NULL "
                "AND episode_id IN (SELECT episode_id FROM budget_episodes WHERE closed_at IS NOT NULL)",
                (_iso(time), self._writes_to, workgroup),
            )


def _counted(row: sqlite3.Row) -> Counted:
    return Counted(row["session_id"], row["workgroup"], int(row["counted_millis"]),
                   datetime.fromisoformat(row["observed_at"]), bool(row["ended"]))


def _episode(row: sqlite3.Row) -> Episode:
    closed = row["closed_at"]
    return Episode(
        int(row["episode_id"]), row["budget"], float(row["at_percent"]), row["action"], row["period_key"],
        datetime.fromisoformat(row["opened_at"]), float(row["spent_usd"]),
        datetime.fromisoformat(closed) if closed else None,
    )
