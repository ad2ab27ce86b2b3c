"""``athena-supervisor run --config FILE``: the long-running daemon.

Before it serves or acts it runs the startup checks (:mod:`supervisor.startup`): on a problem it prints one
line per problem on stderr and exits 2, like an invalid config.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import anyio

from supervisor.commands import EXIT_INVALID_CONFIG, load_settings_or_report
from supervisor.logs import configure_logging
from supervisor.startup import startup_problems


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("run", help="run the supervisor daemon")
    parser.add_argument("--config", required=True, metavar="FILE", help="YAML configuration file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings_or_report(args.config)
    if settings is None:
        return EXIT_INVALID_CONFIG
    problems = startup_problems(settings)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return EXIT_INVALID_CONFIG
    configure_logging(settings.log_level)
    from supervisor.service import run_until_signalled  # the whole daemon: not needed to refuse a bad config

    return anyio.run(run_until_signalled, settings, args.config)
