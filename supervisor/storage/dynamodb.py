"""The shared storage: one DynamoDB table for every replica of a fleet, implementing
:class:`~supervisor.storage.Storage` and :class:`~supervisor.storage.LeaseStore`.

The concerns live in their modules, over one :class:`~supervisor.storage.dynamodb_table.Table` (every call
through the gateway): :mod:`~supervisor.storage.dynamodb_journal` (claims, escalations, events, notices),
:mod:`~supervisor.storage.dynamodb_ledger` (counted spend, buckets, checkpoint, episodes, disabled workgroups),
:mod:`~supervisor.storage.dynamodb_watch` (the watch list), :mod:`~supervisor.storage.dynamodb_leases` (leases,
heartbeats, the fence condition). The item layout, and which items expire through the ``ttl`` attribute, is in
:mod:`~supervisor.storage.dynamodb_layout`.

A view of one shard reads and writes that shard's partitions; the root view writes the implicit shard's and
reads every registered shard's, one Query per shard (:mod:`~supervisor.storage.dynamodb_registry`).
Retention: every event (and every other item that may expire) carries ``ttl`` = its time + ``retention``, and
DynamoDB deletes it within a few days of that instant; :meth:`DynamoDbStorage.prune_events` has nothing to do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from supervisor.core.budgets import Allocation, Counted, Episode
from supervisor.core.escalation import Escalation
from supervisor.core.fleet import Fence, Lease, Shard, WatchEntry
from supervisor.core.model import TargetKey, TargetRef
from supervisor.storage.dynamodb_journal import DynamoJournal, mark_once
from supervisor.storage.dynamodb_layout import ShardKeys
from supervisor.storage.dynamodb_leases import DynamoLeases
from supervisor.storage.dynamodb_ledger import DynamoBudgets, DynamoLedger
from supervisor.storage.dynamodb_registry import ShardRegistry
from supervisor.storage.dynamodb_table import Table
from supervisor.storage.dynamodb_watch import DynamoWatch
from supervisor.storage.records import EventQuery, JournalEntry


class _ShardView:
    """The parts of the storage that belong to one shard."""

    def __init__(self, table: Table, registry: ShardRegistry, scope: str, fence: Fence | None) -> None:
        self.journal = DynamoJournal(table, registry, scope, fence)
        self.ledger = DynamoLedger(table, registry, scope)
        self.watch = DynamoWatch(table, registry, scope, fence)


class DynamoDbStorage:
    """The storage in ``table``; settled records expire ``retention`` after their time. This is the root view.

    The table's gateway belongs to whoever built the table (:func:`~supervisor.storage.factory.open_storage`):
    closing the storage closes nothing.
    """

    def __init__(self, table: Table, *, retention: timedelta, _registry: ShardRegistry | None = None,
                 _shard: str | None = None, _fence: Fence | None = None) -> None:
        self.table = table
        self.retention = retention
        self.shard_scope = _shard
        self.fence = _fence
        self._leases = DynamoLeases(table)
        self._registry = _registry or ShardRegistry(table, retention)
        self._own = _ShardView(table, self._registry, _shard or "", _fence)
        self._budgets = DynamoBudgets(table)

    def for_shard(self, shard: Shard, fence: Fence | None = None) -> DynamoDbStorage:
        return DynamoDbStorage(self.table, retention=self.retention, _registry=self._registry, _shard=shard.scope,
                               _fence=fence)

    async def _readable(self) -> list[_ShardView]:
        """The shards this view reads: its own, or (the root) every registered shard."""
        if self.shard_scope is not None:
            return [self._own]
        return [self._own if not scope else _ShardView(self.table, self._registry, scope, None)
                for scope in await self._registry.scopes()]

    async def close(self) -> None:
        return None

    async def prepare(self, time: datetime) -> None:
        await self._registry.prepare(ShardKeys(self.shard_scope or ""), time)

    # -- the watch list -------------------------------------------------------------------------------------

    async def save_watch(self, entries: Sequence[WatchEntry]) -> None:
        await self._own.watch.save(entries)

    async def watch(self, *, due_before: datetime | None = None, due_from: datetime | None = None) -> list[WatchEntry]:
        return [entry for view in await self._readable()
                for entry in await view.watch.entries(due_before=due_before, due_from=due_from)]

    # -- escalations ----------------------------------------------------------------------------------------

    async def claim(self, escalation: Escalation, event: str | None, detail: Mapping[str, Any]) -> bool:
        return await self._own.journal.claim(escalation, event, detail)

    async def save(self, escalation: Escalation, event: str, detail: Mapping[str, Any], *, time: datetime) -> None:
        await self._own.journal.save(escalation, event, detail, time=time)

    async def open_escalations(self) -> list[Escalation]:
        found = [e for view in await self._readable() for e in await view.journal.open_escalations()]
        return sorted(found, key=lambda escalation: escalation.created_at)

    async def claimed_targets(self) -> set[TargetKey]:
        return {key for view in await self._readable() for key in await view.journal.claimed_targets()}

    async def escalation_for(self, key: TargetKey) -> Escalation | None:
        for view in await self._readable():  # the implicit shard's first, as SQLite's root view
            found = await view.journal.escalation_for(key)
            if found is not None:
                return found
        return None

    # -- events and notices ---------------------------------------------------------------------------------

    async def record(self, event: str, *, target: TargetRef | None = None, policy: str | None = None,
                     rule: str | None = None, detail: Mapping[str, Any] | None = None, time: datetime) -> None:
        await self._own.journal.record(event, target=target, policy=policy, rule=rule, detail=detail, time=time)

    async def mark_once(self, notice_key: str, time: datetime) -> bool:
        return await mark_once(self.table, self.retention, notice_key, time)

    async def recent_events(self, limit: int = 50, *, target_id: str | None = None) -> list[JournalEntry]:
        found = [entry for view in await self._readable()
                 for entry in await view.journal.recent_events(limit, target_id=target_id)]
        return sorted(found, key=lambda entry: (entry.time, entry.seq), reverse=True)[:limit]

    async def query_events(self, query: EventQuery) -> list[JournalEntry]:
        found = [entry for view in await self._readable() for entry in await view.journal.query_events(query)]
        found.sort(key=lambda entry: (entry.time, entry.seq), reverse=True)
        return found[:query.limit] if query.limit is not None else found

    async def target_ids(self, prefix: str, *, limit: int = 20) -> list[str]:
        found: set[str] = set()
        for view in await self._readable():
            found |= await view.journal.target_ids(prefix)
        return sorted(found)[:limit]

    async def prune_events(self, before: datetime) -> int:
        return 0  # events expire through the table's TTL (``ttl`` = their time + retention)

    # -- ledger ---------------------------------------------------------------------------------------------

    async def count(self, session_id: str, workgroup: str, millis: int, observed_at: datetime,
                    allocate: Callable[[int, Counted | None], Allocation], *,
                    ended: bool = False) -> tuple[int, Counted | None]:
        return await self._own.ledger.count(session_id, workgroup, millis, observed_at, allocate, ended=ended)

    async def mark_ended(self, session_id: str, workgroup: str, time: datetime) -> None:
        await self._own.ledger.mark_ended(session_id, workgroup, time)

    async def open_sessions(self) -> dict[str, Counted]:
        return {sid: row for view in await self._readable() for sid, row in (await view.ledger.open_sessions()).items()}

    async def counted(self, session_ids: Iterable[str]) -> dict[str, Counted]:
        wanted = list(session_ids)
        return {sid: row for view in await self._readable() for sid, row in (await view.ledger.counted(wanted)).items()}

    async def spent(self, budget: str, since: datetime, until: datetime) -> float:
        return await self._budgets.spent(budget, since, until)

    async def prune(self, budget: str, before: datetime) -> None:
        await self._budgets.prune(budget, before)

    async def checkpoint(self) -> datetime | None:
        return await self._own.ledger.checkpoint()

    async def set_checkpoint(self, time: datetime) -> None:
        await self._own.ledger.set_checkpoint(time)

    async def open_episode(self, budget: str, at_percent: float, action: str, period_key: str, spent_usd: float,
                           time: datetime) -> Episode | None:
        return await self._budgets.open_episode(budget, at_percent, action, period_key, spent_usd, time)

    async def open_episodes(self, budget: str | None = None) -> list[Episode]:
        return await self._budgets.open_episodes(budget)

    async def episode_count(self, budget: str, at_percent: float) -> int:
        return await self._budgets.episode_count(budget, at_percent)

    async def close_episode(self, episode_id: int, time: datetime) -> None:
        await self._budgets.close_episode(episode_id, time)

    async def record_disabled(self, workgroup: str, episode: Episode, time: datetime) -> None:
        await self._own.ledger.record_disabled(workgroup, episode, time)

    async def disabled_in(self, episode_id: int) -> set[str]:
        return {name for view in await self._readable() for name in await view.ledger.disabled_in(episode_id)}

    async def forget_disabled(self, workgroup: str, episode_id: int) -> None:
        await self._own.ledger.forget_disabled(workgroup, episode_id)

    async def releasable(self) -> dict[str, list[tuple[int, str]]]:
        released: dict[str, list[tuple[int, str]]] = {}
        for view in await self._readable():
            for workgroup, holds in (await view.ledger.releasable()).items():
                released.setdefault(workgroup, []).extend(holds)
        return released

    async def mark_enabled(self, workgroup: str, time: datetime) -> None:
        await self._own.ledger.mark_enabled(workgroup, time)

    # -- shard leases and heartbeats (LeaseStore) --------------------------------------------------------------

    async def heartbeat(self, replica: str, expires_at: datetime) -> None:
        await self._leases.heartbeat(replica, expires_at)

    async def live_replicas(self, now: datetime) -> list[str]:
        return await self._leases.live_replicas(now)

    async def leases(self) -> list[Lease]:
        return await self._leases.leases()

    async def acquire(self, shard_scope: str, replica: str, *, expires_at: datetime,
                      expired_before: datetime) -> Lease | None:
        return await self._leases.acquire(shard_scope, replica, expires_at=expires_at, expired_before=expired_before)

    async def renew(self, lease: Lease, *, expires_at: datetime) -> Lease | None:
        return await self._leases.renew(lease, expires_at=expires_at)

    async def release(self, lease: Lease) -> None:
        await self._leases.release(lease)
