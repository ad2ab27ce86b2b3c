"""The audit log of API calls: compact tuples in memory, rendered to JSON objects on read."""

from __future__ import annotations

import json
from collections import Counter, deque
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


Entry = tuple[float, str, str, str | None, bytes, int, str | None, str]
API = "api"
CONTROL = "control"


class AuditLog:
    """Every API call of every account-region: ``(time, account, region, operation, raw body, HTTP status,
    error type, via)``, oldest first; ``via`` is ``api`` (``POST /``) or ``control`` (``POST /_emulator/call``).

    Bodies are kept as the raw bytes received (cheaper than parsed dicts) and decoded on read. The number of
    calls kept per account-region is counted as they come and go, for ``GET /_emulator/state``.

    Args:
        max_calls: the most recent calls kept; older ones are dropped.
    """

    __slots__ = ("_counts", "_entries")

    def __init__(self, max_calls: int = DEFAULT_MAX_CALLS) -> None:
        self._entries: deque[Entry] = deque(maxlen=max_calls)
        self._counts: Counter[tuple[str, str]] = Counter()

    def __len__(self) -> int:
        return len(self._entries)

    def count(self, account: str | None = None, region: str | None = None) -> int:
        """How many kept calls are of ``account`` and ``region`` (None: any)."""
        return sum(count for (entry_account, entry_region), count in self._counts.items()
                   if account in (None, entry_account) and region in (None, entry_region))

    def record(self, time: float, account: str, region: str, operation: str | None, body: bytes, status: int,
               error: str | None, via: str = API) -> None:
        if len(self._entries) == self._entries.maxlen:
            dropped = self._entries[0]
            self._counts[(dropped[1], dropped[2])] -= 1
        self._entries.append((time, account, region, operation, body, status, error, via))
        self._counts[(account, region)] += 1

    def clear(self, account: str | None = None, region: str | None = None) -> None:
        """Forget the calls of ``account`` and ``region`` (None: any; both None: every call)."""
        if account is None and region is None:
            self._entries.clear()
            self._counts.clear()
            return
        kept = [entry for entry in self._entries if not _matches(entry, account, region)]
        self._entries = deque(kept, maxlen=self._entries.maxlen)
        self._counts = Counter((entry[1], entry[2]) for entry in kept)

    def entries(self, since: float | None = None, operation: str | None = None, *, account: str | None = None,
                region: str | None = None) -> list[dict[str, Any]]:
        """Calls at or after ``since`` (epoch seconds), optionally of one operation, account and/or region,
        oldest first."""
        selected = []
        for entry in reversed(self._entries):
            if since is not None and entry[0] < since:
                break
            if (operation is None or entry[3] == operation) and _matches(entry, account, region):
                selected.append(entry)
        selected.reverse()
        return [
            {"time": iso_millis(time), "account": entry_account, "region": entry_region, "operation": op,
             "request": _decode(body), "status": status, "error": error, "via": via}
            for time, entry_account, entry_region, op, body, status, error, via in selected
        ]


def _matches(entry: Entry, account: str | None, region: str | None) -> bool:
    return account in (None, entry[1]) and region in (None, entry[2])
