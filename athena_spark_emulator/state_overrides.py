"""Reported states that differ from the lifecycle: "session X says HIBERNATING", "calculation Y says
RUNNING forever".

An override changes only the ``Status.State`` that Get*/List* answers report (and what their
``StateFilter`` matches), so a client can be shown states it does not know or states that contradict the
rest of the answer. The emulator's own behaviour (what a calculation does, whether a session accepts work,
what TerminateSession/StopCalculationExecution do and answer) follows the real lifecycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from athena_spark_emulator.rulebook import RuleBook
from athena_spark_emulator.selectors import rule_body

_KEYS = {"session_id", "calculation_id", "state"}
MAX_STATE_LENGTH = 64


@dataclass(frozen=True, slots=True)
class StateOverride:
    """Report ``state`` for one session or one calculation (exactly one of the ids)."""

    state: str
    session_id: str | None = None
    calculation_id: str | None = None

    @classmethod
    def from_json(cls, body: Any) -> StateOverride:
        """Parse a control-API body; raise ValueError naming the bad key."""
        body = rule_body(body, _KEYS)
        state = body.get("state")
        if not isinstance(state, str) or not state.strip() or len(state) > MAX_STATE_LENGTH:
            raise ValueError(f"state must be a non-empty string of at most {MAX_STATE_LENGTH} characters")
        ids = {key: body.get(key) for key in ("session_id", "calculation_id")}
        given = [key for key, value in ids.items() if value is not None]
        if len(given) != 1:
            raise ValueError("name exactly one of session_id, calculation_id")
        value = ids[given[0]]
        if not isinstance(value, str) or not value:
            raise ValueError(f"{given[0]} must be a non-empty string")
        return cls(state, **{given[0]: value})

    def to_json(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "calculation_id": self.calculation_id, "state": self.state}


class StateOverrides(RuleBook[StateOverride]):
    """The installed overrides (ids ``state-N``), one per resource: a new one for the same id replaces it."""

    def __init__(self) -> None:
        super().__init__("state")
        self._sessions: dict[str, str] = {}
        self._calculations: dict[str, str] = {}

    def put(self, override: StateOverride) -> str:
        for rule_id, existing in self.items():
            if (existing.session_id, existing.calculation_id) == (override.session_id, override.calculation_id):
                self.remove(rule_id)
        rule_id = self.add(override)
        self._reindex()
        return rule_id

    def remove(self, rule_id: str) -> StateOverride:
        removed = super().remove(rule_id)
        self._reindex()
        return removed

    def clear(self) -> None:
        super().clear()
        self._reindex()

    def _reindex(self) -> None:
        rules = [rule for _, rule in self.items()]
        self._sessions = {rule.session_id: rule.state for rule in rules if rule.session_id is not None}
        self._calculations = {rule.calculation_id: rule.state for rule in rules if rule.calculation_id is not None}

    def session_state(self, session_id: str, state: str) -> str:
        """The state to report for a session whose lifecycle state is ``state``."""
        return self._sessions.get(session_id, state) if self._sessions else state

    def calculation_state(self, calculation_id: str, state: str) -> str:
        """The state to report for a calculation whose lifecycle state is ``state``."""
        return self._calculations.get(calculation_id, state) if self._calculations else state
