"""What one process of the DynamoDB storage remembers across its views: which shards and event days it has
already registered in the table, and the sequence of the events it writes.

The registry items let the root view (the CLI) find every shard's partitions by Query, without scanning the
table: a view registers its shard once per process before its first write, and each day it writes events on.
Registering is an idempotent put; remembering it here only saves repeating it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import anyio

from supervisor.storage.dynamodb_codec import expires, iso
from supervisor.storage.dynamodb_layout import SHARDS, ShardKeys, scope_of
from supervisor.storage.dynamodb_table import Table


class ShardRegistry:
    """Registers shards and event days in ``table``, once per process each."""

    def __init__(self, table: Table, retention: timedelta) -> None:
        self._table = table
        self.retention = retention
        self._shards: set[str] = set()
        self._days: set[tuple[str, str]] = set()
        self._last_seq = 0

    async def ensure_shard(self, keys: ShardKeys) -> None:
        if keys.scope in self._shards:
            return
        await self._table.put(keys.registry, {"scope": keys.scope})
        self._shards.add(keys.scope)

    async def ensure_day(self, keys: ShardKeys, at: datetime) -> str:
        """The day partition of an event at ``at``, registered (it expires with the day's last events)."""
        day = day_of(at)
        if (keys.scope, day) not in self._days:
            end_of_day = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
            await self._table.put(keys.event_day(day), {"ttl": expires(end_of_day, self.retention)})
            self._days.add((keys.scope, day))
        return day

    async def prepare(self, keys: ShardKeys, at: datetime) -> None:
        """Register the shard and the day of ``at`` side by side (ahead of the view's first write)."""
        async with anyio.create_task_group() as registering:
            registering.start_soon(self.ensure_shard, keys)
            registering.start_soon(self.ensure_day, keys, at)

    async def scopes(self) -> list[str]:
        """Every registered shard's scope, the implicit shard's (``""``) first."""
        found = {scope_of(str(item["sk"])) for item in await self._table.query(SHARDS, projection="#sk")}
        return ["", *sorted(found - {""})]

    def next_seq(self) -> int:
        """A number that orders this process's events written at the same instant: the wall clock in
        microseconds, bumped past the last one (real time only breaks ties; the event's time is the clock's)."""
        self._last_seq = max(self._last_seq + 1, time.time_ns() // 1000)
        return self._last_seq


def day_of(at: datetime) -> str:
    """The UTC day of ``at`` (``2026-01-01``)."""
    return iso(at)[:10]
