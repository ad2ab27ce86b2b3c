"""``athena-supervisor budgets --config FILE``: each budget's spend, burn rate, forecast and thresholds.

Spend is what the daemon counted in the journal plus what active sessions accrued since it last looked
(a fresh GetSession each, nothing written); the burn rate comes from the same difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
from prometheus_client import CollectorRegistry

from supervisor.budgets import BudgetStatus, budget_status, period_bounds
from supervisor.clock import SystemClock
from supervisor.commands import EXIT_INVALID_CONFIG, load_settings_or_report
from supervisor.config import Settings
from supervisor.discovery import get_session, list_sessions, list_workgroups
from supervisor.gateway import AwsCallError, Gateway, Priority
from supervisor.journal import Journal
from supervisor.ledger import Ledger
from supervisor.metrics import Metrics
from supervisor.model import MILLIS_PER_HOUR
from supervisor.service import build_gateway
from supervisor.startup import check_aws, check_journal


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("budgets", help="show each budget's spend and forecast")
    parser.add_argument("--config", required=True, metavar="FILE", help="YAML configuration file")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


async def budget_statuses(settings: Settings, gateway: Gateway, journal: Journal, now: datetime) -> list[BudgetStatus]:
    """Every budget's status: counted spend + what active sessions accrued since (not written back)."""
    ledger = Ledger(journal)
    price = settings.pricing.price_for(settings.aws.region)
    budgeted = [str(w["Name"]) for w in await list_workgroups(gateway)
                if settings.watches(str(w["Name"])) and settings.budgets_for(str(w["Name"]))]
    clock = SystemClock()
    extra_usd: dict[str, float] = {}
    rate_dpus: dict[str, float] = {}
    for workgroup in budgeted:
        sessions = await list_sessions(gateway, workgroup, clock)
        counted = ledger.counted(s.session_id for s in sessions)
        for summary in sessions:
            fresh = await get_session(gateway, summary.session_id, workgroup, clock, priority=Priority.DISCOVER,
                                      statistics=True)
            if fresh.dpu_millis is None:
                continue
            row = counted.get(summary.session_id)
            base, since = (row.millis, row.observed_at) if row else (0, fresh.started_at or fresh.observed_at)
            delta = max(0, fresh.dpu_millis - base)
            elapsed_ms = (fresh.observed_at - since).total_seconds() * 1000
            for budget in settings.budgets_for(workgroup):
                if row is None or row.observed_at >= period_bounds(budget, now)[0]:
                    extra_usd[budget.name] = extra_usd.get(budget.name, 0.0) + delta / MILLIS_PER_HOUR * price
                if elapsed_ms > 0:
                    rate_dpus[budget.name] = rate_dpus.get(budget.name, 0.0) + delta / elapsed_ms
    statuses = []
    for budget in settings.budgets:
        start, end = period_bounds(budget, now)
        spent = ledger.spent(budget.name, start, end if budget.rolling_window is None else now) + extra_usd.get(
            budget.name, 0.0)
        statuses.append(budget_status(budget, spent, rate_dpus.get(budget.name, 0.0) * price / 3600, now))
    return statuses


def open_journal(settings: Settings) -> Journal | None:
    """The configured journal to read, None when there is none yet.

    Raises:
        StartupError: the file is not a usable journal.
    """
    path = settings.journal.path
    if str(path) != ":memory:" and not Path(path).exists():
        return None
    check_journal(path, writable=False)
    return Journal(path)


def _render(status: BudgetStatus, ledger: Ledger) -> list[str]:
    lines = [
        f"budget {status.name}: {status.spent_usd:.4f} of {status.limit_usd:g} USD "
        f"({100 * status.spent_usd / status.limit_usd:.1f}%)",
        f"  period      {status.period_start.isoformat()} .. {status.period_end.isoformat()}"
        + (" (rolling window)" if status.rolling else ""),
        f"  burn rate   {status.rate_usd_per_hour:.4f} USD/h; forecast {status.forecast_usd:.4f} USD"
        + (" in a window" if status.rolling else " at period end"),
    ]
    open_at = {e.at_percent: e for e in ledger.open_episodes(status.name)}
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


async def _look(settings: Settings, journal: Journal) -> list[BudgetStatus]:
    async with build_gateway(settings, Metrics(CollectorRegistry())) as gateway:
        return await budget_statuses(settings, gateway, journal, SystemClock().now())


def run(args: argparse.Namespace) -> int:
    settings = load_settings_or_report(args.config)
    if settings is None:
        return EXIT_INVALID_CONFIG
    if not settings.budgets:
        print(f"{args.config}: no budgets configured", file=sys.stderr)
        return 2
    check_aws(settings.aws)
    journal = open_journal(settings) or Journal(":memory:")
    try:
        try:
            statuses = anyio.run(_look, settings, journal)
        except AwsCallError as error:
            print(f"cannot look at Athena: {error}", file=sys.stderr)
            return 1
        ledger = Ledger(journal)
        if args.json:
            print(json.dumps([{**s.as_dict(), "open_thresholds": [e.at_percent for e in ledger.open_episodes(s.name)]}
                              for s in statuses], indent=2))
            return 0
        for status in statuses:
            print("\n".join(_render(status, ledger)))
    finally:
        journal.close()
    return 0
