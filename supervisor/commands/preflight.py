"""``athena-supervisor preflight --config FILE [--notify-test]``: check a deployment before it goes live.

One line per check (:mod:`supervisor.preflight`): ok, failed or skipped, and why. Exit 0 only when none
failed; 1 when one did; 2 when the configuration itself is invalid (its problems on stderr, as ``check-config``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import anyio

from supervisor.commands import EXIT_INVALID_CONFIG, load_settings_or_report
from supervisor.config import Settings
from supervisor.logs import configure_logging
from supervisor.preflight import Check, Preflight

EXIT_FAILED = 1
HEADER = ("CHECK", "RESULT", "DETAIL")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "preflight", help="check credentials, permissions, the journal, the address and channels before going live")
    parser.add_argument("--config", required=True, metavar="FILE", help="YAML configuration file")
    parser.add_argument("--notify-test", action="store_true",
                        help="deliver a test event to every notification channel (it reaches whoever reads it)")
    parser.set_defaults(func=run)


async def _checks(settings: Settings, notify_test: bool) -> list[Check]:
    found = []
    async for check in Preflight(settings, notify_test=notify_test).run():
        found.append(check)
    return found


def run(args: argparse.Namespace) -> int:
    settings = load_settings_or_report(args.config)
    if settings is None:
        return EXIT_INVALID_CONFIG
    configure_logging("error")  # the table is the output; retries and the like would only interleave with it
    checks = [Check("config", "ok", f"{args.config} is valid"), *anyio.run(_checks, settings, args.notify_test)]
    widths = [max(len(row[i]) for row in (HEADER, *((c.name, c.result) for c in checks))) for i in range(2)]
    print(f"{HEADER[0]:<{widths[0]}}  {HEADER[1]:<{widths[1]}}  {HEADER[2]}")
    for check in checks:
        print(f"{check.name:<{widths[0]}}  {check.result:<{widths[1]}}  {check.detail}")
    failed = [check.name for check in checks if check.result == "failed"]
    print(f"\n{len(failed)} of {len(checks)} checks failed: {', '.join(failed)}" if failed else
          f"\nall {len(checks)} checks passed" + (" (some skipped: see above)" if any(
              check.result == "skipped" for check in checks) else ""), file=sys.stdout)
    return EXIT_FAILED if failed else 0
