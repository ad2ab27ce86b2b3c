"""The enforcement state machine of one target, as pure transitions over a frozen :class:`Escalation`.

    STOP_PENDING ──Stop sent──► STOP_REQUESTED ──calculation ended──► DONE (stopped/completed/calculation_failed)
                                       │ still live after stop_grace
                                       ▼
    TERMINATE_PENDING ──Terminate sent──► TERMINATE_REQUESTED ──session ended──► DONE (terminated)
            ▲                                    │ still alive after terminate_grace
            └──── retry after backoff ─── ESCALATION_FAILED ◄┘

    DISABLE_PENDING ──UpdateWorkGroup DISABLED sent──► DONE (disabled)
    ENABLE_PENDING  ──UpdateWorkGroup ENABLED sent──►  DONE (enabled)

Every function takes ``now`` and returns a new value; the enforcement activity performs the step named by
:func:`next_step`, journals it, and feeds the answer back here.

Acting once: Stop and Terminate take no client token, so a call whose answer was never seen (the process
died after journaling the intent, or the call timed out or failed with a 5xx) may still take effect. The
target is looked at first: if it shows the effect, the call counts as sent; if not, the intent is treated
as in flight until ``in_flight_window`` (the longest a call attempt can take) has passed since it, and
only then, if the call still did not take effect, is it sent again. A call adopted that way counts as sent
when it is known to have been processed: when its effect was seen, or at the end of the in-flight window if
that came first (not at the intent: the call may have reached AWS much later, so a grace counted from the
intent could end before the calculation had ``stop_grace`` to cancel). A call that failed for certain
(throttled, refused) is retried after a backoff that starts at ``send_retry_initial`` and doubles up to
``retry_backoff_max``. Workgroup updates are idempotent: they are simply sent again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from supervisor.core.model import (
    ENDED_SESSION_STATES,
    CalculationState,
    SessionState,
    TargetKind,
    Verdict,
)


class Phase(StrEnum):
    STOP_PENDING = "stop_pending"
    STOP_REQUESTED = "stop_requested"
    TERMINATE_PENDING = "terminate_pending"
    TERMINATE_REQUESTED = "terminate_requested"
    ESCALATION_FAILED = "escalation_failed"
    DISABLE_PENDING = "disable_pending"
    ENABLE_PENDING = "enable_pending"
    DONE = "done"


class Step(StrEnum):
    SEND_STOP = "send_stop"
    SEND_TERMINATE = "send_terminate"
    VERIFY_CALCULATION = "verify_calculation"
    VERIFY_SESSION = "verify_session"
    SEND_DISABLE = "send_disable"
    SEND_ENABLE = "send_enable"
    NOTHING = "nothing"


# The destructive steps: each goes through the safety rails, the cancellation shield and the journal.
SEND_STEPS = frozenset({Step.SEND_STOP, Step.SEND_TERMINATE, Step.SEND_DISABLE, Step.SEND_ENABLE})


@dataclass(frozen=True, slots=True)
class Timing:
    stop_grace: timedelta
    terminate_grace: timedelta
    first_verify_after: timedelta = timedelta(seconds=1)
    retry_backoff_max: timedelta = timedelta(minutes=5)
    in_flight_window: timedelta = timedelta(seconds=12)
    send_retry_initial: timedelta = timedelta(seconds=1)

    @property
    def ineffective_retry_initial(self) -> timedelta:
        """A session still alive after terminate_grace is retried after another terminate_grace, doubling."""
        return min(self.terminate_grace, self.retry_backoff_max)


@dataclass(frozen=True, slots=True)
class Escalation:
    escalation_id: str
    verdict: Verdict
    phase: Phase
    created_at: datetime
    next_step_at: datetime
    stop_intent_at: datetime | None = None
    stop_sent_at: datetime | None = None
    terminate_intent_at: datetime | None = None
    terminate_sent_at: datetime | None = None
    terminate_attempts: int = 0
    failures: int = 0
    outcome: str | None = None
    intent_at: datetime | None = None  # workgroup updates: journaled before the call, cleared by its answer

    @property
    def is_done(self) -> bool:
        return self.phase is Phase.DONE


def begin(verdict: Verdict, escalation_id: str, now: datetime) -> Escalation:
    """The first state for a fresh verdict. Dry-run and notify verdicts are settled at once."""
    if verdict.mode == "dry-run":
        return Escalation(escalation_id, verdict, Phase.DONE, now, now, outcome="dry_run")
    if verdict.action == "notify":
        return Escalation(escalation_id, verdict, Phase.DONE, now, now, outcome="notified")
    if verdict.action == "disable_workgroup":
        return Escalation(escalation_id, verdict, Phase.DISABLE_PENDING, now, now)
    if verdict.action == "enable_workgroup":
        return Escalation(escalation_id, verdict, Phase.ENABLE_PENDING, now, now)
    if verdict.action == "stop" and verdict.target.kind is TargetKind.CALCULATION:
        return Escalation(escalation_id, verdict, Phase.STOP_PENDING, now, now)
    return Escalation(escalation_id, verdict, Phase.TERMINATE_PENDING, now, now)


def nothing_sent(escalation: Escalation) -> bool:
    """No Stop/Terminate was sent, nor may have been (no intent journaled): dropping it is harmless."""
    return not any((escalation.stop_intent_at, escalation.stop_sent_at, escalation.terminate_intent_at,
                    escalation.terminate_sent_at, escalation.intent_at)) and not escalation.is_done


def unanswered_intent(escalation: Escalation) -> datetime | None:
    """The intent of a Stop/Terminate whose answer was never seen, if any."""
    if escalation.phase is Phase.STOP_PENDING:
        return escalation.stop_intent_at
    if escalation.phase in (Phase.TERMINATE_PENDING, Phase.ESCALATION_FAILED):
        return escalation.terminate_intent_at
    return None


def _processed_by(intent: datetime, now: datetime, timing: Timing) -> datetime:
    """The earliest instant a call whose answer was never seen is known to have been processed by: its effect
    is seen ``now``, and it cannot land later than the in-flight window after its intent. Graces count from
    there, so a call that landed late never shortens them."""
    return min(now, intent + timing.in_flight_window)


def _settle_intent(
    escalation: Escalation, took_effect: bool, adopted: Escalation, cleared: Escalation, intent: datetime,
    now: datetime, timing: Timing,
) -> Escalation:
    """An intent whose answer was never seen: the call counts as sent (``adopted``) if the target shows its
    effect; if not, it may still get it while the call can be in flight, so look again when it cannot be any
    more; after that the intent is ``cleared`` and the call sent again."""
    if took_effect:
        return adopted
    landed_by = intent + timing.in_flight_window
    return replace(escalation, next_step_at=landed_by) if now < landed_by else cleared


def next_step(escalation: Escalation) -> Step:
    match escalation.phase:
        case Phase.STOP_PENDING:
            return Step.VERIFY_CALCULATION if escalation.stop_intent_at else Step.SEND_STOP
        case Phase.STOP_REQUESTED:
            return Step.VERIFY_CALCULATION
        case Phase.TERMINATE_PENDING:
            return Step.VERIFY_SESSION if escalation.terminate_intent_at else Step.SEND_TERMINATE
        case Phase.TERMINATE_REQUESTED:
            return Step.VERIFY_SESSION
        case Phase.ESCALATION_FAILED:
            return Step.VERIFY_SESSION if escalation.terminate_intent_at else Step.SEND_TERMINATE
        case Phase.DISABLE_PENDING:
            return Step.SEND_DISABLE
        case Phase.ENABLE_PENDING:
            return Step.SEND_ENABLE
        case _:
            return Step.NOTHING


def _verify_at(sent_at: datetime, now: datetime, deadline: datetime, timing: Timing) -> datetime:
    """Look again after a doubling interval (1s, 2s, 4s… since the call), never later than the deadline."""
    waited = max(now - sent_at, timing.first_verify_after)
    return min(now + waited, deadline) if now < deadline else now


def _look_again_later(escalation: Escalation, now: datetime, timing: Timing) -> Escalation:
    """An unknown state is never acted upon: look again after a doubling interval since the last call (1s, 2s,
    4s…), at most ``retry_backoff_max``, without escalating."""
    calls = (escalation.stop_intent_at, escalation.stop_sent_at, escalation.terminate_intent_at,
             escalation.terminate_sent_at)
    since = max((at for at in calls if at is not None), default=escalation.created_at)
    waited = max(now - since, timing.first_verify_after)
    return replace(escalation, next_step_at=now + min(waited, timing.retry_backoff_max))


def intend(escalation: Escalation, step: Step, now: datetime) -> Escalation:
    """Record that a Stop/Terminate is about to be sent (journaled before the call)."""
    if step is Step.SEND_STOP:
        return replace(escalation, stop_intent_at=now)
    if step is Step.SEND_TERMINATE:
        return replace(escalation, terminate_intent_at=now)
    return replace(escalation, intent_at=now)


def sent(escalation: Escalation, step: Step, now: datetime, timing: Timing) -> Escalation:
    """The call was answered successfully."""
    if step is Step.SEND_DISABLE:
        return replace(escalation, phase=Phase.DONE, outcome="disabled", intent_at=None, next_step_at=now)
    if step is Step.SEND_ENABLE:
        return replace(escalation, phase=Phase.DONE, outcome="enabled", intent_at=None, next_step_at=now)
    if step is Step.SEND_STOP:
        deadline = now + timing.stop_grace
        return replace(
            escalation, phase=Phase.STOP_REQUESTED, stop_sent_at=now, stop_intent_at=escalation.stop_intent_at or now,
            next_step_at=_verify_at(now, now, deadline, timing),
        )
    deadline = now + timing.terminate_grace
    return replace(
        escalation, phase=Phase.TERMINATE_REQUESTED, terminate_sent_at=now,
        terminate_intent_at=escalation.terminate_intent_at or now,
        terminate_attempts=escalation.terminate_attempts + 1, next_step_at=_verify_at(now, now, deadline, timing),
    )


def send_failed(
    escalation: Escalation, step: Step, now: datetime, timing: Timing, *, may_have_taken_effect: bool = False
) -> Escalation:
    """The call failed. For certain (refused, throttled): clear the intent and send again after a backoff.
    Maybe not (timed out, 5xx, connection lost): keep the intent, so the target is looked at (after the call
    could have landed) before anything is sent again."""
    failures = escalation.failures + 1
    backoff = _backoff(escalation.failures, timing.send_retry_initial, timing)
    if may_have_taken_effect and step in (Step.SEND_STOP, Step.SEND_TERMINATE):
        return replace(escalation, failures=failures, next_step_at=now + backoff)
    if step is Step.SEND_STOP:
        return replace(escalation, stop_intent_at=None, failures=failures, next_step_at=now + backoff)
    if step is Step.SEND_TERMINATE:
        return replace(escalation, terminate_intent_at=None, failures=failures, next_step_at=now + backoff)
    return replace(escalation, intent_at=None, failures=failures, next_step_at=now + backoff)


def _backoff(failures: int, initial: timedelta, timing: Timing) -> timedelta:
    return min(initial * (1 << min(failures, 16)), timing.retry_backoff_max)


CALCULATION_OUTCOMES = {
    CalculationState.CANCELED: "stopped",
    CalculationState.COMPLETED: "completed",
    CalculationState.FAILED: "calculation_failed",
}


def calculation_observed(
    escalation: Escalation, state: CalculationState | None, now: datetime, timing: Timing, *, found: bool = True
) -> Escalation:
    """Feed a fresh look at the calculation (``found=False`` when the API no longer knows it)."""
    if not found:
        return replace(escalation, phase=Phase.DONE, outcome="gone", next_step_at=now)
    if state in CALCULATION_OUTCOMES:
        return replace(escalation, phase=Phase.DONE, outcome=CALCULATION_OUTCOMES[state], next_step_at=now)
    if state is None:
        return _look_again_later(escalation, now, timing)
    if escalation.phase is Phase.STOP_PENDING:
        # A previous process journaled the intent but not the answer.
        intent = escalation.stop_intent_at or now
        processed = _processed_by(intent, now, timing)
        adopted = replace(escalation, phase=Phase.STOP_REQUESTED, stop_sent_at=processed,
                          next_step_at=_verify_at(processed, now, processed + timing.stop_grace, timing))
        return _settle_intent(escalation, state is CalculationState.CANCELING, adopted,
                              replace(escalation, stop_intent_at=None, next_step_at=now), intent, now, timing)
    sent_at = escalation.stop_sent_at or now
    deadline = sent_at + timing.stop_grace
    if now >= deadline:
        # A new call: its refusals back off from send_retry_initial again, whatever the Stop's were.
        return replace(escalation, phase=Phase.TERMINATE_PENDING, failures=0, next_step_at=now)
    return replace(escalation, next_step_at=_verify_at(sent_at, now, deadline, timing))


def session_observed(
    escalation: Escalation, state: SessionState | None, now: datetime, timing: Timing, *, found: bool = True
) -> Escalation:
    """Feed a fresh look at the session."""
    if not found or state in ENDED_SESSION_STATES:
        return replace(escalation, phase=Phase.DONE, outcome="terminated", next_step_at=now)
    if state is None:
        return _look_again_later(escalation, now, timing)
    if escalation.phase in (Phase.TERMINATE_PENDING, Phase.ESCALATION_FAILED):
        intent = escalation.terminate_intent_at or now
        processed = _processed_by(intent, now, timing)
        adopted = replace(escalation, phase=Phase.TERMINATE_REQUESTED, terminate_sent_at=processed,
                          terminate_attempts=escalation.terminate_attempts + 1,
                          next_step_at=_verify_at(processed, now, processed + timing.terminate_grace, timing))
        return _settle_intent(escalation, state is SessionState.TERMINATING, adopted,
                              replace(escalation, terminate_intent_at=None, next_step_at=now), intent, now, timing)
    sent_at = escalation.terminate_sent_at or now
    deadline = sent_at + timing.terminate_grace
    if now >= deadline:
        return replace(
            escalation, phase=Phase.ESCALATION_FAILED, terminate_intent_at=None, failures=escalation.failures + 1,
            next_step_at=now + _backoff(escalation.failures, timing.ineffective_retry_initial, timing),
        )
    return replace(escalation, next_step_at=_verify_at(sent_at, now, deadline, timing))
