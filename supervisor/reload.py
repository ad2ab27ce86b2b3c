"""The configuration in force, and how it changes without a restart.

:class:`LiveConfig` is the one owner of "which settings run now": loaded at start, replaced by a successful
reload (SIGHUP, or ``POST /-/reload`` when ``http.enable_lifecycle`` is on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from supervisor.config import LoadedConfig, Settings


def _time(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class LiveConfig:
    """The settings in force, their digest (:attr:`LoadedConfig.digest`), when and from where they were loaded,
    and the last reload's outcome."""

    settings: Settings
    loaded_at: datetime
    path: str | None = None
    digest: str = ""
    last_reload: dict[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        if not self.digest:
            self.digest = LoadedConfig(self.settings).digest

    def describe(self) -> dict[str, Any]:
        return {"digest": self.digest, "loaded_at": _time(self.loaded_at), "path": self.path,
                "last_reload": self.last_reload}
