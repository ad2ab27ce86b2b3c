"""Which resources a call is about, and the selector that targeted faults use to pick calls.

A call is about the ids its request names plus their parents: a calculation's session and workgroup, a
session's workgroup. So a fault aimed at a workgroup also hits calls about its sessions and calculations,
and one aimed at a session also hits calls about its calculations.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from athena_spark_emulator.store import Store

_WORKGROUP_ARN = ":workgroup/"
_SESSION_ARN = "/session/"
SELECTOR_KEYS = ("operation", "session_id", "calculation_id", "workgroup")


@dataclass(frozen=True, slots=True)
class Resources:
    """The session ids, calculation ids and workgroup names one call (or one list item) is about."""

    sessions: frozenset[str] = frozenset()
    calculations: frozenset[str] = frozenset()
    workgroups: frozenset[str] = frozenset()

    def plus(self, *, session: str | None = None, calculation: str | None = None,
             workgroup: str | None = None) -> Resources:
        return Resources(
            self.sessions | ({session} if session else set()),
            self.calculations | ({calculation} if calculation else set()),
            self.workgroups | ({workgroup} if workgroup else set()),
        )


def rule_body(body: Any, allowed: AbstractSet[str]) -> dict[str, Any]:
    """A control-API rule body as a dict with only ``allowed`` keys; raise ValueError naming what is wrong."""
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    unknown = set(body) - allowed
    if unknown:
        raise ValueError(f"unknown keys: {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(allowed))})")
    return body


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) and value else None


def request_resources(store: Store, body: dict[str, Any]) -> Resources:
    """The resources a request names (``CalculationExecutionId``, ``SessionId``, ``WorkGroup``/``Name``,
    a workgroup or session ``ResourceARN``) and their parents as the store knows them."""
    found = Resources()
    calculation_id = _text(body, "CalculationExecutionId")
    session_id = _text(body, "SessionId")
    if calculation_id is not None:
        found = found.plus(calculation=calculation_id)
        calculation = store.calculations.get(calculation_id)
        if calculation is not None:
            session_id = session_id or calculation.session_id
            found = found.plus(session=calculation.session_id)
    if session_id is not None:
        found = found.plus(session=session_id)
        session = store.sessions.get(session_id)
        if session is not None:
            found = found.plus(workgroup=session.workgroup)
    arn = _text(body, "ResourceARN")
    arn_workgroup = arn.split(_WORKGROUP_ARN, 1)[1] if arn and _WORKGROUP_ARN in arn else None
    if arn_workgroup is not None and _SESSION_ARN in arn_workgroup:  # a session's ARN (GetResourceDashboard)
        arn_workgroup, arn_session = arn_workgroup.split(_SESSION_ARN, 1)
        found = found.plus(session=arn_session)
    for workgroup in (_text(body, "WorkGroup"), _text(body, "Name"), arn_workgroup):
        found = found.plus(workgroup=workgroup)
    return found


@dataclass(frozen=True, slots=True)
class Selector:
    """Picks calls: every given attribute must match (an operation name, or a resource the call is about)."""

    operation: str | None = None
    session_id: str | None = None
    calculation_id: str | None = None
    workgroup: str | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any], operations: frozenset[str]) -> Selector:
        """Read the selector keys of a control-API body; raise ValueError naming a bad one.

        Args:
            body: the rule's JSON object.
            operations: the operation names a rule may name.
        """
        values: dict[str, str | None] = {}
        for key in SELECTOR_KEYS:
            value = body.get(key)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{key} must be a non-empty string")
            values[key] = value
        operation = values["operation"]
        if operation is not None and operation not in operations:
            raise ValueError(f"operation: unknown operation {operation!r}")
        return cls(**values)

    @property
    def resource(self) -> tuple[str, str] | None:
        """The most specific resource it names, as ``(kind, id)``: calculation, session or workgroup."""
        for kind, value in (("calculation", self.calculation_id), ("session", self.session_id),
                            ("workgroup", self.workgroup)):
            if value is not None:
                return kind, value
        return None

    def matches(self, operation: str, resources: Resources) -> bool:
        return ((self.operation is None or self.operation == operation)
                and (self.session_id is None or self.session_id in resources.sessions)
                and (self.calculation_id is None or self.calculation_id in resources.calculations)
                and (self.workgroup is None or self.workgroup in resources.workgroups))

    def to_json(self) -> dict[str, Any]:
        return {"operation": self.operation, "session_id": self.session_id,
                "calculation_id": self.calculation_id, "workgroup": self.workgroup}
