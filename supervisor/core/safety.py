"""Safety rails in front of every destructive call: a per-minute action budget and a circuit breaker.

- ``max_actions_per_minute``: Stop/Terminate calls beyond it wait for a slot (they are delayed, never
  dropped, so no due action is lost).
- circuit breaker: if the sessions hit by destructive calls within one minute would exceed
  ``fraction`` of the watched active sessions (and at least ``min_targets``), something is wrong (a bad
  policy, a clock jump): the breaker opens and holds every further destructive call until an operator resets
  it (``athena-supervisor breaker reset``, a reload, or a restart). Held escalations stay pending in the
  journal. Until a sweep has listed the shard's sessions (after a start, a restart or a takeover, the sessions
  known are only those resumed or announced, all of them due), there is no share to judge: the breaker waits
  for that count, and the per-minute budget alone bounds the actions meanwhile.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

WINDOW = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Admission:
    """``allowed``; otherwise ``reason`` and when to ask again (None: not before a restart)."""

    allowed: bool
    reason: str | None = None
    retry_at: datetime | None = None


class SafetyRails:
    def __init__(
        self,
        *,
        max_actions_per_minute: int,
        breaker_fraction: float,
        breaker_min_targets: int,
        active_sessions: Callable[[], int | None],
    ) -> None:
        self.max_actions_per_minute = max_actions_per_minute
        self.breaker_fraction = breaker_fraction
        self.breaker_min_targets = breaker_min_targets
        self._active_sessions = active_sessions
        self._actions: deque[datetime] = deque()
        self._sessions_hit: dict[str, datetime] = {}
        # (time, watched active sessions), decreasing counts (a sliding-window maximum): the breaker compares
        # with the window's peak, since the sessions it terminates leave the active count.
        self._watched: deque[tuple[datetime, int]] = deque()
        self.breaker_open = False

    def _forget_before(self, now: datetime) -> None:
        horizon = now - WINDOW
        while self._actions and self._actions[0] <= horizon:
            self._actions.popleft()
        for session_id in [s for s, at in self._sessions_hit.items() if at <= horizon]:
            del self._sessions_hit[session_id]
        while self._watched and self._watched[0][0] <= horizon:
            self._watched.popleft()

    def configure(self, *, max_actions_per_minute: int, breaker_fraction: float, breaker_min_targets: int) -> None:
        """Take reloaded limits (what was admitted within the minute still counts)."""
        self.max_actions_per_minute = max_actions_per_minute
        self.breaker_fraction = breaker_fraction
        self.breaker_min_targets = breaker_min_targets

    def actions_in_window(self, now: datetime) -> int:
        """Destructive calls admitted in the minute before ``now``."""
        self._forget_before(now)
        return len(self._actions)

    def reset(self) -> bool:
        """Close the breaker (an operator's explicit reset, or a reload) and forget the minute's hits, which
        would open it again at once; True if it was open."""
        was_open = self.breaker_open
        self.breaker_open = False
        self._sessions_hit.clear()
        self._watched.clear()
        return was_open

    def admit(self, session_id: str, now: datetime) -> Admission:
        """May a destructive call touching ``session_id`` be sent now? Admitted calls are counted.

        A workgroup update passes an empty ``session_id``: it counts towards the per-minute budget, and the
        breaker, once open, holds it too, but it hits no session."""
        if self.breaker_open:
            return Admission(False, "circuit_breaker")
        self._forget_before(now)
        if len(self._actions) >= self.max_actions_per_minute:
            return Admission(False, "rate_limit", self._actions[0] + WINDOW)
        hit = set(self._sessions_hit) | ({session_id} if session_id else set())
        active = self._active_sessions()
        if active is not None:  # None: not listed yet (see the module docstring)
            while self._watched and self._watched[-1][1] <= active:
                self._watched.pop()
            self._watched.append((now, active))
            watched = max(self._watched[0][1], 1)
            if len(hit) >= self.breaker_min_targets and len(hit) > self.breaker_fraction * watched:
                self.breaker_open = True
                return Admission(False, "circuit_breaker")
        self._actions.append(now)
        if session_id:
            self._sessions_hit[session_id] = now
        return Admission(True)
