"""Workload pragmas: ``# sim: key=value ...`` lines in a CodeBlock or a session Description.

Grammar (one or more lines anywhere in the text; later lines override earlier keys)::

    pragma-line := ws* "#" ws* "sim:" (ws+ key "=" value)* ws*
    value       := a token without whitespace

Calculation keys (CodeBlock): ``runtime`` (duration, default 10s), ``dpus`` (int >= 1, default 2),
``queue`` (duration before it may run, default 0s), ``outcome`` (completed|failed, default completed),
``on_stop`` (honor|ignore, default honor), ``stop_latency`` (duration, default 1s), ``creating`` (duration in
CREATING after submission, default 0s), ``created`` (duration in CREATED after that, default 0s).

Session keys (Description): ``start`` (duration CREATING -> CREATED, default 1s), ``created_for``
(duration CREATED -> IDLE, or ``forever``, default 0s), ``degraded_after`` (duration from StartSession to
DEGRADED, default never), ``fail_after`` (duration from StartSession to FAILED, default never),
``on_terminate`` (honor|stuck, default honor), ``terminate_latency`` (duration TERMINATING -> TERMINATED,
default 1s).

Spark Connect job keys (Description of an ``Apache Spark version 3.5`` session, which has no calculations to
carry pragmas): ``busy`` (duration each job keeps the session BUSY, or ``forever``; required by the others),
``dpus`` (int >= 1 the job uses while it runs, default 2), ``every`` (duration between job starts, longer than
``busy``; default: one job), ``busy_after`` (duration from StartSession to the first job, never before the
session is ready; default 0s).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from athena_spark_emulator.durations import parse_duration

_PRAGMA_LINE = re.compile(r"^[ \t]*#[ \t]*sim:(.*)$", re.MULTILINE)


class PragmaError(ValueError):
    """A malformed pragma; ``key`` names the offending key (or the token when it has no ``=``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True, slots=True)
class CalculationPragma:
    runtime: float = 10.0
    dpus: int = 2
    queue: float = 0.0
    outcome: str = "completed"
    on_stop: str = "honor"
    stop_latency: float = 1.0
    creating: float = 0.0  # CREATING, then CREATED for ``created``, then QUEUED/RUNNING
    created: float = 0.0

    @property
    def accepted_after(self) -> float:
        """From submission to the end of CREATED: when it may queue."""
        return self.creating + self.created


@dataclass(frozen=True, slots=True)
class SessionPragma:
    start: float = 1.0
    on_terminate: str = "honor"
    terminate_latency: float = 1.0
    created_for: float = 0.0  # math.inf: stays CREATED
    degraded_after: float | None = None  # from StartSession
    fail_after: float | None = None  # from StartSession
    # Spark Connect jobs (Apache Spark version 3.5 sessions only): None without ``busy``.
    busy: float | None = None  # math.inf: the job never ends
    dpus: int | None = None
    every: float | None = None
    busy_after: float | None = None

    @property
    def has_jobs(self) -> bool:
        return self.busy is not None

    @property
    def job_keys(self) -> tuple[str, ...]:
        """The Spark Connect job keys that were given."""
        return tuple(key for key in JOB_KEYS if getattr(self, key) is not None)

    @property
    def job_dpus(self) -> int:
        return self.dpus if self.dpus is not None else 2


def _duration(key: str, raw: str) -> float:
    try:
        return parse_duration(raw)
    except ValueError:
        raise PragmaError(key, f"pragma key {key!r}: {raw!r} is not a duration (e.g. 30s, 2m)") from None


def _duration_or_forever(key: str, raw: str) -> float:
    return math.inf if raw == "forever" else _duration(key, raw)


def _positive_int(key: str, raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise PragmaError(key, f"pragma key {key!r}: {raw!r} is not a whole number >= 1")
    return int(raw)


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(key: str, raw: str) -> str:
        if raw not in choices:
            raise PragmaError(key, f"pragma key {key!r}: {raw!r} is not one of {'|'.join(choices)}")
        return raw

    return parse


_CALCULATION_KEYS: dict[str, Callable[[str, str], Any]] = {
    "runtime": _duration,
    "dpus": _positive_int,
    "queue": _duration,
    "outcome": _choice("completed", "failed"),
    "on_stop": _choice("honor", "ignore"),
    "stop_latency": _duration,
    "creating": _duration,
    "created": _duration,
}
_SESSION_KEYS: dict[str, Callable[[str, str], Any]] = {
    "start": _duration,
    "created_for": _duration_or_forever,
    "degraded_after": _duration,
    "fail_after": _duration,
    "on_terminate": _choice("honor", "stuck"),
    "terminate_latency": _duration,
    "busy": _duration_or_forever,
    "dpus": _positive_int,
    "every": _duration,
    "busy_after": _duration,
}
JOB_KEYS = ("busy", "dpus", "every", "busy_after")


def _parse(text: str | None, keys: dict[str, Callable[[str, str], Any]], where: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if not text or "sim:" not in text:
        return values
    for match in _PRAGMA_LINE.finditer(text):
        for token in match.group(1).split():
            key, sep, raw = token.partition("=")
            if not sep or not key:
                raise PragmaError(token, f"pragma token {token!r} is not key=value")
            if key not in keys:
                raise PragmaError(key, f"unknown {where} pragma key {key!r} (known: {', '.join(keys)})")
            values[key] = keys[key](key, raw)
    return values


def parse_calculation_pragma(code: str | None) -> CalculationPragma:
    """Parse the calculation pragma in a CodeBlock (defaults when there is none).

    Raises:
        PragmaError: a token is malformed, a key unknown or a value invalid.
    """
    return replace(CalculationPragma(), **_parse(code, _CALCULATION_KEYS, "calculation"))


def parse_session_pragma(description: str | None) -> SessionPragma:
    """Parse the session pragma in a session Description (defaults when there is none).

    Raises:
        PragmaError: a token is malformed, a key unknown or a value invalid.
    """
    pragma = replace(SessionPragma(), **_parse(description, _SESSION_KEYS, "session"))
    if pragma.job_keys and pragma.busy is None:
        key = pragma.job_keys[0]
        raise PragmaError(key, f"pragma key {key!r} describes a Spark Connect job: set busy= too (e.g. busy=90s)")
    if pragma.every is not None and pragma.busy is not None and not pragma.every > pragma.busy:
        raise PragmaError("every", f"pragma key 'every': a job starts every {pragma.every:g}s and must end before "
                          f"the next one starts (busy={pragma.busy:g}s)")
    return pragma
