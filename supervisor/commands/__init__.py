"""Subcommands of ``athena-supervisor``; each module registers one."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from supervisor.config import Settings

EXIT_INVALID_CONFIG = 2


def load_settings_or_report(path: str) -> Settings | None:
    """The settings in ``path``; None after printing every problem on stderr (exit with
    :data:`EXIT_INVALID_CONFIG`)."""
    # Imported here, not with the package: a command without a config (``emulator``) need not import the config
    # models (pydantic, ~0.3 s of CPU at every start).
    from supervisor.config import ConfigError, load_settings

    try:
        return load_settings(path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return None
