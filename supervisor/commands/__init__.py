"""Subcommands of ``athena-supervisor``; each module registers one."""

from __future__ import annotations

import sys

from supervisor.config import ConfigError, Settings, load_settings

EXIT_INVALID_CONFIG = 2


def load_settings_or_report(path: str) -> Settings | None:
    """The settings in ``path``; None after printing every problem on stderr (exit with
    :data:`EXIT_INVALID_CONFIG`)."""
    try:
        return load_settings(path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return None
