"""What the daemon is doing now, as ``GET /status`` answers it (and ``athena-supervisor status`` prints it).

A read of the running activities' own state, taken in one pass of the event loop (nothing awaits), so it is
consistent: the configuration in force and when it was loaded, then per shard (account, region): whether this
process owns it and why not, the watched and skipped workgroups, what is watched, the next deadlines, the
escalations in flight and their step, the safety rails, the budgets and the last sweep.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from supervisor import __version__
from supervisor.activities.event_feed import EventFeed
from supervisor.core import escalation as machine
from supervisor.core.budgets import BudgetStatus
from supervisor.core.fleet import Shard
from supervisor.reload import LiveConfig
from supervisor.shard import ShardHost, ShardRuntime

DEADLINES_SHOWN = 10


def _time(value: datetime | None) -> str | None:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z") if value is not None else None


def service_status(live: LiveConfig, shards: Iterable[Shard], hosts: Mapping[Shard, ShardHost], now: datetime, *,
                   replica: str | None = None, events: EventFeed | None = None) -> dict[str, Any]:
    """The status document. ``shards``: every configured shard (a replica lists those it does not own too);
    ``hosts``: the ones this process supervises now; ``events``: the event feed, with event-fed discovery."""
    settings = live.settings
    return {
        "version": __version__,
        "now": _time(now),
        "mode": settings.mode,
        "replica": replica,
        "config": live.describe(),
        "events": event_path_summary(events, now) if events is not None else None,
        "shards": [_shard_status(shard, hosts.get(shard), now) for shard in shards],
    }


def event_path_summary(feed: EventFeed, now: datetime) -> dict[str, Any]:
    """The event path (``/status`` and ``/readyz``): the queue, whether it can be read, the last message and its
    delivery lag, the depth, the messages received by outcome."""
    path = feed.path
    last = path.last_received_at
    return {
        "queue": feed.settings.sqs_queue_url, "problem": path.problem, "up_since": _time(path.up_since),
        "last_message_at": _time(last),
        "last_message_age_seconds": round((now - last).total_seconds(), 3) if last is not None else None,
        "last_delivery_seconds": path.last_delivery_seconds,
        "queue_depth": path.queue_depth, "queue_depth_at": _time(path.queue_depth_at),
        "received": {outcome: count for outcome, count in feed.received.items() if count},
    }


def _shard_status(shard: Shard, host: ShardHost | None, now: datetime) -> dict[str, Any]:
    status: dict[str, Any] = {"account": shard.account_id or None, "region": shard.region,
                              "owned": host is not None and host.runtime is not None,
                              "problem": None if host is None else host.problem}
    if host is None:
        status["problem"] = "held by another replica, or not yet taken"
        return status
    runtime = host.runtime
    if runtime is None:
        status["problem"] = host.problem or "not started yet"
        return status
    status["ready"] = runtime.readiness() or "ok"
    status.update(_activities(runtime, now))
    return status


def _activities(runtime: ShardRuntime, now: datetime) -> dict[str, Any]:
    discovery, checks, enforcement = runtime.discovery, runtime.checks, runtime.enforcement
    inventory = runtime.inventory
    sessions, calculations = inventory.counts_by_workgroup()
    rails = enforcement.rails
    return {
        "workgroups": {"watched": discovery.watched(), "skipped": discovery.skipped()},
        "sessions": sum(sessions.values()),
        "calculations": sum(calculations.values()),
        "last_sweep": {"at": _time(discovery.last_discovery_at),
                       "every_seconds": discovery.interval.total_seconds(),
                       "seconds": round(discovery.last_sweep_duration.total_seconds(), 3),
                       "problems": dict(discovery.problems)},
        "next_deadlines": [
            {"target": f"{ref.kind.value}:{ref.target_id}" if ref else None,
             "workgroup": ref.workgroup if ref else None, "at": _time(when), "why": why, "rule": rule}
            for ref, when, why, rule in checks.upcoming(DEADLINES_SHOWN)
        ],
        "escalations": [
            {"target": f"{key.kind.value}:{key.target_id}", "workgroup": escalation.verdict.target.workgroup,
             "policy": escalation.verdict.policy, "rule": escalation.verdict.rule,
             "phase": escalation.phase.value, "step": machine.next_step(escalation).value,
             "next_step_at": _time(escalation.next_step_at), "since": _time(escalation.created_at)}
            for key, escalation in sorted(enforcement.in_flight.items(), key=lambda item: item[1].created_at)
        ],
        "safety": {"actions_last_minute": rails.actions_in_window(now),
                   "max_actions_per_minute": rails.max_actions_per_minute,
                   "breaker_open": rails.breaker_open},
        "budgets": [_budget(status) for status in (runtime.budgets.status.values() if runtime.budgets else ())],
    }


def _budget(status: BudgetStatus) -> dict[str, Any]:
    upcoming = next((t for t in status.thresholds if not t.crossed), None)
    return {
        "budget": status.name, "period": status.period, "spent_usd": round(status.spent_usd, 6),
        "limit_usd": status.limit_usd, "forecast_usd": round(status.forecast_usd, 6),
        "next_threshold": None if upcoming is None else {
            "at_percent": upcoming.at_percent, "action": upcoming.action, "amount_usd": round(upcoming.amount_usd, 6),
            "predicted_at": _time(upcoming.predicted_at)},
    }
