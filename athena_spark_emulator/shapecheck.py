"""Check a response against a botocore output shape: required members, types, enums, no unknown members.

Used by the tests (every response a test client receives is checked) and usable by anyone extending the
emulator. ``wire=True`` checks the raw JSON body (timestamps are numbers); ``wire=False`` checks what
botocore returns after parsing (timestamps are ``datetime``).
"""

from __future__ import annotations

import datetime
from typing import Any


class ShapeMismatch(AssertionError):
    """A response does not match its botocore shape; the message names the path."""


_PARSED_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "long": (int,), "boolean": (bool,), "float": (float, int),
    "double": (float, int), "timestamp": (datetime.datetime,), "blob": (bytes,), "structure": (dict,),
    "list": (list,), "map": (dict,),
}
_WIRE_TYPES = {**_PARSED_TYPES, "timestamp": (int, float), "blob": (str,)}


def _fits(value: Any, expected: tuple[type, ...], kind: str) -> bool:
    return isinstance(value, expected) and not (kind in ("integer", "long") and isinstance(value, bool))


def check_shape(shape: Any, value: Any, path: str = "", *, wire: bool = False) -> None:
    """Raise :class:`ShapeMismatch` at the first place ``value`` does not fit ``shape``."""
    kind = shape.type_name
    expected = (_WIRE_TYPES if wire else _PARSED_TYPES).get(kind, (object,))
    if not _fits(value, expected, kind):
        raise ShapeMismatch(f"{path or '<root>'}: expected {kind}, got {type(value).__name__} {value!r:.80}")
    if kind == "structure":
        for name in shape.required_members:
            if name not in value:
                raise ShapeMismatch(f"{path or '<root>'}: missing required member {name}")
        for name, item in value.items():
            if path == "" and name == "ResponseMetadata" and not wire:
                continue
            if name not in shape.members:
                raise ShapeMismatch(f"{path or '<root>'}: unknown member {name} (not in {shape.name})")
            check_shape(shape.members[name], item, f"{path}.{name}" if path else name, wire=wire)
    elif kind == "list":
        for index, item in enumerate(value):
            check_shape(shape.member, item, f"{path}[{index}]", wire=wire)
    elif kind == "map":
        for key, item in value.items():
            check_shape(shape.key, key, f"{path}.<key>", wire=wire)
            check_shape(shape.value, item, f"{path}.{key}", wire=wire)
    elif kind == "string" and shape.enum and value not in shape.enum:
        raise ShapeMismatch(f"{path}: {value!r} is not one of {shape.enum}")
    if kind in ("string", "list", "map"):
        size = len(value)
        if "min" in shape.metadata and size < shape.metadata["min"]:
            raise ShapeMismatch(f"{path}: length {size} < min {shape.metadata['min']}")
        if "max" in shape.metadata and size > shape.metadata["max"]:
            raise ShapeMismatch(f"{path}: length {size} > max {shape.metadata['max']}")


def check_output(operation_model: Any, response: dict[str, Any], *, wire: bool = False) -> None:
    """Check a whole response against the operation's output shape."""
    shape = operation_model.output_shape
    if shape is not None:
        check_shape(shape, response, wire=wire)
