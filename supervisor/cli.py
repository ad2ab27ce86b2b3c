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

# Each module exposes ``register(subparsers)`` which adds its parser and sets ``func`` (args -> exit code); the
# command is the module's name with dashes (``check_config``: ``check-config``).
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


def command_name(module_name: str) -> str:
    """The command a module of :data:`COMMAND_MODULES` registers."""
    return module_name.rsplit(".", 1)[1].replace("_", "-")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of ``command`` alone: a command's module imports what the command needs
    (the daemon's, aiobotocore: about a second), so ``check-config`` need not import what ``run`` needs."""
    parser = OneLineErrorParser(
        prog="athena-supervisor",
        description="Watch Athena for Apache Spark sessions and calculations and enforce budget policies.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        if command is None or command_name(module_name) == command:
            importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    # A command first gets its own parser; anything else (nothing, --help, --version, a typo) the parser of
    # every command, for its help, its usage and its list of choices.
    known = {command_name(module_name) for module_name in COMMAND_MODULES}
    command = arguments[0] if arguments and arguments[0] in known else None
    parser = build_parser(command)
    args = parser.parse_args(arguments)
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
