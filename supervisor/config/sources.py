"""Values from outside the file: ``ATHENA_SUPERVISOR_…`` environment overrides and ``{env: NAME}`` /
``{file: PATH}`` references, each remembered with where it came from.

**Overrides.** Every scalar key (a string, number, boolean, duration or choice; not a list or a mapping) has a
variable: ``ATHENA_SUPERVISOR_`` followed by its key path in capitals, with ``_`` for each ``.`` and around each
list position: ``aws.region`` is ``ATHENA_SUPERVISOR_AWS_REGION``, ``journal.retention`` is
``ATHENA_SUPERVISOR_JOURNAL_RETENTION``, ``policies[0].calculation.max_runtime`` is
``ATHENA_SUPERVISOR_POLICIES_0_CALCULATION_MAX_RUNTIME``. A set, non-empty variable wins over the file; a list
item must be in the file (a variable changes one of its keys, it adds no item). Any other variable starting with
``ATHENA_SUPERVISOR_`` is an error (it is probably a typo). ``aws.region`` falls back to ``AWS_REGION``, then
``AWS_DEFAULT_REGION``, when neither its variable nor the file sets it.

**References.** Wherever the file expects a string (or any scalar), it may write ``{env: NAME}`` (the value of
the environment variable NAME, which must be set) or ``{file: PATH}`` (the content of a file, less its final
newline; a relative PATH is relative to the config file), e.g. a webhook URL or an ``Authorization`` header from a
Kubernetes Secret mounted as a file.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from supervisor.config.errors import (
    ConfigError,
    ConfigProblem,
    _strip,
    _tag_of,
    _union_models,
    _walk,
    join_hints,
)
from supervisor.config.types import ACCOUNT_ID_PATTERN

ENV_PREFIX = "ATHENA_SUPERVISOR_"
REGION_FALLBACK_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")
REFERENCE_KINDS = ("env", "file")
Location = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where one value came from, when not from the file itself.

    ``kind``: ``environment`` (an ``ATHENA_SUPERVISOR_…`` or ``AWS_REGION`` variable), ``env`` (an ``{env: NAME}``
    reference) or ``file`` (a ``{file: PATH}`` reference); ``name``: the variable or the file. ``secret``: the key
    is a secret (a webhook URL, a header), its value is never shown.
    """

    location: Location
    path: str
    kind: Literal["environment", "env", "file"]
    name: str
    secret: bool

    def describe(self) -> str:
        if self.kind == "environment":
            return f"environment variable {self.name}"
        return f"{{{self.kind}: {self.name}}}"


# --- walking the models ----------------------------------------------------------------------------------


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _is_scalar(tp: Any) -> bool:
    """A key whose value is one string, number, boolean, duration, path or choice."""
    tp = _strip(tp)
    if _is_model(tp) or _union_models(tp):
        return False
    return get_origin(tp) not in (tuple, list, dict, Union, types.UnionType)


def _item_type(tp: Any) -> Any:
    args = get_args(_strip(tp))
    return args[0] if args else None


def _model_of(tp: Any, value: Any) -> type[BaseModel] | None:
    """The model a mapping of annotation ``tp`` is validated as (a union's member by its ``type`` tag)."""
    current = _strip(tp)
    if _is_model(current):
        return current  # type: ignore[no-any-return]
    for model in _union_models(current):
        if isinstance(value, dict) and _tag_of(model) == value.get("type"):
            return model
    return None


def validation_location(root: type[BaseModel], location: Location, data: Any) -> Location:
    """``location`` in ``data`` as pydantic names it: a union member's tag after the list position
    (``notifications[0].url`` is ``("notifications", 0, "webhook", "url")``)."""
    tp: Any = root
    value: Any = data
    named: list[str | int] = []
    for step in location:
        current = _strip(tp)
        model = _model_of(current, value)
        if model is not None:
            tag = _tag_of(model) if _union_models(current) else None
            if tag is not None:
                named.append(tag)
            field = model.model_fields.get(str(step))
            tp = field.annotation if field is not None else None
        elif get_origin(current) in (tuple, list):
            tp = _item_type(current)
        elif get_origin(current) is dict:
            tp = get_args(current)[1]
        else:
            tp = None
        named.append(step)
        if isinstance(value, dict):
            value = value.get(step)
        elif isinstance(value, list) and isinstance(step, int) and step < len(value):
            value = value[step]
        else:
            value = None
    return tuple(named)


def scalar_variables(root: type[BaseModel]) -> list[tuple[str, str]]:
    """Every override variable and its key path, list positions written ``<N>`` (the documented table); a key of
    some notification types only names them (``notifications[<N>].url (webhook)``)."""
    found: dict[str, tuple[str, list[str]]] = {}

    def visit(model: type[BaseModel], path: str, name: str, tag: str | None) -> None:
        for key, field in model.model_fields.items():
            key_path, key_name = f"{path}.{key}" if path else key, f"{name}_{key.upper()}"
            annotation = _strip(field.annotation)
            if _is_scalar(annotation) and not (tag and key == "type"):
                known = found.setdefault(key_name, (key_path, []))
                if tag:
                    known[1].append(tag)
            elif _is_model(annotation):
                visit(annotation, key_path, key_name, tag)
            elif get_origin(annotation) in (tuple, list):
                item = _strip(_item_type(annotation))
                for member in ([item] if _is_model(item) else _union_models(item)):
                    visit(member, f"{key_path}[<N>]", f"{key_name}_<N>", _tag_of(member))

    visit(root, "", ENV_PREFIX.rstrip("_"), None)
    kinds = {len(tags) for _, tags in found.values() if tags}
    every = max(kinds, default=0)
    return [(name, path + (f" ({', '.join(tags)})" if tags and len(tags) < every else ""))
            for name, (path, tags) in found.items()]


# --- {env: NAME} and {file: PATH} ------------------------------------------------------------------------


def _reference(value: Any) -> tuple[str, Any] | None:
    if isinstance(value, dict) and len(value) == 1:
        ((kind, name),) = value.items()
        if kind in REFERENCE_KINDS:
            return str(kind), name
    return None


def resolve_references(root: type[BaseModel], data: dict[str, Any], *, source: str, env: Mapping[str, str],
                       base_dir: Path | None) -> tuple[dict[str, Any], list[Origin]]:
    """``data`` with every ``{env: NAME}`` and ``{file: PATH}`` where a scalar is expected replaced by its value.

    Raises:
        ConfigError: a variable is not set, a file cannot be read (every such problem, one per line).
    """
    data = copy.deepcopy(data)
    origins: list[Origin] = []
    problems: list[ConfigProblem] = []

    def resolve(location: Location, kind: str, name: Any) -> Any:
        place = _walk(root, validation_location(root, location, data))
        if not isinstance(name, str) or not name.strip():
            problems.append(ConfigProblem(source, place.path, f"{{{kind}: ...}} needs a name", hint=(
                "write e.g. {env: WEBHOOK_URL}" if kind == "env" else "write e.g. {file: /etc/secrets/token}")))
            return None
        if kind == "env":
            value = env.get(name, "")
            if not value:
                problems.append(ConfigProblem(source, place.path, f"environment variable {name} is not set",
                                              hint=f"set {name}, or write the value in the file"))
                return None
        else:
            file = Path(name).expanduser()
            if not file.is_absolute() and base_dir is not None:
                file = base_dir / file
            try:
                value = file.read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
            except (OSError, UnicodeDecodeError) as error:
                reason = error.strerror if isinstance(error, OSError) and error.strerror else type(error).__name__
                problems.append(ConfigProblem(source, place.path, f"cannot read {{file: {name}}} ({reason})",
                                              hint="mount the file there, or fix the path"))
                return None
        origins.append(Origin(location, place.path, kind, name, place.secret))  # type: ignore[arg-type]
        return value

    def visit(tp: Any, value: Any, location: Location) -> Any:
        reference = _reference(value)
        if reference is not None and _is_scalar(tp):
            return resolve(location, *reference)
        model = _model_of(tp, value)
        if model is not None and isinstance(value, dict):
            for key, item in list(value.items()):
                field = model.model_fields.get(key) if isinstance(key, str) else None
                if field is not None:
                    value[key] = visit(field.annotation, item, (*location, key))
            return value
        current = _strip(tp)
        if get_origin(current) in (tuple, list) and isinstance(value, list):
            return [visit(_item_type(current), item, (*location, index)) for index, item in enumerate(value)]
        if get_origin(current) is dict and isinstance(value, dict):
            return {key: visit(get_args(current)[1], item, (*location, key)) for key, item in value.items()}
        return value

    resolved = visit(root, data, ())
    if problems:
        raise ConfigError(problems)
    return resolved, origins


# --- ATHENA_SUPERVISOR_… overrides -----------------------------------------------------------------------


def _locate(tp: Any, words: list[str], value: Any) -> Iterator[Location]:
    """Every location the variable's remaining ``words`` can name under annotation ``tp`` (``value``: what the
    file has there, for list lengths and union tags)."""
    if not words:
        if _is_scalar(tp):
            yield ()
        return
    model = _model_of(tp, value)
    if model is not None:
        for key, field in model.model_fields.items():
            if key == "type" and _tag_of(model) is not None:
                continue  # a channel's type decides its other keys: written in the file only
            parts = key.split("_")
            if words[:len(parts)] == parts:
                inner = value.get(key) if isinstance(value, dict) else None
                for rest in _locate(field.annotation, words[len(parts):], inner):
                    yield (key, *rest)
        return
    current = _strip(tp)
    if get_origin(current) in (tuple, list) and words[0].isdigit() and isinstance(value, list):
        index = int(words[0])
        if index < len(value) and not _is_scalar(_item_type(current)):
            for rest in _locate(_item_type(current), words[1:], value[index]):
                yield (index, *rest)


def _converted(name: str, raw: str, tp: Any) -> Any:
    """``raw`` as the key expects it, or a problem that names the variable (numbers and account ids; the rest is
    validated as the file's values are, and its problems name the variable too)."""
    current = _strip(tp)
    variable = f"environment variable {name}"
    if current in (int, float):
        try:
            number = float(raw)
        except ValueError:
            raise ConfigError.single(variable, "not a number", value=raw,
                                     hint="write a number, e.g. 20" if current is float else "write a whole number, "
                                     "e.g. 20") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ConfigError.single(variable, "out of range", value=raw, hint="must be a finite number")
        return raw
    if name.endswith("_ACCOUNT_ID") and not ACCOUNT_ID_PATTERN.fullmatch(raw):
        raise ConfigError.single(variable, "not an AWS account id", value=raw,
                                 hint="write the 12 digits of the account number, e.g. 123456789012")
    return raw


def _place(data: dict[str, Any], location: Location, value: Any) -> None:
    target: Any = data
    for step, following in itertools.pairwise(location):
        if isinstance(target, dict):
            if not isinstance(target.get(step), dict | list):
                target[step] = [] if isinstance(following, int) else {}
            target = target[step]
        else:
            target = target[step]
    target[location[-1]] = value


def apply_environment(root: type[BaseModel], data: dict[str, Any],
                      env: Mapping[str, str]) -> tuple[dict[str, Any], list[Origin]]:
    """``data`` with every ``ATHENA_SUPERVISOR_…`` override applied (and the region fallback).

    Raises:
        ConfigError: a variable names no key (every such one), or its value is not a number where one is expected.
    """
    data = copy.deepcopy(data)
    origins: list[Origin] = []
    problems: list[ConfigProblem] = []
    for name in sorted(name for name in env if name.startswith(ENV_PREFIX)):
        raw = env[name]
        if not raw:
            continue
        words = name[len(ENV_PREFIX):].lower().split("_")
        found = list(_locate(root, words, data))
        if len(found) != 1:
            # Every variable the model has, to suggest the nearest: only for a variable that names no key.
            known = [known_name.replace("<N>", "0") for known_name, _ in scalar_variables(root)]
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            problems.append(ConfigProblem(
                f"environment variable {name}", "", "names no key of the configuration" if not found else
                "names several keys: " + ", ".join(
                    _walk(root, validation_location(root, location, data)).path for location in found),
                hint=join_hints(f"a variable is {ENV_PREFIX} + a key path in capitals, with _ for each . and list "
                                "position (ATHENA_SUPERVISOR_AWS_REGION, ATHENA_SUPERVISOR_POLICIES_0_MODE); a list "
                                "item must be in the file",
                                f"did you mean {close[0]!r}?" if close else "")))
            continue
        (location,) = found
        place = _walk(root, validation_location(root, location, data))
        try:
            _place(data, location, _converted(name, raw, place.annotation))
        except ConfigError as error:
            problems += error.problems
            continue
        origins.append(Origin(location, place.path, "environment", name, place.secret))
    if problems:
        raise ConfigError(problems)
    aws = data.get("aws")
    if (aws is None or isinstance(aws, dict)) and "region" not in (aws or {}):
        fallback = next((name for name in REGION_FALLBACK_VARIABLES if env.get(name)), None)
        if fallback is not None:
            _place(data, ("aws", "region"), env[fallback])
            origins.append(Origin(("aws", "region"), "aws.region", "environment", fallback, False))
    return data, origins
