"""The embedded storage: SQLite (WAL) in one file, implementing :class:`~supervisor.storage.Storage`.

The tables' statements live in :mod:`~supervisor.storage.sqlite_journal`, :mod:`~supervisor.storage.sqlite_ledger`
and :mod:`~supervisor.storage.sqlite_watch`, over one :class:`~supervisor.storage.sqlite_db.Database` that
serialises access. The async methods run them in a worker thread (anyio's default thread limiter), so the
event loop never waits on the disk. ``journal`` and ``ledger`` are the synchronous parts, for the CLI's reads.

Shards are a column: :meth:`SqliteStorage.for_shard` returns a view over the same database whose tables read and
write only that shard's rows. There are no leases here: an SQLite journal belongs to one process, which owns
every shard, so no other writer can hold a newer fencing token; a fence is accepted and ignored (this backend
does not implement :class:`~supervisor.storage.LeaseStore`). Retention is :meth:`SqliteStorage.prune_events`,
called by the daemon.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import anyio

from supervisor.core.budgets import Allocation, Counted, Episode
from supervisor.core.escalation import Escalation
from supervisor.core.fleet import Fence, Shard, WatchEntry
from supervisor.core.model import TargetKey, TargetRef
from supervisor.storage.records import EventQuery, JournalEntry
from supervisor.storage.sqlite_db import Database
from supervisor.storage.sqlite_journal import JournalTables
from supervisor.storage.sqlite_ledger import LedgerTables
from supervisor.storage.sqlite_watch import WatchTable

P = ParamSpec("P")
T = TypeVar("T")


class SqliteStorage:
    """The storage in the SQLite file at ``path`` (``":memory:"`` for a throwaway one): the root view."""

    def __init__(self, path: str | Path, *, _database: Database | None = None, _shard: str | None = None) -> None:
        self.path = str(path)
        self._owns_database = _database is None
        self._database = _database or Database(path)
        self.shard_scope = _shard
        self.journal = JournalTables(self._database, _shard)
        self.ledger = LedgerTables(self._database, _shard)
        self._watch = WatchTable(self._database, _shard)

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    def scratch_copy(self) -> SqliteStorage:
        """An in-memory copy to compute on without writing here (the ``budgets`` and ``explain`` previews)."""
        copy = SqliteStorage(":memory:")
        self._database.copy_into(copy._database)
        return copy

    def for_shard(self, shard: Shard, fence: Fence | None = None) -> SqliteStorage:
        """The view of ``shard``'s rows. ``fence`` is ignored: this process owns every shard of its file."""
        return SqliteStorage(self.path, _database=self._database, _shard=shard.scope)

    async def prepare(self, time: datetime) -> None:
        return None  # nothing to register: the shard is a column

    async def save_watch(self, entries: Sequence[WatchEntry]) -> None:
        await self._run(self._watch.save, list(entries))

    async def watch(self, *, due_before: datetime | None = None, due_from: datetime | None = None) -> list[WatchEntry]:
        return await self._run(self._watch.entries, due_before=due_before, due_from=due_from)

    def close_now(self) -> None:
        if self._owns_database:  # a shard view shares the root's connection
            self._database.close()

    async def close(self) -> None:
        if self._owns_database:
            await self._run(self._database.close)

    # -- escalations --------------------------------------------------------------------------------------
    async def claim(self, escalation: Escalation, event: str | None, detail: Mapping[str, Any]) -> bool:
        return await self._run(self.journal.begin_escalation, escalation, event, detail)

    async def save(self, escalation: Escalation, event: str, detail: Mapping[str, Any], *, time: datetime) -> None:
        await self._run(self.journal.save, escalation, event, detail, time=time)

    async def open_escalations(self) -> list[Escalation]:
        return await self._run(self.journal.open_escalations)

    async def claimed_targets(self) -> set[TargetKey]:
        return await self._run(self.journal.claimed_targets)

    async def escalation_for(self, key: TargetKey) -> Escalation | None:
        return await self._run(self.journal.escalation_for, key)

    # -- events and notices --------------------------------------------------------------------------------
    async def record(self, event: str, *, target: TargetRef | None = None, policy: str | None = None,
                     rule: str | None = None, detail: Mapping[str, Any] | None = None, time: datetime) -> None:
        await self._run(self.journal.record, event, target=target, policy=policy, rule=rule, detail=detail,
                        time=time)

    async def mark_once(self, notice_key: str, time: datetime) -> bool:
        return await self._run(self.journal.mark_once, notice_key, time)

    async def recent_events(self, limit: int = 50, *, target_id: str | None = None) -> list[JournalEntry]:
        return await self._run(self.journal.recent_events, limit, target_id=target_id)

    async def query_events(self, query: EventQuery) -> list[JournalEntry]:
        return await self._run(self.journal.query_events, query)

    async def target_ids(self, prefix: str, *, limit: int = 20) -> list[str]:
        return await self._run(self.journal.target_ids, prefix, limit)

    async def prune_events(self, before: datetime) -> int:
        return await self._run(self.journal.prune_events, before)

    # -- ledger ---------------------------------------------------------------------------------------------
    async def count(self, session_id: str, workgroup: str, millis: int, observed_at: datetime,
                    allocate: Callable[[int, Counted | None], Allocation], *,
                    ended: bool = False) -> tuple[int, Counted | None]:
        return await self._run(self.ledger.count, session_id, workgroup, millis, observed_at, allocate, ended=ended)

    async def mark_ended(self, session_id: str, workgroup: str, time: datetime) -> None:
        await self._run(self.ledger.mark_ended, session_id, workgroup, time)

    async def open_sessions(self) -> dict[str, Counted]:
        return await self._run(self.ledger.open_sessions)

    async def counted(self, session_ids: Iterable[str]) -> dict[str, Counted]:
        return await self._run(self.ledger.counted, list(session_ids))

    async def spent(self, budget: str, since: datetime, until: datetime) -> float:
        return await self._run(self.ledger.spent, budget, since, until)

    async def prune(self, budget: str, before: datetime) -> None:
        await self._run(self.ledger.prune, budget, before)

    async def checkpoint(self) -> datetime | None:
        return await self._run(self.ledger.checkpoint)

    async def set_checkpoint(self, time: datetime) -> None:
        await self._run(self.ledger.set_checkpoint, time)

    async def open_episode(self, budget: str, at_percent: float, action: str, period_key: str, spent_usd: float,
                           time: datetime) -> Episode | None:
        return await self._run(self.ledger.open_episode, budget, at_percent, action, period_key, spent_usd, time)

    async def open_episodes(self, budget: str | None = None) -> list[Episode]:
        return await self._run(self.ledger.open_episodes, budget)

    async def episode_count(self, budget: str, at_percent: float) -> int:
        return await self._run(self.ledger.episode_count, budget, at_percent)

    async def close_episode(self, episode_id: int, time: datetime) -> None:
        await self._run(self.ledger.close_episode, episode_id, time)

    async def record_disabled(self, workgroup: str, episode: Episode, time: datetime) -> None:
        await self._run(self.ledger.record_disabled, workgroup, episode, time)

    async def disabled_in(self, episode_id: int) -> set[str]:
        return await self._run(self.ledger.disabled_in, episode_id)

    async def forget_disabled(self, workgroup: str, episode_id: int) -> None:
        await self._run(self.ledger.forget_disabled, workgroup, episode_id)

    async def releasable(self) -> dict[str, list[tuple[int, str]]]:
        return await self._run(self.ledger.releasable)

    async def mark_enabled(self, workgroup: str, time: datetime) -> None:
        await self._run(self.ledger.mark_enabled, workgroup, time)
