"""One seam for everything durable: escalations (the unique claims, intents and answers), the event history,
one-off notices, the budget ledger (counted spend, checkpoints, episodes, disabled workgroups), the watch list,
and (shared store only) shard leases.

:class:`Storage` is what the activities use. Two backends implement it: :mod:`supervisor.storage.sqlite` (the
embedded default, one process owns every shard) and :mod:`supervisor.storage.dynamodb` (one table shared by
the replicas of a fleet, which also implements :class:`LeaseStore`). :func:`supervisor.storage.factory.open_storage`
opens the one the settings name. Nothing outside a backend's modules writes SQL or DynamoDB items or assumes one
process: claims are unique by the backend's own conditional write, not by an in-memory set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from supervisor.core.budgets import Allocation, Counted, Episode
from supervisor.core.escalation import Escalation
from supervisor.core.fleet import Fence, Lease, Shard, WatchEntry
from supervisor.core.model import TargetKey, TargetRef
from supervisor.storage.records import EventQuery, JournalEntry

__all__ = ["EventQuery", "FenceLost", "JournalEntry", "LeaseStore", "Storage"]


class FenceLost(Exception):
    """A fenced write was refused: this replica no longer holds the shard's lease (another one took it, with
    a newer fencing token). Nothing was written; the caller must stop acting on the shard."""

    def __init__(self, shard_scope: str, fence: Fence) -> None:
        super().__init__(f"the lease of shard {shard_scope or 'credentials'!r} is no longer held by "
                         f"{fence.owner!r} with token {fence.token}")
        self.shard_scope = shard_scope
        self.fence = fence


class Storage(Protocol):
    """Durable state of the daemon. Every method is a short atomic operation.

    A storage opened from the settings is the root view: its reads cover every shard (the CLI's journal, budgets
    and explain use it) and its writes go to the implicit shard (scope ``""``), which is exactly what a
    single-account daemon has always read and written. :meth:`for_shard` gives the view one shard's activities
    use: its escalations, claims, events, counted sessions, checkpoint, disabled workgroups and watch list are
    that shard's. With a ``fence``, every write that can lead to a destructive call or steer a new owner
    (``claim``, ``save``, ``save_watch``) succeeds only while the fence's lease is current, else raises
    :class:`FenceLost` and writes nothing (a backend without leases, SQLite, accepts a fence and ignores it: one
    process owns every shard). Budget spend buckets, episodes and one-off notices are shared by every shard.
    Views share the root's connection: closing a view does nothing, closing the root closes them all.
    """

    def for_shard(self, shard: Shard, fence: Fence | None = None) -> Storage:
        """The view of ``shard``'s records; writes are fenced by ``fence`` when given."""
        ...

    async def prepare(self, time: datetime) -> None:
        """Do ahead what this view's first writes would otherwise do first (DynamoDB: register the shard, and the
        day of ``time``, for the root view's reads; SQLite: nothing), so a new owner's first claim is one write."""
        ...

    # -- the watch list: what a new owner of the shard resumes from ---------------------------------------
    async def save_watch(self, entries: Sequence[WatchEntry]) -> None:
        """Make ``entries`` this shard's watched targets and their next deadlines, writing only what changed since
        the list this view last read or wrote: a save that changed nothing writes nothing, so it may be called
        as often as the caller likes. A reader may see a save half done (DynamoDB: several transactions), each
        target as it was or as it is now; a new owner only ever looks at what it reads, so that is harmless (see
        :mod:`~supervisor.storage.dynamodb_watch`). Raises :class:`FenceLost` if the view's fence is stale
        (nothing of that transaction is written)."""
        ...

    async def watch(self, *, due_before: datetime | None = None, due_from: datetime | None = None) -> list[WatchEntry]:
        """This shard's watched targets (the root view: every shard's), those due before ``due_before`` and from
        ``due_from`` when given: a new owner reads the ones due soon first, one small read, then the rest."""
        ...

    # -- escalations: claims, intents and answers ------------------------------------------------------
    async def claim(self, escalation: Escalation, event: str | None, detail: Mapping[str, Any]) -> bool:
        """Record a new escalation and its decision event; False if its target was ever claimed before in this
        shard. Raises :class:`FenceLost` if the view's fence is stale (nothing is written)."""
        ...

    async def save(self, escalation: Escalation, event: str, detail: Mapping[str, Any], *, time: datetime) -> None:
        """Store an escalation's new state and the event that led to it, atomically. Raises :class:`FenceLost`
        if the view's fence is stale (nothing is written)."""
        ...

    async def open_escalations(self) -> list[Escalation]: ...

    async def claimed_targets(self) -> set[TargetKey]: ...

    async def escalation_for(self, key: TargetKey) -> Escalation | None: ...

    # -- events and notices ------------------------------------------------------------------------------
    async def record(self, event: str, *, target: TargetRef | None = None, policy: str | None = None,
                     rule: str | None = None, detail: Mapping[str, Any] | None = None, time: datetime) -> None:
        """Append an event that is not an escalation step."""
        ...

    async def mark_once(self, notice_key: str, time: datetime) -> bool:
        """True the first time ``notice_key`` is marked, False ever after."""
        ...

    async def recent_events(self, limit: int = 50, *, target_id: str | None = None) -> list[JournalEntry]: ...

    async def query_events(self, query: EventQuery) -> list[JournalEntry]:
        """The events ``query`` matches (:meth:`EventQuery.matches`), newest first, at most ``query.limit``."""
        ...

    async def target_ids(self, prefix: str, *, limit: int = 20) -> list[str]:
        """Calculation and session ids the journal knows (a claim or an event about them) that start with
        ``prefix``, sorted, at most ``limit``: what an id prefix (the 8 characters the demo prints) stands for."""
        ...

    async def prune_events(self, before: datetime) -> int:
        """Delete this view's events older than ``before`` (``journal.retention`` ago); how many were deleted.

        Only events: claims, escalations, notices and the ledger stay. A backend whose store expires events by
        itself (DynamoDB's TTL, set from the retention on every event it writes) deletes nothing here and
        returns 0.
        """
        ...

    # -- ledger: counted spend -------------------------------------------------------------------------
    async def count(self, session_id: str, workgroup: str, millis: int, observed_at: datetime,
                    allocate: Callable[[int, Counted | None], Allocation], *,
                    ended: bool = False) -> tuple[int, Counted | None]:
        """Count a session observation: the DPU-milliseconds added (allocated with ``allocate`` in the same
        atomic write) and the previous observation."""
        ...

    async def mark_ended(self, session_id: str, workgroup: str, time: datetime) -> None: ...

    async def open_sessions(self) -> dict[str, Counted]: ...

    async def counted(self, session_ids: Iterable[str]) -> dict[str, Counted]: ...

    async def spent(self, budget: str, since: datetime, until: datetime) -> float: ...

    async def prune(self, budget: str, before: datetime) -> None: ...

    async def checkpoint(self) -> datetime | None: ...

    async def set_checkpoint(self, time: datetime) -> None: ...

    # -- ledger: episodes and disabled workgroups ------------------------------------------------------
    async def open_episode(self, budget: str, at_percent: float, action: str, period_key: str, spent_usd: float,
                           time: datetime) -> Episode | None: ...

    async def open_episodes(self, budget: str | None = None) -> list[Episode]: ...

    async def episode_count(self, budget: str, at_percent: float) -> int: ...

    async def close_episode(self, episode_id: int, time: datetime) -> None: ...

    async def record_disabled(self, workgroup: str, episode: Episode, time: datetime) -> None: ...

    async def disabled_in(self, episode_id: int) -> set[str]: ...

    async def forget_disabled(self, workgroup: str, episode_id: int) -> None: ...

    async def releasable(self) -> dict[str, list[tuple[int, str]]]: ...

    async def mark_enabled(self, workgroup: str, time: datetime) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class LeaseStore(Protocol):
    """Shard leases and replica heartbeats in the shared store (DynamoDB). Expiry instants are written by
    the caller from its own clock; every change is a conditional write."""

    async def heartbeat(self, replica: str, expires_at: datetime) -> None:
        """Say ``replica`` is alive until ``expires_at``."""
        ...

    async def live_replicas(self, now: datetime) -> list[str]:
        """Replicas whose heartbeat has not expired at ``now``, sorted."""
        ...

    async def leases(self) -> list[Lease]:
        """Every shard lease as stored (expired ones included)."""
        ...

    async def acquire(self, shard_scope: str, replica: str, *, expires_at: datetime,
                      expired_before: datetime) -> Lease | None:
        """Take the shard's lease with the next fencing token if it is free, held by ``replica``, or expired
        before ``expired_before`` (the caller's now); None if someone else holds
        it."""
        ...

    async def renew(self, lease: Lease, *, expires_at: datetime) -> Lease | None:
        """Extend ``lease`` (same token) if it is still ours; None if it was lost."""
        ...

    async def release(self, lease: Lease) -> None:
        """Give the lease up at once (expired, token kept) if it is still ours, so another replica can take it
        without waiting for the expiry."""
        ...
