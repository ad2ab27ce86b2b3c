"""``athena-supervisor budgets --config FILE``: each budget's spend, burn rate, forecast and thresholds.

One pass of the daemon's own accounting (:class:`~supervisor.activities.accounting.Accounting`) runs against
a scratch copy of the journal: spend is what the daemon counted plus what sessions accrued since it last
looked, computed by the same code, so the command agrees with the daemon; nothing is written back.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any

import anyio
from prometheus_client import CollectorRegistry

from supervisor import athena
from supervisor.activities.accounting import Accounting
from supervisor.activities.budgets import budget_statuses
from supervisor.clock import Clock, SystemClock
from supervisor.commands import EXIT_INVALID_CONFIG, load_settings_or_report
from supervisor.config import Settings
from supervisor.core.budgets import BudgetStatus
from supervisor.core.inventory import Inventory
from supervisor.gateway import AwsCallError, Gateway
from supervisor.logs import configure_logging
from supervisor.metrics import Metrics
from supervisor.service import build_gateway
from supervisor.startup import StartupError, check_aws, check_journal
from supervisor.storage.sqlite import SqliteStorage


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("budgets", help="show each budget's spend and forecast")
    parser.add_argument("--config", required=True, metavar="FILE", help="YAML configuration file")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


async def preview_budgets(settings: Settings, gateway: Gateway, storage: SqliteStorage,
                          clock: Clock) -> list[BudgetStatus]:
    """Every budget's status after one accounting pass on a scratch copy of ``storage`` (not written back), at
    ``clock``'s instant."""
    scratch = storage.scratch_copy()
    try:
        budgeted = [str(w["Name"]) for w in await athena.list_workgroups(gateway)
                    if settings.watches(str(w["Name"])) and settings.budgets_for(str(w["Name"]))]
        inventory = Inventory()
        for workgroup in budgeted:
            for session in await athena.list_sessions(gateway, workgroup, clock):
                inventory.put_session(session)
        metrics = Metrics(CollectorRegistry())
        accounting = Accounting(settings=settings, gateway=gateway, storage=scratch, clock=clock, inventory=inventory,
                                watched=lambda: budgeted, metrics=metrics)
        spend = await accounting.pass_once()
        return await budget_statuses(settings, scratch, spend, clock.now())
    finally:
        scratch.close_now()


def open_storage(settings: Settings) -> SqliteStorage:
    """The daemon's journal if it exists, else an empty throwaway one (nothing is created on disk).

    Raises:
        StartupError: the file is not a usable journal, or the journal is a DynamoDB table (these previews
            compute on a scratch copy of an SQLite journal).
    """
    if settings.journal.backend != "sqlite":
        raise StartupError(f"journal.backend {settings.journal.backend}: budgets and explain read an SQLite journal "
                           "only so far (they compute on a scratch copy of it); use athena-supervisor journal "
                           "--config FILE for the table's events")
    path = settings.journal.path
    if str(path) != ":memory:" and not Path(path).exists():
        return SqliteStorage(":memory:")
    check_journal(path, writable=False)
    return SqliteStorage(path)


def _lines(status: BudgetStatus, storage: SqliteStorage) -> list[str]:
    lines = [
        f"budget {status.name}: {status.spent_usd:.4f} of {status.limit_usd:g} USD "
        f"({100 * status.spent_usd / status.limit_usd:.1f}%)",
        f"  period      {status.period_start.isoformat()} .. {status.period_end.isoformat()}"
        + (" (rolling window)" if status.rolling else ""),
        f"  burn rate   {status.rate_usd_per_hour:.4f} USD/h; forecast {status.forecast_usd:.4f} USD"
        + (" in a window" if status.rolling else " at period end"),
    ]
    open_at = {e.at_percent: e for e in storage.ledger.open_episodes(status.name)}
    for threshold in status.thresholds:
        if threshold.at_percent in open_at:
            state = f"fired at {open_at[threshold.at_percent].opened_at.isoformat()}"
        elif threshold.crossed:
            state = "crossed (fires at the daemon's next pass)"
        elif threshold.predicted_at:
            state = f"predicted at {threshold.predicted_at.isoformat()}"
        else:
            state = "not reached this period at the current rate"
        lines.append(f"  {threshold.at_percent:>6g}%  {threshold.amount_usd:.4f} USD  {threshold.action:<18} {state}")
    return lines


async def look_at_budgets(settings: Settings, storage: SqliteStorage, *, clock: Clock) -> list[BudgetStatus]:
    """What ``budgets`` prints, as of ``clock``'s instant (the command's: the system clock)."""
    async with build_gateway(settings, Metrics(CollectorRegistry()), clock=clock) as gateway:
        return await preview_budgets(settings, gateway, storage, clock)


def render(statuses: list[BudgetStatus], storage: SqliteStorage, *, as_json: bool) -> str:
    """The command's output: each status as text, or all of them as JSON with the thresholds that fired."""
    if as_json:
        return json.dumps([{**status.as_dict(), "open_thresholds": [
            episode.at_percent for episode in storage.ledger.open_episodes(status.name)]} for status in statuses],
            indent=2)
    return "\n".join(line for status in statuses for line in _lines(status, storage))


def run(args: argparse.Namespace) -> int:
    settings = load_settings_or_report(args.config)
    if settings is None:
        return EXIT_INVALID_CONFIG
    if not settings.budgets:
        print(f"{args.config}: no budgets configured", file=sys.stderr)
        return 2
    check_aws(settings.aws)
    configure_logging("error")  # on stderr: a retry's warning would land in the output (--json too)
    storage = open_storage(settings)
    try:
        try:
            statuses = anyio.run(functools.partial(look_at_budgets, settings, storage, clock=SystemClock()))
        except AwsCallError as error:
            print(f"cannot look at Athena: {error}", file=sys.stderr)
            return 1
        print(render(statuses, storage, as_json=args.json))
    finally:
        storage.close_now()
    return 0
