"""``athena-supervisor setup-dynamodb --config FILE``: create the DynamoDB table of ``journal.backend: dynamodb``.

Idempotent: a table that exists with the journal's key is kept (and its TTL enabled if it is not); one with another
key is refused. Waits until the table is ACTIVE and prints one line per thing found or done. Every error is one
line on stderr, exit 2, no traceback; the endpoint is shown redacted and credentials never.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import anyio
from prometheus_client import CollectorRegistry

from supervisor.clock import SystemClock
from supervisor.commands import EXIT_INVALID_CONFIG, load_settings_or_report
from supervisor.config import Settings
from supervisor.gateway import AwsCallError
from supervisor.logs import configure_logging
from supervisor.metrics import Metrics
from supervisor.redaction import redact_text, redact_url
from supervisor.startup import check_profile
from supervisor.storage.dynamodb_setup import TableProblem, ensure_table
from supervisor.storage.factory import build_storage_gateway, journal_table

EXIT_FAILED = 2
ATTEMPTS = 3  # per call: an operator waits at the terminal


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "setup-dynamodb", help="create the DynamoDB table of journal.backend: dynamodb (idempotent)")
    parser.add_argument("--config", required=True, metavar="FILE", help="YAML configuration file")
    parser.set_defaults(func=run)


async def setup(settings: Settings) -> list[str]:
    """Create the configured journal table if needed; the lines to print."""
    clock = SystemClock()
    async with build_storage_gateway(settings, Metrics(CollectorRegistry()), clock=clock,
                                     max_attempts=ATTEMPTS) as gateway:
        return await ensure_table(journal_table(settings, gateway), clock)


def run(args: argparse.Namespace) -> int:
    settings = load_settings_or_report(args.config)
    if settings is None:
        return EXIT_INVALID_CONFIG
    journal = settings.journal
    if journal.backend != "dynamodb":
        print(f"{args.config}: journal.backend is {journal.backend}; setup-dynamodb creates the table of "
              "journal.backend: dynamodb (set it and journal.table)", file=sys.stderr)
        return EXIT_FAILED
    check_profile(settings.aws)
    configure_logging("error")  # the gateway's retry lines would interleave with the lines that matter here
    where = f"table {journal.table} in {journal.dynamodb_region(settings.aws)}" + (
        f" at {redact_url(journal.endpoint_url)}" if journal.endpoint_url else "")
    try:
        lines = anyio.run(setup, settings)
    except TableProblem as problem:
        print(f"setup-dynamodb: {problem}", file=sys.stderr)
        return EXIT_FAILED
    except AwsCallError as error:
        print(f"setup-dynamodb: {where}: {error.operation} failed: {error.code}: "
              f"{redact_text(' '.join(error.message.split()))}", file=sys.stderr)
        return EXIT_FAILED
    for line in lines:
        print(line)
    return 0
