"""The ``athena-supervisor`` command line: one subcommand per module in :mod:`supervisor.commands`."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from supervisor import __version__

# Each module exposes ``register(subparsers)`` which adds its parser and sets ``func`` (args -> exit code).
COMMAND_MODULES: tuple[str, ...] = (
    "supervisor.commands.run",
    "supervisor.commands.emulator",
    "supervisor.commands.journal",
    "supervisor.commands.check_config",
    "supervisor.commands.demo",
    "supervisor.commands.explain",
    "supervisor.commands.budgets",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="athena-supervisor",
        description="Watch Athena for Apache Spark sessions and calculations and enforce budget policies.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    exit_code: int = args.func(args)
    return exit_code
