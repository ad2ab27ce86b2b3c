"""Duration values of pragmas and the control API: ``"90s"``, ``"2m"``, ``"1.5s"``, ``"50ms"``, or seconds.

Strings with a unit follow the configuration's grammar (:func:`supervisor.durations.parse_duration`); the
emulator also takes a plain number of seconds (``3``, ``"12"``), which scripted clients find convenient.
"""

from __future__ import annotations

import math

from supervisor.durations import parse_duration as parse_duration_with_unit


def parse_duration(value: object) -> float:
    """Return seconds for a duration given as a number of seconds or a string with a unit.

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
            try:
                seconds = parse_duration_with_unit(text).total_seconds()
            except ValueError:
                raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 2m, 1.5s, 50ms)") from None
    elif isinstance(value, int | float):
        seconds = float(value)
    else:
        raise ValueError(f"not a duration: {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a duration: {value!r}")
    return seconds
