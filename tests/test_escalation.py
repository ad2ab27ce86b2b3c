"""The escalation state machine: pure transitions, no I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from supervisor.core import escalation as machine
from supervisor.core.escalation import Phase, Step, Timing
from supervisor.core.model import CalculationState, SessionState, TargetKind, TargetRef, Verdict

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TIMING = Timing(stop_grace=timedelta(seconds=30), terminate_grace=timedelta(minutes=2),
                retry_backoff_max=timedelta(minutes=10))


def verdict(kind: str = "calculation", action: str = "stop", mode: str = "enforce") -> Verdict:
    target = TargetRef(TargetKind(kind), "c1" if kind == "calculation" else "s1", "s1", "etl-a")
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


def test_a_failed_call_is_retried_from_about_a_second_up_to_the_cap_whatever_terminate_grace() -> None:
    escalation = machine.begin(verdict("session", "terminate"), "e", T0)
    waits = []
    for _ in range(12):
        escalation = machine.send_failed(escalation, Step.SEND_TERMINATE, T0, TIMING)
        waits.append((escalation.next_step_at - T0).total_seconds())
    assert waits[:4] == [1, 2, 4, 8]
    assert waits[-1] == TIMING.retry_backoff_max.total_seconds()
    assert escalation.terminate_intent_at is None and machine.next_step(escalation) is Step.SEND_TERMINATE


def test_a_call_that_may_have_landed_is_looked_at_before_it_is_sent_again() -> None:
    timing = Timing(stop_grace=timedelta(seconds=30), terminate_grace=timedelta(minutes=2),
                    in_flight_window=timedelta(seconds=12))
    intended = machine.intend(machine.begin(verdict(), "e", T0), Step.SEND_STOP, T0)
    failed = machine.send_failed(intended, Step.SEND_STOP, at(10), timing, may_have_taken_effect=True)
    assert failed.stop_intent_at == T0, "the intent stays: the Stop may have been processed"
    assert failed.next_step_at == at(11) and machine.next_step(failed) is Step.VERIFY_CALCULATION
    waiting = machine.calculation_observed(failed, CalculationState.RUNNING, at(11), timing)
    assert waiting.stop_intent_at == T0 and waiting.next_step_at == at(12), "not resent while it may land"
    still_running = machine.calculation_observed(waiting, CalculationState.RUNNING, at(12), timing)
    assert still_running.stop_intent_at is None and machine.next_step(still_running) is Step.SEND_STOP
    canceling = machine.calculation_observed(failed, CalculationState.CANCELING, at(12), timing)
    assert canceling.phase is Phase.STOP_REQUESTED and canceling.stop_sent_at == at(12)


def test_an_unanswered_intent_found_after_a_restart_is_waited_out_for_the_call_timeout() -> None:
    timing = Timing(stop_grace=timedelta(seconds=30), terminate_grace=timedelta(minutes=2),
                    in_flight_window=timedelta(seconds=12))
    intended = machine.intend(machine.begin(verdict("session", "terminate"), "e", T0), Step.SEND_TERMINATE, T0)
    assert machine.next_step(intended) is Step.VERIFY_SESSION, "a restart looks before it sends"
    took_effect = machine.session_observed(intended, SessionState.TERMINATING, at(3), timing)
    assert took_effect.phase is Phase.TERMINATE_REQUESTED and took_effect.terminate_sent_at == at(3)
    not_yet = machine.session_observed(intended, SessionState.IDLE, at(3), timing)
    assert not_yet.terminate_intent_at == T0 and not_yet.next_step_at == at(12)
    assert machine.next_step(not_yet) is Step.VERIFY_SESSION
    resend = machine.session_observed(not_yet, SessionState.IDLE, at(12), timing)
    assert resend.terminate_intent_at is None and machine.next_step(resend) is Step.SEND_TERMINATE


def test_workgroup_updates_are_one_step_and_retried_when_refused() -> None:
    disable = Verdict(target=TargetRef.of_workgroup("etl-a", "disable:1"), policy="b", rule="disable_workgroup",
                      observed=5.0, limit=4.0, unit="usd", crossed_at=T0, decided_at=T0, action="disable_workgroup",
                      mode="enforce")
    escalation = machine.begin(disable, "e", T0)
    assert escalation.phase is Phase.DISABLE_PENDING and machine.next_step(escalation) is Step.SEND_DISABLE
    intended = machine.intend(escalation, Step.SEND_DISABLE, T0)
    assert not machine.nothing_sent(intended)
    failed = machine.send_failed(intended, Step.SEND_DISABLE, T0, TIMING)
    assert failed.intent_at is None and failed.next_step_at == at(1)
    done = machine.sent(intended, Step.SEND_DISABLE, at(1), TIMING)
    assert (done.phase, done.outcome) == (Phase.DONE, "disabled")
    dry = machine.begin(replace(disable, mode="dry-run"), "e", T0)
    assert (dry.phase, dry.outcome) == (Phase.DONE, "dry_run")


def test_a_restart_after_the_intent_looks_before_sending_again() -> None:
    escalation = machine.intend(machine.begin(verdict(), "e", T0), Step.SEND_STOP, T0)
    assert machine.next_step(escalation) is Step.VERIFY_CALCULATION
    took_effect = machine.calculation_observed(escalation, CalculationState.CANCELING, at(5), TIMING)
    assert took_effect.phase is Phase.STOP_REQUESTED and took_effect.stop_sent_at == at(5)
    assert took_effect.next_step_at == at(6)
    not_sent = machine.calculation_observed(escalation, CalculationState.RUNNING, T0 + TIMING.in_flight_window,
                                            TIMING)
    assert not_sent.phase is Phase.STOP_PENDING and machine.next_step(not_sent) is Step.SEND_STOP


def test_a_restart_after_a_terminate_intent_adopts_a_terminating_session() -> None:
    escalation = machine.intend(machine.begin(verdict("session", "terminate"), "e", T0), Step.SEND_TERMINATE, T0)
    assert machine.next_step(escalation) is Step.VERIFY_SESSION
    adopted = machine.session_observed(escalation, SessionState.TERMINATING, at(1), TIMING)
    assert adopted.phase is Phase.TERMINATE_REQUESTED and adopted.terminate_sent_at == at(1)


def test_the_grace_of_an_adopted_stop_counts_from_when_it_is_known_to_have_been_processed() -> None:
    # Not from the intent: the Stop may have reached AWS up to the in-flight window later, and a grace counted
    # from the intent would then end before the calculation had stop_grace to cancel.
    timing = Timing(stop_grace=timedelta(seconds=30), terminate_grace=timedelta(minutes=2),
                    in_flight_window=timedelta(seconds=12))
    escalation = machine.intend(machine.begin(verdict(), "e", T0), Step.SEND_STOP, T0)
    seen_early = machine.calculation_observed(escalation, CalculationState.CANCELING, at(3), timing)
    assert seen_early.stop_sent_at == at(3)
    assert machine.calculation_observed(seen_early, CalculationState.CANCELING, at(32.9), timing).phase \
        is Phase.STOP_REQUESTED, "29.9 s after it was seen processed: still within stop_grace"
    assert machine.calculation_observed(seen_early, CalculationState.CANCELING, at(33), timing).phase \
        is Phase.TERMINATE_PENDING
    # Seen only after a long outage: it landed within the in-flight window, so the grace ran out long ago.
    seen_late = machine.calculation_observed(escalation, CalculationState.CANCELING, at(600), timing)
    assert seen_late.stop_sent_at == at(12) and seen_late.next_step_at == at(600)
    assert machine.calculation_observed(seen_late, CalculationState.CANCELING, at(600), timing).phase \
        is Phase.TERMINATE_PENDING


def test_unknown_states_are_never_acted_upon() -> None:
    escalation = machine.sent(machine.begin(verdict(), "e", T0), Step.SEND_STOP, T0, TIMING)
    looked = machine.calculation_observed(escalation, None, at(31), TIMING)
    # Looked at again later and later: as long again as since the Stop, at most retry_backoff_max.
    assert looked.phase is Phase.STOP_REQUESTED and looked.next_step_at == at(62)
    assert machine.calculation_observed(escalation, None, at(1), TIMING).next_step_at == at(2)
    assert machine.calculation_observed(escalation, None, at(900), TIMING).next_step_at == at(1500)


def test_a_vanished_target_settles() -> None:
    escalation = machine.sent(machine.begin(verdict(), "e", T0), Step.SEND_STOP, T0, TIMING)
    assert machine.calculation_observed(escalation, None, at(1), TIMING, found=False).outcome == "gone"
