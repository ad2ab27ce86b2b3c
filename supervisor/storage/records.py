"""What every storage backend reads back the same way: the event history's entries.

Kept apart from the backends so that neither imports the other (the protocol re-exports
:class:`JournalEntry`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One event of the history.

    ``seq`` orders events written at the same instant (their order of writing); it is unique within a
    shard's history, not a count of events.
    """

    seq: int
    time: datetime
    event: str
    escalation_id: str | None
    target_kind: str | None
    target_id: str | None
    session_id: str | None
    workgroup: str | None
    policy: str | None
    rule: str | None
    phase: str | None
    detail: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "time": self.time.isoformat(timespec="microseconds"), "event": self.event,
            "escalation_id": self.escalation_id, "target_kind": self.target_kind, "target_id": self.target_id,
            "session_id": self.session_id, "workgroup": self.workgroup, "policy": self.policy, "rule": self.rule,
            "phase": self.phase, "detail": dict(self.detail),
        }
