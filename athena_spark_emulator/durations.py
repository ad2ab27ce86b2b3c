"""Duration values of pragmas and the control API: ``"90s"``, ``"2m"``, ``"1h30m"``, ``"50ms"``, or seconds.

Strings with units follow the same grammar as the supervisor's configuration (one or more
``<number><unit>`` parts, units ``d h m s ms`` largest first, each at most once, e.g. ``1h30m``,
``1.5s``). The emulator is its own package and must not import :mod:`supervisor`, so the grammar is
restated here (a test checks both parsers agree). Unlike the configuration, the emulator also takes a
plain number of seconds (``3``, ``"12"``), which scripted clients find convenient.
"""

from __future__ import annotations

import math
import re

_UNIT_SECONDS: dict[str, float] = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_UNIT_ORDER = tuple(_UNIT_SECONDS)  # largest first
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|d|h|m|s)")
HINT = "use e.g. 30s, 2m, 1.5s, 50ms"


def _parse_with_units(text: str) -> float | None:
    """Seconds for ``1h30m``-style text, or None when it is not in the grammar."""
    position, seconds, last_rank = 0, 0.0, -1
    while position < len(text):
        match = _PART.match(text, position)
        if match is None:
            return None
        rank = _UNIT_ORDER.index(match.group(2))
        if rank <= last_rank:
            return None
        last_rank = rank
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return seconds if last_rank >= 0 else None


def parse_duration(value: object) -> float:
    """Return seconds for a duration given as a number of seconds or a string with units.

    Raises:
        ValueError: the value is not a finite, non-negative duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parsed = _parse_with_units(text)
            if parsed is None:
                raise ValueError(f"not a duration: {value!r} ({HINT})") from None
            seconds = parsed
    elif isinstance(value, int | float):
        seconds = float(value)
    else:
        raise ValueError(f"not a duration: {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a duration: {value!r}")
    return seconds
