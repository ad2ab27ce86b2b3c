"""Points in time on the command line (``--since 7d``, ``--until 2026-11-25T12:00:00Z``) and how commands print
them (ISO 8601 in UTC with ``Z``)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from supervisor.durations import DurationError, parse_duration

INSTANT_HELP = "a duration ago (7d, 12h, 30m) or a time (2026-11-25, 2026-11-25T12:00:00Z; without a zone: UTC)"


def instant(text: str, *, now: datetime | None = None) -> datetime:
    """An argparse type: ``7d`` (that long before ``now``) or an ISO 8601 date or time (UTC unless it says)."""
    now = now or datetime.now(UTC)
    try:
        return now - parse_duration(text)
    except DurationError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration or a time: {text!r}; {INSTANT_HELP}") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def utc_text(when: datetime, *, milliseconds: bool = True) -> str:
    """``2026-11-25T12:00:00.030Z``: UTC, ISO 8601, marked ``Z``."""
    text = when.astimezone(UTC).isoformat(timespec="milliseconds" if milliseconds else "seconds")
    return text.replace("+00:00", "Z")
