"""What the daemon tells the outside world about (notifications subscribe to these names)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

EventName = Literal[
    "warning", "violation", "stop_requested", "escalated", "terminated", "escalation_failed",
    "budget_threshold", "workgroup_disabled", "workgroup_enabled", "test",
]
Severity = Literal["info", "warning", "critical"]

SEVERITY: dict[str, Severity] = {
    "warning": "warning",
    "violation": "warning",
    "stop_requested": "info",
    "escalated": "warning",
    "terminated": "info",
    "escalation_failed": "critical",
    "budget_threshold": "warning",
    "workgroup_disabled": "critical",
    "workgroup_enabled": "info",
    "test": "info",  # athena-supervisor preflight --notify-test: delivered to each channel, whatever its filters
}


class EventSink(Protocol):
    def emit(self, event: EventName, payload: Mapping[str, Any]) -> None:
        """Hand an event over without blocking; delivery happens elsewhere."""
        ...


class NullSink:
    def emit(self, event: EventName, payload: Mapping[str, Any]) -> None:
        return None
