"""Human durations such as ``45s``, ``15m``, ``1h30m`` or ``500ms``, parsed to and from :class:`timedelta`.

Grammar: one or more ``<number><unit>`` parts with no spaces, units in strictly descending order, each
unit at most once. A number is digits with an optional decimal part (``1.5h``). Units: ``d`` (day),
``h``, ``m``, ``s``, ``ms``. A bare number has no unit and is rejected: ``30`` could mean seconds or
minutes. Parsing is exact to the microsecond (decimal arithmetic, no float rounding).
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal

UNIT_MICROSECONDS: dict[str, int] = {
    "d": 86_400_000_000,
    "h": 3_600_000_000,
    "m": 60_000_000,
    "s": 1_000_000,
    "ms": 1_000,
}
_UNIT_ORDER = tuple(UNIT_MICROSECONDS)  # descending size
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|d|h|m|s)")
_BARE_NUMBER = re.compile(r"[+-]?\d+(?:\.\d*)?|[+-]?\.\d+")

DURATION_HINT = "use a number with a unit (ms, s, m, h, d), e.g. 45s, 15m, 2h"
BARE_NUMBER_HINT = "add a unit (ms, s, m, h, d), e.g. 45s, 15m, 2h"


class DurationError(ValueError):
    """A string that is not a duration.

    ``problem`` and ``hint`` are the parts of the message without the offending text, so callers (the
    config loader) can lay the message out their own way; ``str()`` is the full sentence.
    """

    def __init__(self, problem: str, text: str, hint: str) -> None:
        super().__init__(f"{problem}; got {text!r}; {hint}")
        self.problem = problem
        self.text = text
        self.hint = hint


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as ``45s``, ``1h30m`` or ``1.5s``.

    Args:
        text: the duration; surrounding whitespace is ignored.

    Returns:
        The duration as a :class:`timedelta` (``0s`` gives ``timedelta(0)``).

    Raises:
        DurationError: (a :class:`ValueError`) naming the text and the accepted form.
    """
    stripped = text.strip()
    if _BARE_NUMBER.fullmatch(stripped):
        raise DurationError("a number without a unit is not a duration", text, BARE_NUMBER_HINT)
    position = 0
    micros = Decimal(0)
    last_rank = -1
    while position < len(stripped):
        match = _PART.match(stripped, position)
        if match is None:
            raise DurationError("not a duration", text, DURATION_HINT)
        rank = _UNIT_ORDER.index(match.group(2))
        if rank <= last_rank:
            raise DurationError(
                "units must appear once each, largest first", text, "write e.g. 1h30m, not 30m1h"
            )
        last_rank = rank
        micros += Decimal(match.group(1)) * UNIT_MICROSECONDS[match.group(2)]
        position = match.end()
    if last_rank < 0:
        raise DurationError("not a duration", text, DURATION_HINT)
    whole = int(micros.to_integral_value(rounding=ROUND_HALF_EVEN))
    try:
        return timedelta(microseconds=whole)
    except OverflowError:
        raise DurationError("duration too large", text, "use at most 999999999d") from None


def format_duration(value: timedelta) -> str:
    """Format a duration in the shortest form that :func:`parse_duration` reads back exactly.

    ``timedelta(seconds=90)`` -> ``1m30s``, ``timedelta(milliseconds=1500)`` -> ``1.5s``,
    ``timedelta(milliseconds=500)`` -> ``500ms``, ``timedelta(0)`` -> ``0s``.

    Raises:
        ValueError: for a negative duration (the grammar has no sign).
    """
    total = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    if total < 0:
        raise ValueError(f"cannot format a negative duration; got {value!r}")
    if total == 0:
        return "0s"
    parts: list[str] = []
    for unit in ("d", "h", "m"):
        count, total = divmod(total, UNIT_MICROSECONDS[unit])
        if count:
            parts.append(f"{count}{unit}")
    seconds, micros = divmod(total, 1_000_000)
    if micros == 0:
        if seconds:
            parts.append(f"{seconds}s")
    elif seconds == 0 and micros % 1_000 == 0:
        parts.append(f"{micros // 1_000}ms")
    else:
        fraction = f"{micros:06d}".rstrip("0")
        parts.append(f"{seconds}.{fraction}s")
    return "".join(parts)
