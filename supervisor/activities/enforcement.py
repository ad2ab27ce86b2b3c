"""Enforcement: the only owner of "this target is claimed", and the driver of every escalation.

:meth:`Enforcement.claim` is the one way to act on a verdict: the target key is claimed in memory and in
storage (unique for ever), the decision is journaled, and an escalation starts. Each step the state machine
(:mod:`supervisor.core.escalation`) names is performed here: a destructive call (Stop, Terminate, workgroup
disable/enable) passes the safety rails, then journal the intent → call → journal the answer runs shielded
from cancellation, so a SIGTERM lets in-flight calls finish and be recorded; escalations that are only
waiting are cancelled and resumed from storage at the next start.

A claim is never lost to a lost answer. If the claim's write fails without a definite answer (every attempt
timed out, though the first may have landed), the target stays claimed here and the same claim (same escalation
id) is sent again, with backoff, until the store answers: recorded now, or refused because it is already there.
A claim refused for a target this process did not know as claimed is read back: the claim's own earlier write
(its answer lost, the gateway's retry refused by it) goes on as claimed; another open escalation nobody here
drives (an earlier claim of this process whose answer was lost) is adopted and driven as a resumed one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.abc
import structlog

from supervisor import athena
from supervisor.clock import Clock
from supervisor.core import escalation as machine
from supervisor.core.escalation import Escalation, Phase, Step, Timing
from supervisor.core.model import TargetKey, TargetKind, Verdict
from supervisor.core.safety import SafetyRails
from supervisor.events import EventName, EventSink, NullSink
from supervisor.gateway import AwsCallError, Gateway, Priority
from supervisor.metrics import Metrics
from supervisor.storage import FenceLost, Storage

HELD_RECHECK = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class Call:
    """How one destructive step is sent, counted and journaled."""

    operation: str
    action: str  # the ``action`` label of actions_total
    intent_event: str
    sent_event: str
    error_event: str
    log_event: str
    notify: EventName | None


CALLS: dict[Step, Call] = {
    Step.SEND_STOP: Call("StopCalculationExecution", "stop", "stop.intent", "stop.sent", "stop.error",
                         "calculation.stop_requested", "stop_requested"),
    Step.SEND_TERMINATE: Call("TerminateSession", "terminate", "terminate.intent", "terminate.sent",
                              "terminate.error", "session.terminate_requested", None),
    Step.SEND_DISABLE: Call("UpdateWorkGroup", "disable_workgroup", "workgroup.disable_intent", "workgroup.disabled",
                            "workgroup.disable_error", "workgroup.disabled", "workgroup_disabled"),
    Step.SEND_ENABLE: Call("UpdateWorkGroup", "enable_workgroup", "workgroup.enable_intent", "workgroup.enabled",
                           "workgroup.enable_error", "workgroup.enabled", "workgroup_enabled"),
}


def call_parameters(step: Step, escalation: Escalation) -> dict[str, str]:
    target = escalation.verdict.target
    if step is Step.SEND_STOP:
        return {"CalculationExecutionId": target.target_id}
    if step is Step.SEND_TERMINATE:
        return {"SessionId": target.session_id}
    return {"WorkGroup": target.workgroup, "State": "DISABLED" if step is Step.SEND_DISABLE else "ENABLED"}


def decision_event(verdict: Verdict) -> str | None:
    """The journal event of a claim. A workgroup update in enforce mode is journaled by its intent, which
    follows at once; in dry-run its decision is all there is."""
    if verdict.action in ("disable_workgroup", "enable_workgroup"):
        name = "workgroup.disable" if verdict.action == "disable_workgroup" else "workgroup.enable"
        return name if verdict.mode == "dry-run" else None
    return "decision"


class Enforcement:
    """Owns the claims and the escalations in flight. ``run`` must be running before ``claim``."""

    def __init__(
        self,
        *,
        gateway: Gateway,
        storage: Storage,
        metrics: Metrics,
        clock: Clock,
        timing: Timing,
        rails: SafetyRails,
        events: EventSink | None = None,
        void_reason: Callable[[Verdict], str | None] | None = None,
        fence_lost: Callable[[], None] | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.gateway = gateway
        self.storage = storage
        self.metrics = metrics
        self.clock = clock
        self.timing = timing
        self.rails = rails
        self.events: EventSink = events or NullSink()
        # Asked on restart about escalations that never sent anything: a reason to drop them (their policy is
        # gone or now dry-run), or None to go on.
        self.void_reason: Callable[[Verdict], str | None] = void_reason or (lambda _: None)
        # Called when a fenced write was refused: another replica owns the shard now; stop acting on it.
        self._fence_lost: Callable[[], None] = fence_lost or (lambda: None)
        self._log = logger or structlog.get_logger("supervisor.enforcement")
        self._task_group: anyio.abc.TaskGroup | None = None
        self._claimed: set[TargetKey] = set()
        self.in_flight: dict[TargetKey, Escalation] = {}
        self._held_reported: set[tuple[TargetKey, str]] = set()
        self._unknown_reported: set[tuple[TargetKey, str]] = set()  # counted and logged once per target and kind
        # operation -> (first failure, consecutive failures) while destructive calls keep failing
        self._failing: dict[str, tuple[datetime, int]] = {}

    def apply(self, *, timing: Timing, void_reason: Callable[[Verdict], str | None]) -> None:
        """Take reloaded escalation timing (the next steps of escalations under way use it) and the reason to void
        a resumed escalation under the new policies."""
        self.timing = timing
        self.void_reason = void_reason

    async def reset_breaker(self, reason: str) -> bool:
        """Close the circuit breaker (held calls go at their next recheck, within seconds); journaled and logged
        when it was open. True if it was open."""
        was_open = self.rails.reset()
        self.metrics.circuit_breaker_open.set(0)
        if was_open:
            self._held_reported = {held for held in self._held_reported if held[1] != "circuit_breaker"}
            await self.storage.record("breaker.reset", detail={"reason": reason}, time=self.clock.now())
            self._log.warning("enforcement.breaker_reset", reason=reason)
        return was_open

    # -- claims -------------------------------------------------------------------------------------------

    def is_claimed(self, key: TargetKey) -> bool:
        return key in self._claimed

    async def claim(self, verdict: Verdict, evidence: Mapping[str, Any] | None = None) -> bool:
        """Act on a verdict; False if its target was ever claimed (a target is never acted on twice).

        True also when the claim's write went unanswered: the target stays claimed and the claim is sent again
        until the store answers (:meth:`_settle`), so the action is taken once, later, never lost.

        ``evidence``: what was observed of the target at the decision (its DPU counter and rate), journaled with
        the decision (``athena-supervisor report`` reads it)."""
        key = verdict.target.key
        if key in self._claimed:
            return False
        self._claimed.add(key)
        escalation = machine.begin(verdict, uuid.uuid4().hex, self.clock.now())
        event, detail = decision_event(verdict), {**verdict.describe(), **(evidence or {})}
        try:
            recorded = await self.storage.claim(escalation, event, detail)
            stored = escalation if recorded else await self.storage.escalation_for(key)
        except FenceLost as error:
            self._claimed.discard(key)  # not recorded, and the shard is another replica's now
            self._lost(error)
            raise
        except Exception as error:
            # No definite answer: the write may have landed. Keep the target claimed and send the same claim
            # again until the store says; dropping it here would let the next judgement find it claimed in
            # storage and skip it, with nothing left to drive it.
            self._log.warning("enforcement.claim_unanswered", error=repr(error), **verdict.describe())
            self._start(self._settle, escalation, event, detail, name=f"claim {key}")
            return True
        except BaseException:
            self._claimed.discard(key)  # cancelled: the shard stops; its next start reads the claims again
            raise
        return self._claimed_as(escalation, stored)

    async def _settle(self, escalation: Escalation, event: str | None, detail: Mapping[str, Any]) -> None:
        """Send an unanswered claim again (same escalation: a resend after a landed write is refused by it, not
        recorded twice) until the store answers, then go on with what it holds."""
        key = escalation.verdict.target.key
        wait = self.timing.first_verify_after
        while True:
            await self.clock.sleep(wait.total_seconds())
            try:
                recorded = await self.storage.claim(escalation, event, detail)
                stored = escalation if recorded else await self.storage.escalation_for(key)
            except FenceLost as error:
                self._lost(error)  # the shard stops here; its next owner resumes the claim if it landed
                return
            except Exception as error:
                wait = min(wait * 2, self.timing.retry_backoff_max)
                self._log.warning("enforcement.claim_unanswered", error=repr(error), retry_in=wait.total_seconds(),
                                  **escalation.verdict.describe())
                continue
            self._log.info("enforcement.claim_settled", landed_before=not recorded, **escalation.verdict.describe())
            self._claimed_as(escalation, stored)
            return

    def _claimed_as(self, mine: Escalation, stored: Escalation | None) -> bool:
        """Go on after the store answered a claim: ``stored`` is what it holds for the target (``mine`` if the
        claim was recorded). True if the claim is ``mine``."""
        verdict = mine.verdict
        if stored is None or stored.escalation_id != mine.escalation_id:
            if stored is not None and not stored.is_done and verdict.target.key not in self.in_flight:
                # Claimed in storage, driven by nobody: this process's own earlier claim, whose answer was lost.
                self._log.warning("escalation.adopted", escalation_id=stored.escalation_id,
                                  phase=stored.phase.value, **stored.verdict.describe())
                reason = self._reason_to_void(stored)
                if reason is not None:
                    self._start(self._void, stored, reason, name=f"void {stored.verdict.target.key}")
                else:
                    self._resume(stored)
            return False
        explanation = verdict.describe()
        if verdict.target.kind is not TargetKind.WORKGROUP:
            self.metrics.violations.labels(verdict.policy, verdict.rule).inc()
            self._log.warning("target.violation", **explanation)
            self._emit("violation", mine)
        if mine.is_done:
            outcome = mine.outcome or "settled"
            self.metrics.actions.labels(verdict.action, verdict.policy, outcome).inc()
            self._log.info(f"{verdict.target.kind.value}.{outcome}", **explanation)
            return True
        self._spawn(mine)
        return True

    async def outcome_of(self, key: TargetKey) -> str | None:
        """The outcome of the settled escalation of ``key`` (None while it runs, or if never claimed)."""
        escalation = await self.storage.escalation_for(key)
        return escalation.outcome if escalation is not None and escalation.is_done else None

    # -- running ------------------------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Load the claims, resume every open escalation, then drive new ones until cancelled."""
        opened: list[Escalation] = []

        async def load_claims() -> None:
            self._claimed |= await self.storage.claimed_targets()

        async def load_open() -> None:
            opened.extend(await self.storage.open_escalations())

        async with anyio.create_task_group() as loading:  # side by side: a new owner of the shard waits for both
            loading.start_soon(load_claims)
            loading.start_soon(load_open)
        async with anyio.create_task_group() as task_group:
            self._task_group = task_group
            for escalation in opened:
                reason = self._reason_to_void(escalation)
                if reason is not None:
                    await self._void(escalation, reason)
                    continue
                self._resume(escalation)
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self._task_group = None

    def _reason_to_void(self, escalation: Escalation) -> str | None:
        """Why an open escalation found in storage must not go on: it never sent anything and the current config
        voids it."""
        return self.void_reason(escalation.verdict) if machine.nothing_sent(escalation) else None

    def _resume(self, escalation: Escalation) -> None:
        """Drive an open escalation found in storage (at start, or adopted)."""
        self._log.info("escalation.resumed", phase=escalation.phase.value,
                       next_step_at=escalation.next_step_at.isoformat(), **escalation.verdict.describe())
        self._spawn(escalation)

    def _start(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any, name: str) -> None:
        if self._task_group is None:
            raise RuntimeError("Enforcement.run is not running")
        self._task_group.start_soon(fn, *args, name=name)

    def _lost(self, error: FenceLost) -> None:
        self._log.error("enforcement.fence_lost", error=str(error))
        self._fence_lost()

    def readiness(self) -> str | None:
        """Why enforcement is degraded (destructive calls keep failing), or None."""
        if not self._failing:
            return None
        operation, (since, count) = min(self._failing.items(), key=lambda item: item[1][0])
        return f"{operation} failing since {since.isoformat()} ({count} consecutive errors)"

    async def _void(self, escalation: Escalation, reason: str) -> None:
        now = self.clock.now()
        voided = replace(escalation, phase=Phase.DONE, outcome="voided", next_step_at=now)
        await self.storage.save(voided, "escalation.voided", {"reason": reason}, time=now)
        self.metrics.escalations.labels("voided").inc()
        self._log.warning("escalation.voided", reason=reason, **escalation.verdict.describe())

    def _spawn(self, escalation: Escalation) -> None:
        if self._task_group is None:
            raise RuntimeError("Enforcement.run is not running")
        key = escalation.verdict.target.key
        self.in_flight[key] = escalation
        self.metrics.escalations_in_flight.set(len(self.in_flight))
        self._task_group.start_soon(self._drive, escalation, name=f"escalation {key}")

    async def _drive(self, escalation: Escalation) -> None:
        key = escalation.verdict.target.key
        try:
            while not escalation.is_done:
                await self.clock.sleep_until(escalation.next_step_at)
                escalation = await self._step(escalation)
                self.in_flight[key] = escalation
            self.metrics.escalations.labels(escalation.outcome or "settled").inc()
            self._log.info("escalation.settled", outcome=escalation.outcome, **escalation.verdict.describe())
            if escalation.outcome == "terminated":
                self._emit("terminated", escalation)
        finally:
            self.in_flight.pop(key, None)
            self.metrics.escalations_in_flight.set(len(self.in_flight))

    async def _step(self, escalation: Escalation) -> Escalation:
        """Perform one step. An unexpected error is logged and the step retried later: one target never
        stops enforcement of the others."""
        step = machine.next_step(escalation)
        try:
            if step in CALLS:
                return await self._send(escalation, step)
            if step is Step.VERIFY_CALCULATION:
                return await self._verify(escalation, calculation=True)
            if step is Step.VERIFY_SESSION:
                return await self._verify(escalation, calculation=False)
        except FenceLost as error:
            self._lost(error)
            return replace(escalation, next_step_at=self.clock.now() + self.timing.first_verify_after)
        except Exception as error:
            self._log.exception("enforcement.step_failed", step=step.value, error=repr(error),
                                **escalation.verdict.describe())
            return replace(escalation, next_step_at=self.clock.now() + self.timing.first_verify_after)
        return escalation

    # -- destructive calls --------------------------------------------------------------------------------

    async def _send(self, escalation: Escalation, step: Step) -> Escalation:
        verdict = escalation.verdict
        call = CALLS[step]
        now = self.clock.now()
        admission = self.rails.admit(verdict.target.session_id, now)
        self.metrics.circuit_breaker_open.set(1 if self.rails.breaker_open else 0)
        if not admission.allowed:
            return await self._hold(escalation, call.action, admission.reason or "held", admission.retry_at)
        first_call = escalation.stop_sent_at is None and escalation.terminate_sent_at is None
        with anyio.CancelScope(shield=True):
            escalation = machine.intend(escalation, step, now)
            detail: dict[str, Any] = {"operation": call.operation}
            if escalation.failures:
                detail["resend_after_failures"] = escalation.failures
            await self.storage.save(escalation, call.intent_event, detail, time=now)
            try:
                # Not repeatable: the gateway retries only throttled attempts; after a 5xx or no answer the
                # machine looks at the target before a new, journaled, attempt.
                response = await self.gateway.call(call.operation, call_parameters(step, escalation),
                                                   priority=Priority.ENFORCE, repeatable=False)
            except AwsCallError as error:
                return await self._send_error(escalation, step, error)
            answered = self.clock.now()
            escalation = machine.sent(escalation, step, answered, self.timing)
            try:
                await self.storage.save(escalation, call.sent_event,
                                        {"operation": call.operation, "state": response.get("State")}, time=answered)
            except FenceLost:
                raise
            except Exception as error:
                # The call was answered: the escalation goes on from the answer, never sending the call again for
                # want of a record of it. Its next step writes the escalation whole; a restart before then finds
                # the intent unanswered and looks at the target before anything is sent, as after a crash.
                self._log.error("enforcement.answer_not_journaled", operation=call.operation, error=repr(error),
                                **verdict.describe())
        self._failing.pop(call.operation, None)
        self.metrics.enforcement_failing.labels(call.operation).set(0)
        self.metrics.actions.labels(call.action, verdict.policy, "sent").inc()
        lag = max(0.0, (now - verdict.crossed_at).total_seconds())
        if first_call and step in (Step.SEND_STOP, Step.SEND_TERMINATE):
            self.metrics.enforcement_lag.observe(lag)
        self._log.warning(call.log_event, state=response.get("State"), attempt=escalation.terminate_attempts,
                          lag_seconds=round(lag, 3), **verdict.describe())
        if call.notify is not None:
            self._emit(call.notify, escalation)
        return escalation

    async def _send_error(self, escalation: Escalation, step: Step, error: AwsCallError) -> Escalation:
        verdict = escalation.verdict
        call = CALLS[step]
        now = self.clock.now()
        if error.is_not_found and step in (Step.SEND_STOP, Step.SEND_TERMINATE):
            if step is Step.SEND_STOP:
                settled = machine.calculation_observed(escalation, None, now, self.timing, found=False)
            else:
                settled = machine.session_observed(escalation, None, now, self.timing, found=False)
            await self.storage.save(settled, "target.gone", {"error": error.code}, time=now)
            return settled
        ambiguous = error.may_have_taken_effect
        failed = machine.send_failed(escalation, step, now, self.timing, may_have_taken_effect=ambiguous)
        await self.storage.save(
            failed, call.error_event,
            {"operation": error.operation, "error": error.code, "message": error.message,
             "may_have_taken_effect": ambiguous}, time=now,
        )
        since, count = self._failing.get(call.operation, (now, 0))
        self._failing[call.operation] = (since, count + 1)
        self.metrics.enforcement_failing.labels(call.operation).set(1)
        self.metrics.actions.labels(call.action, verdict.policy, "error").inc()
        self._log.error("enforcement.call_failed", operation=error.operation, error=error.code,
                        message=error.message, retry_at=failed.next_step_at.isoformat(), **verdict.describe())
        return failed

    async def _hold(self, escalation: Escalation, action: str, reason: str, retry_at: datetime | None) -> Escalation:
        verdict = escalation.verdict
        now = self.clock.now()
        self.metrics.held_actions.labels(reason).inc()
        if (verdict.target.key, reason) not in self._held_reported:
            self._held_reported.add((verdict.target.key, reason))
            await self.storage.record(f"{action}.held", target=verdict.target, policy=verdict.policy,
                                      rule=verdict.rule, detail={"reason": reason}, time=now)
            log = self._log.error if reason == "circuit_breaker" else self._log.warning
            log("enforcement.held", reason=reason, **verdict.describe())
        next_at = retry_at if retry_at is not None else now + HELD_RECHECK
        return replace(escalation, next_step_at=next_at)

    # -- verification ---------------------------------------------------------------------------------------

    async def _verify(self, escalation: Escalation, *, calculation: bool) -> Escalation:
        verdict = escalation.verdict
        target = verdict.target
        found = True
        state: Any = None
        try:
            if calculation:
                snapshot = await athena.get_calculation(self.gateway, target.target_id, target.session_id,
                                                        target.workgroup, self.clock, priority=Priority.VERIFY)
                state = snapshot.state
            else:
                session = await athena.get_session(self.gateway, target.session_id, target.workgroup, self.clock,
                                                   priority=Priority.VERIFY, statistics=False)
                state = session.state
        except AwsCallError as error:
            if not error.is_not_found:
                self._log.warning("enforcement.verify_failed", operation=error.operation, error=error.code,
                                  **verdict.describe())
                return replace(escalation, next_step_at=self.clock.now() + self.timing.first_verify_after)
            found = False
        now = self.clock.now()
        looked_at = "calculation" if calculation else "session"
        if found and state is None and (target.key, looked_at) not in self._unknown_reported:
            self._unknown_reported.add((target.key, looked_at))
            self.metrics.unknown_states.labels(looked_at).inc()
            self._log.warning("target.unknown_state", looked_at=looked_at, **verdict.describe())
        observe = machine.calculation_observed if calculation else machine.session_observed
        updated = observe(escalation, state, now, self.timing, found=found)
        if updated.phase is not escalation.phase or updated.outcome != escalation.outcome:
            await self.storage.save(updated, f"verify.{updated.phase.value}",
                                    {"observed_state": getattr(state, "value", None), "found": found}, time=now)
            self._note_transition(escalation, updated)
        elif machine.unanswered_intent(escalation) and not machine.unanswered_intent(updated):
            await self.storage.save(updated, "intent.unanswered",
                                    {"observed_state": getattr(state, "value", None), "reason": "did_not_take_effect",
                                     "resend": True}, time=now)
            self._log.warning("enforcement.resend", observed_state=getattr(state, "value", None),
                              **verdict.describe())
        return updated

    def _note_transition(self, before: Escalation, after: Escalation) -> None:
        verdict = after.verdict
        if after.phase is Phase.TERMINATE_PENDING and before.phase is Phase.STOP_REQUESTED:
            self.metrics.escalations.labels("escalated").inc()
            self._log.warning("calculation.stop_ineffective", **verdict.describe())
            self._emit("escalated", after)
        elif after.phase is Phase.ESCALATION_FAILED:
            self.metrics.escalations.labels("failed").inc()
            self._log.error("session.escalation_failed", failures=after.failures,
                            retry_at=after.next_step_at.isoformat(), **verdict.describe())
            self._emit("escalation_failed", after)

    def _emit(self, event: EventName, escalation: Escalation, extra: Mapping[str, Any] | None = None) -> None:
        verdict = escalation.verdict
        payload = {**verdict.describe(), "escalation_id": escalation.escalation_id,
                   "phase": escalation.phase.value, "outcome": escalation.outcome, **(extra or {})}
        if verdict.target.kind is TargetKind.WORKGROUP:
            payload.update({"budget": verdict.policy, "spent_usd": verdict.observed, "limit_usd": verdict.limit})
        self.events.emit(event, payload)
