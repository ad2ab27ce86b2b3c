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
import re
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
    parser.add_argument("--host", default="127.0.0.1", metavar="H",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    parser.add_argument("--port", type=port_number, default=4566, metavar="P",
                        help="TCP port to listen on; 0 picks a free port (default 4566)")
    parser.add_argument("--workgroup", action="append", default=[], metavar="NAME",
                        help="create a Spark workgroup at start (repeatable)")
    parser.add_argument("--throttle-tps", type=positive_number, default=None, metavar="N",
                        help="throttle every operation to N requests/s (in every account-region)")
    parser.add_argument("--account", type=account_id, default="123456789012", metavar="ID",
                        help="the default account: of credentials that name none (default 123456789012)")
    parser.add_argument("--region", type=region_name, default="us-east-1", metavar="NAME",
                        help="the default region: of requests without a SigV4 scope (default us-east-1)")
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


def account_id(text: str) -> str:
    """An argparse type: an AWS account id, 12 digits."""
    if not re.fullmatch(r"\d{12}", text):
        raise argparse.ArgumentTypeError(f"not an AWS account id (12 digits): {text!r}")
    return text


def region_name(text: str) -> str:
    """An argparse type: a region name such as ``us-east-1`` (lower-case letters, digits and dashes)."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,63}", text):
        raise argparse.ArgumentTypeError(f"not a region name such as us-east-1: {text!r}")
    return text


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
                        throttle_tps=args.throttle_tps, account_id=args.account, region=args.region,
                        logger=logger) as emulator:
        ready = {"event": "emulator.ready", "endpoint_url": emulator.endpoint_url,
                 "control_url": emulator.control_url, "workgroups": ["primary", *args.workgroup],
                 "throttle_tps": args.throttle_tps, "account": args.account, "region": args.region}
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
