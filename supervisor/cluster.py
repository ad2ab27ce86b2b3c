"""Replicas sharing the shards: this replica's leases in the shared store, and a shard host for each.

Three kinds of loop, none waiting for another: each held lease is renewed by a loop of its own, a third of
``lease_duration`` after its previous renewal was sent (a second after a failed one); the replica says it is
alive (its heartbeat) at the same pace; and every round (a third of ``lease_duration``, or sooner when another
replica's lease is due to expire) it reads every lease and the live replicas and follows
:func:`~supervisor.core.fleet.plan_leases`: it takes free shards up to its quota and gives up the ones above.
A renewal never waits for a round (a slow read of the leases, a shard's acquisition) or for another lease's
renewal: a replica busy taking over shards from a dead one, with its store answering slowly, used to send its
renewals only when the round's other calls were done, and lost every lease it held at once.

The invariant, at most one replica sends a destructive call for a shard at any instant, holds because:

- a lease is taken only after it expired by the taker's clock;
- the holder stops sending at ``renewal sent + lease_duration − (max_clock_skew + connect timeout)`` by its
  own clock (:func:`~supervisor.core.fleet.acting_deadline`): its gateway starts no destructive attempt past
  that instant, a watchdog stops the shard's activities there if no renewal extended it, and a renewal
  counts from when its request was sent, not answered. The whole skew allowance is on the holder's side: a
  taker whose clock is ``max_clock_skew`` ahead still takes the lease only after the holder's last call was
  sent (waiting the skew out on the taker's side as well would count it twice, and only delay takeovers);
- every claim and intent is a conditional write carrying the lease's fencing token, so a holder that missed
  its loss cannot claim anything once another replica took the shard.

A shard given up (rebalancing, shutdown) is stopped first, its in-flight calls finished, and only then
released, so the next owner may start at once.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import anyio
import anyio.abc
import structlog

from supervisor.clock import Clock
from supervisor.core.fleet import Lease, Shard, acting_deadline, free_shards, heartbeat_expiry, plan_leases
from supervisor.gateway import AwsCallError
from supervisor.metrics import Metrics
from supervisor.shard import ShardHost
from supervisor.storage import LeaseStore

# A replica that cannot reach the store retries its round after this long (and its acting deadlines stop
# its shards meanwhile).
STORE_RETRY = timedelta(seconds=1)
RELEASE_TIMEOUT = timedelta(seconds=5)


def _first(error: BaseException) -> BaseException:
    """The first error of a (nested) exception group, or ``error`` itself."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def _code(error: BaseException) -> str:
    error = _first(error)
    return error.code if isinstance(error, AwsCallError) else type(error).__name__


def default_replica_id() -> str:
    """The host name and process id: unique per pod or process (a restarted process is a new replica)."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class _Held:
    lease: Lease
    deadline: datetime
    host: ShardHost
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    stopped: anyio.Event = field(default_factory=anyio.Event)


class Cluster:
    """Holds this replica's shard leases and runs a :class:`~supervisor.shard.ShardHost` for each.

    Args:
        host_for: builds the host of a shard for a lease; its ``may_send`` tells whether a destructive call
            may still start, and its ``fence_lost`` is called when a fenced write was refused.
        call_margin: the longest a destructive call may take to reach AWS once started (the connect
            timeout): the holder stops this long plus ``skew`` before its lease could expire.
    """

    def __init__(self, *, store: LeaseStore, replica: str, shards: Sequence[Shard], lease_duration: timedelta,
                 skew: timedelta, call_margin: timedelta, clock: Clock, metrics: Metrics,
                 host_for: Callable[[Shard, Lease, Callable[[], bool], Callable[[], None]], ShardHost],
                 logger: structlog.typing.FilteringBoundLogger | None = None) -> None:
        self.store = store
        self.replica = replica
        self.shards = {shard.scope: shard for shard in shards}
        self.lease_duration = lease_duration
        self.margin = skew + call_margin
        self.clock = clock
        self.metrics = metrics
        self.host_for = host_for
        self.held: dict[str, _Held] = {}
        self._problems: dict[str, str] = {}  # what fails with the store, by loop ("round", "heartbeat", a shard)
        self._log = (logger or structlog.get_logger("supervisor.cluster")).bind(replica=replica)
        self._task_group: anyio.abc.TaskGroup | None = None
        self._free_since: dict[str, datetime] = {}  # shards seen free, since when (for orphans)
        for shard in shards:  # every replica exports every shard's ownership, 0 or 1: none held sums to 0
            metrics.for_shard(shard).shard_owned.set(0)

    @property
    def hosts(self) -> dict[Shard, ShardHost]:
        return {self.shards[scope]: held.host for scope, held in self.held.items()}

    @property
    def problem(self) -> str | None:
        """Why the lease store is failing this replica now (the oldest failing loop's reason), or None."""
        return next(iter(self._problems.values()), None)

    def _failed(self, where: str, error: BaseException) -> None:
        self._problems.setdefault(where, f"the lease store cannot be reached ({_code(error)})")
        self._log.error("cluster.store_failed", where=where, error=repr(error), retry_in=STORE_RETRY.total_seconds())

    def readiness(self) -> str | None:
        """Why this replica is not ready: the store is unreachable, or a shard it holds is not."""
        if self.problem is not None:
            return self.problem
        for held in self.held.values():
            reason = held.host.readiness()
            if reason is not None:
                return f"{held.host.shard}: {reason}"
        return None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Hold leases until cancelled; then stop every shard and release its lease for the next owner."""
        async with anyio.create_task_group() as task_group:
            self._task_group = task_group
            alive = anyio.CancelScope()
            try:
                task_group.start_soon(self._keep_alive, alive, name="cluster heartbeat")
                next_round = await self._round()
                task_status.started()
                while True:
                    await self.clock.sleep_until(next_round)
                    next_round = await self._round()
            finally:
                alive.cancel()  # before leaving: a heartbeat after the last one would keep this replica "live"
                with anyio.CancelScope(shield=True):
                    await self._release_all()
                task_group.cancel_scope.cancel()

    # -- heartbeats and rounds ------------------------------------------------------------------------------

    async def _heartbeat(self) -> bool:
        """Say this replica is alive (:func:`~supervisor.core.fleet.heartbeat_expiry`); False if the store could not
        be told."""
        try:
            await self.store.heartbeat(self.replica, heartbeat_expiry(self.clock.now(), self.lease_duration))
        except Exception as error:
            self._failed("heartbeat", error)
            return False
        self._problems.pop("heartbeat", None)
        return True

    async def _keep_alive(self, scope: anyio.CancelScope) -> None:
        """Heartbeat every third of the lease duration (a second after a failure), until ``scope`` is cancelled."""
        with scope:
            while True:
                sent_at = self.clock.now()
                alive = await self._heartbeat()
                await self.clock.sleep_until(sent_at + self.lease_duration / 3 if alive
                                             else self.clock.now() + STORE_RETRY)

    async def _round(self) -> datetime:
        """One round; returns when the next one is due."""
        started = self.clock.now()
        try:
            leases = {lease.shard_scope: lease for lease in await self.store.leases()}
            live = await self.store.live_replicas(self.clock.now())
        except Exception as error:  # the store unreachable, throttling or an odd answer: the deadlines protect us
            self._failed("round", error)
            return self.clock.now() + STORE_RETRY
        self._problems.pop("round", None)
        self.metrics.replicas.set(len(set(live) | {self.replica}))
        now = self.clock.now()
        free = free_shards(list(self.shards), leases, now)
        self._free_since = {scope: self._free_since.get(scope, now) for scope in free}
        plan = plan_leases(self.replica, list(self.shards), leases, live, now,
                           free_since=self._free_since, orphan_after=self.lease_duration)
        if plan.acquire or plan.release:
            self._log.info("cluster.rebalancing", live=sorted(set(live) | {self.replica}), held=len(self.held),
                           acquire=[str(self.shards[scope]) for scope in plan.acquire],
                           release=[str(self.shards[scope]) for scope in plan.release])
        try:
            for scope in plan.release:
                await self._release(scope, reason="rebalance")
            spare = list(plan.spare)

            async def take(scope: str) -> None:
                # Refused: another replica took it first (after a replica died, the survivors want its shards at
                # the same instant). Take the next free one now rather than a round later, so a takeover stays
                # within lease_duration of the dead replica's last renewal.
                taken = await self._acquire(scope)
                while not taken and spare:
                    taken = await self._acquire(spare.pop(0))

            # Side by side: a survivor taking a dead replica's shards starts each as soon as its lease is taken,
            # not a round trip to the store later per shard before it.
            async with anyio.create_task_group() as acquiring:
                for scope in plan.acquire:
                    acquiring.start_soon(take, scope)
        except Exception as error:  # the next round tries again; what was done stays done
            self._failed("round", error)
            return self.clock.now() + STORE_RETRY
        return self._next_round_at(leases, now, started=started)

    def _next_round_at(self, leases: dict[str, Lease], now: datetime, *, started: datetime) -> datetime:
        """A third of the lease duration after this round started (not ended: a slow round must not push the
        next renewal past the acting deadline), or just after another replica's lease becomes free (so a dead
        replica's shards move within ``lease_duration`` of its last renewal)."""
        due = started + self.lease_duration / 3
        for scope, lease in leases.items():
            if scope in self.shards and lease.owner != self.replica:
                free_at = lease.expires_at + timedelta(milliseconds=1)
                if now < free_at < due:
                    due = free_at
        return due

    async def _keep_renewed(self, held: _Held, sent_at: datetime) -> None:
        """Renew one held lease a third of the lease duration after its previous renewal (or its acquisition) was
        sent, a second after a renewal that failed, until it is lost or the shard stops. One at a time: a renewal
        that answered late must never overwrite a later one's expiry."""
        scope = held.lease.shard_scope
        next_at = sent_at + self.lease_duration / 3
        while True:
            await self.clock.sleep_until(next_at)
            sent_at = self.clock.now()
            try:
                renewed = await self.store.renew(held.lease, expires_at=sent_at + self.lease_duration)
            except Exception as error:  # its acting deadline stops the shard if this goes on
                self._failed(scope, error)
                next_at = self.clock.now() + STORE_RETRY
                continue
            self._problems.pop(scope, None)
            if self.held.get(scope) is not held:  # stopped meanwhile (its deadline passed): the renewal came too late
                return
            if renewed is None:
                self._log.error("cluster.lease_lost", shard=str(held.host.shard), token=held.lease.token)
                self._drop(held)
                return
            held.lease = renewed
            held.deadline = acting_deadline(sent_at, self.lease_duration, self.margin)
            next_at = sent_at + self.lease_duration / 3

    async def _acquire(self, scope: str) -> bool:
        """Take the shard's lease and start its host; False if another replica holds it."""
        now = self.clock.now()
        lease = await self.store.acquire(scope, self.replica, expires_at=now + self.lease_duration,
                                         expired_before=now)
        if lease is None:
            self.metrics.lease_changes.labels("refused").inc()
            return False
        shard = self.shards[scope]
        deadline = acting_deadline(now, self.lease_duration, self.margin)
        held = _Held(lease, deadline, self.host_for(shard, lease, lambda: self._may_send(scope),
                                                     lambda: self._fence_lost(scope)))
        self.held[scope] = held
        self.metrics.lease_changes.labels("acquired").inc()
        self._log.info("cluster.lease_acquired", shard=str(shard), token=lease.token)
        assert self._task_group is not None
        # Not awaited: a host takes a while to start (its role is assumed, its claims and open escalations are
        # read), and the round must go on to take the other shards it wants.
        self._task_group.start_soon(self._host, held, now, name=f"shard[{shard}]")
        return True

    def _fence_lost(self, scope: str) -> None:
        """A fenced write of the shard was refused: another replica took it. Stop acting there at once."""
        held = self.held.get(scope)
        if held is not None:
            self._log.error("cluster.lease_lost", shard=str(held.host.shard), token=held.lease.token, why="fence")
            self._drop(held)

    def _drop(self, held: _Held) -> None:
        """The lease is lost: stop acting on the shard at once (in-flight destructive calls finish, shielded)."""
        if self.held.get(held.lease.shard_scope) is held:
            del self.held[held.lease.shard_scope]
        held.deadline = self.clock.now()
        held.scope.cancel()
        self.metrics.lease_changes.labels("lost").inc()

    def _may_send(self, scope: str) -> bool:
        held = self.held.get(scope)
        return held is not None and self.clock.now() < held.deadline

    async def _host(self, held: _Held, acquired_at: datetime) -> None:
        """Run a shard's host, and keep its lease renewed, until it is stopped or its acting deadline passes
        without a renewal."""
        try:
            with held.scope:
                async with anyio.create_task_group() as task_group:
                    task_group.start_soon(held.host.run)
                    task_group.start_soon(self._keep_renewed, held, acquired_at)
                    while True:
                        await self.clock.sleep_until(held.deadline)
                        if self.clock.now() >= held.deadline:
                            break
                    self._log.error("cluster.acting_deadline_passed", shard=str(held.host.shard),
                                    deadline=held.deadline.isoformat())
                    self.metrics.lease_changes.labels("lost").inc()
                    task_group.cancel_scope.cancel()
        finally:
            if self.held.get(held.lease.shard_scope) is held:
                del self.held[held.lease.shard_scope]
            held.stopped.set()

    async def _stop(self, scope: str) -> Lease | None:
        """Stop a shard's activities (in-flight destructive calls finish first: they are shielded)."""
        held = self.held.pop(scope, None)
        if held is None:
            return None
        held.scope.cancel()
        await held.stopped.wait()
        return held.lease

    async def _release(self, scope: str, *, reason: str) -> None:
        lease = await self._stop(scope)
        if lease is None:
            return
        await self.store.release(lease)
        self.metrics.lease_changes.labels("released").inc()
        self._log.info("cluster.lease_released", shard=str(self.shards[scope]), reason=reason, token=lease.token)

    async def _release_all(self) -> None:
        """At shutdown: stop every shard (all at once; in-flight calls finish), then release their leases."""
        stopping = list(self.held.values())
        self.held.clear()
        for held in stopping:
            held.scope.cancel()
        for held in stopping:
            await held.stopped.wait()
        with anyio.move_on_after(RELEASE_TIMEOUT.total_seconds()):
            try:
                # Leaving first: the others' quotas grow at once, so they take the released shards at their next
                # round instead of leaving them to this replica until its heartbeat would have expired.
                await self.store.heartbeat(self.replica, self.clock.now())
            except Exception as error:
                self._log.warning("cluster.leave_failed", error=repr(error))
            async with anyio.create_task_group() as task_group:
                for held in stopping:
                    task_group.start_soon(self._give_back, held.lease)

    async def _give_back(self, lease: Lease) -> None:
        try:
            await self.store.release(lease)
        except Exception as error:  # the store is gone: the lease simply expires
            self._log.warning("cluster.release_failed", shard=str(self.shards[lease.shard_scope]), error=repr(error))
            return
        self.metrics.lease_changes.labels("released").inc()
        self._log.info("cluster.lease_released", shard=str(self.shards[lease.shard_scope]), reason="shutdown",
                       token=lease.token)
