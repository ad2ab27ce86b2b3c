"""The emulator is an optional part of an installation: the daemon never needs it.

The production container image leaves the ``athena_spark_emulator`` package out, so ``demo`` and
``emulator`` check for it before importing it (lazily, inside their ``run``) and explain its absence in
one line instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import sys

EMULATOR_PACKAGE = "athena_spark_emulator"
EXIT_UNAVAILABLE = 2


def emulator_available(command: str) -> bool:
    """Whether the emulator package can be imported; if not, print why on stderr (exit with 2).

    Args:
        command: the subcommand that needs it, named in the message.
    """
    if importlib.util.find_spec(EMULATOR_PACKAGE) is not None:
        return True
    print(f"athena-supervisor {command}: the emulator package {EMULATOR_PACKAGE!r} is not installed here "
          "(the production image leaves it out); run it from a source checkout: pip install -e .",
          file=sys.stderr)
    return False
