"""Wires the daemon together from settings: gateway, journal, metrics, HTTP endpoint and the supervisor."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import structlog
from prometheus_client import CollectorRegistry

from supervisor.clock import Clock, SystemClock
from supervisor.config import Settings
from supervisor.daemon import Supervisor
from supervisor.events import EventSink
from supervisor.gateway import Gateway
from supervisor.http import serving
from supervisor.journal import Journal
from supervisor.metrics import Metrics
from supervisor.notify import Notifier, notifying
from supervisor.ratelimit import PriorityRateLimiter


@dataclass(frozen=True, slots=True)
class RunningService:
    supervisor: Supervisor
    metrics: Metrics
    journal: Journal
    http_url: str
    notifier: Notifier | None = None


def build_gateway(settings: Settings, metrics: Metrics, *, clock: Clock | None = None) -> Gateway:
    """The gateway the settings describe; its rate limiter and retry backoff run on ``clock``."""
    aws = settings.aws
    clock = clock or SystemClock()
    rate = aws.max_requests_per_second
    # aws.connect_timeout / aws.read_timeout / aws.sts_endpoint_url are config keys added on another branch;
    # read them if present so both branches merge cleanly (None: the gateway's defaults).
    timeouts = {
        name: value for name in ("connect_timeout", "read_timeout")
        if (value := getattr(aws, name, None)) is not None
    }
    sts_endpoint_url = getattr(aws, "sts_endpoint_url", None)
    return Gateway(
        region=aws.region,
        endpoint_url=str(aws.endpoint_url) if aws.endpoint_url else None,
        sts_endpoint_url=str(sts_endpoint_url) if sts_endpoint_url else None,
        profile=aws.profile,
        max_attempts=aws.max_attempts,
        metrics=metrics,
        # A burst of one second's worth keeps us under a server-side bucket of the same rate.
        limiter=PriorityRateLimiter(rate, burst=max(1.0, rate), clock=clock),
        clock=clock,
        **timeouts,
    )


@asynccontextmanager
async def running_service(
    settings: Settings,
    *,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    events: EventSink | None = None,
) -> AsyncIterator[RunningService]:
    """Start the daemon in the current event loop; leaving the block stops it gracefully."""
    metrics = Metrics(registry)
    journal = Journal(settings.journal.path)
    log = structlog.get_logger("supervisor")
    clock = clock or SystemClock()
    try:
        async with build_gateway(settings, metrics, clock=clock) as gateway:
            # Without an injected sink, events go to the configured channels (flushed, bounded, at exit).
            notifier = Notifier.from_settings(
                settings, gateway=gateway, metrics=metrics, journal=journal, clock=clock,
            ) if events is None and settings.notifications else None
            supervisor = Supervisor(
                settings=settings, gateway=gateway, journal=journal, metrics=metrics, clock=clock,
                events=events or notifier,
            )
            async with (
                serving(metrics.registry, supervisor.readiness, settings.http.host, settings.http.port) as url,
                notifying(notifier),
                anyio.create_task_group() as task_group,
            ):
                log.info("supervisor.started", http=url, mode=settings.mode, journal=str(settings.journal.path),
                         policies=[policy.name for policy in supervisor.policies],
                         region=settings.aws.region)
                await task_group.start(supervisor.run)
                try:
                    yield RunningService(supervisor, metrics, journal, url, notifier)
                finally:
                    task_group.cancel_scope.cancel()
    finally:
        journal.close()
        log.info("supervisor.stopped")


async def run_until_signalled(settings: Settings) -> None:
    """The ``run`` command: serve until SIGTERM/SIGINT, then finish in-flight calls and exit."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with running_service(settings):
            async for signum in signals:
                structlog.get_logger("supervisor").info("supervisor.stopping", signal=signal.Signals(signum).name)
                break
