"""Budgets: after each accounting pass, judge every budget and hand its episodes' actions to enforcement.

For each budget: spend in the current period, burn rate, forecast (gauges); episodes whose period is over
(calendar) or whose spend fell back below the threshold (rolling) are closed and the workgroups they disabled
enabled again; newly crossed thresholds fire in ascending order, once per episode; open
``stop_calculations`` / ``terminate_sessions`` episodes claim every live target of the budget's workgroups
(so new work started after the crossing is stopped too), and ``disable_workgroup`` episodes claim a
workgroup update: all through enforcement's one ``claim``, its safety rails and its journal. Warnings
before a predicted crossing go through the warnings activity.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import anyio
import anyio.abc
import structlog

from supervisor.clock import Clock
from supervisor.config import BudgetConfig, Settings
from supervisor.core.budgets import (
    BudgetStatus,
    Episode,
    crossed_thresholds,
    episode_over,
    period_bounds,
    slack,
    spend_window,
    status_at,
    threshold_amount,
    warnings_due,
)
from supervisor.core.inventory import Inventory
from supervisor.core.model import ActionName, Origin, TargetRef, Verdict
from supervisor.events import EventName, EventSink, NullSink
from supervisor.metrics import Metrics
from supervisor.storage import Storage

from .accounting import Accounting, Spend
from .enforcement import Enforcement
from .warnings import Notice, Warnings

TARGET_ACTIONS: dict[str, ActionName] = {"stop_calculations": "stop", "terminate_sessions": "terminate"}


def budget_detail(budget: BudgetConfig, status: BudgetStatus) -> dict[str, Any]:
    return {
        "budget": budget.name, "workgroups": list(budget.workgroups), "period": budget.period,
        "period_start": status.period_start.isoformat(), "period_end": status.period_end.isoformat(),
        "spent_usd": round(status.spent_usd, 6), "limit_usd": budget.limit_usd,
        "forecast_usd": round(status.forecast_usd, 6),
    }


async def budget_statuses(settings: Settings, storage: Storage, spend: Spend, now: datetime) -> list[BudgetStatus]:
    """Every budget's position: counted spend in its period and the burn rate of ``spend``."""
    price = settings.pricing.price_for(settings.aws.region)
    statuses = []
    for budget in settings.budgets:
        since, until = spend_window(budget, now)
        spent = await storage.spent(budget.name, since, until)
        statuses.append(status_at(budget, spent, spend.dpus(budget.matches), price, now))
    return statuses


class Budgets:
    def __init__(
        self,
        *,
        settings: Settings,
        storage: Storage,
        clock: Clock,
        accounting: Accounting,
        enforcement: Enforcement,
        warnings: Warnings,
        inventory: Inventory,
        watched: Callable[[], Sequence[str]],
        metrics: Metrics,
        events: EventSink | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.clock = clock
        self.accounting = accounting
        self.enforcement = enforcement
        self.warnings = warnings
        self.inventory = inventory
        self._watched = watched
        self.metrics = metrics
        self.events: EventSink = events or NullSink()
        self._log = logger or structlog.get_logger("supervisor.budgets")
        self.status: dict[str, BudgetStatus] = {}
        self.evaluations = 0
        for budget in settings.budgets:
            metrics.budget_limit.labels(budget.name).set(budget.limit_usd)

    def apply(self, settings: Settings) -> None:
        """Take reloaded budgets (and mode) from the next evaluation on; the gauges of a budget no longer
        configured go."""
        for name in {budget.name for budget in self.settings.budgets} - {budget.name for budget in settings.budgets}:
            self.status.pop(name, None)
            for gauge in (self.metrics.budget_limit, self.metrics.budget_spent, self.metrics.budget_forecast):
                with contextlib.suppress(KeyError):
                    gauge.remove(name)
        self.settings = settings
        for budget in settings.budgets:
            self.metrics.budget_limit.labels(budget.name).set(budget.limit_usd)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            spend = await self.accounting.next_spend()
            try:
                await self.evaluate(spend)
            except Exception as error:
                self._log.exception("budget.evaluation_failed", error=repr(error))

    async def evaluate(self, spend: Spend) -> None:
        now = self.clock.now()
        for budget, status in zip(self.settings.budgets,
                                  await budget_statuses(self.settings, self.storage, spend, now), strict=True):
            self.status[budget.name] = status
            self.metrics.budget_spent.labels(budget.name).set(status.spent_usd)
            self.metrics.budget_forecast.labels(budget.name).set(status.forecast_usd)
            await self._close_episodes(budget, status, now)
            await self._fire(budget, status, now)
            await self._act_on_open_episodes(budget, status, now)
            await self._warn(budget, status, now)
            if budget.rolling_window is not None:
                await self.storage.prune(budget.name, period_bounds(budget, now)[0] - slack(budget))
        await self._enable_released(now)
        self.evaluations += 1

    async def _close_episodes(self, budget: BudgetConfig, status: BudgetStatus, now: datetime) -> None:
        for episode in await self.storage.open_episodes(budget.name):
            if not episode_over(budget, status, episode):
                continue
            await self.storage.close_episode(episode.episode_id, now)
            detail = {"budget": budget.name, "at_percent": episode.at_percent, "action": episode.action,
                      "opened_at": episode.opened_at.isoformat(), "spent_usd": round(status.spent_usd, 6)}
            await self._record("budget.reset", budget.name, f"threshold:{episode.at_percent:g}", detail, now)
            self._log.info("budget.reset", **detail)

    async def _fire(self, budget: BudgetConfig, status: BudgetStatus, now: datetime) -> None:
        for threshold in crossed_thresholds(status.spent_usd, budget.limit_usd, budget.thresholds):
            episode = await self.storage.open_episode(budget.name, threshold.at_percent, threshold.action,
                                                      status.period_key, status.spent_usd, now)
            if episode is None:
                continue
            detail = {
                **budget_detail(budget, status), "at_percent": threshold.at_percent,
                "threshold_usd": round(threshold_amount(budget, threshold), 6), "action": threshold.action,
                "mode": self.settings.mode,
            }
            await self._record("budget_threshold", budget.name, f"threshold:{threshold.at_percent:g}", detail, now)
            self._log.warning("budget.threshold", **detail)
            self._emit("budget_threshold", detail)

    async def _act_on_open_episodes(self, budget: BudgetConfig, status: BudgetStatus, now: datetime) -> None:
        for episode in await self.storage.open_episodes(budget.name):
            if episode.action == "disable_workgroup":
                await self._disable(budget, status, episode, now)
            elif episode.action in TARGET_ACTIONS:
                await self._claim_targets(budget, status, episode, now)

    def _verdict(self, target: TargetRef, budget: BudgetConfig, status: BudgetStatus, episode: Episode,
                 rule: str, action: ActionName, now: datetime) -> Verdict:
        return Verdict(
            target=target, policy=budget.name, rule=rule, observed=status.spent_usd,
            limit=budget.limit_usd * episode.at_percent / 100, unit="usd", crossed_at=episode.opened_at,
            decided_at=now, action=action, mode=self.settings.mode, origin=Origin.BUDGET,
        )

    async def _claim_targets(self, budget: BudgetConfig, status: BudgetStatus, episode: Episode,
                             now: datetime) -> None:
        action = TARGET_ACTIONS[episode.action]
        watched = {workgroup for workgroup in self._watched() if budget.matches(workgroup)}
        targets: list[TargetRef] = []
        if action == "stop":
            for calculation in list(self.inventory.calculations.values()):
                session = self.inventory.sessions.get(calculation.session_id)
                if calculation.is_live and calculation.workgroup in watched and session and not session.is_exempt:
                    targets.append(TargetRef.of_calculation(calculation))
        else:
            for session in list(self.inventory.sessions.values()):
                if session.is_active and session.workgroup in watched and not session.is_exempt:
                    targets.append(TargetRef.of_session(session))
        for target in targets:
            if not self.enforcement.is_claimed(target.key):
                await self.enforcement.claim(
                    self._verdict(target, budget, status, episode, f"budget:{budget.name}", action, now))

    async def _disable(self, budget: BudgetConfig, status: BudgetStatus, episode: Episode, now: datetime) -> None:
        done = await self.storage.disabled_in(episode.episode_id)
        for workgroup in sorted(self._watched()):
            if not budget.matches(workgroup) or workgroup in done:
                continue
            snapshot = self.inventory.workgroups.get(workgroup)
            if snapshot is not None and not snapshot.enabled:
                continue  # disabled by someone else: not ours to enable again
            # Recorded before the claim: a crash after the call still enables the workgroup at the reset.
            await self.storage.record_disabled(workgroup, episode, now)
            target = TargetRef.of_workgroup(workgroup, f"disable:{episode.episode_id}")
            await self.enforcement.claim(
                self._verdict(target, budget, status, episode, "disable_workgroup", "disable_workgroup", now))

    async def _enable_released(self, now: datetime) -> None:
        for workgroup, holds in (await self.storage.releasable()).items():
            budget_names = sorted({budget for _, budget in holds})
            scope = "enable:" + ",".join(str(episode_id) for episode_id, _ in sorted(holds))
            target = TargetRef.of_workgroup(workgroup, scope)
            outcome = await self.enforcement.outcome_of(target.key)
            if outcome is not None:
                await self.storage.mark_enabled(workgroup, now)
                continue
            if self.enforcement.is_claimed(target.key):
                continue  # being enabled
            budget = next((b for b in self.settings.budgets if b.name == budget_names[0]), None)
            await self.enforcement.claim(Verdict(
                target=target, policy=budget_names[0], rule="enable_workgroup", observed=0.0,
                limit=budget.limit_usd if budget else 0.0, unit="usd", crossed_at=now, decided_at=now,
                action="enable_workgroup", mode=self.settings.mode, origin=Origin.BUDGET,
            ))
            if await self.enforcement.outcome_of(target.key) is not None:
                await self.storage.mark_enabled(workgroup, now)

    async def _warn(self, budget: BudgetConfig, status: BudgetStatus, now: datetime) -> None:
        for threshold in warnings_due(budget, status, now):
            assert threshold.predicted_at is not None and budget.notify_before is not None
            episode_key = status.period_key or str(await self.storage.episode_count(budget.name, threshold.at_percent))
            rule = f"threshold:{threshold.at_percent:g}"
            detail = {
                **budget_detail(budget, status), "rule": rule, "at_percent": threshold.at_percent,
                "action": threshold.action, "threshold_usd": round(threshold.amount_usd, 6),
                "predicted_at": threshold.predicted_at.isoformat(),
                "notify_before_seconds": budget.notify_before.total_seconds(),
            }
            self.warnings.submit(Notice(f"budget-warning:{budget.name}:{threshold.at_percent:g}:{episode_key}",
                                        "budget.warning", budget.name, rule, detail))

    async def _record(self, event: str, budget: str, rule: str, detail: Mapping[str, Any], time: datetime) -> None:
        await self.storage.record(event, policy=budget, rule=rule, detail=detail, time=time)

    def _emit(self, event: EventName, detail: Mapping[str, Any]) -> None:
        self.events.emit(event, dict(detail))
