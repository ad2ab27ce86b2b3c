"""Read a YAML config file, resolve ``{env: NAME}`` / ``{file: PATH}`` references, apply the
``ATHENA_SUPERVISOR_…`` environment overrides (:mod:`supervisor.config.sources`), validate.

Environment (env wins over the file; an empty variable counts as unset): every scalar key has a variable,
``ATHENA_SUPERVISOR_`` + its key path in capitals with ``_`` for each ``.`` and list position (e.g.
``ATHENA_SUPERVISOR_AWS_REGION``, ``ATHENA_SUPERVISOR_POLICIES_0_MODE``). When neither that variable nor the file
sets ``aws.region``: ``AWS_REGION``, then ``AWS_DEFAULT_REGION``, then ``us-east-1``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from supervisor.config.errors import ConfigError, translate_validation_error
from supervisor.config.models import Settings
from supervisor.config.sources import (
    ENV_PREFIX,
    Origin,
    apply_environment,
    resolve_references,
    validation_location,
)

__all__ = ["ENV_PREFIX", "LoadedConfig", "load_config", "load_settings", "parse_config", "parse_settings"]


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """Validated settings, where each value set outside the file came from, and a digest of the result.

    ``digest``: the first 12 hex digits of the SHA-256 of the effective settings (environment and references
    applied): two loads that would run the daemon the same way have the same digest.
    """

    settings: Settings
    origins: tuple[Origin, ...] = ()

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.settings.model_dump_json().encode()).hexdigest()[:12]


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

    A relative ``journal.path`` (and ``{file: PATH}``) is resolved against the directory of the config file.

    Args:
        path: the YAML file.
        environ: environment variables; ``os.environ`` when ``None``.

    Raises:
        ConfigError: listing every problem, each naming the file and key path.
    """
    return load_config(path, environ).settings


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """:func:`load_settings`, with where each value set outside the file came from."""
    file = Path(path)
    source = str(path)
    data = _read_yaml(file, source)
    if data is None:
        raise ConfigError.single(source, "the file is empty",
                                 hint="write a mapping of settings; see config/example.yaml")
    return parse_config(data, source=source, environ=environ, base_dir=file.absolute().parent)


def parse_settings(data: object, source: str = "<config>", environ: Mapping[str, str] | None = None,
                   *, base_dir: Path | None = None) -> Settings:
    """Validate already-parsed config data (a mapping as read from YAML).

    Args:
        data: the parsed document.
        source: the name shown at the start of every error line.
        environ: environment variables; ``os.environ`` when ``None``; pass ``{}`` to ignore it.
        base_dir: directory a relative ``journal.path`` and ``{file: PATH}`` are resolved against; unchanged
            (the working directory) when ``None``.

    Raises:
        ConfigError: listing every problem.
    """
    return parse_config(data, source, environ, base_dir=base_dir).settings


def parse_config(data: object, source: str = "<config>", environ: Mapping[str, str] | None = None,
                 *, base_dir: Path | None = None) -> LoadedConfig:
    """:func:`parse_settings`, with where each value set outside the file came from."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    if not isinstance(data, dict):
        raise ConfigError.single(source, "the top level must be a mapping", value=data,
                                 hint="accepted keys: " + ", ".join(sorted(Settings.model_fields)))
    data, overridden = apply_environment(Settings, data, env)  # an override replaces a reference too
    data, referenced = resolve_references(Settings, data, source=source, env=env, base_dir=base_dir)
    env_names: dict[tuple[str | int, ...], str] = {
        validation_location(Settings, origin.location, data): origin.name for origin in overridden}
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise translate_validation_error(exc, root=Settings, source=source, env_names=env_names) from None
    return LoadedConfig(_resolve_journal_path(settings, base_dir), (*referenced, *overridden))


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
