"""Validate a request body against the botocore input shape of its operation.

Checks required members, JSON types, string/list/map lengths, integer ranges, enums and (where the
model's regular expression is valid Python) patterns. Unknown members are ignored, as AWS does for
forward compatibility. The first violation raises an InvalidRequestException naming the member path.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from athena_spark_emulator.errors import invalid_request

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "long": (int,),
    "boolean": (bool,),
    "float": (int, float),
    "double": (int, float),
    "timestamp": (int, float, str),
    "blob": (str,),
    "structure": (dict,),
    "map": (dict,),
    "list": (list,),
}


@functools.lru_cache(maxsize=256)
def _pattern(expression: str) -> re.Pattern[str] | None:
    try:
        return re.compile(expression)
    except re.error:
        return None


def _fail(path: str, value: Any, constraint: str) -> None:
    shown = value if isinstance(value, int | float) else repr(value)[:80]
    raise invalid_request(
        f"1 validation error detected: Value {shown} at '{path}' failed to satisfy constraint: {constraint}"
    )


def _check_length(path: str, value: Any, size: int, metadata: dict[str, Any]) -> None:
    if "min" in metadata and size < metadata["min"]:
        _fail(path, value, f"Member must have length greater than or equal to {metadata['min']}")
    if "max" in metadata and size > metadata["max"]:
        _fail(path, value, f"Member must have length less than or equal to {metadata['max']}")


def validate_value(shape: Any, value: Any, path: str) -> None:
    """Validate ``value`` against botocore ``shape``; raise InvalidRequestException naming ``path``."""
    kind = shape.type_name
    expected = _JSON_TYPES.get(kind, (object,))
    if not isinstance(value, expected) or (kind in ("integer", "long") and isinstance(value, bool)):
        _fail(path, value, f"Member must be of type {kind}")
    metadata = shape.metadata
    if kind == "structure":
        for name in shape.required_members:
            if value.get(name) is None:
                raise invalid_request(
                    f"1 validation error detected: Value null at '{_join(path, name)}' failed to satisfy "
                    "constraint: Member must not be null"
                )
        for name, member in shape.members.items():
            if name in value and value[name] is not None:
                validate_value(member, value[name], _join(path, name))
    elif kind == "list":
        _check_length(path, value, len(value), metadata)
        for index, item in enumerate(value):
            validate_value(shape.member, item, f"{path}.{index + 1}")
    elif kind == "map":
        _check_length(path, value, len(value), metadata)
        for key, item in value.items():
            validate_value(shape.key, key, f"{path}.key")
            validate_value(shape.value, item, f"{path}.{key}")
    elif kind == "string":
        _check_length(path, value, len(value), metadata)
        enum = shape.enum
        if enum and value not in enum:
            _fail(path, value, f"Member must satisfy enum value set: [{', '.join(enum)}]")
        pattern = _pattern(metadata["pattern"]) if "pattern" in metadata else None
        if pattern is not None and pattern.fullmatch(value) is None:
            _fail(path, value, f"Member must satisfy regular expression pattern: {metadata['pattern']}")
    elif kind in ("integer", "long", "float", "double"):
        if "min" in metadata and value < metadata["min"]:
            _fail(path, value, f"Member must have value greater than or equal to {metadata['min']}")
        if "max" in metadata and value > metadata["max"]:
            _fail(path, value, f"Member must have value less than or equal to {metadata['max']}")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def validate_request(operation_model: Any, body: dict[str, Any]) -> None:
    """Validate a whole request body against the operation's input shape."""
    shape = operation_model.input_shape
    if shape is not None:
        validate_value(shape, body, "")


def prune_to_shape(shape: Any, value: Any) -> Any:
    """``value`` without the members ``shape`` does not know, at every depth: what the service keeps of a request
    member it stores and answers back (AWS ignores unknown members, and never echoes them)."""
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        return {name: prune_to_shape(shape.members[name], item) for name, item in value.items()
                if name in shape.members}
    if kind == "list" and isinstance(value, list):
        return [prune_to_shape(shape.member, item) for item in value]
    if kind == "map" and isinstance(value, dict):
        return {key: prune_to_shape(shape.value, item) for key, item in value.items()}
    return value
