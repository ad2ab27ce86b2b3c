"""The watch list in DynamoDB: each shard's watched targets and the next instant each must be looked at.

One item per watched target (``S#<shard>#WATCH``, sort key ``<next deadline>#<target key>``, so a new owner reads
the targets due soon with one small Query, and the rest later). A save writes only what changed since what this
view knows the table holds (a target added: a put; its deadline moved: a put of the new item, then a delete of the
old one, the sort key holding the deadline; a target gone: a delete), in transactions that, for a fenced view,
also check the shard's lease: a replica that lost its lease cannot change the new owner's list
(:class:`~supervisor.storage.FenceLost`, nothing written). What the view knows the table holds is what it last read
whole (a new owner reads the list to resume) or wrote; after a failed save, or a read of only part of the list,
it reads the list again before it writes.

A save of more than one transaction (99 writes each) is not atomic as a whole, so a new owner may read the list
while the old owner's save is half done (it crashed, or stopped at its acting deadline, in the middle). It then
sees each target as of the previous save or of this one, never anything the old owner did not mean to save: no
worse than a list read just before the save began, which is at most one save interval old anyway. A target moved
and seen twice keeps its earlier deadline (a look that comes early is harmless: a target is always judged afresh);
one removed but still listed is looked at and found gone; one added but not yet listed is found by the first
sweep, as one discovered after the last save always is. Nothing read here can make the new owner act: every
action follows a fresh look.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import anyio

from supervisor.core.fleet import Fence, WatchEntry
from supervisor.core.model import TargetKey, TargetKind, TargetRef
from supervisor.gateway import Priority
from supervisor.storage.dynamodb_codec import Item, iso, parse_time
from supervisor.storage.dynamodb_journal import FencedWriter
from supervisor.storage.dynamodb_layout import ShardKeys
from supervisor.storage.dynamodb_registry import ShardRegistry
from supervisor.storage.dynamodb_table import TRANSACTION_LIMIT, Key, Table, Write

WRITES_PER_TRANSACTION = TRANSACTION_LIMIT - 1  # one place is the fence's condition check


class DynamoWatch:
    """One shard's watch list in ``table`` (its writes fenced by ``fence``)."""

    def __init__(self, table: Table, registry: ShardRegistry, scope: str, fence: Fence | None = None) -> None:
        self._table = table
        self._registry = registry
        self._keys = ShardKeys(scope)
        self._writer = FencedWriter(table, scope, fence)
        # What the table holds, as far as this view knows (None: read it before the next save), and the sort keys
        # of items that are no watch entry (a layout of an earlier development version), deleted by the next save.
        self._stored: dict[TargetKey, WatchEntry] | None = None
        self._strays: list[str] = []
        # A read of the entries due before an instant (a new owner's first read), until the read of those due from
        # that instant on completes the picture: (instant, entries, strays).
        self._first_part: tuple[datetime, dict[TargetKey, WatchEntry], list[str]] | None = None
        self._saving = anyio.Lock()

    async def save(self, entries: Sequence[WatchEntry]) -> None:
        async with self._saving:
            stored = dict(self._stored) if self._stored is not None else await self._read()
            wanted = {entry.target.key: entry for entry in entries}
            # A moved deadline moves the item (its sort key holds the deadline): the new one is put before the old
            # one goes, so a reader between the two sees both and keeps the earlier, never neither.
            writes = [Write.put(self._key(entry), _item(entry)) for key, entry in wanted.items()
                      if stored.get(key) != entry]
            writes += [Write.delete(self._key(old)) for key, old in stored.items() if wanted.get(key) != old]
            writes += [Write.delete(Key(self._keys.watch, sk)) for sk in self._strays]
            if not writes:
                return
            self._stored = None  # unknown until every transaction has answered
            await self._registry.ensure_shard(self._keys)
            for start in range(0, len(writes), WRITES_PER_TRANSACTION):
                await self._transact(writes[start:start + WRITES_PER_TRANSACTION])
            self._strays = []
            self._stored = wanted

    async def entries(self, *, due_before: datetime | None = None,
                      due_from: datetime | None = None) -> list[WatchEntry]:
        return list((await self._read(due_before, due_from)).values())

    async def _read(self, due_before: datetime | None = None,
                    due_from: datetime | None = None) -> dict[TargetKey, WatchEntry]:
        """The entries due before ``due_before`` and from ``due_from`` (each bound optional). A read of the whole
        list, or of its two parts (before an instant, then from it, nothing saved by this view in between), is
        also what this view knows the table holds."""
        conditions, values = [], {}
        if due_before is not None:
            conditions.append("#sk < :before")
            values[":before"] = iso(due_before)
        if due_from is not None:
            conditions.append("#sk >= :from")
            values[":from"] = iso(due_from)
        sk = " AND ".join(conditions) if len(conditions) < 2 else "#sk BETWEEN :from AND :before"
        found: dict[TargetKey, WatchEntry] = {}
        strays = []
        # In deadline order: a target found twice (a save moved it and stopped half way) keeps its earlier
        # deadline, which only makes a look come sooner; the later item is left for the next save to delete.
        for item in await self._table.query(self._keys.watch, sk=sk or None, values=values or None):
            entry = _entry(item)
            if entry is None or entry.target.key in found:
                strays.append(str(item["sk"]))
            elif due_before is None or entry.next_check_at < due_before:  # BETWEEN includes its upper bound
                found[entry.target.key] = entry
        if due_before is None and due_from is None:
            self._stored, self._strays = dict(found), strays
        elif due_from is None and due_before is not None:
            self._first_part = (due_before, dict(found), strays)
        elif due_before is None and self._first_part is not None and self._first_part[0] == due_from:
            # The two parts of one list: what the table holds, unless this view saved in between (it then knows).
            _, first, first_strays = self._first_part
            if self._stored is None:
                self._stored = {**found, **first}  # a target in both (moved mid-save): its earlier deadline
                self._strays = first_strays + strays + [_sort_key(entry) for key, entry in found.items()
                                                        if key in first]
            self._first_part = None
        return found

    async def _transact(self, writes: list[Write]) -> None:
        canceled = await self._writer.transact(writes, priority=Priority.DISCOVER)
        if canceled is not None:  # no write of a save has a condition of its own: only the fence can refuse it
            raise canceled

    def _key(self, entry: WatchEntry) -> Key:
        return Key(self._keys.watch, _sort_key(entry))


def _sort_key(entry: WatchEntry) -> str:
    return f"{iso(entry.next_check_at)}#{entry.target.key}"


def _item(entry: WatchEntry) -> dict[str, object]:
    target = entry.target
    return {"target_kind": target.kind.value, "target_id": target.target_id, "session_id": target.session_id,
            "workgroup": target.workgroup, "next_check_at": iso(entry.next_check_at)}


def _entry(item: Item) -> WatchEntry | None:
    """The entry an item holds; None for an item of another layout."""
    try:
        key = TargetKey.parse(str(item["sk"]).partition("#")[2])
        entry = WatchEntry(TargetRef(TargetKind(item["target_kind"]), str(item["target_id"]),
                                     str(item["session_id"]), str(item["workgroup"]), key.scope),
                           parse_time(item["next_check_at"]))
    except (KeyError, ValueError):
        return None
    return entry if _sort_key(entry) == str(item["sk"]) else None
