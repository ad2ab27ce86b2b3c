"""``athena-supervisor journal``: recent decisions and actions from the journal."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from supervisor.commands import EXIT_INVALID_CONFIG, load_settings_or_report
from supervisor.startup import check_journal
from supervisor.storage import JournalEntry
from supervisor.storage.sqlite import SqliteStorage

DEFAULT_PATH = Path("./athena-supervisor.db")
COLUMNS = ("time", "event", "target", "policy", "rule", "detail")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("journal", help="show recent decisions and actions")
    parser.add_argument("--config", metavar="FILE", help="read the journal path from this configuration")
    parser.add_argument("--path", metavar="DB", help=f"the journal database (default {DEFAULT_PATH})")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--limit", type=int, default=50, metavar="N", help="how many events (default 50)")
    parser.add_argument("--target", metavar="ID", help="only events about this session or calculation id")
    parser.set_defaults(func=run)


def _summary(entry: JournalEntry) -> str:
    detail = entry.detail
    parts = []
    if "observed" in detail and "limit" in detail:
        parts.append(f"{detail['observed']:g} > {detail['limit']:g} {detail.get('unit', '')}".strip())
    if "spent_usd" in detail and "limit_usd" in detail:
        parts.append(f"spent {detail['spent_usd']:g} of {detail['limit_usd']:g} USD")
    if entry.target_id is None and isinstance(detail.get("workgroup"), str):
        parts.append(f"workgroup={detail['workgroup']}")
    for key in ("operation", "state", "observed_state", "reason", "error", "outcome"):
        if detail.get(key) is not None:
            parts.append(f"{key}={detail[key]}")
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    path = Path(args.path) if args.path else DEFAULT_PATH
    if args.config:
        settings = load_settings_or_report(args.config)
        if settings is None:
            return EXIT_INVALID_CONFIG
        path = settings.journal.path
    if args.limit < 1:
        print(f"--limit: must be at least 1; got {args.limit}", file=sys.stderr)
        return 2
    if str(path) != ":memory:" and not Path(path).exists():
        print(f"{path}: no journal here yet; start the daemon first or pass --config/--path", file=sys.stderr)
        return 2
    check_journal(path, writable=False, setting="journal.path" if args.config else "--path")
    storage = SqliteStorage(path)
    try:
        entries = storage.journal.recent_events(args.limit, target_id=args.target)
    finally:
        storage.close_now()
    if args.json:
        for entry in entries:
            print(json.dumps(entry.as_dict()))
        return 0
    rows = [
        (entry.time.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], entry.event,
         f"{entry.target_kind}:{entry.target_id}" if entry.target_id else "-", entry.policy or "-",
         entry.rule or "-", _summary(entry))
        for entry in entries
    ]
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(COLUMNS)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip())
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    if not rows:
        print("(no events yet)")
    return 0
