"""DynamoDB's attribute values, times and key parts: the encoding every DynamoDB storage module shares.

The low-level API speaks attribute values (``{"S": "text"}``, ``{"N": "12"}``, ``{"M": {...}}``). boto3's
``TypeSerializer`` does this, but boto3 is not a dependency of the daemon (aiobotocore needs only botocore), and
the few types the storage writes fit in a page: str, int, finite float, bool, None, mappings and lists.

Times are ISO-8601 in UTC with microseconds and ``Z`` (``2026-01-01T00:00:00.000000Z``): fixed width, so they
sort as text in the order of the instants they name, in sort keys and in conditions alike. The one exception
is ``ttl``, which DynamoDB requires in epoch seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote, unquote

AttributeValue = dict[str, Any]
Item = dict[str, Any]

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def encode(value: object) -> AttributeValue:
    """One Python value as an attribute value."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):  # before int: bool is an int
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"DynamoDB numbers must be finite, got {value!r}")
        # Positional digits (no exponent), exactly the float's shortest repr: 17 significant digits at most,
        # within DynamoDB's 38.
        return {"N": format(Decimal(repr(value)), "f")}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, Mapping):
        return {"M": {str(key): encode(item) for key, item in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [encode(item) for item in value]}
    raise TypeError(f"cannot store a {type(value).__name__} in DynamoDB: {value!r}")


def decode(value: AttributeValue) -> Any:
    """One attribute value as a Python value (numbers: int when whole in their text, else float)."""
    (kind, data), = value.items()
    if kind == "S":
        return data
    if kind == "N":
        text = str(data)
        return float(text) if any(c in text for c in ".eE") else int(text)
    if kind == "BOOL":
        return bool(data)
    if kind == "NULL":
        return None
    if kind == "M":
        return {key: decode(item) for key, item in data.items()}
    if kind == "L":
        return [decode(item) for item in data]
    raise TypeError(f"unexpected DynamoDB attribute type {kind!r}")


def encode_item(item: Mapping[str, object]) -> dict[str, AttributeValue]:
    """An item; attributes whose value is None are left out (absent, not NULL: conditions test absence)."""
    return {name: encode(value) for name, value in item.items() if value is not None}


def decode_item(item: Mapping[str, AttributeValue]) -> Item:
    return {name: decode(value) for name, value in item.items()}


def iso(value: datetime) -> str:
    """A time as stored: UTC, microseconds, ``Z``. Naive datetimes are refused (they name no instant)."""
    if value.tzinfo is None:
        raise ValueError(f"a stored time must be timezone-aware, got {value!r}")
    return value.astimezone(UTC).strftime(_TIME_FORMAT)


def iso_or_none(value: datetime | None) -> str | None:
    return iso(value) if value is not None else None


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)


def time_or_none(text: object) -> datetime | None:
    return parse_time(str(text)) if text else None


def expires(at: datetime, retention: timedelta) -> int:
    """The ``ttl`` value (epoch seconds) of an item that may go ``retention`` after ``at``."""
    return math.ceil((at + retention).timestamp())


def key_part(text: str) -> str:
    """``text`` safe inside a key whose parts are joined by ``#`` (``#`` and ``%`` are percent-encoded)."""
    return quote(text, safe=" !\"$&'()*+,-./:;<=>?@[\\]^_`{|}~")


def from_key_part(text: str) -> str:
    return unquote(text)
