"""Field types shared by the config models: durations, numbers, non-empty text, URLs, globs."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from supervisor.config.errors import FieldProblem
from supervisor.durations import BARE_NUMBER_HINT, DURATION_HINT, format_duration, parse_duration
from supervisor.events import EventName as EventName
from supervisor.events import Severity as Severity

Mode = Literal["enforce", "dry-run"]
PolicyAction = Literal["stop", "terminate", "notify"]
BudgetAction = Literal["notify", "stop_calculations", "terminate_sessions", "disable_workgroup"]
PeriodKind = Literal["daily", "weekly", "monthly", "rolling"]
LogLevel = Literal["debug", "info", "warning", "error"]


def _duration(value: object) -> object:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise FieldProblem("not a duration", DURATION_HINT)
    if not isinstance(value, str):
        raise FieldProblem("a number without a unit is not a duration", BARE_NUMBER_HINT)
    return parse_duration(value)


def _positive_duration(value: object) -> object:
    value = _duration(value)
    if isinstance(value, timedelta) and value <= timedelta(0):
        raise FieldProblem("must be longer than zero", "e.g. 30s")
    return value


def _number(value: object) -> object:
    if isinstance(value, bool):  # YAML true/false must not pass as 1/0
        raise FieldProblem("a boolean is not a number", "write a number such as 1 or 0.5")
    return value


def _non_empty_text(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        raise FieldProblem("must not be empty", "write some text")
    return value


def _http_url(value: object) -> object:
    if isinstance(value, str):
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise FieldProblem("not an http(s) URL", "write a URL that starts with http:// or https://")
    return value


Duration = Annotated[
    timedelta,
    BeforeValidator(_positive_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""A positive duration written as ``45s``, ``15m``, ``1h30m``; dumped to JSON in the same form."""

NonNegativeDuration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""A duration that may be zero (``0s``)."""

Number = Annotated[float, BeforeValidator(_number)]
Count = Annotated[int, BeforeValidator(_number)]
Text = Annotated[str, BeforeValidator(_non_empty_text)]
HttpUrl = Annotated[str, BeforeValidator(_http_url)]


def _account_id(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool) and len(str(value)) == 12:
        return str(value)  # unquoted in YAML: 12 digits without a leading zero survive as an int
    if not isinstance(value, str) or not ACCOUNT_ID_PATTERN.fullmatch(value):
        raise FieldProblem("not an AWS account id", ACCOUNT_ID_HINT)
    return value


ACCOUNT_ID_PATTERN = re.compile(r"\d{12}")
ACCOUNT_ID_HINT = "write the 12-digit account number in quotes, e.g. '123456789012'"
AccountId = Annotated[str, BeforeValidator(_account_id)]
"""An AWS account id: exactly 12 digits (an unquoted YAML number of 12 digits is accepted)."""


def check_globs(value: tuple[str, ...]) -> tuple[str, ...]:
    """Reject an empty list of globs and empty globs."""
    if not value:
        raise FieldProblem("empty list matches no workgroup", 'use ["*"] for every workgroup', value=[])
    for index, glob in enumerate(value):
        if not glob.strip():
            raise FieldProblem("empty workgroup glob", 'use e.g. "etl-*"', subpath=(index,), value=glob)
    return value


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, instances are immutable, no inf/nan."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
