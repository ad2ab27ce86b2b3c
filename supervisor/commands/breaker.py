"""``athena-supervisor breaker reset --url URL``: close a running daemon's open circuit breaker.

The breaker opens when one minute's destructive calls would hit an abnormal share of the watched sessions, and
then holds every Stop and Terminate. After finding out why, an operator resets it: this command
(``POST /-/breaker/reset``, served only with ``http.enable_lifecycle: true``), or a reload (SIGHUP). Held calls go
at their next recheck, within seconds. Each reset is journaled (``breaker.reset``) per shard whose breaker was open.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from supervisor.commands.status import DEFAULT_URL, fetch


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "breaker", help="reset a running daemon's circuit breaker")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    reset = actions.add_parser("reset", help="close the circuit breaker of every shard (POST /-/breaker/reset)")
    reset.add_argument("--url", default=DEFAULT_URL, metavar="URL",
                       help=f"the daemon's HTTP address, http.host:http.port (default {DEFAULT_URL})")
    reset.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        code, body = fetch(args.url, "/-/breaker/reset", method="POST")
    except ConnectionError as error:
        print(error, file=sys.stderr)
        return 2
    if code != 200:
        print(f"--url {args.url}: {body.get('error', body)}", file=sys.stderr)
        return 2
    shards = body.get("breakers_reset") or []
    print(f"circuit breaker reset in {', '.join(shards)}" if shards else "no circuit breaker was open")
    return 0
