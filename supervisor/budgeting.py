"""Budgets at work: count spend after each discovery sweep, fire thresholds once per period, warn before.

One accounting pass (:meth:`BudgetKeeper.account`, called at the end of every sweep) does:

1. **Active sessions** of budgeted workgroups: GetSession (DISCOVER priority) for fresh statistics; the
   DPU-milliseconds since the last counted observation are spread over the budgets' buckets
   (:func:`supervisor.budgets.allocate`) and the burn rate is taken from the same difference.
2. **Sessions that vanished** from the active listings since they were last counted (ended between two
   looks, or while the daemon was down): GetSession once for their final statistics.
3. **Sessions that started and ended unseen**: ListSessions with StateFilter TERMINATED and FAILED per
   budgeted workgroup, newest first, paging stops at sessions started before the last checkpoint; those
   not yet counted as ended get one GetSession.
4. **Budgets**: spend in the current period, burn rate, forecast (gauges); episodes whose period is over
   (calendar) or whose spend fell back below the threshold (rolling) are closed and the workgroups they
   disabled re-enabled; newly crossed thresholds fire in ascending order, once per episode; open
   ``stop_calculations`` / ``terminate_sessions`` episodes act on every live target of the budget's
   workgroups (so new work started after the crossing is stopped too); ``notify_before`` warnings.

API cost per pass: one GetSession per active session of a budgeted workgroup, two ListSessions per
budgeted workgroup (one page each in the steady state), one GetSession per session that ended.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import anyio
import structlog

from supervisor.budgets import (
    BudgetStatus,
    accounting_horizon,
    allocate,
    bucket_of,
    bucket_width,
    budget_status,
    crossed_thresholds,
    period_bounds,
    threshold_amount,
)
from supervisor.clock import Clock
from supervisor.config import BudgetConfig, Settings
from supervisor.discovery import PAGE_SIZE, get_session
from supervisor.enforcement import Enforcer
from supervisor.events import EventName, EventSink
from supervisor.gateway import AwsCallError, Gateway, Priority
from supervisor.inventory import Inventory
from supervisor.journal import Journal
from supervisor.ledger import Allocation, Counted, Episode, Ledger
from supervisor.metrics import Metrics
from supervisor.model import (
    ENDED_SESSION_STATES,
    MILLIS_PER_HOUR,
    ActionName,
    SessionSnapshot,
    TargetRef,
    Verdict,
)

T = TypeVar("T")

# ListSessions of ended sessions looks this far before the checkpoint (clock skew between AWS and us).
CHECKPOINT_MARGIN = timedelta(minutes=1)
CONCURRENT_READS = 16
TARGET_ACTIONS: dict[str, ActionName] = {"stop_calculations": "stop", "terminate_sessions": "terminate"}


class BudgetKeeper:
    """Owns budget accounting and threshold actions; driven by the supervisor's sweeps."""

    def __init__(
        self,
        *,
        settings: Settings,
        gateway: Gateway,
        journal: Journal,
        metrics: Metrics,
        clock: Clock,
        enforcer: Enforcer,
        inventory: Inventory,
        events: EventSink,
        handled: Callable[[], set[str]],
        logger: Any = None,
    ) -> None:
        self.settings = settings
        self.gateway = gateway
        self.journal = journal
        self.ledger = Ledger(journal)
        self.metrics = metrics
        self.clock = clock
        self.enforcer = enforcer
        self.inventory = inventory
        self.events = events
        self._handled = handled
        self.log = logger or structlog.get_logger("supervisor.budgets")
        self.price = settings.pricing.price_for(settings.aws.region)
        self.status: dict[str, BudgetStatus] = {}
        self.passes = 0
        # session id -> (workgroup, DPUs accruing now) from the last pass
        self._rates: dict[str, tuple[str, float]] = {}
        self._watched: list[str] = []
        self._reads = anyio.CapacityLimiter(CONCURRENT_READS)
        for budget in settings.budgets:
            metrics.budget_limit.labels(budget.name).set(budget.limit_usd)

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # The default thread limiter: the Journal serialises with its own lock, and the tests' virtual-time
        # driver sees outstanding work there (borrowed_tokens), not in a private limiter.
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    def _budgeted(self, workgroup: str) -> bool:
        return bool(self.settings.budgets_for(workgroup))

    # -- accounting -------------------------------------------------------------------------------------

    async def account(self, watched: Sequence[str]) -> None:
        """One accounting pass over the watched workgroups, then the budgets' evaluation."""
        started = self.clock.now()
        self._watched = list(watched)
        budgeted = [workgroup for workgroup in watched if self._budgeted(workgroup)]
        checkpoint = await self._db(self.ledger.checkpoint)
        if checkpoint is None:  # first run: count what ended in the current periods
            checkpoint = min(accounting_horizon(budget, started) for budget in self.settings.budgets)
        active = {
            s.session_id: s for s in self.inventory.sessions.values() if s.is_active and s.workgroup in budgeted
        }
        open_rows = await self._db(self.ledger.open_sessions)
        final: dict[str, str] = {sid: row.workgroup for sid, row in open_rows.items() if sid not in active}
        try:
            ended = await self._list_ended(budgeted, checkpoint - CHECKPOINT_MARGIN)
        except AwsCallError as error:  # the checkpoint stays: the next pass lists from it again
            self.log.error("budget.listing_failed", operation=error.operation, error=error.code,
                           message=error.message)
            ended = []
            started = checkpoint
        known = await self._db(self.ledger.counted, [s.session_id for s in ended])
        for session in ended:
            row = known.get(session.session_id)
            if (row is None or not row.ended) and session.session_id not in active:
                final[session.session_id] = session.workgroup
        rates: dict[str, tuple[str, float]] = {}
        async with anyio.create_task_group() as task_group:
            for session in active.values():
                task_group.start_soon(self._observe, session.session_id, session.workgroup, rates)
            for session_id, workgroup in final.items():
                task_group.start_soon(self._observe, session_id, workgroup, rates)
        self._rates = rates
        await self._db(self.ledger.set_checkpoint, started)
        self.passes += 1
        await self.evaluate(self.clock.now())

    async def _list_ended(self, workgroups: Sequence[str], since: datetime) -> list[SessionSnapshot]:
        found: list[SessionSnapshot] = []

        async def list_one(workgroup: str, state: str) -> None:
            async with self._reads:
                async for page in self.gateway.paginate(
                    "ListSessions", {"WorkGroup": workgroup, "StateFilter": state, "MaxResults": PAGE_SIZE},
                    result_key="Sessions", priority=Priority.DISCOVER,
                ):
                    now = self.clock.now()
                    sessions = [SessionSnapshot.from_api(workgroup, item, now) for item in page]
                    found.extend(s for s in sessions if s.ended_at is None or s.ended_at >= since)
                    if all(s.started_at is not None and s.started_at < since for s in sessions):
                        break

        async with anyio.create_task_group() as task_group:
            for workgroup in workgroups:
                for state in ("TERMINATED", "FAILED"):
                    task_group.start_soon(list_one, workgroup, state)
        return found

    async def _observe(self, session_id: str, workgroup: str, rates: dict[str, tuple[str, float]]) -> None:
        """GetSession and count what it adds."""
        try:
            async with self._reads:
                session = await get_session(self.gateway, session_id, workgroup, self.clock,
                                            priority=Priority.DISCOVER, statistics=True)
        except AwsCallError as error:
            if error.is_not_found:
                await self._db(self.ledger.mark_ended, session_id, workgroup, self.clock.now())
            else:
                self.log.warning("budget.observe_failed", session_id=session_id, error=error.code,
                                 message=error.message)
            return
        ended = session.state in ENDED_SESSION_STATES
        if session.dpu_millis is None:
            if ended:
                await self._db(self.ledger.mark_ended, session_id, workgroup, session.observed_at)
            return
        now = self.clock.now()
        delta, previous = await self._db(
            self.ledger.count, session_id, workgroup, session.dpu_millis, session.observed_at,
            functools.partial(self._allocation, session, ended, now), ended=ended,
        )
        if delta:
            self.metrics.estimated_cost.labels(workgroup).inc(delta / MILLIS_PER_HOUR * self.price)
        if not ended:
            rates[session_id] = (workgroup, _dpus(session, delta, previous))

    def _allocation(self, session: SessionSnapshot, ended: bool, now: datetime, delta: int,
                    previous: Counted | None) -> Allocation:
        """Which buckets of which budgets receive ``delta`` DPU-milliseconds of ``session``."""
        start = previous.observed_at if previous else (session.started_at or session.observed_at)
        end = session.ended_at if ended and session.ended_at else session.observed_at
        usd = delta / MILLIS_PER_HOUR * self.price
        shares: Allocation = []
        for budget in self.settings.budgets_for(session.workgroup):
            bucket = functools.partial(bucket_of, budget)
            horizon = accounting_horizon(budget, now) - _slack(budget)
            shares.extend((budget.name, first, part) for first, part in allocate(usd, start, end, bucket, horizon))
        return shares

    # -- evaluation -------------------------------------------------------------------------------------

    async def evaluate(self, now: datetime) -> None:
        for budget in self.settings.budgets:
            start, end = period_bounds(budget, now)
            until = end if budget.rolling_window is None else now + _slack(budget)
            spent = await self._db(self.ledger.spent, budget.name, start, until)
            dpus = sum(rate for workgroup, rate in self._rates.values() if budget.matches(workgroup))
            status = budget_status(budget, spent, dpus * self.price / 3600, now)
            self.status[budget.name] = status
            self.metrics.budget_spent.labels(budget.name).set(spent)
            self.metrics.budget_forecast.labels(budget.name).set(status.forecast_usd)
            await self._close_episodes(budget, status, now)
            await self._fire(budget, status, now)
            await self._act_on_open_episodes(budget, status, now)
            await self._warn(budget, status, now)
            if budget.rolling_window is not None:
                await self._db(self.ledger.prune, budget.name, start - _slack(budget))
        await self._enable_released(now)

    async def _close_episodes(self, budget: BudgetConfig, status: BudgetStatus, now: datetime) -> None:
        amounts = {t.at_percent: threshold_amount(budget, t) for t in budget.thresholds}
        for episode in await self._db(self.ledger.open_episodes, budget.name):
            amount = amounts.get(episode.at_percent)
            if status.rolling:
                over = amount is None or status.spent_usd < amount
            else:
                over = amount is None or episode.period_key != status.period_key
            if not over:
                continue
            await self._db(self.ledger.close_episode, episode.episode_id, now)
            detail = {"budget": budget.name, "at_percent": episode.at_percent, "action": episode.action,
                      "opened_at": episode.opened_at.isoformat(), "spent_usd": round(status.spent_usd, 6)}
            await self._record("budget.reset", budget.name, f"threshold:{episode.at_percent:g}", detail, now)
            self.log.info("budget.reset", **detail)

    async def _fire(self, budget: BudgetConfig, status: BudgetStatus, now: datetime) -> None:
        for threshold in crossed_thresholds(status.spent_usd, budget.limit_usd, budget.thresholds):
            episode = await self._db(self.ledger.open_episode, budget.name, threshold.at_percent, threshold.action,
                                     status.period_key, status.spent_usd, now)
            if episode is None:
                continue
            detail = {
                **self._budget_detail(budget, status), "at_percent": threshold.at_percent,
                "threshold_usd": round(threshold_amount(budget, threshold), 6), "action": threshold.action,
                "mode": self.settings.mode,
            }
            await self._record("budget_threshold", budget.name, f"threshold:{threshold.at_percent:g}", detail, now)
            self.log.warning("budget.threshold", **detail)
            self._emit("budget_threshold", detail)

    async def _act_on_open_episodes(self, budget: BudgetConfig, status: BudgetStatus, now: datetime) -> None:
        for episode in await self._db(self.ledger.open_episodes, budget.name):
            if episode.action == "disable_workgroup":
                await self._disable(budget, status, episode, now)
            elif episode.action in TARGET_ACTIONS:
                await self._enforce_targets(budget, status, episode, now)

    async def _enforce_targets(self, budget: BudgetConfig, status: BudgetStatus, episode: Episode,
                               now: datetime) -> None:
        action = TARGET_ACTIONS[episode.action]
        watched = {workgroup for workgroup in self._watched if budget.matches(workgroup)}
        targets: list[TargetRef] = []
        if action == "stop":
            for calculation in list(self.inventory.calculations.values()):
                session = self.inventory.sessions.get(calculation.session_id)
                if calculation.is_live and calculation.workgroup in watched and session and not session.is_exempt:
                    targets.append(TargetRef("calculation", calculation.calculation_id, calculation.session_id,
                                             calculation.workgroup))
        else:
            for session in list(self.inventory.sessions.values()):
                if session.is_active and session.workgroup in watched and not session.is_exempt:
                    targets.append(TargetRef("session", session.session_id, session.session_id, session.workgroup))
        handled = self._handled()
        amount = budget.limit_usd * episode.at_percent / 100
        for target in targets:
            if target.key in handled or self.enforcer.is_known(target.key):
                continue
            handled.add(target.key)
            await self.enforcer.enforce(Verdict(
                target=target, policy=budget.name, rule=f"budget:{budget.name}", observed=status.spent_usd,
                limit=amount, unit="usd", crossed_at=episode.opened_at, decided_at=now, action=action,
                mode=self.settings.mode,
            ))

    async def _disable(self, budget: BudgetConfig, status: BudgetStatus, episode: Episode, now: datetime) -> None:
        done = await self._db(self.ledger.disabled_in, episode.episode_id)
        for workgroup in sorted(self._watched):
            if not budget.matches(workgroup) or workgroup in done:
                continue
            snapshot = self.inventory.workgroups.get(workgroup)
            detail = {**self._budget_detail(budget, status), "workgroup": workgroup, "at_percent": episode.at_percent,
                      "mode": self.settings.mode}
            if snapshot is not None and not snapshot.enabled:
                continue  # disabled by someone else: not ours to re-enable
            if self.settings.mode == "dry-run":
                await self._db(self.ledger.record_disabled, workgroup, episode, now)
                await self._record("workgroup.disable", budget.name, "disable_workgroup", detail, now)
                self.metrics.actions.labels("disable_workgroup", budget.name, "dry_run").inc()
                self.log.warning("workgroup.disable_dry_run", **detail)
                continue
            # Recorded before the call: a crash after it still re-enables the workgroup at the reset.
            await self._db(self.ledger.record_disabled, workgroup, episode, now)
            await self._record("workgroup.disable_intent", budget.name, "disable_workgroup", detail, now)
            try:
                await self.gateway.call("UpdateWorkGroup", {"WorkGroup": workgroup, "State": "DISABLED"},
                                        priority=Priority.ENFORCE)
            except AwsCallError as error:
                await self._db(self.ledger.forget_disabled, workgroup, episode.episode_id)
                await self._record("workgroup.disable_error", budget.name, "disable_workgroup",
                                   {**detail, "error": error.code, "message": error.message}, self.clock.now())
                self.metrics.actions.labels("disable_workgroup", budget.name, "error").inc()
                self.log.error("workgroup.disable_failed", error=error.code, message=error.message, **detail)
                continue
            await self._record("workgroup.disabled", budget.name, "disable_workgroup", detail, self.clock.now())
            self.metrics.actions.labels("disable_workgroup", budget.name, "sent").inc()
            self.log.warning("workgroup.disabled", **detail)
            self._emit("workgroup_disabled", detail)

    async def _enable_released(self, now: datetime) -> None:
        for workgroup, holds in (await self._db(self.ledger.releasable)).items():
            budgets = sorted({budget for _, budget in holds})
            detail = {"workgroup": workgroup, "budgets": budgets, "budget": budgets[0], "mode": self.settings.mode}
            if self.settings.mode == "dry-run":
                await self._db(self.ledger.mark_enabled, workgroup, now)
                await self._record("workgroup.enable", budgets[0], "enable_workgroup", detail, now)
                self.metrics.actions.labels("enable_workgroup", budgets[0], "dry_run").inc()
                continue
            await self._record("workgroup.enable_intent", budgets[0], "enable_workgroup", detail, now)
            try:
                await self.gateway.call("UpdateWorkGroup", {"WorkGroup": workgroup, "State": "ENABLED"},
                                        priority=Priority.ENFORCE)
            except AwsCallError as error:  # retried at the next pass
                await self._record("workgroup.enable_error", budgets[0], "enable_workgroup",
                                   {**detail, "error": error.code}, self.clock.now())
                self.metrics.actions.labels("enable_workgroup", budgets[0], "error").inc()
                self.log.error("workgroup.enable_failed", error=error.code, message=error.message, **detail)
                continue
            await self._db(self.ledger.mark_enabled, workgroup, self.clock.now())
            await self._record("workgroup.enabled", budgets[0], "enable_workgroup", detail, self.clock.now())
            self.metrics.actions.labels("enable_workgroup", budgets[0], "sent").inc()
            self.log.info("workgroup.enabled", **detail)
            self._emit("workgroup_enabled", detail)

    async def _warn(self, budget: BudgetConfig, status: BudgetStatus, now: datetime) -> None:
        if budget.notify_before is None:
            return
        for threshold in status.thresholds:
            if threshold.crossed or threshold.predicted_at is None:
                continue
            if threshold.predicted_at - now > budget.notify_before:
                continue
            episode_key = status.period_key or str(
                await self._db(self.ledger.episode_count, budget.name, threshold.at_percent))
            notice = f"budget-warning:{budget.name}:{threshold.at_percent:g}:{episode_key}"
            if not await self._db(self.journal.mark_once, notice, now):
                continue
            rule = f"threshold:{threshold.at_percent:g}"
            detail = {
                **self._budget_detail(budget, status), "rule": rule, "at_percent": threshold.at_percent,
                "action": threshold.action, "threshold_usd": round(threshold.amount_usd, 6),
                "predicted_at": threshold.predicted_at.isoformat(),
                "notify_before_seconds": budget.notify_before.total_seconds(),
            }
            await self._record("warning", budget.name, rule, detail, now)
            self.metrics.warnings.labels(budget.name, rule).inc()
            self.log.warning("budget.warning", **detail)
            self._emit("warning", detail)

    # -- helpers ----------------------------------------------------------------------------------------

    @staticmethod
    def _budget_detail(budget: BudgetConfig, status: BudgetStatus) -> dict[str, Any]:
        return {
            "budget": budget.name, "workgroups": list(budget.workgroups), "period": budget.period,
            "period_start": status.period_start.isoformat(), "period_end": status.period_end.isoformat(),
            "spent_usd": round(status.spent_usd, 6), "limit_usd": budget.limit_usd,
            "forecast_usd": round(status.forecast_usd, 6),
        }

    async def _record(self, event: str, budget: str, rule: str, detail: Mapping[str, Any], time: datetime) -> None:
        await self._db(functools.partial(self.journal.record, event, policy=budget, rule=rule, detail=detail,
                                         time=time))

    def _emit(self, event: EventName, detail: Mapping[str, Any]) -> None:
        self.events.emit(event, dict(detail))


def _slack(budget: BudgetConfig) -> timedelta:
    """One bucket: a rolling window's edge buckets straddle the window boundary."""
    window = budget.rolling_window
    return bucket_width(window) if window is not None else timedelta(0)


def _dpus(session: SessionSnapshot, delta: int, previous: Counted | None) -> float:
    """DPUs accruing now: DPU-ms added per ms since the previous observation (else the average since start)."""
    if previous is not None:
        elapsed = (session.observed_at - previous.observed_at).total_seconds() * 1000
        return delta / elapsed if elapsed > 0 else 0.0
    if session.started_at is not None and session.dpu_millis:
        elapsed = (session.observed_at - session.started_at).total_seconds() * 1000
        return session.dpu_millis / elapsed if elapsed > 0 else 0.0
    return 0.0
