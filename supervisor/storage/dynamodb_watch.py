"""The watch list in DynamoDB: each shard's watched targets and the next instant each must be looked at.

A save writes the new list under a fresh generation id (``S#<shard>#WATCH``, sort key ``<generation>#<target>``),
then switches the shard's generation pointer (``S#<shard>#META``/``WATCH``) to it in a transaction that, for a
fenced view, also checks the lease; only then are older generations' items deleted. A reader follows the
pointer, so it sees the old list or the new one, never a mix, and a replica that lost its lease cannot replace
the new owner's list (its items are removed again, and :class:`~supervisor.storage.FenceLost` raised).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from supervisor.core.fleet import Fence, WatchEntry
from supervisor.core.model import TargetKey, TargetKind, TargetRef
from supervisor.gateway import Priority
from supervisor.storage.dynamodb_codec import Item, iso, parse_time
from supervisor.storage.dynamodb_journal import FencedWriter
from supervisor.storage.dynamodb_layout import ShardKeys
from supervisor.storage.dynamodb_registry import ShardRegistry
from supervisor.storage.dynamodb_table import Key, Table, Write

SWITCH_ATTEMPTS = 5


class DynamoWatch:
    """One shard's watch list in ``table`` (the pointer switch fenced by ``fence``)."""

    def __init__(self, table: Table, registry: ShardRegistry, scope: str, fence: Fence | None = None) -> None:
        self._table = table
        self._registry = registry
        self._keys = ShardKeys(scope)
        self._writer = FencedWriter(table, scope, fence)

    async def save(self, entries: Sequence[WatchEntry]) -> None:
        await self._registry.ensure_shard(self._keys)
        generation = uuid.uuid4().hex
        await self._table.write_many(puts=[(self._keys.watched(generation, entry.target.key), _item(entry))
                                           for entry in entries])
        try:
            for _ in range(SWITCH_ATTEMPTS):
                pointer = await self._table.get(self._keys.watch_generation)
                current = pointer.get("generation") if pointer else None
                switch = Write.put(self._keys.watch_generation, {"generation": generation},
                                   condition="#generation = :current" if current else "attribute_not_exists(#pk)",
                                   values={":current": current} if current else None)
                # Another save switched in between (only without a fence): switch again, the last save wins.
                if await self._writer.transact([switch], priority=Priority.DISCOVER) is None:
                    break
        finally:
            await self._remove_all_but(await self._generation())

    async def entries(self) -> list[WatchEntry]:
        generation = await self._generation()
        if generation is None:
            return []
        items = await self._table.query(self._keys.watch, sk="begins_with(#sk, :generation)",
                                        values={":generation": f"{generation}#"})
        return [_entry(item) for item in items]

    async def _generation(self) -> str | None:
        pointer = await self._table.get(self._keys.watch_generation)
        return str(pointer["generation"]) if pointer else None

    async def _remove_all_but(self, generation: str | None) -> None:
        items = await self._table.query(self._keys.watch, projection="#sk")
        await self._table.write_many(deletes=[Key(self._keys.watch, str(item["sk"])) for item in items
                                              if generation is None or not str(item["sk"]).startswith(
                                                  f"{generation}#")])


def _item(entry: WatchEntry) -> dict[str, object]:
    target = entry.target
    return {"target_kind": target.kind.value, "target_id": target.target_id, "session_id": target.session_id,
            "workgroup": target.workgroup, "next_check_at": iso(entry.next_check_at)}


def _entry(item: Item) -> WatchEntry:
    key = TargetKey.parse(str(item["sk"]).split("#", 1)[1])
    return WatchEntry(TargetRef(TargetKind(item["target_kind"]), str(item["target_id"]), str(item["session_id"]),
                                str(item["workgroup"]), key.scope), parse_time(item["next_check_at"]))
