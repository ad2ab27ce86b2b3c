"""The demo's running commentary: its own steps, and the daemon's events as they happen.

:class:`Narrator` is the :class:`~supervisor.events.EventSink` the demo hands to the daemon. ``emit`` only
queues (it must not block the daemon); :meth:`Narrator.run` prints each event, reading the journal for
the exact instants a call was sent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import anyio

from supervisor.core.escalation import Escalation
from supervisor.core.model import TargetKey, TargetKind
from supervisor.durations import format_duration
from supervisor.events import EventName
from supervisor.storage import Storage

RULE_VERBS = {
    "max_runtime": "has run", "max_queued": "has waited", "max_idle": "has been idle", "max_busy": "has been busy",
    "max_age": "is", "max_dpu_hours": "has used", "max_cost_usd": "has used",
}
ACTION_WORDS = {"stop": "stop it", "terminate": "terminate the session", "notify": "notify only"}
INDENT = " " * 11


def short_id(value: str) -> str:
    return value[:8]


def measured(value: float, unit: str) -> str:
    """An observed value in words: ``6.0 s``, ``$0.0100 of DPU time``."""
    if unit == "seconds":
        return f"{value:.1f} s"
    if unit == "usd":
        return f"${value:.4f} of DPU time"
    if unit == "dpu_hours":
        return f"{value:.4f} DPU-hours"
    return f"{value:g} {unit}"


def limit_text(rule: str, value: float, unit: str) -> str:
    if unit == "seconds":
        return f"{rule} {format_duration(timedelta(seconds=value))}"
    if unit == "usd":
        return f"{rule} ${value:g}"
    return f"{rule} {value:g}"


def _when(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


class Narrator:
    """Prints ``[  7.02s] ...`` lines to ``out``; seconds count from :meth:`start_clock`."""

    def __init__(self, out: TextIO, *, stop_grace: timedelta, terminate_grace: timedelta) -> None:
        self.out = out
        self.stop_grace = stop_grace
        self.terminate_grace = terminate_grace
        self.started = datetime.now(UTC)
        self.names: dict[str, str] = {}  # session or calculation id -> the scripted part it belongs to
        self.received: list[tuple[EventName, dict[str, Any]]] = []
        self._send, self._receive = anyio.create_memory_object_stream[tuple[EventName, dict[str, Any]]](math.inf)
        self._pending = 0
        self._idle = anyio.Event()
        self._idle.set()

    # -- the EventSink side (called by the daemon, in its tasks) ---------------------------------------

    def emit(self, event: EventName, payload: Mapping[str, Any]) -> None:
        self._pending += 1
        self._idle = anyio.Event() if self._idle.is_set() else self._idle
        self._send.send_nowait((event, dict(payload)))

    # -- printing --------------------------------------------------------------------------------------

    def start_clock(self) -> None:
        self.started = datetime.now(UTC)

    def offset(self, when: datetime | None = None) -> float:
        return ((when or datetime.now(UTC)) - self.started).total_seconds()

    def line(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def say(self, text: str, *, at: datetime | None = None, indent: bool = False) -> None:
        stamp = f"[{self.offset(at):6.2f}s]"
        self.line(f"  {INDENT if indent else stamp} {text}")

    def label(self, kind: str, target_id: str) -> str:
        name = self.names.get(target_id)
        noun = "calc" if kind == "calculation" else "session"
        return f"{noun} {short_id(target_id)}" + (f" ({name})" if name else "")

    async def drain(self) -> None:
        """Return once every event emitted so far has been printed."""
        await self._idle.wait()

    async def run(self, journal: Storage) -> None:
        """Print events until cancelled."""
        async with self._receive:
            async for event, payload in self._receive:
                self.received.append((event, payload))
                try:
                    await self._narrate(event, payload, journal)
                finally:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.set()

    async def _escalation(self, journal: Storage, payload: Mapping[str, Any]) -> Escalation | None:
        key = TargetKey(TargetKind(str(payload.get("target_kind"))), str(payload.get("target_id")))
        return await journal.escalation_for(key)

    async def _narrate(self, event: EventName, payload: Mapping[str, Any], journal: Storage) -> None:
        kind = str(payload.get("target_kind", ""))
        target = self.label(kind, str(payload.get("target_id", "")))
        session = self.label("session", str(payload.get("session_id", "")))
        where = f"in {payload.get('workgroup')}"
        rule, unit = str(payload.get("rule", "")), str(payload.get("unit", ""))
        limit = limit_text(rule, float(payload.get("limit", 0)), unit)
        if event == "warning":
            predicted = _when(payload["predicted_at"])
            self.say(f"WARNING  {target} {where} is predicted to cross {limit} at {self.offset(predicted):.2f}s "
                     f"({measured(float(payload['observed']), unit)} so far; policy {payload.get('policy')})")
        elif event == "violation":
            verb = RULE_VERBS.get(rule, "is at")
            action = ACTION_WORDS.get(str(payload.get("action")), str(payload.get("action")))
            self.say(f"LIMIT    {target} {where} {verb} {measured(float(payload['observed']), unit)}, over "
                     f"{limit} (policy {payload.get('policy')}): {action}")
        elif event == "stop_requested":
            escalation = await self._escalation(journal, payload)
            lag = _lag(escalation.stop_intent_at if escalation else None, payload)
            self.say(f"-> StopCalculationExecution for {target} sent {lag} after the crossing", indent=True)
        elif event == "escalated":
            self.say(f"ESCALATE {target} is still running {format_duration(self.stop_grace)} after the stop "
                     f"(stop_grace): TerminateSession on its {session}")
        elif event == "terminated":
            escalation = await self._escalation(journal, payload)
            if escalation is not None and escalation.stop_sent_at and escalation.terminate_intent_at:
                waited = (escalation.terminate_intent_at - escalation.stop_sent_at).total_seconds()
                how = f"TerminateSession sent {waited:.2f} s after the stop"
            else:
                how = "TerminateSession sent " + _lag(escalation.terminate_intent_at if escalation else None,
                                                        payload) + " after the crossing"
            self.say(f"DONE     {session} is TERMINATED ({how})")
        elif event == "escalation_failed":
            self.say(f"FAILED   {session} is still alive {format_duration(self.terminate_grace)} after "
                     "TerminateSession: escalation failed, retrying with backoff")
        else:
            details = ", ".join(f"{key}={value}" for key, value in sorted(payload.items())
                                if key in ("budget", "workgroup", "policy", "rule", "action", "outcome"))
            self.say(f"{event.upper():8} {details}")


def _lag(sent_at: datetime | None, payload: Mapping[str, Any]) -> str:
    if sent_at is None or "crossed_at" not in payload:
        return "(time unknown)"
    return f"{(sent_at - _when(payload['crossed_at'])).total_seconds():.2f} s"
