"""What a notification says: the message body shared by every channel, a Slack-compatible sentence, and the
EventBridge ``DetailType`` of each event."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from supervisor.events import SEVERITY, EventName, Severity

SOURCE = "athena-supervisor"

DETAIL_TYPES: dict[str, str] = {
    "warning": "Athena Supervisor Warning",
    "violation": "Athena Supervisor Violation",
    "stop_requested": "Athena Supervisor Stop Requested",
    "escalated": "Athena Supervisor Escalated",
    "terminated": "Athena Supervisor Session Terminated",
    "escalation_failed": "Athena Supervisor Escalation Failed",
    "budget_threshold": "Athena Supervisor Budget Threshold",
    "workgroup_disabled": "Athena Supervisor Workgroup Disabled",
    "workgroup_enabled": "Athena Supervisor Workgroup Enabled",
    "test": "Athena Supervisor Test",
}

_TEXTS: dict[str, str] = {
    "violation": "{Kind} {target_id} in workgroup {workgroup} crossed {rule} of {owner}: {observed} > {limit} {unit};"
                 " action: {action} ({mode}).",
    "stop_requested": "Stop requested for calculation {target_id} in workgroup {workgroup} ({owner}, {rule}).",
    "escalated": "Calculation {target_id} in workgroup {workgroup} did not stop; terminating its session "
                 "{session_id} ({owner}).",
    "terminated": "Session {session_id} in workgroup {workgroup} was terminated ({owner}, {rule}).",
    "escalation_failed": "Session {session_id} in workgroup {workgroup} is still alive after TerminateSession "
                         "({owner}); retrying with backoff.",
    "budget_threshold": "Budget {budget} reached {at_percent}% of {limit_usd} USD: spent {spent_usd} USD, forecast "
                        "{forecast_usd} USD; action: {action} ({mode}).",
    "workgroup_disabled": "Workgroup {workgroup} disabled by budget {budget} (spent {spent_usd} of {limit_usd} USD);"
                          " it is enabled again when the budget period resets.",
    "workgroup_enabled": "Workgroup {workgroup} enabled again: the period of budget {budget} has reset.",
    "test": "{text} (from {host})",
}
_TARGET_WARNING = ("Warning: {kind} {target_id} in workgroup {workgroup} is predicted to cross {rule} of {owner} "
                   "({limit} {unit}) at {predicted_at}.")
_BUDGET_WARNING = ("Warning: budget {budget} ({spent_usd} of {limit_usd} USD spent) is predicted to reach its "
                   "{at_percent}% threshold ({action}) at {predicted_at}.")


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


def _number(value: Any) -> Any:
    return f"{value:g}" if isinstance(value, float | int) and not isinstance(value, bool) else value


def text(event: str, payload: Mapping[str, Any]) -> str:
    """One human sentence about the event (Slack's ``text``)."""
    values = _Missing({key: _number(value) for key, value in payload.items()})
    kind = str(payload.get("target_kind") or "target")
    values.setdefault("kind", kind)
    values["Kind"] = kind.capitalize()
    values["owner"] = f"budget {payload['budget']}" if payload.get("budget") else f"policy {payload.get('policy', '?')}"
    if event == "warning":
        template = _BUDGET_WARNING if payload.get("budget") and not payload.get("target_id") else _TARGET_WARNING
    else:
        template = _TEXTS.get(event, "{event}")
    values.setdefault("event", event)
    return template.format_map(values)


@dataclass(frozen=True, slots=True)
class Message:
    event: EventName
    severity: Severity
    payload: Mapping[str, Any]
    time: datetime

    @property
    def text(self) -> str:
        return text(self.event, self.payload)

    @property
    def detail_type(self) -> str:
        return DETAIL_TYPES.get(self.event, "Athena Supervisor Event")

    def body(self) -> dict[str, Any]:
        """The JSON document every channel sends (webhook body, SNS Message, EventBridge Detail)."""
        return {"source": SOURCE, "event": self.event, "severity": self.severity, "text": self.text,
                "time": self.time.isoformat(), "detail": dict(self.payload)}

    @classmethod
    def build(cls, event: EventName, payload: Mapping[str, Any], time: datetime) -> Message:
        return cls(event, SEVERITY.get(event, "info"), dict(payload), time)
