"""AWS JSON 1.1 framing: ``X-Amz-Target`` parsing, body decoding and response encoding."""

from __future__ import annotations

import json
from typing import Any

from athena_spark_emulator.errors import serialization, unknown_operation

TARGET_PREFIX = "AmazonAthena."
CONTENT_TYPE = "application/x-amz-json-1.1"


def operation_from_target(target: str | None) -> str:
    """``AmazonAthena.GetSession`` -> ``GetSession``; anything else is an UnknownOperationException."""
    if not target or not target.startswith(TARGET_PREFIX) or len(target) == len(TARGET_PREFIX):
        raise unknown_operation(target or "")
    return target[len(TARGET_PREFIX):]


def audit_operation(target: str | None) -> str | None:
    """The operation name recorded in the audit log (the raw target when it is not Athena's)."""
    if target and target.startswith(TARGET_PREFIX):
        return target[len(TARGET_PREFIX):]
    return target or None


def decode_body(raw: bytes) -> dict[str, Any]:
    """Decode a request body (empty means ``{}``); anything but a JSON object is a SerializationException."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise serialization(f"Request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise serialization("Request body must be a JSON object")
    return body


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()
