"""``athena-supervisor journal``: recent decisions and actions from the journal (the SQLite file, or with
``--config`` naming ``journal.backend: dynamodb``, the DynamoDB table: every shard's events, newest first)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import anyio
from prometheus_client import CollectorRegistry

from supervisor.commands import EXIT_INVALID_CONFIG, load_settings_or_report
from supervisor.config import Settings
from supervisor.gateway import AwsCallError
from supervisor.metrics import Metrics
from supervisor.startup import check_journal
from supervisor.storage import JournalEntry
from supervisor.storage.factory import open_storage
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


async def _from_dynamodb(settings: Settings, limit: int, target: str | None) -> list[JournalEntry]:
    async with open_storage(settings, metrics=Metrics(CollectorRegistry())) as storage:
        return await storage.recent_events(limit, target_id=target)


def run(args: argparse.Namespace) -> int:
    path = Path(args.path) if args.path else DEFAULT_PATH
    settings = None
    if args.config:
        settings = load_settings_or_report(args.config)
        if settings is None:
            return EXIT_INVALID_CONFIG
        path = settings.journal.path
    if args.limit < 1:
        print(f"--limit: must be at least 1; got {args.limit}", file=sys.stderr)
        return 2
    if settings is not None and settings.journal.backend == "dynamodb":
        try:
            entries = anyio.run(_from_dynamodb, settings, args.limit, args.target)
        except AwsCallError as error:
            print(f"cannot read the journal: {error}", file=sys.stderr)
            return 2
        return _show(entries, as_json=args.json)
    if str(path) != ":memory:" and not Path(path).exists():
        print(f"{path}: no journal here yet; start the daemon first or pass --config/--path", file=sys.stderr)
        return 2
    check_journal(path, writable=False, setting="journal.path" if args.config else "--path")
    storage = SqliteStorage(path)
    try:
        entries = storage.journal.recent_events(args.limit, target_id=args.target)
    finally:
        storage.close_now()
    return _show(entries, as_json=args.json)


def _show(entries: list[JournalEntry], *, as_json: bool) -> int:
    if as_json:
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
