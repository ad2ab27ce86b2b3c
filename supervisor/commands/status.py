"""``athena-supervisor status --url URL``: what a running daemon is doing now, from its ``GET /status``.

A table per shard (account, region): owned or why not, watched and skipped workgroups, sessions and
calculations watched, the next deadlines, escalations in flight and their step, the safety rails, the budgets,
the last sweep; ``--json`` prints the document as the daemon answered it.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:9464"
TIMEOUT_SECONDS = 10


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status", help="show what a running daemon is doing now (its /status)")
    parser.add_argument("--url", default=DEFAULT_URL, metavar="URL",
                        help=f"the daemon's HTTP address, http.host:http.port (default {DEFAULT_URL})")
    parser.add_argument("--json", action="store_true", help="print the daemon's JSON document")
    parser.set_defaults(func=run)


def fetch(url: str, path: str, *, method: str = "GET") -> tuple[int, dict[str, Any]]:
    """The daemon's answer at ``url`` + ``path``: HTTP status and JSON body.

    Raises:
        ConnectionError: nothing answers there (the message names the URL and the fix).
    """
    request = urllib.request.Request(url.rstrip("/") + path, method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            body = json.loads(error.read())
        except ValueError:
            body = {"error": f"HTTP {error.code} {error.reason}"}
        return error.code, body
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise ConnectionError(f"--url {url}: no daemon answers there ({reason}); pass the daemon's http.host and "
                              "http.port, e.g. --url http://127.0.0.1:9464") from None


def run(args: argparse.Namespace) -> int:
    try:
        code, status = fetch(args.url, "/status")
    except ConnectionError as error:
        print(error, file=sys.stderr)
        return 2
    if code != 200:
        print(f"--url {args.url}: /status answered HTTP {code}: {status.get('error', status)}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print("\n".join(render(status)))
    return 0


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...], indent: str = "    ") -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    return [indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in (header, *rows)]


def render(status: dict[str, Any]) -> list[str]:
    """The status document as text."""
    config = status["config"]
    last = config.get("last_reload")
    lines = [
        f"athena-supervisor {status['version']} at {status['now']}: mode {status['mode']}"
        + (f", replica {status['replica']}" if status.get("replica") else ""),
        f"config {config['digest']} loaded {config['loaded_at']}"
        + (f" from {config['path']}" if config["path"] else "")
        + (f"; last reload {last['at']}: {last['outcome']}" if last else ""),
    ]
    events = status.get("events")
    if events:
        lines += ["", *_events(events)]
    for shard in status["shards"]:
        lines += ["", *_shard(shard)]
    return lines


def _events(events: dict[str, Any]) -> list[str]:
    """Event-fed discovery: the queue, whether it can be read, the last message, the depth, the outcomes."""
    state = f"NOT READABLE: {events['problem']}" if events["problem"] else f"up since {events['up_since'] or '-'}"
    last = (f"last message {events['last_message_at']} ({events['last_message_age_seconds']:.0f} s ago, delivered "
            f"{events['last_delivery_seconds']:.0f} s after its call)" if events["last_message_at"]
            else "no message yet")
    depth = "unknown" if events["queue_depth"] is None else f"{events['queue_depth']} waiting"
    received = ", ".join(f"{outcome} {count}" for outcome, count in sorted(events["received"].items()))
    return [f"events: {events['queue']}: {state}", f"  {last}; queue {depth}; received: {received or 'none'}"]


def _shard(shard: dict[str, Any]) -> list[str]:
    name = f"{shard['account'] or '(credentials)'}/{shard['region']}"
    if not shard["owned"]:
        return [f"shard {name}: not supervised here: {shard['problem']}"]
    lines = [f"shard {name}: owned; {'ready' if shard['ready'] == 'ok' else 'not ready: ' + shard['ready']}"]
    workgroups = shard["workgroups"]
    skipped = ", ".join(f"{name} ({reason})" for name, reason in sorted(workgroups["skipped"].items()))
    lines.append(f"  workgroups: watched {', '.join(workgroups['watched']) or 'none'}; skipped {skipped or 'none'}")
    sweep = shard["last_sweep"]
    lines.append(f"  watching {shard['sessions']} active sessions, {shard['calculations']} live calculations; last "
                 + (f"sweep {sweep['at']}, took {sweep['seconds']:.3f} s" if sweep["at"] else "sweep: none yet")
                 + "".join(f"; {where}: {what}" for where, what in sorted(sweep["problems"].items())))
    deadlines = shard["next_deadlines"]
    lines.append("  next deadlines:" + ("" if deadlines else " none"))
    if deadlines:
        lines += _table([(d["at"], d["target"] or "-", d["rule"] or "-", d["why"]) for d in deadlines],
                        ("WHEN", "TARGET", "RULE", "LOOK"))
    escalations = shard["escalations"]
    lines.append("  escalations in flight:" + ("" if escalations else " none"))
    if escalations:
        lines += _table([(e["target"], e["policy"], e["rule"], e["phase"], e["step"], e["next_step_at"])
                         for e in escalations], ("TARGET", "POLICY", "RULE", "PHASE", "NEXT STEP", "AT"))
    safety = shard["safety"]
    lines.append(f"  safety: {safety['actions_last_minute']} destructive calls in the last minute (limit "
                 f"{safety['max_actions_per_minute']}); circuit breaker "
                 + ("OPEN: every destructive call is held (athena-supervisor breaker reset)" if safety["breaker_open"]
                    else "closed"))
    budgets = shard["budgets"]
    if budgets:
        lines.append("  budgets:")
        lines += _table([(b["budget"], b["period"], f"{b['spent_usd']:.4f}", f"{b['limit_usd']:g}",
                          f"{b['forecast_usd']:.4f}", _threshold(b["next_threshold"])) for b in budgets],
                        ("BUDGET", "PERIOD", "SPENT USD", "LIMIT USD", "FORECAST USD", "NEXT THRESHOLD"))
    return lines


def _threshold(threshold: dict[str, Any] | None) -> str:
    if threshold is None:
        return "all crossed"
    when = f" predicted {threshold['predicted_at']}" if threshold["predicted_at"] else ""
    return f"{threshold['at_percent']:g}% {threshold['action']} at {threshold['amount_usd']:g} USD{when}"
