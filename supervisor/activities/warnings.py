"""Warnings: the one path by which a predicted crossing (of a policy limit or a budget threshold) is told.

Producers hand a :class:`Notice` over without waiting (``submit``); this activity marks it once in storage
(a notice is sent once, ever, across restarts), journals it, counts it, logs it and emits it to the
notification channels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from supervisor.clock import Clock
from supervisor.core.model import LimitWarning, TargetRef
from supervisor.events import EventSink, NullSink
from supervisor.metrics import Metrics
from supervisor.storage import Storage

# Warnings wait here when storage is slow; beyond it a warning is dropped with a log line (it is re-derived
# at the target's next judgement, since it is marked only once sent).
QUEUE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Notice:
    """A warning ready to be told: ``key`` makes it once-only, ``log_event`` names it in the logs."""

    key: str
    log_event: str
    policy: str
    rule: str
    detail: Mapping[str, Any]
    target: TargetRef | None = field(default=None)

    @classmethod
    def of_limit(cls, warning: LimitWarning) -> Notice:
        return cls(warning.notice_key, "target.warning", warning.policy, warning.rule, warning.describe(),
                   warning.target)


class Warnings:
    def __init__(
        self,
        *,
        storage: Storage,
        metrics: Metrics,
        clock: Clock,
        events: EventSink | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.storage = storage
        self.metrics = metrics
        self.clock = clock
        self.events: EventSink = events or NullSink()
        self._log = logger or structlog.get_logger("supervisor.warnings")
        self._sender: MemoryObjectSendStream[Notice]
        self._receiver: MemoryObjectReceiveStream[Notice]
        self._sender, self._receiver = anyio.create_memory_object_stream[Notice](QUEUE_SIZE)
        self._pending: set[str] = set()

    def submit(self, notice: Notice) -> None:
        """Hand a notice over; a notice already waiting is not queued twice."""
        if notice.key in self._pending:
            return
        try:
            self._sender.send_nowait(notice)
        except anyio.WouldBlock:
            self._log.warning("warning.dropped", key=notice.key, reason="queue_full")
            return
        self._pending.add(notice.key)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for notice in self._receiver:
            try:
                await self._tell(notice)
            except Exception as error:
                self._log.exception("warning.failed", key=notice.key, error=repr(error))
            finally:
                self._pending.discard(notice.key)

    async def _tell(self, notice: Notice) -> None:
        now = self.clock.now()
        if not await self.storage.mark_once(notice.key, now):
            return
        await self.storage.record("warning", target=notice.target, policy=notice.policy, rule=notice.rule,
                                  detail=notice.detail, time=now)
        self.metrics.warnings.labels(notice.policy, notice.rule).inc()
        self._log.warning(notice.log_event, **notice.detail)
        self.events.emit("warning", dict(notice.detail))
