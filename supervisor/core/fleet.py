"""Shards, leases and fencing: the pure vocabulary of a fleet (many accounts and regions, several replicas).

A **shard** is one account-region. Every target belongs to exactly one shard, and at any instant at most one
replica may send a destructive call for a shard: the replica that holds the shard's **lease** in the shared
store. A lease carries a **fencing token** that grows by one each time the lease changes hands, and every
write that can lead to a destructive call (a claim, an intent) carries the writer's token, so a replica that
lost its lease cannot claim anything even if it has not noticed yet.
"""

from __future__ import annotations

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
    replica takes the shard only after that expiry by its own clock plus the skew allowance; stopping
    ``margin`` (clock skew + the longest call in flight) before it keeps the two owners' action windows apart.
    """
    return renewal_sent_at + duration - margin
