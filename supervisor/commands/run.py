"""``athena-supervisor run --config FILE``: the long-running daemon."""

from __future__ import annotations

import argparse
from typing import Any

import anyio

from supervisor.commands import EXIT_INVALID_CONFIG, load_settings_or_report
from supervisor.logs import configure_logging
from supervisor.service import run_until_signalled


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("run", help="run the supervisor daemon")
    parser.add_argument("--config", required=True, metavar="FILE", help="YAML configuration file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings_or_report(args.config)
    if settings is None:
        return EXIT_INVALID_CONFIG
    configure_logging(settings.log_level)
    return anyio.run(run_until_signalled, settings)
