"""The ``athena-supervisor`` command line: one subcommand per module in :mod:`supervisor.commands`.

Every command follows the same rules, applied here once:

- bad input (an argument, the config, the journal, an address; :class:`~supervisor.startup.StartupError`)
  is one line on stderr naming the offending value and the fix, exit 2, no traceback; argparse's own
  errors are one line too;
- a reader that stops reading (``athena-supervisor journal | head -3``) ends the command quietly with
  exit 1 (the output is incomplete, as for any tool stopped by a closed pipe), per the recipe in the
  Python docs for SIGPIPE;
- Ctrl-C outside the daemon (which handles SIGINT itself) exits 130 without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from supervisor import __version__
from supervisor.startup import StartupError

EXIT_BAD_INPUT = 2
EXIT_BROKEN_PIPE = 1
EXIT_INTERRUPTED = 130

# Each module exposes ``register(subparsers)`` which adds its parser and sets ``func`` (args -> exit code).
COMMAND_MODULES: tuple[str, ...] = (
    "supervisor.commands.run",
    "supervisor.commands.emulator",
    "supervisor.commands.journal",
    "supervisor.commands.check_config",
    "supervisor.commands.demo",
    "supervisor.commands.explain",
    "supervisor.commands.budgets",
    "supervisor.commands.setup_dynamodb",
    "supervisor.commands.status",
    "supervisor.commands.breaker",
    "supervisor.commands.preflight",
    "supervisor.commands.report",
)


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``PROG: MESSAGE; see 'PROG --help'``), exit 2.

    Subparsers inherit the class (argparse creates them with the parent's class).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {' '.join(message.split())}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
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
    try:
        exit_code: int = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here for output still in the buffer
    except StartupError as error:
        print(error, file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as error:
        if not _only_broken_pipes(error):
            raise
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    return exit_code


def _only_broken_pipes(error: BaseException) -> bool:
    if isinstance(error, BaseExceptionGroup):
        return all(_only_broken_pipes(inner) for inner in error.exceptions)
    return isinstance(error, BrokenPipeError)


def _discard_stdout() -> None:
    """Point stdout at /dev/null so that Python's own flush at exit cannot fail on the closed pipe again."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a non-file object (tests)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, descriptor)
    finally:
        os.close(devnull)
