"""The state of the event path (``discovery.events``), shared by the feed that drains the queue and the shards'
discovery, which uses it to tell a backstop find that an event should have announced (docs/events.md)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(slots=True)
class EventPath:
    """Written by :class:`~supervisor.activities.event_feed.EventFeed` only; read by discovery and ``/status``.

    ``up_since``: when the queue first answered (a call started after it, whose event should have arrived by
    now, and that a sweep found first, is a missed event); ``problem``: why the queue cannot be read now.
    """

    late_after: timedelta
    up_since: datetime | None = None
    problem: str | None = None
    last_received_at: datetime | None = None
    last_delivery_seconds: float | None = None  # the last event's eventTime to its receipt
    queue_depth: int | None = None
    queue_depth_at: datetime | None = None

    def should_have_announced(self, started_at: datetime | None, now: datetime) -> bool:
        """Whether a target started at ``started_at`` and unknown at ``now`` means its event was lost."""
        return (self.up_since is not None and started_at is not None
                and self.up_since <= started_at <= now - self.late_after)
