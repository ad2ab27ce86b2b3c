"""The budget ledger in DynamoDB: spend counted per session (a shard's) and per budget bucket (shared), the
accounting checkpoint and disabled workgroups (a shard's), threshold episodes (shared).

**No DPU-millisecond counted twice, none lost.** A session's counted item holds the ``DpuExecutionInMillis``
already counted and a ``version``. :meth:`DynamoLedger.count` reads it (strongly consistent), computes the
difference and its allocation, then writes in one transaction: the session item under the condition that its
version is still the one read (or that it is still absent), and an ``ADD`` of each share to its budget bucket.
If another replica counted the same session in between (a shard that moved, two views), the condition fails,
nothing is written, and the count starts again from the new value: the difference it adds is what the other
did not. A transaction holds at most 100 items; an allocation over more buckets (a long gap in a rolling
window) writes the first ones with the session item and keeps the rest in its ``pending`` attribute, applied
by follow-up transactions that each remove what they add, under the same version condition (any later count,
by any replica, finishes them first).

**Episodes** are unique per budget, threshold and period key by a conditional put (``B#<budget>#EPISODE``), and at
most one is open per budget and threshold (``OPEN_EPISODE``), both in the transaction that opens one: of two
replicas opening the same episode, one gets it, the other None. Episode ids come from an atomic counter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from supervisor.core.budgets import Allocation, Counted, Episode
from supervisor.gateway import Priority
from supervisor.storage.dynamodb_codec import Item, expires, iso, parse_time
from supervisor.storage.dynamodb_layout import (
    COUNTER,
    OPEN_EPISODES,
    ShardKeys,
    budget_spend,
    episode,
    episode_of_period,
    episodes_of_budget,
    open_episode,
    open_episodes_of,
    percent,
)
from supervisor.storage.dynamodb_registry import ShardRegistry
from supervisor.storage.dynamodb_table import TRANSACTION_LIMIT, Key, Table, TransactionCanceled, Write

MAX_SHARES = TRANSACTION_LIMIT - 2  # the rest of a count's transaction: the session item and its open marker
RACE_ATTEMPTS = 20


class CountContended(RuntimeError):
    """A session's count lost the race to other writers every time it tried (it is tried again next pass)."""


Share = tuple[str, str, float]  # budget, bucket start (stored form), USD


def _merged(allocation: Allocation) -> list[Share]:
    """One share per bucket (a transaction may touch an item once), in allocation order."""
    totals: dict[tuple[str, str], float] = {}
    for budget, bucket_start, usd in allocation:
        key = (budget, iso(bucket_start))
        totals[key] = totals.get(key, 0.0) + usd
    return [(budget, bucket, usd) for (budget, bucket), usd in totals.items()]


def _add(share: Share) -> Write:
    budget, bucket, usd = share
    return Write.updating(Key(budget_spend(budget), bucket), "ADD #usd :usd", {":usd": usd})


def _counted(item: Item) -> Counted:
    return Counted(str(item["sk"]), str(item["workgroup"]), int(item["counted_millis"]),
                   parse_time(item["observed_at"]), bool(item.get("ended")))


def _version_condition(item: Item | None) -> tuple[str, dict[str, object]]:
    if item is None:
        return "attribute_not_exists(#pk)", {}
    return "#version = :version", {":version": int(item["version"])}


class DynamoLedger:
    """One shard's counted sessions, checkpoint and disabled workgroups, and the shared buckets, in ``table``."""

    def __init__(self, table: Table, registry: ShardRegistry, scope: str) -> None:
        self._table = table
        self._registry = registry
        self._keys = ShardKeys(scope)

    # -- spend ----------------------------------------------------------------------------------------------

    async def count(self, session_id: str, workgroup: str, millis: int, observed_at: datetime,
                    allocate: Callable[[int, Counted | None], Allocation], *,
                    ended: bool = False) -> tuple[int, Counted | None]:
        await self._registry.ensure_shard(self._keys)
        key = self._keys.counted(session_id)
        for _ in range(RACE_ATTEMPTS):
            item = await self._table.get(key, priority=Priority.ACCOUNT)
            if item is not None and item.get("pending"):
                await self._settle(key, item)
                continue
            previous = _counted(item) if item is not None else None
            counted = previous.millis if previous else 0
            delta = max(0, millis - counted)
            shares = _merged(allocate(delta, previous)) if delta else []
            now, later = shares[:MAX_SHARES], shares[MAX_SHARES:]
            final_ended = ended or (previous is not None and previous.ended)
            version = int(item["version"]) + 1 if item is not None else 1
            stored = {
                "workgroup": previous.workgroup if previous else workgroup, "counted_millis": max(millis, counted),
                "observed_at": iso(observed_at), "ended": final_ended, "version": version,
                "pending": [list(share) for share in later] or None,
                # An ended session is not counted again; its item may go with the retention.
                "ttl": expires(observed_at, self._registry.retention) if final_ended else None,
            }
            condition, values = _version_condition(item)
            writes = [Write.put(key, stored, condition=condition, values=values), *map(_add, now)]
            if previous is None and not final_ended:
                writes.append(Write.put(self._keys.open_session(session_id), {"workgroup": workgroup}))
            elif final_ended and (previous is None or not previous.ended):
                writes.append(Write.delete(self._keys.open_session(session_id)))
            try:
                await self._table.transact(writes, priority=Priority.ACCOUNT)
            except TransactionCanceled as canceled:
                if canceled.failed(0):
                    continue  # another writer counted this session in between: count again from its value
                raise
            if later:
                await self._settle(key, {**stored, "sk": session_id})
            return delta, previous
        raise CountContended(f"session {session_id}: counting lost the race {RACE_ATTEMPTS} times")

    async def _settle(self, key: Key, item: Item) -> None:
        """Apply a count's pending shares, a transaction's worth at a time; stop if another writer moved on."""
        pending: list[Share] = [(str(b), str(t), float(u)) for b, t, u in item.get("pending") or []]
        version = int(item["version"])
        while pending:
            now, rest = pending[:MAX_SHARES], pending[MAX_SHARES:]
            update = "SET #pending = :rest, #version = :next" if rest else "REMOVE #pending SET #version = :next"
            values: dict[str, object] = {":version": version, ":next": version + 1}
            if rest:
                values[":rest"] = [list(share) for share in rest]
            settle = Write.updating(key, update, values, condition="#version = :version")
            try:
                await self._table.transact([settle, *map(_add, now)], priority=Priority.ACCOUNT)
            except TransactionCanceled as canceled:
                if canceled.failed(0):
                    return
                raise
            pending, version = rest, version + 1

    async def mark_ended(self, session_id: str, workgroup: str, time: datetime) -> None:
        await self._registry.ensure_shard(self._keys)
        ended = Write.updating(
            self._keys.counted(session_id),
            "SET #ended = :true, #workgroup = if_not_exists(#workgroup, :workgroup), "
            "#counted_millis = if_not_exists(#counted_millis, :zero), "
            "#observed_at = if_not_exists(#observed_at, :time), #ttl = :ttl ADD #version :one",
            {":true": True, ":workgroup": workgroup, ":zero": 0, ":time": iso(time), ":one": 1,
             ":ttl": expires(time, self._registry.retention)},
        )
        await self._table.transact([ended, Write.delete(self._keys.open_session(session_id))],
                                   priority=Priority.ACCOUNT)

    async def open_sessions(self) -> dict[str, Counted]:
        """Sessions counted but not known to have ended (the sparse ``OPEN_SESSION`` partition names them)."""
        markers = await self._table.query(self._keys.open_sessions, projection="#sk", priority=Priority.ACCOUNT)
        return {row.session_id: row for row in (await self.counted(str(m["sk"]) for m in markers)).values()
                if not row.ended}

    async def counted(self, session_ids: Iterable[str]) -> dict[str, Counted]:
        items = await self._table.get_many((self._keys.counted(s) for s in session_ids), priority=Priority.ACCOUNT)
        return {str(item["sk"]): _counted(item) for item in items}

    async def checkpoint(self) -> datetime | None:
        item = await self._table.get(self._keys.checkpoint, priority=Priority.ACCOUNT)
        return parse_time(item["time"]) if item else None

    async def set_checkpoint(self, time: datetime) -> None:
        await self._registry.ensure_shard(self._keys)
        await self._table.put(self._keys.checkpoint, {"time": iso(time)}, priority=Priority.ACCOUNT)

    # -- disabled workgroups ----------------------------------------------------------------------------------

    async def record_disabled(self, workgroup: str, episode_row: Episode, time: datetime) -> None:
        await self._registry.ensure_shard(self._keys)
        await self._table.put(self._keys.disabled_workgroup(workgroup, episode_row.episode_id),
                              {"workgroup": workgroup, "episode_id": episode_row.episode_id,
                               "budget": episode_row.budget, "disabled_at": iso(time)},
                              condition="attribute_not_exists(#pk)")  # as INSERT OR IGNORE: the first stays

    async def disabled_in(self, episode_id: int) -> set[str]:
        return {str(item["workgroup"]) for item in await self._table.query(self._keys.disabled)
                if int(item["episode_id"]) == episode_id}

    async def forget_disabled(self, workgroup: str, episode_id: int) -> None:
        await self._table.delete(self._keys.disabled_workgroup(workgroup, episode_id))

    async def releasable(self) -> dict[str, list[tuple[int, str]]]:
        """Workgroup → (episode, budget) of disables whose episode is over and no open episode holds it."""
        disabled = [item for item in await self._table.query(self._keys.disabled) if not item.get("enabled_at")]
        open_ids = await open_episode_ids(self._table)
        held = {str(item["workgroup"]) for item in disabled if int(item["episode_id"]) in open_ids}
        released: dict[str, list[tuple[int, str]]] = {}
        for item in disabled:
            workgroup = str(item["workgroup"])
            if int(item["episode_id"]) not in open_ids and workgroup not in held:
                released.setdefault(workgroup, []).append((int(item["episode_id"]), str(item["budget"])))
        return released

    async def mark_enabled(self, workgroup: str, time: datetime) -> None:
        """Every released disable of ``workgroup`` is undone."""
        items = await self._table.query(self._keys.disabled, sk="begins_with(#sk, :workgroup)",
                                        values={":workgroup": self._keys.disabled_prefix(workgroup)})
        open_ids = await open_episode_ids(self._table)
        for item in items:
            if not item.get("enabled_at") and int(item["episode_id"]) not in open_ids:
                await self._table.update(Key(self._keys.disabled, str(item["sk"])), "SET #enabled_at = :time",
                                         {":time": iso(time)})


async def open_episode_ids(table: Table) -> set[int]:
    return {int(item["episode_id"]) for item in await table.query(OPEN_EPISODES)}


class DynamoBudgets:
    """What every shard shares: budget buckets and threshold episodes."""

    def __init__(self, table: Table) -> None:
        self._table = table

    async def spent(self, budget: str, since: datetime, until: datetime) -> float:
        """USD in ``budget``'s buckets that start in ``[since, until)``."""
        end = iso(until)
        items = await self._table.query(budget_spend(budget), sk="#sk BETWEEN :since AND :until",
                                        values={":since": iso(since), ":until": end}, priority=Priority.ACCOUNT)
        return sum(float(item["usd"]) for item in items if item["sk"] != end)

    async def prune(self, budget: str, before: datetime) -> None:
        items = await self._table.query(budget_spend(budget), sk="#sk < :before", values={":before": iso(before)},
                                        projection="#pk, #sk", priority=Priority.ACCOUNT)
        await self._table.write_many(deletes=[Key(str(item["pk"]), str(item["sk"])) for item in items],
                                     priority=Priority.ACCOUNT)

    async def open_episode(self, budget: str, at_percent: float, action: str, period_key: str, spent_usd: float,
                           time: datetime) -> Episode | None:
        """Open an episode unless one is open for this threshold or this period already had one."""
        period = period_key or time.isoformat(timespec="microseconds")  # as SQLite names an unnamed period
        counter = await self._table.update(COUNTER, "ADD #n :one", {":one": 1})
        assert counter is not None  # no condition
        opened = Episode(int(counter["n"]), budget, float(at_percent), action, period, time, spent_usd)
        fields = _episode_fields(opened)
        try:
            await self._table.transact([
                Write.put(episode_of_period(budget, at_percent, period), {"episode_id": opened.episode_id},
                          condition="attribute_not_exists(#pk)"),
                Write.put(open_episode(budget, at_percent), fields, condition="attribute_not_exists(#pk)"),
                Write.put(episode(opened.episode_id), fields),
            ])
        except TransactionCanceled:
            return None  # this period had its episode, or one is open: an unused id is harmless
        return opened

    async def open_episodes(self, budget: str | None = None) -> list[Episode]:
        if budget is None:
            items = await self._table.query(OPEN_EPISODES)
        else:
            items = await self._table.query(OPEN_EPISODES, sk="begins_with(#sk, :budget)",
                                            values={":budget": open_episodes_of(budget)})
        return sorted((_episode(item) for item in items), key=lambda e: e.at_percent)

    async def episode_count(self, budget: str, at_percent: float) -> int:
        return await self._table.count(episodes_of_budget(budget), sk="begins_with(#sk, :percent)",
                                       values={":percent": percent(at_percent) + "#"})

    async def close_episode(self, episode_id: int, time: datetime) -> None:
        item = await self._table.get(episode(episode_id))
        if item is None:
            return
        closed = Write.updating(episode(episode_id), "SET #closed_at = :time", {":time": iso(time)})
        try:
            await self._table.transact([closed, Write.delete(
                open_episode(str(item["budget"]), float(item["at_percent"])),
                condition="attribute_not_exists(#pk) OR #episode_id = :id", values={":id": episode_id})])
        except TransactionCanceled:  # the threshold's open episode is another one: leave it open
            await self._table.update(episode(episode_id), "SET #closed_at = :time", {":time": iso(time)})


def _episode_fields(row: Episode) -> dict[str, Any]:
    return {"episode_id": row.episode_id, "budget": row.budget, "at_percent": row.at_percent, "action": row.action,
            "period_key": row.period_key, "opened_at": iso(row.opened_at), "spent_usd": row.spent_usd,
            "closed_at": iso(row.closed_at) if row.closed_at else None}


def _episode(item: Mapping[str, Any]) -> Episode:
    closed = item.get("closed_at")
    return Episode(int(item["episode_id"]), str(item["budget"]), float(item["at_percent"]), str(item["action"]),
                   str(item["period_key"]), parse_time(item["opened_at"]), float(item["spent_usd"]),
                   parse_time(closed) if closed else None)
