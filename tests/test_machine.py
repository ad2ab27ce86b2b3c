"""The escalation state machine: pure transitions, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from supervisor import machine
from supervisor.machine import Phase, Step, Timing
from supervisor.model import CalculationState, SessionState, TargetRef, Verdict

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TIMING = Timing(stop_grace=timedelta(seconds=30), terminate_grace=timedelta(minutes=2),
                retry_backoff_max=timedelta(minutes=10))


def verdict(kind: str = "calculation", action: str = "stop", mode: str = "enforce") -> Verdict:
    target = TargetRef(kind, "c1" if kind == "calculation" else "s1", "s1", "etl-a")  # type: ignore[arg-type]
    return Verdict(target=target, policy="p", rule="max_runtime", observed=1801.0, limit=1800.0, unit="seconds",
                   crossed_at=T0, decided_at=T0, action=action, mode=mode)  # type: ignore[arg-type]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_dry_run_and_notify_settle_at_once() -> None:
    assert machine.begin(verdict(mode="dry-run"), "e", T0).outcome == "dry_run"
    assert machine.begin(verdict(action="notify"), "e", T0).outcome == "notified"
    assert machine.begin(verdict(mode="dry-run"), "e", T0).is_done


def test_stop_honoured() -> None:
    escalation = machine.begin(verdict(), "e", T0)
    assert machine.next_step(escalation) is Step.SEND_STOP
    escalation = machine.sent(machine.intend(escalation, Step.SEND_STOP, T0), Step.SEND_STOP, at(0.05), TIMING)
    assert escalation.phase is Phase.STOP_REQUESTED and escalation.stop_sent_at == at(0.05)
    assert escalation.next_step_at == at(1.05)
    assert machine.next_step(escalation) is Step.VERIFY_CALCULATION
    still = machine.calculation_observed(escalation, CalculationState.CANCELING, at(1.05), TIMING)
    assert still.phase is Phase.STOP_REQUESTED and still.next_step_at == at(2.05)  # doubling interval
    done = machine.calculation_observed(still, CalculationState.CANCELED, at(2.05), TIMING)
    assert done.is_done and done.outcome == "stopped"


def test_verification_never_waits_past_the_grace_deadline() -> None:
    escalation = machine.sent(machine.begin(verdict(), "e", T0), Step.SEND_STOP, T0, TIMING)
    escalation = machine.calculation_observed(escalation, CalculationState.RUNNING, at(20), TIMING)
    assert escalation.next_step_at == at(30)


def test_stop_ignored_escalates_to_terminate_after_grace_then_terminated() -> None:
    escalation = machine.sent(machine.begin(verdict(), "e", T0), Step.SEND_STOP, T0, TIMING)
    escalated = machine.calculation_observed(escalation, CalculationState.RUNNING, at(30), TIMING)
    assert escalated.phase is Phase.TERMINATE_PENDING and machine.next_step(escalated) is Step.SEND_TERMINATE
    requested = machine.sent(escalated, Step.SEND_TERMINATE, at(30.1), TIMING)
    assert requested.phase is Phase.TERMINATE_REQUESTED and requested.terminate_attempts == 1
    assert machine.next_step(requested) is Step.VERIFY_SESSION
    done = machine.session_observed(requested, SessionState.TERMINATED, at(32), TIMING)
    assert done.outcome == "terminated"


def test_session_alive_after_terminate_grace_fails_then_retries_with_backoff() -> None:
    requested = machine.sent(machine.begin(verdict("session", "terminate"), "e", T0), Step.SEND_TERMINATE, T0, TIMING)
    failed = machine.session_observed(requested, SessionState.TERMINATING, at(120), TIMING)
    assert failed.phase is Phase.ESCALATION_FAILED and failed.failures == 1
    assert failed.next_step_at == at(240)  # first retry after another terminate_grace
    assert machine.next_step(failed) is Step.SEND_TERMINATE
    retried = machine.sent(failed, Step.SEND_TERMINATE, at(240), TIMING)
    failed_again = machine.session_observed(retried, SessionState.TERMINATING, at(360), TIMING)
    assert failed_again.failures == 2 and failed_again.next_step_at == at(360 + 240)  # doubled
    assert failed_again.terminate_attempts == 2


def test_backoff_is_capped() -> None:
    escalation = machine.begin(verdict("session", "terminate"), "e", T0)
    for _ in range(10):
        escalation = machine.send_failed(escalation, Step.SEND_TERMINATE, T0, TIMING)
    assert escalation.next_step_at == T0 + TIMING.retry_backoff_max


def test_a_restart_after_the_intent_looks_before_sending_again() -> None:
    escalation = machine.intend(machine.begin(verdict(), "e", T0), Step.SEND_STOP, T0)
    assert machine.next_step(escalation) is Step.VERIFY_CALCULATION
    took_effect = machine.calculation_observed(escalation, CalculationState.CANCELING, at(5), TIMING)
    assert took_effect.phase is Phase.STOP_REQUESTED and took_effect.stop_sent_at == T0
    assert took_effect.next_step_at == at(10)  # the grace counts from the intent, not the restart
    not_sent = machine.calculation_observed(escalation, CalculationState.RUNNING, at(5), TIMING)
    assert not_sent.phase is Phase.STOP_PENDING and machine.next_step(not_sent) is Step.SEND_STOP


def test_a_restart_after_a_terminate_intent_adopts_a_terminating_session() -> None:
    escalation = machine.intend(machine.begin(verdict("session", "terminate"), "e", T0), Step.SEND_TERMINATE, T0)
    assert machine.next_step(escalation) is Step.VERIFY_SESSION
    adopted = machine.session_observed(escalation, SessionState.TERMINATING, at(1), TIMING)
    assert adopted.phase is Phase.TERMINATE_REQUESTED and adopted.terminate_sent_at == T0


def test_unknown_states_are_never_acted_upon() -> None:
    escalation = machine.sent(machine.begin(verdict(), "e", T0), Step.SEND_STOP, T0, TIMING)
    looked = machine.calculation_observed(escalation, None, at(31), TIMING)
    assert looked.phase is Phase.STOP_REQUESTED and looked.next_step_at == at(32)


def test_a_vanished_target_settles() -> None:
    escalation = machine.sent(machine.begin(verdict(), "e", T0), Step.SEND_STOP, T0, TIMING)
    assert machine.calculation_observed(escalation, None, at(1), TIMING, found=False).outcome == "gone"
