"""Checks: judge targets, keep their deadlines, and at each deadline look afresh and judge again.

Discovery hands every listed target to :meth:`Checks.consider` (``fresh=False``): it is judged from what is
known and given a deadline (:mod:`supervisor.core.scheduling`). The deadline loop sleeps until the earliest
one, looks at that target afresh (a Get at enforcement priority for a crossing, at discovery priority for
routine statistics), judges it with the fresh data and, if the verdict stands, hands it to enforcement. A
target is never acted on from stale data.

Nothing is judged silently: a target whose answer lacks a field a limit needs is logged and counted once
(its other limits still apply); one in a state this version does not know is counted once and never acted
on, and looked at again only after a pause.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.abc
import structlog

from supervisor import athena
from supervisor.clock import Clock
from supervisor.core.accrual import accrual_rate
from supervisor.core.fleet import WatchEntry, next_slot
from supervisor.core.inventory import Inventory
from supervisor.core.model import (
    CalculationSnapshot,
    Evaluation,
    SessionSnapshot,
    TargetKey,
    TargetKind,
    TargetRef,
    Verdict,
)
from supervisor.core.policy import (
    Policy,
    assess_calculation,
    assess_session,
    evaluate_calculation,
    evaluate_session,
    match_policy,
    needs_accrual,
    rules_for,
)
from supervisor.core.scheduling import CheckKind, Deadlines, next_look
from supervisor.gateway import AwsCallError, Gateway, Priority
from supervisor.metrics import Metrics
from supervisor.storage import Storage

from .enforcement import Enforcement
from .warnings import Notice, Warnings

# Separate capacity per kind of check, so routine statistics fetches never hold up a crossing check.
CONCURRENT_CHECKS = {CheckKind.CROSSING: 64, CheckKind.STATISTICS: 16}
# A failed fresh look is retried after a second, doubling while it keeps failing, up to a minute.
FAILED_CHECK_RETRY = timedelta(seconds=1)
FAILED_CHECK_RETRY_MAX = timedelta(minutes=1)
# A target whose fresh look showed a state this version does not know is looked at again this late.
UNKNOWN_STATE_RECHECK = timedelta(minutes=1)
# The watch list (every scheduled look) is saved this often (only what changed is written): a restarted daemon,
# or the next owner of the shard, resumes from it instead of waiting for a full sweep. Each shard saves in its own
# slot of the interval (``watch_slot``), so the shards of a replica do not all write at the same moments.
WATCH_SAVE_INTERVAL = timedelta(seconds=30)
# A new owner of the shard (or a restarted daemon) reads the saved targets due within this first (one small read,
# side by side with enforcement's), and the rest half way to it: none of them is due sooner, and the moment it
# takes the shard over (its overdue looks, claims and intents) is not the moment to read a long list.
RESUME_FIRST = timedelta(minutes=1)


class Checks:
    def __init__(
        self,
        *,
        gateway: Gateway,
        clock: Clock,
        inventory: Inventory,
        enforcement: Enforcement,
        warnings: Warnings,
        policies: Sequence[Policy],
        dpu_hour_usd: float,
        metrics: Metrics,
        storage: Storage | None = None,
        watch_slot: str = "",
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.gateway = gateway
        self.clock = clock
        self.storage = storage
        self.inventory = inventory
        self.enforcement = enforcement
        self.warnings = warnings
        self.policies = tuple(policies)
        self.price = dpu_hour_usd
        self.metrics = metrics
        self._log = logger or structlog.get_logger("supervisor.checks")
        self.deadlines = Deadlines()
        self._wakeup = anyio.Event()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._limiters = {kind: anyio.CapacityLimiter(n) for kind, n in CONCURRENT_CHECKS.items()}
        self._unjudgeable: dict[TargetKey, set[str]] = {}
        self._unknown_reported: set[TargetKey] = set()
        # Targets not to be looked at again before an instant: an unknown state, or failed looks backing off.
        self._not_before: dict[TargetKey, datetime] = {}
        self._failed_looks: dict[TargetKey, int] = {}  # consecutive failed fresh looks
        self._last_listed: dict[TargetKey, str] = {}  # the state each target was last listed in
        # Targets resumed from the saved watch list and not yet seen again: what a first look needs.
        self._resumed: dict[TargetKey, TargetRef] = {}
        self._watch_slot = watch_slot  # whose slot of WATCH_SAVE_INTERVAL the periodic saves use (the shard's)
        self.resumed_targets = 0  # how many targets the saved watch list scheduled so far
        self._due_soon: tuple[datetime, list[WatchEntry] | None] | None = None  # read ahead: (horizon, entries)
        # The horizon of the saved targets not read yet (None: the saved list is read whole, or given up on): no
        # save may happen before they are read, or it would delete them from the list.
        self._unread_from: datetime | None = None
        self._reading_rest = anyio.Lock()

    def apply(self, policies: Sequence[Policy], dpu_hour_usd: float) -> None:
        """Take reloaded policies and price, and judge every known target again at once (a limit tightened under
        a running target has it looked at afresh now, and acted on if the fresh look confirms it)."""
        self.policies = tuple(policies)
        self.price = dpu_hour_usd
        self.rejudge()

    def rejudge(self) -> None:
        """Judge every known session and calculation again (those claimed or exempt are skipped, as always)."""
        keys = [TargetKey.session(session_id) for session_id in list(self.inventory.sessions)]
        keys += [TargetKey.calculation(calculation_id) for calculation_id in list(self.inventory.calculations)]
        for key in keys:
            try:
                self.consider(key, fresh=False)
            except Exception as error:  # one target's odd data never stops the others being judged
                self._log.exception("check.rejudge_failed", target_kind=key.kind.value, target_id=key.target_id,
                                    error=repr(error))

    # -- judging ------------------------------------------------------------------------------------------

    def consider(self, key: TargetKey, *, fresh: bool) -> None:
        """Judge a known target; act if ``fresh`` (just fetched), else schedule a fresh look."""
        if self.enforcement.is_claimed(key):
            self.deadlines.cancel(key)
            return
        now = self.clock.now()
        judged = self._evaluate(key, now)
        if judged is None:
            self.deadlines.cancel(key)
            return
        policy, evaluation = judged
        self._report_missing(key, evaluation)
        for warning in evaluation.warnings:
            self.warnings.submit(Notice.of_limit(warning))
        if evaluation.verdict is not None and fresh:
            self.deadlines.cancel(key)
            self._spawn(self._claim, evaluation.verdict)
            return
        look = next_look(evaluation, now, accrual_limited=needs_accrual(rules_for(key.kind, policy)),
                         observations=len(self.inventory.statistics.get(key, ())))
        if look is None:
            self.deadlines.cancel(key)
            return
        when = max(look.when, self._not_before.get(key, look.when))
        if self.deadlines.schedule(key, when, look.kind):
            self._wakeup.set()

    def _judgeable(self, key: TargetKey) -> tuple[Policy, CalculationSnapshot | SessionSnapshot,
                                                  tuple[int, datetime] | None, str] | None:
        """The policy applied to a known target, the target with its latest statistics, the observation before
        and its session's engine; None when nothing may judge it."""
        target: CalculationSnapshot | SessionSnapshot | None
        if key.kind is TargetKind.CALCULATION:
            target = self.inventory.calculations.get(key.target_id)
            session = self.inventory.sessions.get(target.session_id) if target else None
        else:
            target = session = self.inventory.sessions.get(key.target_id)
        if target is None or session is None or session.is_exempt:
            return None
        engine = self.inventory.engine_of(session)
        policy = match_policy(self.policies, target.workgroup, engine)
        if policy is None:
            return None
        statistics = self.inventory.statistics.get(key, ())
        if statistics:
            target = replace(target, dpu_millis=statistics[-1][0], observed_at=statistics[-1][1])
        return policy, target, statistics[-2] if len(statistics) == 2 else None, engine

    def _evaluate(self, key: TargetKey, now: datetime) -> tuple[Policy, Evaluation] | None:
        """The policy applied to a known target and its evaluation with the latest statistics; None when
        nothing may judge it."""
        judgeable = self._judgeable(key)
        if judgeable is None:
            return None
        policy, target, previous, engine = judgeable
        if isinstance(target, CalculationSnapshot):
            evaluation = evaluate_calculation(target, policy, now, dpu_hour_usd=self.price,
                                              previous_statistics=previous, engine=engine)
        else:
            evaluation = evaluate_session(target, policy, now, dpu_hour_usd=self.price, previous_statistics=previous,
                                          engine=engine)
        return policy, evaluation

    def upcoming(self, limit: int = 10) -> list[tuple[TargetRef | None, datetime, str, str | None]]:
        """The earliest scheduled looks: (target, when, why: ``crossing`` or ``statistics``, the rule whose
        crossing is due then, when one is)."""
        now = self.clock.now()
        found = []
        for key, when, kind in self.deadlines.entries()[:limit]:
            found.append((self._ref_of(key), when, kind.value, self._rule_due(key, when, now)))
        return found

    def _rule_due(self, key: TargetKey, when: datetime, now: datetime) -> str | None:
        """The rule whose (predicted) crossing is nearest ``when``, by the same assessment as the verdicts."""
        judgeable = self._judgeable(key)
        if judgeable is None:
            return None
        policy, target, previous, _engine = judgeable
        if isinstance(target, CalculationSnapshot):
            assessment = assess_calculation(target, policy.calculation, now, dpu_hour_usd=self.price,
                                            previous_statistics=previous) if policy.calculation else None
        else:
            assessment = assess_session(target, policy.session, now, dpu_hour_usd=self.price,
                                        previous_statistics=previous) if policy.session else None
        crossings = [p for p in (assessment.positions if assessment else ()) if p.crossed_at is not None]
        if not crossings:
            return None
        return min(crossings, key=lambda p: abs((p.crossed_at or when) - when)).rule

    def _report_missing(self, key: TargetKey, evaluation: Evaluation) -> None:
        for missing in evaluation.missing:
            reported = self._unjudgeable.setdefault(key, set())
            if missing in reported:
                continue
            reported.add(missing)
            self.metrics.unjudgeable_targets.labels(key.kind.value, missing).inc()
            self._log.warning("target.unjudgeable", target_kind=key.kind.value, target_id=key.target_id,
                              missing=missing)

    def accrual_applies(self, key: TargetKey) -> bool:
        snapshot: CalculationSnapshot | SessionSnapshot | None = (
            self.inventory.calculations.get(key.target_id) if key.kind is TargetKind.CALCULATION
            else self.inventory.sessions.get(key.target_id))
        session_id = snapshot.session_id if snapshot is not None else ""
        session = self.inventory.sessions.get(session_id)
        engine = self.inventory.engine_of(session) if session is not None else ""
        policy = match_policy(self.policies, snapshot.workgroup, engine) if snapshot else None
        return policy is not None and needs_accrual(rules_for(key.kind, policy))

    def listed(self, key: TargetKey, raw_state: str) -> None:
        """Discovery listed ``key`` in ``raw_state``. A listing in another state than the last one means the
        target moved on: a pause (unknown state, failed looks) no longer holds, it is judged afresh."""
        previous = self._last_listed.get(key)
        self._last_listed[key] = raw_state
        if previous is not None and previous != raw_state:
            self._not_before.pop(key, None)
            self._failed_looks.pop(key, None)

    def look_soon(self, key: TargetKey) -> bool:
        """Look at a known target now, routinely (an event says it is changing); False when it is claimed (its
        escalation looks at it) or paused (an unknown state, failed looks)."""
        if self.enforcement.is_claimed(key) or key in self._not_before:
            return False
        if self.deadlines.schedule(key, self.clock.now(), CheckKind.STATISTICS):
            self._wakeup.set()
        return True

    def unknown_state(self, key: TargetKey) -> None:
        """A fresh look showed a state this version does not know: never act, look again only after a pause."""
        self._not_before[key] = self.clock.now() + UNKNOWN_STATE_RECHECK
        self.deadlines.cancel(key)

    def forget(self, key: TargetKey) -> None:
        self.deadlines.cancel(key)
        self._resumed.pop(key, None)
        self._not_before.pop(key, None)
        self._unknown_reported.discard(key)
        self._unjudgeable.pop(key, None)
        self._failed_looks.pop(key, None)
        self._last_listed.pop(key, None)

    # -- the deadline loop ----------------------------------------------------------------------------------

    def _spawn(self, fn: Callable[[Verdict], Coroutine[Any, Any, None]], verdict: Verdict) -> None:
        if self._task_group is not None:
            self._task_group.start_soon(fn, verdict)

    def evidence(self, key: TargetKey) -> dict[str, Any]:
        """What the latest detailed observation of a target says: its DPU counter, when, and the DPUs accruing
        (journaled with a decision: ``report`` turns it into what the target spent after its crossing)."""
        statistics = self.inventory.statistics.get(key, ())
        if not statistics:
            return {}
        millis, observed_at = statistics[-1]
        snapshot: CalculationSnapshot | SessionSnapshot | None = (
            self.inventory.calculations.get(key.target_id) if key.kind is TargetKind.CALCULATION
            else self.inventory.sessions.get(key.target_id))
        since = None if snapshot is None else (
            snapshot.submitted_at if isinstance(snapshot, CalculationSnapshot) else snapshot.started_at)
        rate = accrual_rate(millis, observed_at, statistics[-2] if len(statistics) == 2 else None, since)
        return {"dpu_millis": millis, "dpu_observed_at": observed_at.isoformat(),
                "dpus": round(rate, 6) if rate is not None else None}

    async def _claim(self, verdict: Verdict) -> None:
        """Hand a verdict to enforcement; a failure (storage) is logged and the target looked at again."""
        try:
            await self.enforcement.claim(verdict, self.evidence(verdict.target.key))
        except Exception as error:  # one target's failure never stops the loop
            key = verdict.target.key
            self._log.exception("check.claim_failed", target_kind=key.kind.value, target_id=key.target_id,
                                error=repr(error))
            self._retry(key, CheckKind.CROSSING)

    # -- the watch list ---------------------------------------------------------------------------------------

    def watch_entries(self) -> list[WatchEntry]:
        """Every scheduled look, as saved for a restart or the next owner of the shard."""
        entries = []
        for key, when, _kind in self.deadlines.entries():
            ref = self._ref_of(key)
            if ref is not None:
                entries.append(WatchEntry(ref, when))
        return entries

    def _ref_of(self, key: TargetKey) -> TargetRef | None:
        if key in self._resumed:
            return self._resumed[key]
        if key.kind is TargetKind.CALCULATION:
            calculation = self.inventory.calculations.get(key.target_id)
            return TargetRef.of_calculation(calculation) if calculation else None
        session = self.inventory.sessions.get(key.target_id)
        return TargetRef.of_session(session) if session else None

    async def read_watch(self) -> None:
        """Read the saved targets due within :data:`RESUME_FIRST` (what a new owner needs first); ``run`` schedules
        them. May run before ``run``, side by side with enforcement loading the claims. Never raises."""
        if self.storage is None or self._due_soon is not None:
            return
        horizon = self.clock.now() + RESUME_FIRST
        try:
            self._due_soon = (horizon, await self.storage.watch(due_before=horizon))
        except Exception as error:  # no watch list: the first sweep finds everything, as before
            self._log.error("checks.resume_failed", error=repr(error))
            self._due_soon = (horizon, None)

    async def _resume_rest_later(self, horizon: datetime) -> None:
        await self.clock.sleep_until(horizon - RESUME_FIRST / 2)
        await self._resume_rest()

    async def _resume_rest(self) -> None:
        """Schedule the saved targets not read yet (due from the horizon on): half way to the horizon, or before
        the first save, whichever comes first."""
        async with self._reading_rest:
            if self._unread_from is None or self.storage is None:
                return
            try:
                entries = await self.storage.watch(due_from=self._unread_from)
            except Exception as error:  # given up: the first sweep finds them (a save may drop them meanwhile)
                self._log.error("checks.resume_failed", error=repr(error))
                return
            finally:
                self._unread_from = None
            if self._schedule_resumed(entries):
                self._wakeup.set()
        if self.resumed_targets:
            self._log.info("checks.resumed", targets=self.resumed_targets)

    def _schedule_resumed(self, entries: list[WatchEntry]) -> bool:
        """Schedule saved targets not claimed and not known meanwhile; True if one is now the earliest deadline.
        Each is looked at afresh at its deadline, before the first sweep lists it again."""
        earliest = False
        for entry in entries:
            key = entry.target.key
            if self.enforcement.is_claimed(key) or key in self.deadlines:
                continue
            self._resumed[key] = entry.target
            self.resumed_targets += 1
            earliest = self.deadlines.schedule(key, entry.next_check_at, CheckKind.CROSSING) or earliest
        return earliest

    async def _save_watch_periodically(self) -> None:
        while True:
            await self.clock.sleep_until(next_slot(self.clock.now(), WATCH_SAVE_INTERVAL, self._watch_slot))
            await self.save_watch()

    async def save_watch(self) -> bool:
        """Save the watch list: the storage writes what changed since it last read or wrote it, nothing when
        nothing did, so this may be called as often as needed. False when it failed (logged; the next save
        retries): the event feed deletes messages only after a save that succeeded."""
        if self.storage is None:
            return True
        await self._resume_rest()  # a save must not drop saved targets this owner has not read yet
        try:
            await self.storage.save_watch(self.watch_entries())
        except Exception as error:
            self._log.warning("checks.watch_save_failed", error=repr(error))
            return False
        return True

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self.read_watch()
        horizon, due_soon = self._due_soon or (self.clock.now(), None)
        self._schedule_resumed(due_soon or [])
        async with anyio.create_task_group() as task_group:
            self._task_group = task_group
            if self.storage is not None:
                if due_soon is not None:
                    self._unread_from = horizon
                    task_group.start_soon(self._resume_rest_later, horizon)
                task_group.start_soon(self._save_watch_periodically)
            task_status.started()
            while True:
                self._wakeup = anyio.Event()
                next_at = self.deadlines.next_at()
                if next_at is None:
                    await self._wakeup.wait()
                    continue
                if await self.clock.sleep_until(next_at, self._wakeup):
                    continue
                for key, kind in self.deadlines.pop_due(self.clock.now()):
                    task_group.start_soon(self._check, key, kind)

    async def _check(self, key: TargetKey, kind: CheckKind) -> None:
        """Look at one target afresh and judge it again. Any failure is logged and the look retried."""
        async with self._limiters[kind]:
            if self.enforcement.is_claimed(key):
                return
            priority = Priority.ENFORCE if kind is CheckKind.CROSSING else Priority.DISCOVER
            try:
                if not await self._look(key, priority):
                    return
            except AwsCallError as error:
                if error.is_not_found:
                    self.forget_target(key)
                    return
                self._log.warning("check.failed", target_kind=key.kind.value, target_id=key.target_id,
                                  operation=error.operation, error=error.code, message=error.message)
                self._retry(key, kind)
                return
            except Exception as error:
                self._log.exception("check.crashed", target_kind=key.kind.value, target_id=key.target_id,
                                    error=repr(error))
                self._retry(key, kind)
                return
            if self._failed_looks.pop(key, None):
                self._not_before.pop(key, None)
            self.consider(key, fresh=True)

    def _retry(self, key: TargetKey, kind: CheckKind) -> None:
        failures = self._failed_looks.get(key, 0)
        self._failed_looks[key] = failures + 1
        retry_at = self.clock.now() + min(FAILED_CHECK_RETRY * (1 << min(failures, 16)), FAILED_CHECK_RETRY_MAX)
        self._not_before[key] = retry_at
        if self.deadlines.schedule(key, retry_at, kind):
            self._wakeup.set()

    async def _look(self, key: TargetKey, priority: Priority) -> bool:
        """Fetch the target afresh into the inventory; False when it is no longer known or in an unknown state."""
        if key in self._resumed:
            return await self._look_resumed(key, self._resumed[key], priority)
        if key.kind is TargetKind.CALCULATION:
            calculation = self.inventory.calculations.get(key.target_id)
            if calculation is None:
                return False
            fresh_calculation = await athena.get_calculation(
                self.gateway, key.target_id, calculation.session_id, calculation.workgroup, self.clock,
                priority=priority,
            )
            if key.target_id not in self.inventory.calculations:
                return False  # forgotten meanwhile (its session ended)
            self.inventory.put_calculation(fresh_calculation)
            known, raw = fresh_calculation.state is not None, fresh_calculation.raw_state
        else:
            session = self.inventory.sessions.get(key.target_id)
            if session is None:
                return False
            fresh_session = await athena.get_session(
                self.gateway, key.target_id, session.workgroup, self.clock, priority=priority,
                statistics=self.accrual_applies(key),
            )
            if key.target_id not in self.inventory.sessions:
                return False
            self.inventory.put_session(fresh_session)
            known, raw = fresh_session.state is not None, fresh_session.raw_state
        if not known:
            self.report_unknown_state(key, raw)
            self.unknown_state(key)
            return False
        self._not_before.pop(key, None)
        return True

    async def _look_resumed(self, key: TargetKey, ref: TargetRef, priority: Priority) -> bool:
        """A first look at a target known from the saved watch list: the target itself, always afresh (a sweep
        may have listed it meanwhile, but a listing is no fresh look), and a calculation's session when it is not
        known (GetSession, for the exemption marker), side by side."""
        found: dict[str, SessionSnapshot | CalculationSnapshot | AwsCallError] = {}

        async def fetch(name: str, get: Callable[[], Coroutine[Any, Any, SessionSnapshot | CalculationSnapshot]],
                        ) -> None:
            try:
                found[name] = await get()
            except AwsCallError as error:
                found[name] = error

        async with anyio.create_task_group() as looking:
            if key.kind is TargetKind.SESSION or ref.session_id not in self.inventory.sessions:
                looking.start_soon(fetch, "session", lambda: athena.get_session(
                    self.gateway, ref.session_id, ref.workgroup, self.clock, priority=priority, statistics=True))
            if key.kind is TargetKind.CALCULATION:
                looking.start_soon(fetch, "calculation", lambda: athena.get_calculation(
                    self.gateway, key.target_id, ref.session_id, ref.workgroup, self.clock, priority=priority))
        for name in ("session", "calculation"):  # the session first: its error says more (a session gone)
            answer = found.get(name)
            if isinstance(answer, AwsCallError):
                raise answer
        session, calculation = found.get("session"), found.get("calculation")
        if isinstance(session, SessionSnapshot):
            self.inventory.put_session(session)
        if isinstance(calculation, CalculationSnapshot):
            self.inventory.put_calculation(calculation)
        self._resumed.pop(key, None)
        snapshot = (self.inventory.calculations.get(key.target_id) if key.kind is TargetKind.CALCULATION
                    else self.inventory.sessions.get(key.target_id))
        return snapshot is not None and snapshot.state is not None

    # -- what discovery and checks both report ----------------------------------------------------------

    def report_unknown_state(self, key: TargetKey, raw_state: str) -> None:
        """A state this version does not know is counted and logged once per target; never acted on. A claimed
        target is looked at by its escalation, which counts what it sees itself."""
        if key in self._unknown_reported or self.enforcement.is_claimed(key):
            return
        self._unknown_reported.add(key)
        self.metrics.unknown_states.labels(key.kind.value).inc()
        self._log.warning(f"{key.kind.value}.unknown_state", state=raw_state, target_id=key.target_id)

    def forget_target(self, key: TargetKey) -> None:
        """The API no longer knows the target: forget it (and a session's calculations)."""
        if key.kind is TargetKind.CALCULATION:
            self.forget(key)
            self.inventory.drop_calculation(key.target_id)
            return
        self.forget(key)
        for calculation_id in self.inventory.drop_session(key.target_id):
            self.forget(TargetKey.calculation(calculation_id))
