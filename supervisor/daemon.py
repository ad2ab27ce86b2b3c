"""The supervisor: discovery sweeps, deadline-driven checks, and hand-off to enforcement.

Two loops run side by side in one task group:

- **discovery** sweeps the watched workgroups: ListSessions (one listing per active state), then
  ListCalculationExecutions for each BUSY session. Each new or changed target is judged at once and gets a
  deadline: the exact instant of its next time-limit crossing, or the predicted instant of its next
  DPU/cost crossing. Sweeps repeat every ``discovery_interval`` (back to back when a sweep takes longer).
- **deadlines** sleeps until the earliest deadline, then looks at that target afresh (a Get at enforcement
  priority), judges it again with the fresh data and, if the verdict stands, hands it to the
  :class:`~supervisor.enforcement.Enforcer`. A target is never acted on from stale data.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.abc
import structlog

from supervisor.budgeting import BudgetKeeper
from supervisor.clock import Clock
from supervisor.config import Settings
from supervisor.discovery import (
    get_calculation,
    get_session,
    list_calculations,
    list_sessions,
    list_workgroups,
    workgroup_arn,
    workgroup_snapshot,
    workgroup_tags,
)
from supervisor.enforcement import Enforcer, describe
from supervisor.events import EventSink, NullSink
from supervisor.gateway import AwsCallError, Gateway, Priority
from supervisor.inventory import CheckKind, Deadlines, Inventory
from supervisor.journal import Journal
from supervisor.machine import Timing
from supervisor.metrics import Metrics
from supervisor.model import (
    ACTIVE_SESSION_STATES,
    CalculationSnapshot,
    Evaluation,
    SessionSnapshot,
    SessionState,
    Verdict,
    Warning,
)
from supervisor.policy import (
    CalculationRules,
    Policy,
    SessionRules,
    evaluate_calculation,
    evaluate_session,
    match_policy,
    workgroup_in_scope,
)
from supervisor.safety import SafetyRails

# Workgroups (and their exemption tags) are re-read every discovery_interval, but at most this often.
WORKGROUP_REFRESH_MIN = timedelta(minutes=1)
# A first DPU observation gives only an average rate: look again before trusting the prediction.
SECOND_LOOK_MIN = timedelta(seconds=1)
# Checks land just after a predicted crossing so the fresh observation is past the limit.
CROSSING_MARGIN = timedelta(milliseconds=10)
# Separate capacity per kind of check, so routine statistics fetches never hold up a crossing check.
CONCURRENT_CHECKS = {CheckKind.CROSSING: 64, CheckKind.STATISTICS: 16}
CONCURRENT_LISTINGS = 8
# Sessions are listed by state (ListSessions has one StateFilter). IDLE and BUSY, where sessions spend their
# lives and calculations run, are listed every sweep; the transient or rare states (CREATING, CREATED,
# DEGRADED) every RARE_STATES_EVERY sweeps, which saves three calls per workgroup on most sweeps. A session
# known in a rare state is kept between those listings; any action on it is confirmed by a fresh Get first.
EVERY_SWEEP_STATES = frozenset({SessionState.IDLE, SessionState.BUSY})
RARE_STATES_EVERY = 5


def compile_policies(settings: Settings) -> tuple[Policy, ...]:
    """The config's policies as pure-policy values, in evaluation (file) order."""
    compiled = []
    for config in settings.policies:
        calculation = config.calculation
        session = config.session
        compiled.append(Policy(
            name=config.name, workgroups=tuple(config.workgroups),
            calculation=CalculationRules(
                calculation.max_runtime, calculation.max_queued, calculation.max_dpu_hours, calculation.max_cost_usd
            ) if calculation else None,
            session=SessionRules(
                session.max_idle, session.max_age, session.max_dpu_hours, session.max_cost_usd
            ) if session else None,
            action=config.action, mode=settings.mode_for(config), notify_before=config.notify_before,
        ))
    return tuple(compiled)


def _needs_accrual(rules: CalculationRules | SessionRules | None) -> bool:
    return rules is not None and (rules.max_dpu_hours is not None or rules.max_cost_usd is not None)


def _rules_of(key: str, policy: Policy) -> CalculationRules | SessionRules | None:
    """The policy's rules for the kind of target ``key`` names."""
    return policy.calculation if key.startswith("calculation:") else policy.session


class Supervisor:
    def __init__(
        self,
        *,
        settings: Settings,
        gateway: Gateway,
        journal: Journal,
        metrics: Metrics,
        clock: Clock,
        events: EventSink | None = None,
        logger: Any = None,
    ) -> None:
        self.settings = settings
        self.gateway = gateway
        self.journal = journal
        self.metrics = metrics
        self.clock = clock
        self.events: EventSink = events or NullSink()
        self.log = logger or structlog.get_logger("supervisor")
        self.policies = compile_policies(settings)
        self.price = settings.pricing.price_for(settings.aws.region)
        self.inventory = Inventory()
        self.deadlines = Deadlines()
        self.rails = SafetyRails(
            max_actions_per_minute=settings.safety.max_actions_per_minute,
            breaker_fraction=settings.safety.circuit_breaker_fraction,
            breaker_min_targets=settings.safety.circuit_breaker_min_targets,
            active_sessions=lambda: sum(1 for s in self.inventory.sessions.values() if s.is_active),
        )
        self.enforcer = Enforcer(
            gateway=gateway, journal=journal, metrics=metrics, clock=clock, rails=self.rails, events=self.events,
            timing=Timing(
                stop_grace=settings.escalation.stop_grace, terminate_grace=settings.escalation.terminate_grace,
                retry_backoff_max=settings.escalation.retry_backoff_max,
            ),
            void_reason=self._void_reason,
        )
        self.handled: set[str] = set()
        self.budgets = BudgetKeeper(
            settings=settings, gateway=gateway, journal=journal, metrics=metrics, clock=clock,
            enforcer=self.enforcer, inventory=self.inventory, events=self.events, handled=lambda: self.handled,
        ) if settings.budgets else None
        self.account_id = settings.aws.account_id
        self.sweeps = 0
        self.last_discovery_at: datetime | None = None
        self.last_sweep_duration = timedelta(0)
        self.last_error: str | None = None
        self._workgroups_refreshed_at: datetime | None = None
        self._wakeup = anyio.Event()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._checks = {kind: anyio.CapacityLimiter(n) for kind, n in CONCURRENT_CHECKS.items()}
        self._listings = anyio.CapacityLimiter(CONCURRENT_LISTINGS)

    # -- running --------------------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled."""
        self.handled = await anyio.to_thread.run_sync(self.journal.known_targets)
        async with anyio.create_task_group() as task_group:
            self._task_group = task_group
            await task_group.start(self.enforcer.run)
            task_group.start_soon(self._deadline_loop, name="deadlines")
            task_status.started()
            await self._discovery_loop()

    async def _discovery_loop(self) -> None:
        interval = self.settings.discovery_interval
        while True:
            started = self.clock.now()
            try:
                await self.sweep()
            except AwsCallError as error:
                self.last_error = str(error)
                self.log.error("discovery.failed", operation=error.operation, error=error.code, message=error.message)
            await self.clock.sleep_until(started + interval)

    def readiness(self) -> tuple[bool, str]:
        """Ready when AWS answered the last sweep and that sweep is recent."""
        if self.last_discovery_at is None:
            return False, self.last_error or "no discovery sweep has completed yet"
        stale_after = max(self.settings.discovery_interval * 3, self.last_sweep_duration * 2, timedelta(seconds=30))
        age = self.clock.now() - self.last_discovery_at
        if age > stale_after:
            return False, f"last discovery sweep finished {age.total_seconds():.0f}s ago; {self.last_error or ''}"
        return True, "ok"

    def _void_reason(self, verdict: Verdict) -> str | None:
        """Why a journaled escalation that never sent anything must not go on under the current config."""
        if verdict.rule.startswith("budget"):
            if not any(budget.name == verdict.policy for budget in self.settings.budgets):
                return f"budget {verdict.policy!r} is no longer configured"
            return "dry-run mode is on" if self.settings.mode == "dry-run" else None
        policy = next((p for p in self.policies if p.name == verdict.policy), None)
        if policy is None:
            return f"policy {verdict.policy!r} is no longer configured"
        if policy.mode == "dry-run":
            return f"policy {verdict.policy!r} is now in dry-run mode"
        return None

    # -- discovery ------------------------------------------------------------------------------------

    async def sweep(self) -> None:
        """One look at every watched workgroup, session and live calculation."""
        started = self.clock.now()
        refresh_every = max(self.settings.discovery_interval, WORKGROUP_REFRESH_MIN)
        if self._workgroups_refreshed_at is None or started - self._workgroups_refreshed_at >= refresh_every:
            await self._refresh_workgroups()
        safety = self.settings.safety
        watched = [
            wg.name for wg in self.inventory.workgroups.values()
            if workgroup_in_scope(wg, self.settings.workgroups, safety.exempt_tag) is None
        ]
        listed: dict[str, list[SessionSnapshot]] = {}
        states = ACTIVE_SESSION_STATES if self.sweeps % RARE_STATES_EVERY == 0 else EVERY_SWEEP_STATES

        async def list_one(workgroup: str) -> None:
            async with self._listings:
                listed[workgroup] = await list_sessions(self.gateway, workgroup, self.clock, sorted(states))

        async with anyio.create_task_group() as task_group:
            for workgroup in watched:
                task_group.start_soon(list_one, workgroup)
        busy = self._reconcile_sessions(listed, states)

        pending = iter(busy)

        async def list_calculations_worker() -> None:
            # A few workers share one iterator rather than a task per BUSY session: 10,000 waiting tasks
            # cost ~25 MiB and their scheduling shows in the profile.
            for session in pending:
                try:
                    live = await list_calculations(self.gateway, session, self.clock)
                except AwsCallError as error:
                    if not error.is_not_found:
                        raise
                    live = []
                if session.session_id in self.inventory.sessions:  # not forgotten while we listed
                    self._reconcile_calculations(session, live)

        async with anyio.create_task_group() as task_group:
            for _ in range(min(CONCURRENT_LISTINGS, len(busy))):
                task_group.start_soon(list_calculations_worker)
        self._update_gauges(watched)
        finished = self.clock.now()
        self.sweeps += 1
        self.last_discovery_at = finished
        self.last_sweep_duration = finished - started
        self.last_error = None
        self.metrics.last_discovery.set(finished.timestamp())
        self.log.debug("discovery.sweep", workgroups=len(watched), sessions=len(self.inventory.sessions),
                       calculations=len(self.inventory.calculations), seconds=self.last_sweep_duration.total_seconds())
        if self.budgets is not None:
            await self.budgets.account(watched)

    async def _refresh_workgroups(self) -> None:
        summaries = await list_workgroups(self.gateway)
        if self.account_id is None:
            identity = await self.gateway.call("GetCallerIdentity", {}, priority=Priority.DISCOVER, service="sts")
            self.account_id = str(identity["Account"])
        fresh = {}
        for summary in summaries:
            name = str(summary["Name"])
            snapshot = workgroup_snapshot(summary, {})
            if workgroup_in_scope(snapshot, self.settings.workgroups, self.settings.safety.exempt_tag) is None:
                tags = await workgroup_tags(self.gateway, workgroup_arn(self.gateway.region, self.account_id, name))
                snapshot = workgroup_snapshot(summary, tags)
            fresh[name] = snapshot
        self.inventory.workgroups = fresh
        self._workgroups_refreshed_at = self.clock.now()
        self.log.info("discovery.workgroups", watched=sorted(
            name for name, wg in fresh.items()
            if workgroup_in_scope(wg, self.settings.workgroups, self.settings.safety.exempt_tag) is None
        ), skipped={
            name: reason for name, wg in fresh.items()
            if (reason := workgroup_in_scope(wg, self.settings.workgroups, self.settings.safety.exempt_tag))
        })

    def _reconcile_sessions(
        self, listed: dict[str, list[SessionSnapshot]], states: Collection[SessionState]
    ) -> list[SessionSnapshot]:
        """Store the listed sessions, forget the ones that ended (known in a listed ``states`` but no longer
        listed, or in a workgroup no longer watched); return the sessions to list calculations of."""
        seen = {session.session_id for sessions in listed.values() for session in sessions}
        for session_id in [
            sid for sid, s in self.inventory.sessions.items()
            if sid not in seen and (s.workgroup not in listed or s.state in states)
        ]:
            self._forget_session(session_id)
        busy: list[SessionSnapshot] = []
        for sessions in listed.values():
            for session in sessions:
                self.inventory.put_session(session)
                if session.state is None:
                    self._report_unknown_state("session", session.raw_state, session_id=session.session_id,
                                               workgroup=session.workgroup)
                    continue
                if session.is_exempt:
                    continue
                self._consider(f"session:{session.session_id}", fresh=False)
                if session.state in (SessionState.BUSY, SessionState.DEGRADED) and self._judges_calculations(session):
                    busy.append(session)
                else:
                    for calculation_id in list(self.inventory.calculations_by_session.get(session.session_id, ())):
                        self._forget_calculation(calculation_id)
        return busy

    def _judges_calculations(self, session: SessionSnapshot) -> bool:
        """Only sessions whose policy has calculation limits, or whose budget may stop calculations, need their
        calculations listed."""
        policy = match_policy(self.policies, session.workgroup)
        if policy is not None and policy.calculation is not None:
            return True
        return any(
            threshold.action == "stop_calculations"
            for budget in self.settings.budgets_for(session.workgroup) for threshold in budget.thresholds
        )

    def _reconcile_calculations(self, session: SessionSnapshot, live: Iterable[CalculationSnapshot]) -> None:
        live = list(live)
        live_ids = {calculation.calculation_id for calculation in live}
        for calculation_id in list(self.inventory.calculations_by_session.get(session.session_id, ())):
            if calculation_id not in live_ids:
                self._forget_calculation(calculation_id)
        for calculation in live:
            self.inventory.put_calculation(calculation)
            if calculation.state is None:
                self._report_unknown_state("calculation", calculation.raw_state,
                                           calculation_id=calculation.calculation_id, session_id=session.session_id)
                continue
            self._consider(f"calculation:{calculation.calculation_id}", fresh=False)

    def _report_unknown_state(self, kind: str, raw_state: str, **ids: str) -> None:
        """A state this version does not know is counted and logged, and the target is never acted on."""
        self.metrics.unknown_states.labels(kind).inc()
        self.log.warning(f"{kind}.unknown_state", state=raw_state, **ids)

    def _forget_session(self, session_id: str) -> None:
        self.deadlines.cancel(f"session:{session_id}")
        for calculation_id in self.inventory.drop_session(session_id):
            self.deadlines.cancel(f"calculation:{calculation_id}")

    def _forget_calculation(self, calculation_id: str) -> None:
        self.deadlines.cancel(f"calculation:{calculation_id}")
        self.inventory.drop_calculation(calculation_id)

    def _update_gauges(self, watched: list[str]) -> None:
        sessions, calculations = self.inventory.counts_by_workgroup()
        for workgroup in watched:
            self.metrics.active_sessions.labels(workgroup).set(sessions.get(workgroup, 0))
            self.metrics.active_calculations.labels(workgroup).set(calculations.get(workgroup, 0))

    # -- judging --------------------------------------------------------------------------------------

    def _evaluate(self, key: str, now: datetime) -> tuple[Policy, Evaluation] | None:
        """Judge a known target with its latest statistics: the policy applied and its evaluation; None when
        nothing may judge it."""
        kind, target_id = key.split(":", 1)
        target: CalculationSnapshot | SessionSnapshot | None
        if kind == "calculation":
            target = self.inventory.calculations.get(target_id)
            session = self.inventory.sessions.get(target.session_id) if target else None
        else:
            target = session = self.inventory.sessions.get(target_id)
        if target is None or session is None or session.is_exempt:
            return None
        policy = match_policy(self.policies, target.workgroup)
        if policy is None:
            return None
        statistics = self.inventory.statistics.get(key, ())
        if statistics:
            target = replace(target, dpu_millis=statistics[-1][0], observed_at=statistics[-1][1])
        previous = statistics[-2] if len(statistics) == 2 else None
        if isinstance(target, CalculationSnapshot):
            evaluation = evaluate_calculation(
                target, policy, now, dpu_hour_usd=self.price, previous_statistics=previous
            )
        else:
            evaluation = evaluate_session(target, policy, now, dpu_hour_usd=self.price, previous_statistics=previous)
        return policy, evaluation

    def _consider(self, key: str, *, fresh: bool) -> None:
        """Judge a target from what is known; act if ``fresh`` (just fetched), else schedule a fresh look."""
        if key in self.handled or self.enforcer.is_known(key):
            self.deadlines.cancel(key)
            return
        now = self.clock.now()
        judged = self._evaluate(key, now)
        if judged is None:
            self.deadlines.cancel(key)
            return
        policy, evaluation = judged
        for warning in evaluation.warnings:
            self._spawn(self._warn, warning)
        if evaluation.verdict is not None:
            if fresh:
                self.handled.add(key)
                self.deadlines.cancel(key)
                self._spawn(self._enforce, evaluation)
            else:
                self._schedule(key, now, CheckKind.CROSSING)
            return
        if evaluation.needs_statistics:
            self._schedule(key, now, CheckKind.STATISTICS)
            return
        if evaluation.next_check_at is None:
            self.deadlines.cancel(key)
            return
        when = evaluation.next_check_at + CROSSING_MARGIN
        kind = CheckKind.CROSSING
        if _needs_accrual(_rules_of(key, policy)) and len(self.inventory.statistics.get(key, ())) < 2:
            second_look = now + max(SECOND_LOOK_MIN, (when - now) / 2)
            if second_look < when:
                when, kind = second_look, CheckKind.STATISTICS
        self._schedule(key, when, kind)

    def _accrual_applies(self, key: str) -> bool:
        kind, target_id = key.split(":", 1)
        snapshot = (self.inventory.calculations if kind == "calculation" else self.inventory.sessions).get(target_id)
        policy = match_policy(self.policies, snapshot.workgroup) if snapshot else None
        return policy is not None and _needs_accrual(_rules_of(key, policy))

    def _schedule(self, key: str, when: datetime, kind: CheckKind) -> None:
        if self.deadlines.schedule(key, when, kind):
            self._wakeup.set()

    def _spawn(self, fn: Any, *args: Any) -> None:
        if self._task_group is not None:
            self._task_group.start_soon(fn, *args)

    async def _enforce(self, evaluation: Evaluation) -> None:
        assert evaluation.verdict is not None
        await self.enforcer.enforce(evaluation.verdict)

    async def _warn(self, warning: Warning) -> None:
        notice = f"warning:{warning.target.key}:{warning.rule}"
        first = await anyio.to_thread.run_sync(self.journal.mark_once, notice, self.clock.now())
        if not first:
            return
        detail = {
            "target_kind": warning.target.kind, "target_id": warning.target.target_id,
            "session_id": warning.target.session_id, "workgroup": warning.target.workgroup,
            "policy": warning.policy, "rule": warning.rule, "observed": round(warning.observed, 6),
            "limit": warning.limit, "unit": warning.unit, "predicted_at": warning.predicted_at.isoformat(),
        }
        await anyio.to_thread.run_sync(lambda: self.journal.record(
            "warning", target=warning.target, policy=warning.policy, rule=warning.rule, detail=detail,
            time=self.clock.now(),
        ))
        self.metrics.warnings.labels(warning.policy, warning.rule).inc()
        self.log.warning("target.warning", **detail)
        self.events.emit("warning", detail)

    # -- deadlines ------------------------------------------------------------------------------------

    async def _deadline_loop(self) -> None:
        while True:
            self._wakeup = anyio.Event()
            next_at = self.deadlines.next_at()
            if next_at is None:
                await self._wakeup.wait()
                continue
            if await self.clock.sleep_until(next_at, self._wakeup):
                continue
            for key, kind in self.deadlines.pop_due(self.clock.now()):
                self._spawn(self._check, key, kind)

    async def _check(self, key: str, kind: CheckKind) -> None:
        """Look at one target afresh and judge it again."""
        async with self._checks[kind]:
            if key in self.handled or self.enforcer.is_known(key):
                return
            priority = Priority.ENFORCE if kind is CheckKind.CROSSING else Priority.DISCOVER
            target_kind, target_id = key.split(":", 1)
            try:
                if target_kind == "calculation":
                    calculation = self.inventory.calculations.get(target_id)
                    if calculation is None:
                        return
                    fresh_calculation = await get_calculation(
                        self.gateway, target_id, calculation.session_id, calculation.workgroup, self.clock,
                        priority=priority,
                    )
                    if target_id not in self.inventory.calculations:
                        return  # forgotten meanwhile (its session ended)
                    self.inventory.put_calculation(fresh_calculation)
                else:
                    session = self.inventory.sessions.get(target_id)
                    if session is None:
                        return
                    fresh_session = await get_session(
                        self.gateway, target_id, session.workgroup, self.clock, priority=priority,
                        statistics=self._accrual_applies(key),
                    )
                    if target_id not in self.inventory.sessions:
                        return
                    self.inventory.put_session(fresh_session)
            except AwsCallError as error:
                if error.is_not_found:
                    if target_kind == "calculation":
                        self._forget_calculation(target_id)
                    else:
                        self._forget_session(target_id)
                    return
                self.log.warning("check.failed", key=key, error=error.code, message=error.message)
                self._schedule(key, self.clock.now() + timedelta(seconds=1), kind)
                return
            self._consider(key, fresh=True)


def explain_verdict(evaluation: Evaluation) -> dict[str, Any]:
    """A JSON-ready view of an evaluation (for logs and ``explain``)."""
    return {
        "verdict": describe(evaluation.verdict) if evaluation.verdict else None,
        "next_check_at": evaluation.next_check_at.isoformat() if evaluation.next_check_at else None,
        "needs_statistics": evaluation.needs_statistics,
    }
