"""Retention: the journal's events older than ``journal.retention`` are deleted, once at start and then hourly.

Only events: claims, escalations, notices and the ledger are what the daemon decides by, and stay. The SQLite
journal deletes them here (:meth:`~supervisor.storage.Storage.prune_events`); a DynamoDB table expires them by
itself through its TTL attribute, so there the prune is a no-op.
"""

from __future__ import annotations

from datetime import timedelta

import anyio
import anyio.abc
import structlog

from supervisor.clock import Clock
from supervisor.metrics import Metrics
from supervisor.storage import Storage

PRUNE_INTERVAL = timedelta(hours=1)


class Retention:
    """Deletes ``storage``'s events older than ``retention`` every ``interval`` on ``clock``; counts them in
    ``metrics`` (``athena_supervisor_journal_events_pruned_total``) when given."""

    def __init__(self, *, storage: Storage, clock: Clock, retention: timedelta, interval: timedelta = PRUNE_INTERVAL,
                 metrics: Metrics | None = None, logger: structlog.typing.FilteringBoundLogger | None = None) -> None:
        self.storage = storage
        self.clock = clock
        self.retention = retention
        self.interval = interval
        self.metrics = metrics
        self._log = logger or structlog.get_logger("supervisor.retention")

    async def run_once(self) -> int:
        """Delete the events older than the retention now; how many were deleted."""
        before = self.clock.now() - self.retention
        pruned = await self.storage.prune_events(before)
        if self.metrics is not None:
            self.metrics.events_pruned.inc(pruned)
        if pruned:
            self._log.info("journal.events_pruned", count=pruned, before=before.isoformat())
        return pruned

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            started = self.clock.now()
            try:
                await self.run_once()
            except Exception as error:  # the journal is busy or full: try again next time
                self._log.exception("journal.prune_failed", error=repr(error))
            await self.clock.sleep_until(started + self.interval)
