"""Open the storage the settings name: the SQLite file (the default) or the DynamoDB table of a fleet.

The DynamoDB storage calls AWS through a gateway of its own: its region and endpoint are ``journal.region`` and
``journal.endpoint_url`` (not Athena's), and its rate limiter is its own. Sharing Athena's would make every
intent written before a Stop wait for, and spend, a token of the Athena request budget, behind discovery's
listings; DynamoDB's on-demand capacity is a separate quota. Its limiter (:data:`STORAGE_REQUESTS_PER_SECOND`)
only guards against a runaway loop; within it, writes that precede a destructive call and lease changes go
first (:class:`~supervisor.gateway.Priority`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiobotocore.session import AioSession

from supervisor.clock import Clock, SystemClock
from supervisor.config import Settings
from supervisor.gateway import Gateway
from supervisor.metrics import Metrics
from supervisor.ratelimit import PriorityRateLimiter
from supervisor.storage import LeaseStore, Storage
from supervisor.storage.dynamodb import DynamoDbStorage
from supervisor.storage.dynamodb_table import Table
from supervisor.storage.sqlite import SqliteStorage

STORAGE_REQUESTS_PER_SECOND = 500.0
"""The DynamoDB storage's own request rate: half of what one partition of an on-demand table takes in writes per
second (1,000), so that one replica cannot throttle its own hottest partition (a shard's events of the day)."""


def build_storage_gateway(settings: Settings, metrics: Metrics, *, clock: Clock | None = None,
                          max_attempts: int | None = None, session: AioSession | None = None) -> Gateway:
    """The gateway of the DynamoDB journal (``journal.region``, else ``aws.region``; ``aws``'s credentials,
    timeouts and attempts; ``session``: the aiobotocore session, default one for ``aws.profile``)."""
    aws = settings.aws
    clock = clock or SystemClock()
    return Gateway(
        region=settings.journal.dynamodb_region(aws),
        metrics=metrics,
        limiter=PriorityRateLimiter(STORAGE_REQUESTS_PER_SECOND, clock=clock),
        profile=aws.profile,
        max_attempts=max_attempts or aws.max_attempts,
        connect_timeout=aws.connect_timeout,
        read_timeout=aws.read_timeout,
        clock=clock,
        session=session,
    )


def journal_table(settings: Settings, gateway: Gateway) -> Table:
    """The journal's DynamoDB table as the settings name it, reached through ``gateway``."""
    journal = settings.journal
    if journal.table is None:
        raise ValueError("journal.table is not set (journal.backend is not dynamodb)")
    return Table(gateway, journal.table, region=journal.dynamodb_region(settings.aws),
                 endpoint_url=journal.endpoint_url)


@asynccontextmanager
async def open_storage(settings: Settings, *, metrics: Metrics, clock: Clock | None = None,
                       session: AioSession | None = None) -> AsyncIterator[Storage]:
    """The root view of the storage ``journal`` names, closed (with its gateway) when the block ends.

    Args:
        settings: ``journal.backend`` picks the backend; ``journal.retention`` how long events are kept.
        metrics: where the DynamoDB storage's AWS calls are counted.
        clock: the DynamoDB gateway's rate limiter and retry backoff run on it.
        session: the DynamoDB gateway's aiobotocore session (default: a new one for ``aws.profile``).
    """
    journal = settings.journal
    if journal.backend == "sqlite":
        storage = SqliteStorage(journal.path)
        try:
            yield storage
        finally:
            storage.close_now()  # synchronous: it must happen even when the block ends by cancellation
        return
    async with build_storage_gateway(settings, metrics, clock=clock, session=session) as gateway:
        yield DynamoDbStorage(journal_table(settings, gateway), retention=journal.retention)


def lease_store(storage: Storage) -> LeaseStore | None:
    """``storage`` as the store of shard leases: the DynamoDB table is one; None for SQLite (one process owns
    every shard of its file)."""
    return storage if isinstance(storage, LeaseStore) else None
