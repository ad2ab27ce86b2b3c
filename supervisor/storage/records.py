"""What every storage backend reads back the same way: the event history's entries, and the queries on it.

Kept apart from the backends so that neither imports the other (the protocol re-exports
:class:`JournalEntry` and :class:`EventQuery`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Events of an escalation step name the action they take by their prefix (a stop escalated to a terminate has
# ``stop.*`` and then ``terminate.*`` events); the other events carry it in their detail (a decision).
_ACTION_OF_EVENT = (("stop.", "stop"), ("terminate.", "terminate"), ("workgroup.disable", "disable_workgroup"),
                    ("workgroup.enable", "enable_workgroup"))


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One event of the history.

    ``seq`` orders events written at the same instant (their order of writing); it is unique within a
    shard's history, not a count of events. ``shard`` is the scope of the shard that wrote it (``""``: the
    implicit shard).
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
    shard: str = ""

    @property
    def mode(self) -> str | None:
        """``enforce`` or ``dry-run``: the decision's mode as journaled, else ``enforce`` for the steps of an
        escalation and held calls (a dry-run or notify verdict settles at its decision: it has no later step);
        None for what has no mode (a warning, a notification failure)."""
        mode = self.detail.get("mode")
        if isinstance(mode, str):
            return mode
        if self.escalation_id is not None or self.event.endswith(".held"):
            return "enforce"
        return None

    @property
    def action(self) -> str | None:
        """The action the event is about: ``stop``, ``terminate``, ``notify``, a workgroup update, a budget
        threshold's action; None when it is about none (a verification, a warning)."""
        for prefix, action in _ACTION_OF_EVENT:
            if self.event.startswith(prefix):
                return action
        named = self.detail.get("action")
        return named if isinstance(named, str) else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "time": self.time.isoformat(timespec="microseconds"), "event": self.event,
            "mode": self.mode, "action": self.action,
            "escalation_id": self.escalation_id, "target_kind": self.target_kind, "target_id": self.target_id,
            "session_id": self.session_id, "workgroup": self.workgroup, "policy": self.policy, "rule": self.rule,
            "phase": self.phase, "detail": dict(self.detail), "shard": self.shard,
        }


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Which events to read, newest first: those that meet every condition given.

    Args:
        limit: at most this many (None: every match).
        since, until: ``since <= time < until``.
        target_id: events about this calculation or session (its id, or its session's).
        policy: of this policy or budget.
        workgroup: about this workgroup (the target's, or a budget event's ``workgroup``).
        events: event names or shell globs (``stop.*``); any of them.
        mode: ``enforce`` or ``dry-run`` (:attr:`JournalEntry.mode`).
    """

    limit: int | None = 50
    since: datetime | None = None
    until: datetime | None = None
    target_id: str | None = None
    policy: str | None = None
    workgroup: str | None = None
    events: tuple[str, ...] = ()
    mode: str | None = None

    def matches(self, entry: JournalEntry) -> bool:
        """Whether ``entry`` meets every condition (backends may narrow their reads first, never widen them)."""
        if self.since is not None and entry.time < self.since:
            return False
        if self.until is not None and entry.time >= self.until:
            return False
        if self.target_id is not None and self.target_id not in (entry.target_id, entry.session_id):
            return False
        if self.policy is not None and entry.policy != self.policy:
            return False
        if self.workgroup is not None and self.workgroup not in (entry.workgroup, entry.detail.get("workgroup")):
            return False
        if self.events and not any(fnmatch.fnmatchcase(entry.event, pattern) for pattern in self.events):
            return False
        return self.mode is None or entry.mode == self.mode

    def full(self, found: int) -> bool:
        """Whether ``found`` matches are all that was asked for."""
        return self.limit is not None and found >= self.limit
