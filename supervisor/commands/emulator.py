"""``athena-supervisor emulator``: run the wire-compatible Athena Spark emulator alone.

The emulator package is imported only when the command runs: the CLI (and so the daemon) must not load it,
and the production image does not ship it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from typing import Any

import structlog

from supervisor.commands.optional import EXIT_UNAVAILABLE, emulator_available
from supervisor.startup import check_bind


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "emulator", help="run the Athena Spark emulator (AWS JSON 1.1 over HTTP)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=port_number, default=4566, help="0 picks a free port (default 4566)")
    parser.add_argument("--workgroup", action="append", default=[], metavar="NAME",
                        help="create a Spark workgroup at start (repeatable)")
    parser.add_argument("--throttle-tps", type=positive_number, default=None, metavar="N",
                        help="throttle every operation to N requests/s")
    parser.set_defaults(func=run)


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0-65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} out of range: use 0-65535 (0 picks a free port)")
    return port


def positive_number(text: str) -> float:
    """An argparse type: a finite number greater than 0."""
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number greater than 0, got {text!r}")
    return number


def _stderr_json_logger() -> Any:
    """Structured JSON logs on stderr (stdout carries only the ready line)."""
    return structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )


async def serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; print one ``emulator.ready`` JSON line on stdout once listening."""
    from athena_spark_emulator import Emulator

    logger = _stderr_json_logger()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with Emulator(host=args.host, port=args.port, workgroups=tuple(args.workgroup),
                        throttle_tps=args.throttle_tps, logger=logger) as emulator:
        ready = {"event": "emulator.ready", "endpoint_url": emulator.endpoint_url,
                 "control_url": emulator.control_url, "workgroups": ["primary", *args.workgroup],
                 "throttle_tps": args.throttle_tps}
        print(json.dumps(ready), flush=True)
        await stop.wait()
        logger.info("emulator.stopping")
    return 0


def run(args: argparse.Namespace) -> int:
    if not emulator_available("emulator"):
        return EXIT_UNAVAILABLE
    check_bind(args.host, args.port, host_setting="--host", port_setting="--port")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(serve(args))
    return 0
