"""The daemon configuration the tests use (against an emulator at any endpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from athena_spark_emulator.testing import EmulatorHandle

SPARK_ENGINE = {"SelectedEngineVersion": "PySpark engine version 3"}


def base_config(emulator: EmulatorHandle, journal: Path, **overrides: Any) -> dict[str, Any]:
    return daemon_config(emulator.endpoint_url, journal, **overrides)


def daemon_config(endpoint_url: str, journal: Path, **overrides: Any) -> dict[str, Any]:
    """The tests' daemon configuration against an emulator at ``endpoint_url``; top-level keys overridden."""
    config: dict[str, Any] = {
        "aws": {"region": "us-east-1", "endpoint_url": endpoint_url, "max_requests_per_second": 200,
                "account_id": "123456789012", "max_attempts": 6},
        "workgroups": ["etl-*"],
        "discovery_interval": "250ms",
        "journal": {"path": str(journal)},
        "http": {"host": "127.0.0.1", "port": 0},
        "escalation": {"stop_grace": "1s", "terminate_grace": "1s"},
        "safety": {"max_actions_per_minute": 100, "circuit_breaker_fraction": 1.0},
        "policies": [{"name": "etl-limits", "workgroups": ["etl-*"],
                      "calculation": {"max_runtime": "1500ms"}}],
    }
    for key, value in overrides.items():
        config[key] = value
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path
