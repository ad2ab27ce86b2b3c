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
from supervisor.startup import StartupError, check_bind

# ``POST /_emulator/events`` keys and the options that give them (an error about a key names its option).
EVENT_OPTIONS = {"sqs_queue_url": "--events-sqs-url", "event_bus_name": "--events-bus-name",
                 "endpoint_url": "--events-endpoint-url", "region": "--events-region", "delay": "--events-delay",
                 "drop_rate": "--events-drop-rate", "duplicate_rate": "--events-duplicate-rate",
                 "seed": "--events-seed"}


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
    events = parser.add_argument_group(
        "CloudTrail events", "publish every successful write call as EventBridge delivers 'AWS API Call via "
        "CloudTrail' events, to an SQS queue or an EventBridge bus (e.g. moto in server mode)")
    events.add_argument("--events-sqs-url", metavar="URL", help="the queue (SendMessage; the body is the event)")
    events.add_argument("--events-bus-name", metavar="NAME", help="or the bus (PutEvents, source aws.athena)")
    events.add_argument("--events-endpoint-url", metavar="URL",
                        help="the SQS/EventBridge endpoint (default: the queue URL's scheme and host)")
    events.add_argument("--events-region", type=region_name, metavar="NAME",
                        help="the target's region (default: an AWS queue URL's, else us-east-1)")
    events.add_argument("--events-delay", metavar="D",
                        help="deliver each event D after its call: 2s, or a uniform range 1s-5s (default 0)")
    events.add_argument("--events-drop-rate", type=probability, metavar="P",
                        help="never deliver an event, with probability P (default 0)")
    events.add_argument("--events-duplicate-rate", type=probability, metavar="P",
                        help="deliver an event a second time, with probability P (default 0)")
    events.add_argument("--events-seed", type=int, metavar="N", help="seed the delay/drop/duplicate draws")
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


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def positive_number(text: str) -> float:
    """An argparse type: a finite number greater than 0."""
    number = _number(text)
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number greater than 0, got {text!r}")
    return number


def probability(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    number = _number(text)
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"must be a probability from 0 to 1, got {text!r}")
    return number


def event_settings(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ``POST /_emulator/events`` body the ``--events-*`` options give (None: none given)."""
    body = {key: getattr(args, option[2:].replace("-", "_")) for key, option in EVENT_OPTIONS.items()}
    body = {key: value for key, value in body.items() if value is not None}
    if not body:
        return None
    if "sqs_queue_url" not in body and "event_bus_name" not in body:
        raise StartupError(f"{EVENT_OPTIONS[next(iter(body))]} needs --events-sqs-url (or --events-bus-name): "
                           "where to publish the events")
    return body


def _checked_events(body: dict[str, Any]) -> Any:
    """The emulator's ``EventSettings`` for ``body``; a bad value is a StartupError naming its option."""
    from athena_spark_emulator.event_settings import EventSettings

    try:
        return EventSettings.from_json(body)
    except ValueError as error:
        key, _, problem = str(error).partition(": ")
        raise StartupError(f"{EVENT_OPTIONS.get(key, key)}: {problem}") from None


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


async def serve(args: argparse.Namespace, events: Any = None) -> int:
    """Serve until SIGTERM/SIGINT; print one ``emulator.ready`` JSON line on stdout once listening (and
    publishing events per ``events``, the emulator's ``EventSettings``, when given)."""
    from athena_spark_emulator import Emulator

    logger = _stderr_json_logger()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with Emulator(host=args.host, port=args.port, workgroups=tuple(args.workgroup),
                        throttle_tps=args.throttle_tps, account_id=args.account, region=args.region,
                        logger=logger) as emulator:
        if events is not None:
            await emulator.events.configure(events)
        ready = {"event": "emulator.ready", "endpoint_url": emulator.endpoint_url,
                 "control_url": emulator.control_url, "workgroups": ["primary", *args.workgroup],
                 "throttle_tps": args.throttle_tps, "account": args.account, "region": args.region,
                 "events": emulator.events.status()["configuration"]}
        print(json.dumps(ready), flush=True)
        await stop.wait()
        logger.info("emulator.stopping")
    return 0


def run(args: argparse.Namespace) -> int:
    if not emulator_available("emulator"):
        return EXIT_UNAVAILABLE
    body = event_settings(args)
    events = _checked_events(body) if body is not None else None
    check_bind(args.host, args.port, host_setting="--host", port_setting="--port")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(serve(args, events))
    return 0
