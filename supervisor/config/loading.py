"""Read a YAML config file, apply environment overrides to the ``aws`` section, validate.

Environment (env wins over the file; an empty variable counts as unset):

- ``ATHENA_SUPERVISOR_AWS_REGION``, ``ATHENA_SUPERVISOR_AWS_ENDPOINT_URL``,
  ``ATHENA_SUPERVISOR_AWS_MAX_REQUESTS_PER_SECOND``, ``ATHENA_SUPERVISOR_AWS_PROFILE``,
  ``ATHENA_SUPERVISOR_AWS_ACCOUNT_ID``, ``ATHENA_SUPERVISOR_AWS_STS_ENDPOINT_URL``.
- When neither that variable nor the file sets ``aws.region``: ``AWS_REGION``, then
  ``AWS_DEFAULT_REGION``, then ``us-east-1``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from supervisor.config.errors import (
    ConfigError,
    ConfigProblem,
    join_hints,
    suggest,
    translate_validation_error,
)
from supervisor.config.models import Settings
from supervisor.config.types import ACCOUNT_ID_PATTERN

ENV_PREFIX = "ATHENA_SUPERVISOR_AWS_"


def _as_text(name: str, raw: str) -> str:
    return raw


def _as_positive_number(name: str, raw: str) -> float:
    try:
        number = float(raw)
    except ValueError:
        raise ConfigError.single(f"environment variable {name}", "not a number", value=raw,
                                 hint="write a number greater than 0, e.g. 20") from None
    if not number > 0 or number == float("inf"):
        raise ConfigError.single(f"environment variable {name}", "out of range", value=raw,
                                 hint="must be a finite number greater than 0")
    return number


def _as_account_id(name: str, raw: str) -> str:
    if not ACCOUNT_ID_PATTERN.fullmatch(raw):
        raise ConfigError.single(f"environment variable {name}", "not an AWS account id", value=raw,
                                 hint="write the 12 digits of the account number, e.g. 123456789012")
    return raw


ENV_OVERRIDES: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    f"{ENV_PREFIX}REGION": ("region", _as_text),
    f"{ENV_PREFIX}ENDPOINT_URL": ("endpoint_url", _as_text),
    f"{ENV_PREFIX}MAX_REQUESTS_PER_SECOND": ("max_requests_per_second", _as_positive_number),
    f"{ENV_PREFIX}PROFILE": ("profile", _as_text),
    f"{ENV_PREFIX}ACCOUNT_ID": ("account_id", _as_account_id),
    f"{ENV_PREFIX}STS_ENDPOINT_URL": ("sts_endpoint_url", _as_text),
}
"""Environment variable -> (key in the ``aws`` section, converter)."""

REGION_FALLBACK_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")


class _StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            line = first_line.get(key)
        except TypeError:
            continue  # unhashable key: construct_mapping reports it
        if line is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {line})", key_node.start_mark
            )
        first_line[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path, source: str) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError.single(source, f"config file not found (looked in {path.resolve().parent})",
                                 hint="pass the path of a YAML file, e.g. config/example.yaml") from None
    except IsADirectoryError:
        raise ConfigError.single(source, "is a directory, not a config file",
                                 hint="pass the path of a YAML file") from None
    except PermissionError:
        raise ConfigError.single(source, "cannot read the config file: permission denied") from None
    except UnicodeDecodeError as exc:
        raise ConfigError.single(source, f"not UTF-8 text (byte {exc.start})",
                                 hint="save the file as UTF-8") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        detail = ", ".join(part for part in (exc.context, exc.problem) if part)
        raise ConfigError.single(where, f"invalid YAML: {detail}") from None
    except yaml.YAMLError as exc:
        raise ConfigError.single(source, f"invalid YAML: {exc}") from None


def load_settings(path: str | Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Load, override from the environment and validate a YAML config file.

    A relative ``journal.path`` is resolved against the directory of the config file.

    Args:
        path: the YAML file.
        environ: environment variables; ``os.environ`` when ``None``.

    Raises:
        ConfigError: listing every problem, each naming the file and key path.
    """
    file = Path(path)
    source = str(path)
    data = _read_yaml(file, source)
    if data is None:
        raise ConfigError.single(source, "the file is empty",
                                 hint="write a mapping of settings; see config/example.yaml")
    return parse_settings(data, source=source, environ=environ, base_dir=file.absolute().parent)


def parse_settings(data: object, source: str = "<config>", environ: Mapping[str, str] | None = None,
                   *, base_dir: Path | None = None) -> Settings:
    """Validate already-parsed config data (a mapping as read from YAML).

    Args:
        data: the parsed document.
        source: the name shown at the start of every error line.
        environ: environment variables; ``os.environ`` when ``None``; pass ``{}`` to ignore it.
        base_dir: directory a relative ``journal.path`` is resolved against; unchanged when ``None``.

    Raises:
        ConfigError: listing every problem.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    if not isinstance(data, dict):
        raise ConfigError.single(source, "the top level must be a mapping", value=data,
                                 hint="accepted keys: " + ", ".join(sorted(Settings.model_fields)))
    data, env_names = _apply_environment(data, env)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise translate_validation_error(exc, root=Settings, source=source, env_names=env_names) from None
    return _resolve_journal_path(settings, base_dir)


def _apply_environment(data: dict[Any, Any],
                       env: Mapping[str, str]) -> tuple[dict[Any, Any], dict[tuple[str | int, ...], str]]:
    unknown = sorted(name for name in env if name.startswith(ENV_PREFIX) and name not in ENV_OVERRIDES)
    if unknown:
        accepted = "accepted variables: " + ", ".join(ENV_OVERRIDES)
        raise ConfigError([
            ConfigProblem(f"environment variable {name}", "", "unknown variable", hint=join_hints(
                accepted, suggest(name, ENV_OVERRIDES)))
            for name in unknown
        ])
    aws_section = data.get("aws")
    if aws_section is not None and not isinstance(aws_section, dict):
        return data, {}  # validation reports the bad section
    aws = dict(aws_section or {})
    env_names: dict[tuple[str | int, ...], str] = {}
    for name, (key, convert) in ENV_OVERRIDES.items():
        raw = env.get(name, "")
        if raw:
            aws[key] = convert(name, raw)
            env_names[("aws", key)] = name
    if "region" not in aws:
        fallback = next((name for name in REGION_FALLBACK_VARIABLES if env.get(name)), None)
        if fallback is not None:
            aws["region"] = env[fallback]
            env_names[("aws", "region")] = fallback
    if not aws and aws_section is None:
        return data, env_names
    return {**data, "aws": aws}, env_names


def _resolve_journal_path(settings: Settings, base_dir: Path | None) -> Settings:
    path = settings.journal.path
    if str(path) == ":memory:":
        return settings
    resolved = path.expanduser()
    if base_dir is not None and not resolved.is_absolute():
        resolved = base_dir / resolved
    if resolved == path:
        return settings
    journal = settings.journal.model_copy(update={"path": resolved})
    return settings.model_copy(update={"journal": journal})
