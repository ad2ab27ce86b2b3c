"""The audit log of API calls: compact tuples in memory, rendered to JSON objects on read."""

from __future__ import annotations

import json
from collections import deque
from datetime import UTC, datetime
from typing import Any

DEFAULT_MAX_CALLS = 1_000_000


def iso_millis(stamp: float) -> str:
    """``2026-11-25T11:02:03.456Z`` for an epoch-seconds timestamp."""
    moment = datetime.fromtimestamp(stamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_since(value: str) -> float:
    """Parse an ISO-8601 instant (``Z`` or offset; naive means UTC) or epoch seconds."""
    try:
        return float(value)
    except ValueError:
        pass
    moment = datetime.fromisoformat(value.strip().replace(" ", "+"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return raw.decode("utf-8", "replace")


class AuditLog:
    """Every Athena API call: ``(time, operation, raw body, HTTP status, error type)``, oldest first.

    Bodies are kept as the raw bytes received (cheaper than parsed dicts) and decoded on read.

    Args:
        max_calls: the most recent calls kept; older ones are dropped.
    """

    __slots__ = ("_entries",)

    def __init__(self, max_calls: int = DEFAULT_MAX_CALLS) -> None:
        self._entries: deque[tuple[float, str | None, bytes, int, str | None]] = deque(maxlen=max_calls)

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, time: float, operation: str | None, body: bytes, status: int, error: str | None) -> None:
        self._entries.append((time, operation, body, status, error))

    def clear(self) -> None:
        self._entries.clear()

    def entries(self, since: float | None = None, operation: str | None = None) -> list[dict[str, Any]]:
        """Calls at or after ``since`` (epoch seconds), optionally of one operation, oldest first."""
        selected = []
        for entry in reversed(self._entries):
            if since is not None and entry[0] < since:
                break
            if operation is None or entry[1] == operation:
                selected.append(entry)
        selected.reverse()
        return [
            {"time": iso_millis(time), "operation": op, "request": _decode(body), "status": status,
             "error": error}
            for time, op, body, status, error in selected
        ]
