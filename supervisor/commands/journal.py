"""``athena-supervisor journal``: decisions and actions from the journal, newest first (the SQLite file, or with
``--config`` naming ``journal.backend: dynamodb``, the DynamoDB table: every shard's events).

Filters: ``--target`` (a calculation or session id, or a prefix of one: a unique prefix stands for its target, an
ambiguous one is refused naming the candidates), ``--since``/``--until``, ``--policy`` (or budget),
``--workgroup``, ``--event`` (names or globs, repeatable), ``--mode``. The table shows each event's mode (dry-run
decisions apart from enforced ones) and action, times in UTC marked ``Z``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
from prometheus_client import CollectorRegistry

from supervisor.commands import EXIT_INVALID_CONFIG, load_settings_or_report
from supervisor.commands.instants import INSTANT_HELP, instant, utc_text
from supervisor.gateway import AwsCallError
from supervisor.logs import configure_logging
from supervisor.metrics import Metrics
from supervisor.startup import check_journal
from supervisor.storage import EventQuery, JournalEntry
from supervisor.storage.factory import open_storage
from supervisor.storage.sqlite import SqliteStorage

DEFAULT_PATH = Path("./athena-supervisor.db")
COLUMNS = ("time", "event", "mode", "action", "target", "policy", "rule", "detail")
EXIT_AMBIGUOUS = 2


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("journal", help="show recent decisions and actions")
    parser.add_argument("--config", metavar="FILE", help="read the journal path from this configuration")
    parser.add_argument("--path", metavar="DB", help=f"the journal database (default {DEFAULT_PATH})")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--limit", type=int, default=50, metavar="N", help="how many events (default 50)")
    parser.add_argument("--target", metavar="ID", help="only events about this session or calculation (its id, or "
                        "the first characters of it, e.g. the 8 the demo prints)")
    parser.add_argument("--since", type=instant, metavar="WHEN", help=f"only events at or after WHEN: {INSTANT_HELP}")
    parser.add_argument("--until", type=instant, metavar="WHEN", help="only events before WHEN")
    parser.add_argument("--policy", metavar="NAME", help="only events of this policy or budget")
    parser.add_argument("--workgroup", metavar="NAME", help="only events about this workgroup")
    parser.add_argument("--event", action="append", default=[], metavar="NAME",
                        help="only these events; a name or a glob (decision, 'stop.*'); repeatable")
    parser.add_argument("--mode", choices=("enforce", "dry-run"), help="only decisions and actions in this mode")
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


class Ambiguous(Exception):
    def __init__(self, prefix: str, candidates: list[str]) -> None:
        super().__init__(f"--target {prefix}: ambiguous, {len(candidates)} ids start with it: "
                         f"{', '.join(candidates)}; give more characters")


def _resolved(query: EventQuery, candidates: list[str]) -> EventQuery:
    """``query`` with its target id prefix resolved among ``candidates`` (the ids that start with it)."""
    assert query.target_id is not None
    if len(candidates) > 1 and query.target_id not in candidates:
        raise Ambiguous(query.target_id, candidates)
    if len(candidates) == 1:
        return replace(query, target_id=candidates[0])
    return query


async def _from_storage(settings: Any, query: EventQuery) -> list[JournalEntry]:
    async with open_storage(settings, metrics=Metrics(CollectorRegistry())) as storage:
        if query.target_id is not None:
            query = _resolved(query, await storage.target_ids(query.target_id, limit=10))
        return await storage.query_events(query)


def _from_file(path: Path, query: EventQuery) -> list[JournalEntry]:
    """Synchronously (the SQLite journal's own reads): the command may run inside an event loop (tests)."""
    storage = SqliteStorage(path)
    try:
        if query.target_id is not None:
            query = _resolved(query, storage.journal.target_ids(query.target_id, 10))
        return storage.journal.query_events(query)
    finally:
        storage.close_now()


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
    configure_logging("error")  # on stderr: a retry's warning would land in the output (--json too)
    query = EventQuery(limit=args.limit, since=args.since, until=args.until, target_id=args.target,
                       policy=args.policy, workgroup=args.workgroup, events=tuple(args.event), mode=args.mode)
    try:
        if settings is not None and settings.journal.backend == "dynamodb":
            try:
                entries = anyio.run(_from_storage, settings, query)
            except AwsCallError as error:
                print(f"cannot read the journal: {error}", file=sys.stderr)
                return 2
        else:
            if str(path) != ":memory:" and not Path(path).exists():
                print(f"{path}: no journal here yet; start the daemon first or pass --config/--path", file=sys.stderr)
                return 2
            check_journal(path, writable=False, setting="journal.path" if args.config else "--path")
            entries = _from_file(Path(path), query)
    except Ambiguous as error:
        print(error, file=sys.stderr)
        return EXIT_AMBIGUOUS
    return _show(entries, as_json=args.json, filtered=query != EventQuery(limit=args.limit))


def _show(entries: list[JournalEntry], *, as_json: bool, filtered: bool) -> int:
    if as_json:
        for entry in entries:
            print(json.dumps(entry.as_dict()))
        return 0
    rows = [
        (utc_text(entry.time), entry.event, entry.mode or "-", entry.action or "-",
         f"{entry.target_kind}:{entry.target_id}" if entry.target_id else "-", entry.policy or "-",
         entry.rule or "-", _summary(entry))
        for entry in entries
    ]
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(COLUMNS)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip())
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    if not rows:
        print("(no event matches)" if filtered else "(no events yet)")
    return 0
