"""One seam for everything durable: escalations (the unique claims, intents and answers), the event history,
one-off notices, and the budget ledger (counted spend, checkpoints, episodes, disabled workgroups).

:class:`Storage` is what the activities use; :class:`~supervisor.storage.sqlite.SqliteStorage` is the embedded
implementation. A second backend (DynamoDB) is one more module implementing the same protocol: nothing
outside a backend's module writes SQL or assumes one process (claims are unique by the backend's own
conditional write, not by an in-memory set).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from supervisor.core.budgets import Allocation, Counted, Episode
from supervisor.core.escalation import Escalation
from supervisor.core.model import TargetKey, TargetRef
from supervisor.storage.sqlite_journal import JournalEntry

__all__ = ["JournalEntry", "Storage"]


class Storage(Protocol):
    """Durable state of the daemon. Every method is a short atomic operation."""

    # -- escalations: claims, intents and answers ------------------------------------------------------
    async def claim(self, escalation: Escalation, event: str | None, detail: Mapping[str, Any]) -> bool:
        """Record a new escalation and its decision event; False if its target was ever claimed before."""
        ...

    async def save(self, escalation: Escalation, event: str, detail: Mapping[str, Any], *, time: datetime) -> None:
        """Store an escalation's new state and the event that led to it, atomically."""
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
