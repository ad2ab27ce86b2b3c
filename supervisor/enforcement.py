"""Runs escalations: performs the step the state machine names, journals before and after each call.

The destructive section of a step (journal the intent → call → journal the answer) is shielded from
cancellation, so a SIGTERM lets in-flight calls finish and be recorded; escalations that are only waiting
are cancelled and resumed from the journal at the next start.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import anyio
import anyio.abc
import structlog

from supervisor import machine
from supervisor.clock import Clock
from supervisor.discovery import get_calculation, get_session
from supervisor.events import EventName, EventSink, NullSink
from supervisor.gateway import AwsCallError, Gateway, Priority
from supervisor.journal import Journal
from supervisor.machine import Escalation, Phase, Step, Timing
from supervisor.metrics import Metrics
from supervisor.model import Verdict
from supervisor.safety import SafetyRails

T = TypeVar("T")

HELD_RECHECK = timedelta(seconds=5)
OPERATIONS = {Step.SEND_STOP: "StopCalculationExecution", Step.SEND_TERMINATE: "TerminateSession"}
ACTION_NAMES = {Step.SEND_STOP: "stop", Step.SEND_TERMINATE: "terminate"}


def describe(verdict: Verdict) -> dict[str, Any]:
    """The stable explanation of a verdict, used in logs, journal details and notifications."""
    target = verdict.target
    return {
        "target_kind": target.kind, "target_id": target.target_id, "session_id": target.session_id,
        "workgroup": target.workgroup, "policy": verdict.policy, "rule": verdict.rule,
        "observed": round(verdict.observed, 6), "limit": verdict.limit, "unit": verdict.unit,
        "crossed_at": verdict.crossed_at.isoformat(), "decided_at": verdict.decided_at.isoformat(),
        "action": verdict.action, "mode": verdict.mode,
    }


class Enforcer:
    """Owns the escalations in flight. ``run`` must be running (in a task group) before ``enforce``."""

    def __init__(
        self,
        *,
        gateway: Gateway,
        journal: Journal,
        metrics: Metrics,
        clock: Clock,
        timing: Timing,
        rails: SafetyRails,
        events: EventSink | None = None,
        void_reason: Callable[[Verdict], str | None] | None = None,
        logger: Any = None,
    ) -> None:
        self.gateway = gateway
        # Asked on restart about escalations that never sent anything: a reason to drop them (their policy is
        # gone or now dry-run), or None to go on.
        self.void_reason: Callable[[Verdict], str | None] = void_reason or (lambda _: None)
        self.journal = journal
        self.metrics = metrics
        self.clock = clock
        self.timing = timing
        self.rails = rails
        self.events: EventSink = events or NullSink()
        self._log = logger or structlog.get_logger("supervisor.enforcement")
        self._task_group: anyio.abc.TaskGroup | None = None
        self.in_flight: dict[str, Escalation] = {}
        self._held_reported: set[tuple[str, str]] = set()

    async def _journal(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # The default thread limiter: the Journal serialises with its own lock, and the tests' virtual-time
        # driver sees outstanding work there (borrowed_tokens), not in a private limiter.
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Resume every escalation the journal has open, then drive new ones until cancelled."""
        async with anyio.create_task_group() as task_group:
            self._task_group = task_group
            for escalation in await self._journal(self.journal.open_escalations):
                reason = self.void_reason(escalation.verdict) if machine.nothing_sent(escalation) else None
                if reason is not None:
                    await self._void(escalation, reason)
                    continue
                self._log.info("escalation.resumed", phase=escalation.phase.value, **describe(escalation.verdict))
                self._spawn(escalation)
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self._task_group = None

    async def _void(self, escalation: Escalation, reason: str) -> None:
        now = self.clock.now()
        voided = replace(escalation, phase=Phase.DONE, outcome="voided", next_step_at=now)
        await self._journal(self.journal.save, voided, "escalation.voided", {"reason": reason}, time=now)
        self.metrics.escalations.labels("voided").inc()
        self._log.warning("escalation.voided", reason=reason, **describe(escalation.verdict))

    def is_known(self, target_key: str) -> bool:
        return target_key in self.in_flight

    async def enforce(self, verdict: Verdict) -> bool:
        """Act on a fresh verdict; False if the target was already handled (never acted on twice)."""
        escalation = machine.begin(verdict, uuid.uuid4().hex, self.clock.now())
        explanation = describe(verdict)
        if not await self._journal(self.journal.begin_escalation, escalation, "decision", explanation):
            return False
        self.metrics.violations.labels(verdict.policy, verdict.rule).inc()
        self._log.warning("target.violation", **explanation)
        self._emit("violation", escalation)
        if escalation.is_done:
            outcome = escalation.outcome or "settled"
            self.metrics.actions.labels(verdict.action, verdict.policy, outcome).inc()
            self._log.info(f"{verdict.target.kind}.{outcome}", **explanation)
            return True
        self._spawn(escalation)
        return True

    def _spawn(self, escalation: Escalation) -> None:
        if self._task_group is None:
            raise RuntimeError("Enforcer.run is not running")
        self.in_flight[escalation.verdict.target.key] = escalation
        self.metrics.escalations_in_flight.set(len(self.in_flight))
        self._task_group.start_soon(self._drive, escalation, name=f"escalation {escalation.verdict.target.key}")

    async def _drive(self, escalation: Escalation) -> None:
        key = escalation.verdict.target.key
        try:
            while not escalation.is_done:
                await self.clock.sleep_until(escalation.next_step_at)
                step = machine.next_step(escalation)
                if step in OPERATIONS:
                    escalation = await self._send(escalation, step)
                elif step is Step.VERIFY_CALCULATION:
                    escalation = await self._verify(escalation, calculation=True)
                elif step is Step.VERIFY_SESSION:
                    escalation = await self._verify(escalation, calculation=False)
                self.in_flight[key] = escalation
            self.metrics.escalations.labels(escalation.outcome or "settled").inc()
            self._log.info("escalation.settled", outcome=escalation.outcome, **describe(escalation.verdict))
            if escalation.outcome == "terminated":
                self._emit("terminated", escalation)
        finally:
            self.in_flight.pop(key, None)
            self.metrics.escalations_in_flight.set(len(self.in_flight))

    async def _send(self, escalation: Escalation, step: Step) -> Escalation:
        verdict = escalation.verdict
        operation = OPERATIONS[step]
        action = ACTION_NAMES[step]
        now = self.clock.now()
        admission = self.rails.admit(verdict.target.session_id, now)
        self.metrics.circuit_breaker_open.set(1 if self.rails.breaker_open else 0)
        if not admission.allowed:
            return await self._hold(escalation, action, admission.reason or "held", admission.retry_at)
        params = (
            {"CalculationExecutionId": verdict.target.target_id} if step is Step.SEND_STOP
            else {"SessionId": verdict.target.session_id}
        )
        first_call = escalation.stop_sent_at is None and escalation.terminate_sent_at is None
        with anyio.CancelScope(shield=True):
            escalation = machine.intend(escalation, step, now)
            await self._journal(self.journal.save, escalation, f"{action}.intent", {"operation": operation}, time=now)
            try:
                response = await self.gateway.call(operation, params, priority=Priority.ENFORCE)
            except AwsCallError as error:
                return await self._send_error(escalation, step, error)
            answered = self.clock.now()
            escalation = machine.sent(escalation, step, answered, self.timing)
            await self._journal(
                self.journal.save, escalation, f"{action}.sent",
                {"operation": operation, "state": response.get("State")}, time=answered,
            )
        self.metrics.actions.labels(action, verdict.policy, "sent").inc()
        if first_call:
            self.metrics.enforcement_lag.observe(max(0.0, (now - verdict.crossed_at).total_seconds()))
        event = "calculation.stop_requested" if step is Step.SEND_STOP else "session.terminate_requested"
        self._log.warning(event, state=response.get("State"), attempt=escalation.terminate_attempts,
                          lag_seconds=round((now - verdict.crossed_at).total_seconds(), 3), **describe(verdict))
        if step is Step.SEND_STOP:
            self._emit("stop_requested", escalation)
        return escalation

    async def _send_error(self, escalation: Escalation, step: Step, error: AwsCallError) -> Escalation:
        verdict = escalation.verdict
        now = self.clock.now()
        if error.is_not_found:
            settled = machine.calculation_observed(escalation, None, now, self.timing, found=False)
            await self._journal(self.journal.save, settled, "target.gone", {"error": error.code}, time=now)
            return settled
        failed = machine.send_failed(escalation, step, now, self.timing)
        await self._journal(
            self.journal.save, failed, f"{ACTION_NAMES[step]}.error",
            {"operation": error.operation, "error": error.code, "message": error.message}, time=now,
        )
        self.metrics.actions.labels(ACTION_NAMES[step], verdict.policy, "error").inc()
        self._log.error("enforcement.call_failed", operation=error.operation, error=error.code,
                        message=error.message, retry_at=failed.next_step_at.isoformat(), **describe(verdict))
        return failed

    async def _hold(
        self, escalation: Escalation, action: str, reason: str, retry_at: datetime | None
    ) -> Escalation:
        verdict = escalation.verdict
        now = self.clock.now()
        self.metrics.held_actions.labels(reason).inc()
        if (verdict.target.key, reason) not in self._held_reported:
            self._held_reported.add((verdict.target.key, reason))
            await self._journal(self.journal.record, f"{action}.held", target=verdict.target, policy=verdict.policy,
                                rule=verdict.rule, detail={"reason": reason}, time=now)
            log = self._log.error if reason == "circuit_breaker" else self._log.warning
            log("enforcement.held", reason=reason, **describe(verdict))
        next_at = retry_at if retry_at is not None else now + HELD_RECHECK
        return replace(escalation, next_step_at=next_at)

    async def _verify(self, escalation: Escalation, *, calculation: bool) -> Escalation:
        verdict = escalation.verdict
        target = verdict.target
        found = True
        state: Any = None
        try:
            if calculation:
                snapshot = await get_calculation(self.gateway, target.target_id, target.session_id, target.workgroup,
                                                 self.clock, priority=Priority.VERIFY)
                state = snapshot.state
            else:
                session = await get_session(self.gateway, target.session_id, target.workgroup, self.clock,
                                            priority=Priority.VERIFY, statistics=False)
                state = session.state
        except AwsCallError as error:
            if not error.is_not_found:
                self._log.warning("enforcement.verify_failed", error=error.code, **describe(verdict))
                return replace(escalation, next_step_at=self.clock.now() + self.timing.first_verify_after)
            found = False
        now = self.clock.now()
        if found and state is None:
            self.metrics.unknown_states.labels(target.kind if calculation else "session").inc()
            self._log.warning("target.unknown_state", **describe(verdict))
        observe = machine.calculation_observed if calculation else machine.session_observed
        updated = observe(escalation, state, now, self.timing, found=found)
        if updated.phase is not escalation.phase or updated.outcome != escalation.outcome:
            await self._journal(self.journal.save, updated, f"verify.{updated.phase.value}",
                                {"observed_state": getattr(state, "value", None), "found": found}, time=now)
            self._note_transition(escalation, updated)
        return updated

    def _note_transition(self, before: Escalation, after: Escalation) -> None:
        verdict = after.verdict
        if after.phase is Phase.TERMINATE_PENDING and before.phase is Phase.STOP_REQUESTED:
            self.metrics.escalations.labels("escalated").inc()
            self._log.warning("calculation.stop_ineffective", **describe(verdict))
            self._emit("escalated", after)
        elif after.phase is Phase.ESCALATION_FAILED:
            self.metrics.escalations.labels("failed").inc()
            self._log.error("session.escalation_failed", failures=after.failures,
                            retry_at=after.next_step_at.isoformat(), **describe(verdict))
            self._emit("escalation_failed", after)

    def _emit(self, event: EventName, escalation: Escalation, extra: Mapping[str, Any] | None = None) -> None:
        payload = {**describe(escalation.verdict), "escalation_id": escalation.escalation_id,
                   "phase": escalation.phase.value, "outcome": escalation.outcome, **(extra or {})}
        self.events.emit(event, payload)
