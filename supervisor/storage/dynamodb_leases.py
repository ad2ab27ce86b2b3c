"""Shard leases and replica heartbeats in the journal's DynamoDB table (:class:`~supervisor.storage.LeaseStore`).

A lease item (``pk=LEASE``, ``sk=<shard>``) holds the ``owner``, the fencing ``token`` and ``lease_expires_at``
(an ISO time written by the owner from its own clock). Every change is one conditional ``UpdateItem``:

- **acquire** sets a new owner and ``token + 1`` if the item is absent, already ours, or its expiry is before the
  caller's ``expired_before`` (its now: the holder stopped acting a skew allowance before that expiry);
- **renew** moves the expiry if owner *and* token are still ours (a lease lost and taken back by us in between
  has a newer token: the old one stays dead);
- **release** sets the expiry to the epoch (token kept) so another replica may take it at once.

The expiry is a plain attribute, never the table's TTL attribute: TTL deletes items on its own schedule, and a
deleted lease would start the next owner's token again at 1, below tokens already used to fence writes.

:func:`fence_check` is the condition every fenced write of the journal carries in its transaction: the lease
item still has the writer's owner and token.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from supervisor.core.fleet import Fence, Lease
from supervisor.gateway import Priority
from supervisor.storage.dynamodb_codec import Item, expires, iso, parse_time
from supervisor.storage.dynamodb_layout import LEASES, REPLICAS, ShardKeys, replica, scope_of
from supervisor.storage.dynamodb_table import Table, Write

RELEASED = datetime(1970, 1, 1, tzinfo=UTC)
HEARTBEAT_KEPT = timedelta(days=1)
"""A dead replica's heartbeat item expires (TTL) this long after it lapsed."""


def fence_check(scope: str, fence: Fence) -> Write:
    """The transaction item that holds only while ``fence`` is the current holder of ``scope``'s lease."""
    return Write.check(ShardKeys(scope).lease, "#owner = :fence_owner AND #token = :fence_token",
                       {":fence_owner": fence.owner, ":fence_token": fence.token})


def _lease(item: Item) -> Lease:
    return Lease(scope_of(str(item["sk"])), str(item["owner"]), int(item["token"]),
                 parse_time(str(item["lease_expires_at"])))


class DynamoLeases:
    """The leases and heartbeats in ``table``; writes go first at the gateway (a lease is what lets a replica
    act at all)."""

    def __init__(self, table: Table) -> None:
        self._table = table

    async def heartbeat(self, replica_id: str, expires_at: datetime) -> None:
        await self._table.put(replica(replica_id), {"replica": replica_id, "alive_until": iso(expires_at),
                                                    "ttl": expires(expires_at, HEARTBEAT_KEPT)},
                              priority=Priority.ENFORCE)

    async def live_replicas(self, now: datetime) -> list[str]:
        items = await self._table.query(REPLICAS, filter="#alive_until > :now", values={":now": iso(now)})
        return sorted(str(item["replica"]) for item in items)

    async def leases(self) -> list[Lease]:
        return [_lease(item) for item in await self._table.query(LEASES)]

    async def acquire(self, shard_scope: str, replica_id: str, *, expires_at: datetime,
                      expired_before: datetime) -> Lease | None:
        item = await self._table.update(
            ShardKeys(shard_scope).lease,
            "SET #owner = :owner, #lease_expires_at = :expires, #scope = :scope, "
            "#token = if_not_exists(#token, :zero) + :one",
            {":owner": replica_id, ":expires": iso(expires_at), ":before": iso(expired_before), ":zero": 0, ":one": 1,
             ":scope": shard_scope},
            condition="attribute_not_exists(#pk) OR #owner = :owner OR #lease_expires_at < :before",
            priority=Priority.ENFORCE,
        )
        return _lease(item) if item is not None else None

    async def renew(self, lease: Lease, *, expires_at: datetime) -> Lease | None:
        item = await self._table.update(
            ShardKeys(lease.shard_scope).lease, "SET #lease_expires_at = :expires",
            {":expires": iso(expires_at), ":owner": lease.owner, ":token": lease.token},
            condition="#owner = :owner AND #token = :token", priority=Priority.ENFORCE,
        )
        return _lease(item) if item is not None else None

    async def release(self, lease: Lease) -> None:
        await self._table.update(
            ShardKeys(lease.shard_scope).lease, "SET #lease_expires_at = :released",
            {":released": iso(RELEASED), ":owner": lease.owner, ":token": lease.token},
            condition="#owner = :owner AND #token = :token", priority=Priority.ENFORCE,
        )
