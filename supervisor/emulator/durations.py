"""Duration strings of pragmas and the control API: ``"90s"``, ``"2m"``, ``"1.5s"``, ``"50ms"``, ``3``."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Return seconds for a duration given as a number of seconds or a string with a unit.

    Args:
        value: ``int``/``float`` seconds, or a string such as ``"30s"``, ``"2m"``, ``"1.5s"``, ``"50ms"``,
            ``"1h"`` or ``"12"`` (seconds).

    Returns:
        The non-negative duration in seconds.

    Raises:
        ValueError: the value is not a finite, non-negative duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 2m, 1.5s, 50ms)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"not a duration: {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a duration: {value!r}")
    return seconds
