"""The scheduling decision: what to look at next, when, and at what priority. Pure; ``now`` is an argument.

A target judged from what is known (a listing, an earlier look) is never acted on directly: it gets a
deadline, and at that instant the checks activity looks at it afresh and judges again.

- a verdict from known data: look now, urgently (the fresh look confirms or clears it);
- an accrual limit without statistics yet: look now, routinely;
- otherwise at the next instant a limit can be crossed (exact for time limits, predicted for DPU/cost
  limits), just after it, so the fresh observation is past the limit; a first DPU observation gives only
  an average rate, so a routine second look comes first, halfway there (at least a second away).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from supervisor.core.model import Evaluation, TargetKey

# A first DPU observation gives only an average rate: look again before trusting the prediction.
SECOND_LOOK_MIN = timedelta(seconds=1)
# Checks land just after a predicted crossing so the fresh observation is past the limit.
CROSSING_MARGIN = timedelta(milliseconds=10)


class CheckKind(Enum):
    """Why a target is looked at: a predicted crossing (urgent) or statistics it lacks (routine)."""

    CROSSING = "crossing"
    STATISTICS = "statistics"


@dataclass(frozen=True, slots=True)
class NextLook:
    when: datetime
    kind: CheckKind


def next_look(evaluation: Evaluation, now: datetime, *, accrual_limited: bool, observations: int) -> NextLook | None:
    """When to look at a target judged from known data; None when no limit can be crossed any more.

    Args:
        evaluation: the judgement from known data.
        now: the instant of that judgement.
        accrual_limited: a DPU or cost limit applies to the target.
        observations: how many detailed (statistics) observations of the target are known.
    """
    if evaluation.verdict is not None:
        return NextLook(now, CheckKind.CROSSING)
    if evaluation.needs_statistics:
        return NextLook(now, CheckKind.STATISTICS)
    if evaluation.next_check_at is None:
        return None
    when = evaluation.next_check_at + CROSSING_MARGIN
    if accrual_limited and observations < 2:
        second_look = now + max(SECOND_LOOK_MIN, (when - now) / 2)
        if second_look < when:
            return NextLook(second_look, CheckKind.STATISTICS)
    return NextLook(when, CheckKind.CROSSING)


@dataclass(order=True, slots=True)
class _Deadline:
    when: datetime
    seq: int
    key: TargetKey = field(compare=False)
    kind: CheckKind = field(compare=False)


class Deadlines:
    """A heap of (when, target key); rescheduling a key supersedes its earlier entry."""

    def __init__(self) -> None:
        self._heap: list[_Deadline] = []
        self._current: dict[TargetKey, _Deadline] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._current)

    def __contains__(self, key: TargetKey) -> bool:
        return key in self._current

    def schedule(self, key: TargetKey, when: datetime, kind: CheckKind) -> bool:
        """Schedule ``key`` at ``when``; True if this is now the earliest deadline overall."""
        existing = self._current.get(key)
        if existing is not None and existing.when <= when and existing.kind is kind:
            return False
        entry = _Deadline(when, next(self._seq), key, kind)
        self._current[key] = entry
        heapq.heappush(self._heap, entry)
        return self._heap[0] is entry

    def cancel(self, key: TargetKey) -> None:
        self._current.pop(key, None)

    def entries(self) -> list[tuple[TargetKey, datetime, CheckKind]]:
        """Every scheduled look, earliest first."""
        return sorted(((entry.key, entry.when, entry.kind) for entry in self._current.values()),
                      key=lambda item: item[1])

    def _drop_superseded(self) -> None:
        while self._heap and self._current.get(self._heap[0].key) is not self._heap[0]:
            heapq.heappop(self._heap)

    def next_at(self) -> datetime | None:
        self._drop_superseded()
        return self._heap[0].when if self._heap else None

    def pop_due(self, now: datetime) -> list[tuple[TargetKey, CheckKind]]:
        due: list[tuple[TargetKey, CheckKind]] = []
        while True:
            self._drop_superseded()
            if not self._heap or self._heap[0].when > now:
                return due
            entry = heapq.heappop(self._heap)
            del self._current[entry.key]
            due.append((entry.key, entry.kind))
