"""Config errors the user can act on: file, key path, problem, offending value, accepted values.

The offending value is never shown for a field marked :data:`SECRET` (or below it) nor when it is a
mapping (which may hold one); any other value is shown with URLs and tokens redacted.

Pydantic's own error text is never shown; :func:`translate_validation_error` rewrites every pydantic
error into a :class:`ConfigProblem` by walking the model classes along the error location.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from supervisor.durations import DURATION_HINT
from supervisor.redaction import redact_text


class _Missing:
    """Marks a problem that has no offending value (a missing or unknown key)."""

    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE: Any = _Missing()
_MAX_VALUE_CHARS = 80


class Secret:
    """``Annotated`` marker of a config field whose value a problem never echoes (a webhook URL, headers):
    a problem at or below that field names the key path but shows no ``got ...``."""

    def __repr__(self) -> str:
        return "SECRET"


SECRET = Secret()


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem: ``<source>: <path>: <problem>; got <value>; <hint>``."""

    source: str
    path: str
    problem: str
    value: Any = NO_VALUE
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.source}: {self.path}" if self.path else self.source
        text = f"{where}: {self.problem}"
        if self.value is not NO_VALUE:
            text += f"; got {_show(self.value)}"
        if self.hint:
            text += f"; {self.hint}"
        return text


class ConfigError(Exception):
    """The configuration is invalid; ``str()`` lists every problem found, one per line."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))

    @classmethod
    def single(cls, source: str, problem: str, *, path: str = "", value: Any = NO_VALUE,
               hint: str = "") -> ConfigError:
        """A ConfigError with exactly one problem."""
        return cls([ConfigProblem(source, path, problem, value, hint)])


class FieldProblem(ValueError):
    """Raised by model validators for a precise message.

    Args:
        problem: what is wrong, e.g. ``"duplicate policy name"``.
        hint: how to fix it or the accepted values.
        subpath: location below the validated field (e.g. ``(2, "name")``) so the message points at
            the exact key.
        value: the offending value; by default the validated input when it is a scalar.
    """

    def __init__(self, problem: str, hint: str = "", *, subpath: tuple[str | int, ...] = (),
                 value: Any = NO_VALUE) -> None:
        super().__init__(f"{problem}; {hint}" if hint else problem)
        self.problem = problem
        self.hint = hint
        self.subpath = subpath
        self.value = value


def suggest(word: str, choices: Iterable[str]) -> str:
    """``"did you mean 'x'?"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""


def join_hints(*hints: str) -> str:
    return "; ".join(hint for hint in hints if hint)


def _show(value: Any) -> str:
    text = redact_text(repr(value))  # a URL or token in a field not marked SECRET still never shows
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def _holds_mapping(value: Any) -> bool:
    if isinstance(value, Mapping):
        return True
    return isinstance(value, list | tuple) and any(_holds_mapping(item) for item in value)


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# --- walking model classes along an error location -------------------------------------------------


def _strip(tp: Any) -> Any:
    """Remove ``Annotated`` and ``| None`` wrappers."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
            continue
        if origin in (Union, types.UnionType):
            members = [arg for arg in get_args(tp) if arg is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
        return tp


def _union_models(tp: Any) -> list[type[BaseModel]]:
    if get_origin(tp) not in (Union, types.UnionType):
        return []
    return [arg for arg in get_args(tp) if isinstance(arg, type) and issubclass(arg, BaseModel)]


def _tag_of(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("type")
    if field is None or get_origin(field.annotation) is not Literal:
        return None
    tag = get_args(field.annotation)[0]
    return tag if isinstance(tag, str) else None


@dataclass(frozen=True, slots=True)
class _Place:
    path: str  # e.g. "policies[0].calculation.max_runtime"
    annotation: Any  # the type expected at this place (None when unknown)
    parent: type[BaseModel] | None  # the model that owns the last key
    secret: bool = False  # at or below a field marked SECRET


def _walk(root: type[BaseModel], loc: Sequence[str | int]) -> _Place:
    tp: Any = root
    path = ""
    parent: type[BaseModel] | None = None
    secret = False
    for item in loc:
        current = _strip(tp)
        if isinstance(current, type) and issubclass(current, BaseModel) and isinstance(item, str):
            parent = current
            field = current.model_fields.get(item)
            tp = field.annotation if field is not None else None
            secret = secret or (field is not None and any(isinstance(m, Secret) for m in field.metadata))
            path = f"{path}.{item}" if path else item
            continue
        models = _union_models(current)
        if models and isinstance(item, str):
            match = [model for model in models if _tag_of(model) == item]
            if match:  # a discriminated union's tag is part of pydantic's loc, not of the user's path
                tp = match[0]
                continue
        origin = get_origin(current)
        if isinstance(item, int):
            path += f"[{item}]"
            tp = get_args(current)[0] if origin in (tuple, list) and get_args(current) else None
        elif origin is dict:
            if item != "[key]":
                path = f"{path}.{item}" if path else str(item)
                tp = get_args(current)[1]
        else:
            path = f"{path}.{item}" if path else str(item)
            tp = None
    return _Place(path, tp, parent, secret)


def expected(tp: Any) -> str:
    """A short description of what a value of annotation ``tp`` looks like."""
    if get_origin(tp) is Annotated and _strip(tp) is timedelta:
        return f"expected a duration; {DURATION_HINT}"
    tp = _strip(tp)
    if tp is None:
        return ""
    if get_origin(tp) is Literal:
        return "accepted values: " + ", ".join(str(arg) for arg in get_args(tp))
    if tp is timedelta:
        return f"expected a duration; {DURATION_HINT}"
    if get_origin(tp) in (tuple, list):
        return "expected a list, e.g. [a, b] (write [a] for a single value)"
    if get_origin(tp) is dict:
        return "expected a mapping of key: value"
    if _union_models(tp):
        tags = sorted(tag for tag in map(_tag_of, _union_models(tp)) if tag)
        return "expected a mapping with a 'type' key; accepted types: " + ", ".join(tags)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "expected a mapping; accepted keys: " + ", ".join(sorted(tp.model_fields))
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
             Path: "a file path"}
    return f"expected {names[tp]}" if tp in names else ""


# --- pydantic error -> ConfigProblem ---------------------------------------------------------------

_BOUNDS = {"gt": "greater than", "ge": "at least", "lt": "less than", "le": "at most"}


def _problem_for(error: ErrorDetails, root: type[BaseModel], source: str,
                 env_names: Mapping[tuple[str | int, ...], str]) -> ConfigProblem:
    loc = tuple(error["loc"])
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    value: Any = error.get("input", NO_VALUE)
    problem: str
    hint: str

    cause = ctx.get("error")
    if kind == "value_error" and isinstance(cause, FieldProblem):
        loc += cause.subpath
        problem, hint = cause.problem, cause.hint
        if cause.value is not NO_VALUE:
            value = cause.value
        elif cause.subpath or isinstance(value, dict):
            value = NO_VALUE
        return _finish(root, loc, source, problem, value, hint, env_names)
    if kind == "value_error" and cause is not None and hasattr(cause, "problem"):
        return _finish(root, loc, source, cause.problem, value, getattr(cause, "hint", ""), env_names)

    if kind in ("union_tag_invalid", "union_tag_not_found"):
        place = _walk(root, loc)
        models = _union_models(_strip(place.annotation))
        tags = sorted(tag for tag in map(_tag_of, models) if tag)
        accepted = "accepted values: " + ", ".join(tags)
        loc += ("type",)
        if kind == "union_tag_not_found":
            return _finish(root, loc, source, "missing required key", NO_VALUE, accepted, env_names)
        tag = str(ctx.get("tag", ""))
        return _finish(root, loc, source, "unknown type", tag, join_hints(accepted, suggest(tag, tags)),
                       env_names)

    place = _walk(root, loc)
    if kind == "extra_forbidden":
        keys = sorted(place.parent.model_fields) if place.parent else []
        hint = join_hints("accepted keys: " + ", ".join(keys), suggest(str(loc[-1]), keys))
        return _finish(root, loc, source, "unknown key", NO_VALUE, hint, env_names)
    if kind == "missing":
        return _finish(root, loc, source, "missing required key", NO_VALUE,
                       expected(place.annotation).replace("expected", "add it:", 1), env_names)
    if kind in ("literal_error", "enum"):
        tp = _strip(place.annotation)
        choices = [str(arg) for arg in get_args(tp)] if get_origin(tp) is Literal else []
        hint = expected(tp) if choices else f"accepted values: {ctx.get('expected', '')}"
        return _finish(root, loc, source, "not an accepted value", value,
                       join_hints(hint, suggest(str(value), choices)), env_names)
    bound = next((name for name in _BOUNDS if name in ctx), None)
    if bound is not None:
        return _finish(root, loc, source, "out of range", value,
                       f"must be {_BOUNDS[bound]} {_number(ctx[bound])}", env_names)
    if kind.endswith(("_type", "_parsing")) or kind in ("int_from_float", "model_attributes_type"):
        hint = expected(place.annotation) or error["msg"]
        return _finish(root, loc, source, "wrong type", value, hint, env_names)
    return _finish(root, loc, source, error["msg"], value, expected(place.annotation), env_names)


def _finish(root: type[BaseModel], loc: tuple[str | int, ...], source: str, problem: str, value: Any,
            hint: str, env_names: Mapping[tuple[str | int, ...], str]) -> ConfigProblem:
    place = _walk(root, loc)
    path = place.path
    if place.secret or _holds_mapping(value):  # a mapping may hold a secret (a channel, its headers)
        value = NO_VALUE
    if loc in env_names:
        return ConfigProblem(f"environment variable {env_names[loc]}", "", problem, value, hint)
    return ConfigProblem(source, path, problem, value, hint)


def translate_validation_error(error: ValidationError, *, root: type[BaseModel], source: str,
                               env_names: Mapping[tuple[str | int, ...], str] | None = None) -> ConfigError:
    """Rewrite every pydantic error of ``error`` into one ConfigProblem.

    Args:
        error: raised by ``root.model_validate``.
        root: the model class that was validated (used to find accepted keys and values).
        source: the file name shown at the start of each line.
        env_names: locations whose value came from an environment variable, mapped to its name, so the
            message names the variable instead of the file.
    """
    names = env_names or {}
    problems = [_problem_for(detail, root, source, names) for detail in error.errors()]
    return ConfigError(problems)
