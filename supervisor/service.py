"""The only wiring: builds every collaborator from the settings and starts every activity as a named task.

Reading :func:`running_service` and :mod:`supervisor.shard` tells the whole process layout: process-wide
parts (storage, metrics, the HTTP server, notifications, the daemon's own gateway for STS) and one
:class:`~supervisor.shard.ShardHost` per account-region, each running its own gateway and activities. A task
that crashes is logged with its name and stops the process (``run`` exits non-zero); it never dies silently.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import anyio
import anyio.abc
import structlog
from prometheus_client import CollectorRegistry

from supervisor.activities.accounting import Accounting
from supervisor.activities.budgets import Budgets
from supervisor.activities.checks import Checks
from supervisor.activities.discovery import Discovery
from supervisor.activities.enforcement import Enforcement
from supervisor.activities.event_feed import EventFeed, Route, Routed
from supervisor.activities.event_path import EventPath
from supervisor.activities.retention import Retention
from supervisor.clock import Clock, SystemClock
from supervisor.cluster import Cluster, default_replica_id
from supervisor.config import Settings
from supervisor.core.fleet import Shard
from supervisor.credentials import RoleSessions
from supervisor.events import EventSink
from supervisor.gateway import Gateway, new_session
from supervisor.http import Operations, serving
from supervisor.metrics import Metrics
from supervisor.notify import Notifier, notifying
from supervisor.ratelimit import PriorityRateLimiter
from supervisor.reload import LiveConfig, Reloader
from supervisor.shard import (
    ACCOUNTING_SHARE,
    ShardHost,
    ShardRuntime,
    TaskCrashed,
    build_gateway,
    supervised,
    void_reason_for,
)
from supervisor.status import event_path_summary, service_status
from supervisor.storage import LeaseStore, Storage
from supervisor.storage.factory import open_storage
from supervisor.storage.sqlite import SqliteStorage

__all__ = ["ACCOUNTING_SHARE", "EXIT_TASK_CRASHED", "RunningService", "TaskCrashed", "build_gateway",
           "run_until_signalled", "running_service", "void_reason_for"]

EXIT_TASK_CRASHED = 1
# SQS calls per second of the event feed (receives, deletes, the depth): far below what it needs, far above zero.
EVENT_QUEUE_RATE = 20.0
_supervised = supervised  # the name tests and older callers use


@dataclass(frozen=True, slots=True)
class RunningService:
    metrics: Metrics
    storage: Storage
    http_url: str
    static_hosts: dict[Shard, ShardHost]
    notifier: Notifier | None = None
    cluster: Cluster | None = None
    live: LiveConfig | None = None
    reloader: Reloader | None = None

    @property
    def hosts(self) -> dict[Shard, ShardHost]:
        """The shards this process supervises now (with a cluster: those whose lease it holds)."""
        return self.cluster.hosts if self.cluster is not None else self.static_hosts

    @property
    def runtime(self) -> ShardRuntime:
        """The activities of the only shard (a config without ``accounts``, or with one account-region)."""
        if len(self.hosts) != 1:
            raise LookupError(f"{len(self.hosts)} shards run; pick one from hosts")
        [host] = self.hosts.values()
        if host.runtime is None:
            raise LookupError(f"shard {host.shard} is not running: {host.problem or 'not started'}")
        return host.runtime

    @property
    def discovery(self) -> Discovery:
        return self.runtime.discovery

    @property
    def checks(self) -> Checks:
        return self.runtime.checks

    @property
    def enforcement(self) -> Enforcement:
        return self.runtime.enforcement

    @property
    def accounting(self) -> Accounting | None:
        return self.runtime.accounting

    @property
    def budgets(self) -> Budgets | None:
        return self.runtime.budgets


def readiness_of(hosts: dict[Shard, ShardHost], cluster: Cluster | None = None,
                 feed: EventFeed | None = None) -> tuple[bool, str]:
    """Ready when every shard is (and the event queue can be read); else the reasons, each named by its shard
    when there are several."""
    reasons = [reason] if feed is not None and (reason := feed.readiness()) is not None else []
    if cluster is not None:
        if (reason := cluster.readiness()) is not None:
            reasons.insert(0, reason)
        return (not reasons, "; ".join(reasons) or "ok")
    for shard, host in hosts.items():
        reason = host.readiness()
        if reason is not None:
            reasons.append(reason if len(hosts) == 1 or reason.startswith(str(shard)) else f"{shard}: {reason}")
    return (not reasons, "; ".join(reasons) or "ok")


@asynccontextmanager
async def running_service(
    settings: Settings,
    *,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    events: EventSink | None = None,
    storage: Storage | None = None,
    config_path: str | None = None,
) -> AsyncIterator[RunningService]:
    """Start the daemon in the current event loop; leaving the block stops it gracefully.

    ``storage``: the journal (closed when the daemon stops); by default the one ``journal`` names, opened here.
    ``config_path``: the file the settings were loaded from (shown by ``/status``).
    """
    metrics = Metrics(registry)
    clock = clock or SystemClock()
    log = structlog.get_logger("supervisor")
    # The daemon's own credentials, one session for all that use them (the journal, STS, notifications, the shards
    # without a role): resolved once, and a session costs ~20 ms of CPU to make.
    session = new_session(settings.aws.profile)
    journal: AbstractAsyncContextManager[Storage] = (
        open_storage(settings, metrics=metrics, clock=clock, session=session) if storage is None
        else _closing(storage))
    try:
        # The daemon's own gateway: STS (assuming member roles, the account id) and notifications.
        async with (journal as storage, build_gateway(settings, metrics, clock=clock, session=session) as own_gateway,
                    AsyncExitStack() as stack):
            if settings.cluster is not None and not isinstance(storage, LeaseStore):
                raise TypeError("cluster: needs a storage that holds leases (journal.backend: dynamodb)")
            # Without an injected sink, events go to the configured channels (flushed, bounded, at exit; none yet
            # is fine: a reload may add some).
            notifier = Notifier.from_settings(
                settings, gateway=own_gateway, metrics=metrics, journal=storage, clock=clock,
            ) if events is None else None
            sink = events or notifier
            cluster: Cluster | None = None
            hosts: dict[Shard, ShardHost] = {}
            live = LiveConfig(settings, clock.now(), config_path)
            event_path = (EventPath(late_after=settings.discovery.events.late_after)
                          if settings.discovery.events is not None else None)
            roles = RoleSessions(gateway=own_gateway, clock=clock)
            if settings.cluster is not None:
                assert isinstance(storage, LeaseStore)
                cluster = Cluster(
                    store=storage, replica=settings.cluster.replica_id or default_replica_id(),
                    shards=settings.shards(), lease_duration=settings.cluster.lease_duration,
                    skew=settings.cluster.max_clock_skew, call_margin=settings.aws.connect_timeout, clock=clock,
                    metrics=metrics,
                    host_for=lambda shard, lease, may_send, fence_lost: ShardHost(
                        shard, live.settings, storage, metrics, clock, sink, own_gateway, fence=lease.fence,
                        may_send=may_send, fence_lost=fence_lost, event_path=event_path, roles=roles),
                )
            else:
                hosts = {shard: ShardHost(shard, settings, storage, metrics, clock, sink, own_gateway,
                                          event_path=event_path, roles=roles)
                         for shard in settings.shards()}

            def current_hosts() -> dict[Shard, ShardHost]:
                return cluster.hosts if cluster is not None else hosts

            events_settings = settings.discovery.events
            feed = None if event_path is None or events_settings is None else EventFeed(
                settings=events_settings, region=events_settings.queue_region(settings.aws.region),
                gateway=await stack.enter_async_context(event_gateway(settings, metrics, clock, own_gateway)),
                clock=clock, metrics=metrics, path=event_path, route=router(settings.shards(), current_hosts))

            def status() -> dict[str, object]:
                return service_status(live, settings.shards(), current_hosts(), clock.now(),
                                      replica=cluster.replica if cluster is not None else None, events=feed)

            reloader = Reloader(live=live, hosts=current_hosts, storage=storage, metrics=metrics, clock=clock,
                                notifier=notifier, gateway=own_gateway)

            async def reload() -> tuple[int, dict[str, object]]:
                applied, outcome = await reloader.reload("POST /-/reload")
                return (200 if applied else 400), outcome

            async def breaker_reset() -> tuple[int, dict[str, object]]:
                return 200, (await reloader.reset_breaker("POST /-/breaker/reset"))[1]

            operations = Operations(
                status=status, reload=reload, breaker_reset=breaker_reset, lifecycle=settings.http.enable_lifecycle,
                readiness_details=None if feed is None else lambda: {"events": event_path_summary(feed, clock.now())})
            async with (
                serving(metrics.registry, lambda: readiness_of(hosts, cluster, feed), settings.http.host,
                        settings.http.port, operations) as url,
                notifying(notifier),
                anyio.create_task_group() as task_group,
            ):
                log.info("supervisor.started", http=url, mode=settings.mode, journal=_journal_name(settings),
                         policies=[policy.name for policy in settings.policies], region=settings.aws.region,
                         shards=[str(shard) for shard in hosts] if not settings.shards()[0].implicit else None)
                for shard, host in hosts.items():
                    name = "shard" if shard.implicit else f"shard[{shard}]"
                    await task_group.start(supervised, name, host.run, name=name)
                if cluster is not None:
                    await task_group.start(supervised, "cluster", cluster.run, name="cluster")
                if feed is not None:
                    await task_group.start(supervised, "events", feed.run, name="events")
                retention = Retention(storage=storage, clock=clock, retention=settings.journal.retention,
                                      metrics=metrics)
                await task_group.start(supervised, "retention", retention.run, name="retention")
                try:
                    yield RunningService(metrics, storage, url, hosts, notifier, cluster, live, reloader)
                finally:
                    task_group.cancel_scope.cancel()
    finally:
        log.info("supervisor.stopped")


def event_gateway(settings: Settings, metrics: Metrics, clock: Clock, own: Gateway) -> Gateway:
    """The event feed's gateway: the daemon's own credentials, the queue's region, and a read timeout that
    outlasts a long poll (``discovery.events.wait_time``)."""
    aws, events = settings.aws, settings.discovery.events
    assert events is not None
    return Gateway(region=events.queue_region(aws.region), max_attempts=aws.max_attempts, metrics=metrics,
                   limiter=PriorityRateLimiter(EVENT_QUEUE_RATE, burst=EVENT_QUEUE_RATE, clock=clock), clock=clock,
                   connect_timeout=aws.connect_timeout, read_timeout=aws.read_timeout + events.wait_time,
                   session=own.session)


def router(shards: tuple[Shard, ...], hosts: Callable[[], dict[Shard, ShardHost]]) -> Route:
    """Where an event of (account, region) goes: the discovery of that shard, if this process supervises it now.
    The implicit shard (no ``accounts``; its account may be unknown) takes every account of its region."""

    def route(account: str, region: str) -> Routed:
        for shard in shards:
            if shard.region != region or (shard.account_id and shard.account_id != account):
                continue
            host = hosts().get(shard)
            if host is None:
                return "not_owned"
            return host.runtime.discovery if host.runtime is not None else "retried"
        return "unknown_shard"

    return route


@asynccontextmanager
async def _closing(storage: Storage) -> AsyncIterator[Storage]:
    """A storage handed in by the caller, closed when the daemon stops, as one it opened itself."""
    try:
        yield storage
    finally:
        if isinstance(storage, SqliteStorage):
            storage.close_now()  # synchronous: it must happen even when the daemon stops by cancellation
        else:
            with anyio.CancelScope(shield=True):
                await storage.close()


def _journal_name(settings: Settings) -> str:
    journal = settings.journal
    return str(journal.path) if journal.backend == "sqlite" else f"dynamodb:{journal.table}"


async def run_until_signalled(settings: Settings, config_path: str | None = None) -> int:
    """The ``run`` command: serve until SIGTERM/SIGINT, then finish in-flight calls and exit. SIGHUP reloads the
    configuration from ``config_path`` (:mod:`supervisor.reload`); a bad file is reported and the running one
    stays.

    Returns the exit status: 0 after a signal, 1 when a root task crashed.
    """
    crashed = False
    log = structlog.get_logger("supervisor")
    try:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with running_service(settings, config_path=config_path) as service:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        assert service.reloader is not None
                        await service.reloader.reload("SIGHUP")
                        continue
                    log.info("supervisor.stopping", signal=signal.Signals(signum).name)
                    break
    except* TaskCrashed:
        crashed = True
    return EXIT_TASK_CRASHED if crashed else 0
