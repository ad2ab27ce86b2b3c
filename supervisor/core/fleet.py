"""Shards, leases and fencing: the pure vocabulary of a fleet (many accounts and regions, several replicas).

A **shard** is one account-region. Every target belongs to exactly one shard, and at any instant at most one
replica may send a destructive call for a shard: the replica that holds the shard's **lease** in the shared
store. A lease carries a **fencing token** that grows by one each time the lease changes hands, and every
write that can lead to a destructive call (a claim, an intent) carries the writer's token, so a replica that
lost its lease cannot claim anything even if it has not noticed yet.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from supervisor.core.model import TargetRef


@dataclass(frozen=True, slots=True, order=True)
class Shard:
    """One account-region.

    ``implicit`` is the shard of a config without ``accounts``: the account of the credentials (``account_id``
    is ``aws.account_id``, or empty until STS says). Its durable records carry no shard prefix, exactly as
    before fleets existed, so a journal written by an older version stays valid.
    """

    account_id: str
    region: str
    implicit: bool = False

    @property
    def scope(self) -> str:
        """The prefix of this shard's durable records: empty for the implicit shard."""
        return "" if self.implicit else f"{self.account_id}/{self.region}"

    @property
    def labels(self) -> tuple[str, str]:
        """The ``account`` and ``region`` metric label values."""
        return (self.account_id, self.region)

    def __str__(self) -> str:
        return f"{self.account_id or 'credentials'}/{self.region}"


@dataclass(frozen=True, slots=True)
class Fence:
    """Who writes for a shard: the lease holder's replica id and the lease's fencing token."""

    owner: str
    token: int


@dataclass(frozen=True, slots=True)
class Lease:
    """A shard's lease as stored: held by ``owner`` with ``token`` until ``expires_at`` (the owner's clock)."""

    shard_scope: str
    owner: str
    token: int
    expires_at: datetime

    @property
    def fence(self) -> Fence:
        return Fence(self.owner, self.token)


@dataclass(frozen=True, slots=True)
class WatchEntry:
    """A watched target and the next instant it must be looked at: what a new owner of the shard resumes from
    without waiting for a full sweep."""

    target: TargetRef
    next_check_at: datetime


def acting_deadline(renewal_sent_at: datetime, duration: timedelta, margin: timedelta) -> datetime:
    """Until when the holder of a lease renewed by a request sent at ``renewal_sent_at`` may act on the shard.

    The store stamps the expiry from the holder's clock when the request was sent (never later), and another
    replica takes the shard only after that expiry by its own clock; stopping ``margin`` (clock skew + the
    longest call in flight) before it keeps the two owners' action windows apart even when the taker's clock
    is ahead by the whole skew allowance.
    """
    return renewal_sent_at + duration - margin


def heartbeat_expiry(sent_at: datetime, duration: timedelta) -> datetime:
    """Until when a heartbeat sent at ``sent_at`` says its replica is live: two thirds of ``duration``.

    Heartbeats and lease renewals are each sent every third of ``duration``, on loops of their own whose phases
    differ by up to a third (a lease taken in a round timed on another lease's expiry is renewed on that round's
    phase). A dead replica's last heartbeat and last renewal both fall within a third of a duration before its
    death, so a heartbeat good for two thirds lapses no later than the leases it outlived: the survivors' quotas
    count it out by the time its shards are free. Good for a whole duration, it kept a dead replica "live" up to a
    third after its leases expired, and the survivors, at their quotas, waited for a later round to take them (a
    takeover of 16.6 s with 15 s leases in bench/fleet.py). It still survives one lost heartbeat (the next is
    retried a second later).
    """
    return sent_at + duration * 2 / 3


def quotas(shard_count: int, replicas: Sequence[str]) -> dict[str, int]:
    """How many shards each live replica should hold: an even spread, the first ``shard_count % n`` replicas
    (in sorted order) one more. Every replica computes the same answer from the same live set."""
    ordered = sorted(set(replicas))
    if not ordered:
        return {}
    base, extra = divmod(shard_count, len(ordered))
    return {replica: base + (1 if index < extra else 0) for index, replica in enumerate(ordered)}


def preference(replica: str, shard_scope: str) -> int:
    """Rendezvous score of ``replica`` for a shard: replicas prefer different shards, so two replicas rarely
    race for the same free lease, and a replica gives up the shards it prefers least."""
    digest = hashlib.blake2b(f"{replica}|{shard_scope}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def next_slot(after: datetime, period: timedelta, key: str) -> datetime:
    """The first instant after ``after`` of ``key``'s slot of a periodic task: every ``period``, at an offset into
    the period that depends on ``key`` only (a rendezvous hash, as :func:`preference`).

    Shards that do the same periodic work (a watch-list save) would otherwise do it at the same moments: every
    shard of a replica starts at once, and so does every shard a replica takes over. Slots spread them over the
    period, the same way on every replica and after every restart.
    """
    epoch = datetime(1970, 1, 1, tzinfo=after.tzinfo)
    offset = period * (preference("", key) / 2**64)
    periods = (after - epoch - offset) // period + 1
    return epoch + offset + period * periods


@dataclass(frozen=True, slots=True)
class LeasePlan:
    """What a replica does with the shard leases this round. ``spare``: the other free shards, most preferred
    first, to take instead of one of ``acquire`` that another replica took first (both wanted it)."""

    acquire: tuple[str, ...] = ()
    release: tuple[str, ...] = ()
    spare: tuple[str, ...] = ()


def free_shards(shard_scopes: Sequence[str], leases: Mapping[str, Lease], now: datetime) -> set[str]:
    """Shards nobody holds: no lease, or one expired (or released) by our clock. No skew allowance here: the
    holder stops acting that much before its expiry (:func:`acting_deadline`)."""
    return {scope for scope in shard_scopes
            if (lease := leases.get(scope)) is None or lease.expires_at < now}


def plan_leases(me: str, shard_scopes: Sequence[str], leases: Mapping[str, Lease], live: Sequence[str],
                now: datetime, *, free_since: Mapping[str, datetime],
                orphan_after: timedelta) -> LeasePlan:
    """The leases ``me`` should take and give up, given every lease as stored and the live replicas.

    - A lease is *held* by its owner until its expiry; it is *free* when absent, or expired by our clock (the
      holder stopped acting a clock-skew allowance and a call timeout before that expiry by its own clock).
    - ``me`` holds up to its quota (:func:`quotas` over the live replicas and itself): it takes free shards it
      prefers most while under, and releases the ones it prefers least while over (only then, so a shard never
      moves without need).
    - A shard seen free (``free_since``: since when this replica has seen it free) for longer than
      ``orphan_after`` is taken even above the quota: a live replica that should have taken it did not (it is
      stuck, or its heartbeat outlives its work).
    """
    quota = quotas(len(shard_scopes), [*live, me])[me]
    mine = sorted((scope for scope in shard_scopes
                   if (lease := leases.get(scope)) is not None and lease.owner == me and lease.expires_at > now),
                  key=lambda scope: preference(me, scope), reverse=True)
    if len(mine) > quota:
        return LeasePlan(release=tuple(mine[quota:]))

    free = free_shards(shard_scopes, leases, now)
    candidates = sorted((scope for scope in shard_scopes if scope not in mine and scope in free),
                        key=lambda scope: preference(me, scope), reverse=True)
    wanted = list(candidates[:max(0, quota - len(mine))])
    orphans = [scope for scope in candidates[len(wanted):]
               if scope in free_since and now - free_since[scope] > orphan_after]
    spare = tuple(scope for scope in candidates[len(wanted):] if scope not in orphans)
    return LeasePlan(acquire=tuple(wanted + orphans), spare=spare if wanted else ())
