"""``athena-supervisor emulator``: run the wire-compatible Athena Spark emulator alone."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "emulator", help="run the Athena Spark emulator (AWS JSON 1.1 over HTTP)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4566)
    parser.add_argument("--workgroup", action="append", default=[], metavar="NAME",
                        help="create a Spark workgroup at start (repeatable)")
    parser.add_argument("--throttle-tps", type=float, default=None, metavar="N",
                        help="throttle every operation to N requests/s")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise SystemExit("the emulator is not built yet")
