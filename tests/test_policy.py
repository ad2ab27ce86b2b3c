"""Pure policy evaluation: no I/O, ``now`` passed in."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from supervisor.core.model import (
    CalculationSnapshot,
    CalculationState,
    SessionSnapshot,
    SessionState,
    WorkgroupSnapshot,
)
from supervisor.core.policy import (
    CalculationRules,
    Policy,
    SessionRules,
    accrual_rate,
    evaluate_calculation,
    evaluate_session,
    match_policy,
    workgroup_in_scope,
)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PRICE = 0.35


def calc(state: CalculationState | None = CalculationState.RUNNING, *, submitted: datetime = T0,
         dpu_millis: int | None = None, observed: datetime | None = None) -> CalculationSnapshot:
    return CalculationSnapshot(
        calculation_id="c1", session_id="s1", workgroup="etl-a", state=state, raw_state=str(state),
        submitted_at=submitted, completed_at=None, observed_at=observed or submitted, dpu_millis=dpu_millis,
    )


def session(state: SessionState | None = SessionState.IDLE, *, started: datetime = T0, idle_since: datetime | None = T0,
            dpu_millis: int | None = None, observed: datetime | None = None, description: str = "") -> SessionSnapshot:
    return SessionSnapshot(
        session_id="s1", workgroup="etl-a", state=state, raw_state=str(state), description=description,
        started_at=started, idle_since=idle_since, ended_at=None, last_modified_at=None,
        observed_at=observed or started, dpu_millis=dpu_millis,
    )


def policy(calculation: CalculationRules | None = None, session_rules: SessionRules | None = None,
           **kwargs: object) -> Policy:
    defaults: dict[str, object] = {"name": "p", "workgroups": ("etl-*",), "action": "stop", "mode": "enforce"}
    defaults.update(kwargs)
    return Policy(calculation=calculation, session=session_rules, **defaults)  # type: ignore[arg-type]


RUNTIME = policy(CalculationRules(max_runtime=timedelta(minutes=30)))


def test_runtime_below_the_limit_schedules_the_exact_crossing() -> None:
    evaluation = evaluate_calculation(calc(), RUNTIME, T0 + timedelta(minutes=10), dpu_hour_usd=PRICE)
    assert evaluation.verdict is None
    assert evaluation.next_check_at == T0 + timedelta(minutes=30)


def test_runtime_at_the_crossing_is_a_verdict_with_the_exact_crossing_instant() -> None:
    now = T0 + timedelta(minutes=30, milliseconds=3)
    verdict = evaluate_calculation(calc(), RUNTIME, now, dpu_hour_usd=PRICE).verdict
    assert verdict is not None
    assert (verdict.rule, verdict.unit, verdict.limit) == ("max_runtime", "seconds", 1800.0)
    assert verdict.observed == pytest.approx(1800.003)
    assert verdict.crossed_at == T0 + timedelta(minutes=30)
    assert (verdict.action, verdict.mode, verdict.policy) == ("stop", "enforce", "p")
    assert str(verdict.target.key) == "calculation:c1"


@pytest.mark.parametrize(
    "state", [CalculationState.COMPLETED, CalculationState.CANCELED, CalculationState.FAILED, None]
)
def test_ended_and_unknown_calculations_are_never_judged(state: CalculationState | None) -> None:
    evaluation = evaluate_calculation(calc(state), RUNTIME, T0 + timedelta(hours=5), dpu_hour_usd=PRICE)
    assert evaluation.verdict is None and evaluation.next_check_at is None


def test_max_queued_applies_only_while_waiting() -> None:
    queued_policy = policy(CalculationRules(max_queued=timedelta(minutes=5)))
    later = T0 + timedelta(minutes=6)
    verdict = evaluate_calculation(calc(CalculationState.QUEUED), queued_policy, later, dpu_hour_usd=PRICE).verdict
    assert verdict is not None and verdict.rule == "max_queued"
    running = evaluate_calculation(calc(CalculationState.RUNNING), queued_policy, later, dpu_hour_usd=PRICE)
    assert running.verdict is None and running.next_check_at is None


def test_dpu_limit_without_statistics_asks_for_them() -> None:
    dpu_policy = policy(CalculationRules(max_dpu_hours=4))
    evaluation = evaluate_calculation(calc(), dpu_policy, T0 + timedelta(minutes=1), dpu_hour_usd=PRICE)
    assert evaluation.needs_statistics and evaluation.verdict is None


def test_dpu_crossing_is_predicted_from_the_accrual_rate() -> None:
    # 8 DPUs for 15 minutes = 2 DPU-hours; 4 DPU-hours are reached 15 minutes later.
    observed = T0 + timedelta(minutes=15)
    snapshot = calc(dpu_millis=8 * 15 * 60_000, observed=observed)
    evaluation = evaluate_calculation(snapshot, policy(CalculationRules(max_dpu_hours=4)), observed, dpu_hour_usd=PRICE)
    assert evaluation.verdict is None
    assert evaluation.next_check_at == T0 + timedelta(minutes=30)


def test_dpu_crossing_found_late_is_interpolated_back() -> None:
    observed = T0 + timedelta(minutes=40)
    snapshot = calc(dpu_millis=8 * 40 * 60_000, observed=observed)
    previous = (8 * 20 * 60_000, T0 + timedelta(minutes=20))
    verdict = evaluate_calculation(snapshot, policy(CalculationRules(max_dpu_hours=4)), observed, dpu_hour_usd=PRICE,
                                   previous_statistics=previous).verdict
    assert verdict is not None
    assert verdict.rule == "max_dpu_hours" and verdict.unit == "dpu_hours"
    assert verdict.observed == pytest.approx(8 * 40 / 60)
    assert verdict.crossed_at == T0 + timedelta(minutes=30)


def test_cost_limit_uses_the_price() -> None:
    # 1 USD at 0.35 USD/DPU-hour = 2.857 DPU-hours; at 10 DPUs that is 17.14 minutes.
    observed = T0 + timedelta(minutes=20)
    snapshot = calc(dpu_millis=10 * 20 * 60_000, observed=observed)
    verdict = evaluate_calculation(snapshot, policy(CalculationRules(max_cost_usd=1.0)), observed,
                                   dpu_hour_usd=PRICE).verdict
    assert verdict is not None and verdict.rule == "max_cost_usd" and verdict.unit == "usd"
    assert verdict.observed == pytest.approx(10 * 20 / 60 * PRICE)
    assert verdict.crossed_at == pytest.approx(T0 + timedelta(minutes=1 / PRICE / 10 * 60), abs=timedelta(seconds=1))


def test_a_stale_prediction_already_behind_us_asks_for_a_fresh_look() -> None:
    observed = T0 + timedelta(minutes=15)
    snapshot = calc(dpu_millis=8 * 15 * 60_000, observed=observed)
    evaluation = evaluate_calculation(snapshot, policy(CalculationRules(max_dpu_hours=4)),
                                      T0 + timedelta(minutes=31), dpu_hour_usd=PRICE)
    assert evaluation.verdict is None and evaluation.needs_statistics


def test_earliest_crossed_rule_wins() -> None:
    both = policy(CalculationRules(max_runtime=timedelta(minutes=30), max_dpu_hours=1))
    observed = T0 + timedelta(minutes=31)
    snapshot = calc(dpu_millis=8 * 31 * 60_000, observed=observed)  # 1 DPU-hour reached at 7.5 minutes
    verdict = evaluate_calculation(snapshot, both, observed, dpu_hour_usd=PRICE).verdict
    assert verdict is not None and verdict.rule == "max_dpu_hours"


def test_notify_before_warns_inside_the_window_and_wakes_at_its_start() -> None:
    warned = policy(CalculationRules(max_runtime=timedelta(minutes=30)), notify_before=timedelta(minutes=5))
    early = evaluate_calculation(calc(), warned, T0 + timedelta(minutes=10), dpu_hour_usd=PRICE)
    assert early.warnings == () and early.next_check_at == T0 + timedelta(minutes=25)
    inside = evaluate_calculation(calc(), warned, T0 + timedelta(minutes=26), dpu_hour_usd=PRICE)
    assert [w.rule for w in inside.warnings] == ["max_runtime"]
    assert inside.warnings[0].predicted_at == T0 + timedelta(minutes=30)
    assert inside.next_check_at == T0 + timedelta(minutes=30)


def test_idle_limit_counts_from_idle_since_only_while_idle() -> None:
    idle_policy = policy(session_rules=SessionRules(max_idle=timedelta(minutes=15)))
    later = T0 + timedelta(minutes=16)
    verdict = evaluate_session(session(idle_since=T0 + timedelta(minutes=1)), idle_policy, later,
                               dpu_hour_usd=PRICE).verdict
    assert verdict is not None and verdict.rule == "max_idle" and verdict.action == "terminate"
    assert verdict.crossed_at == T0 + timedelta(minutes=16)
    busy = evaluate_session(session(SessionState.BUSY), idle_policy, later, dpu_hour_usd=PRICE)
    assert busy.verdict is None


def test_busy_limit_counts_from_the_last_state_change_only_while_busy() -> None:
    busy_policy = policy(session_rules=SessionRules(max_busy=timedelta(minutes=10)))
    busy_since = T0 + timedelta(minutes=3)
    busy = replace(session(SessionState.BUSY, idle_since=None), last_modified_at=busy_since)
    below = evaluate_session(busy, busy_policy, T0 + timedelta(minutes=5), dpu_hour_usd=PRICE)
    assert below.verdict is None and below.next_check_at == busy_since + timedelta(minutes=10)
    verdict = evaluate_session(busy, busy_policy, T0 + timedelta(minutes=13, seconds=1), dpu_hour_usd=PRICE).verdict
    assert verdict is not None and (verdict.rule, verdict.action) == ("max_busy", "terminate")
    assert verdict.crossed_at == busy_since + timedelta(minutes=10) and verdict.observed == pytest.approx(601)
    idle = replace(session(SessionState.IDLE), last_modified_at=busy_since)
    assert evaluate_session(idle, busy_policy, T0 + timedelta(hours=1), dpu_hour_usd=PRICE).next_check_at is None
    unknown = evaluate_session(replace(busy, last_modified_at=None), busy_policy, T0, dpu_hour_usd=PRICE)
    assert unknown.missing == ("LastModifiedDateTime",) and unknown.verdict is None


def test_session_limits_terminate_unless_the_policy_only_notifies() -> None:
    age = SessionRules(max_age=timedelta(hours=8))
    now = T0 + timedelta(hours=9)
    assert evaluate_session(session(SessionState.BUSY), policy(session_rules=age), now,
                            dpu_hour_usd=PRICE).verdict.action == "terminate"  # type: ignore[union-attr]
    notify = policy(session_rules=age, action="notify")
    assert evaluate_session(session(SessionState.BUSY), notify, now,
                            dpu_hour_usd=PRICE).verdict.action == "notify"  # type: ignore[union-attr]


@pytest.mark.parametrize("state", [SessionState.TERMINATING, SessionState.TERMINATED, SessionState.FAILED, None])
def test_ending_ended_and_unknown_sessions_are_never_judged(state: SessionState | None) -> None:
    evaluation = evaluate_session(session(state), policy(session_rules=SessionRules(max_age=timedelta(seconds=1))),
                                  T0 + timedelta(hours=1), dpu_hour_usd=PRICE)
    assert evaluation.verdict is None


def test_first_matching_policy_in_order_wins() -> None:
    first = policy(name="first", workgroups=("etl-*",))
    second = policy(name="second", workgroups=("*",))
    assert match_policy([first, second], "etl-a") is first
    assert match_policy([first, second], "adhoc") is second
    assert match_policy([first], "adhoc") is None


def test_workgroup_scope_reasons() -> None:
    spark = WorkgroupSnapshot("etl-a", enabled=True, is_spark=True)
    assert workgroup_in_scope(spark, ["etl-*"], "x/exempt") is None
    assert workgroup_in_scope(spark, ["adhoc"], "x/exempt") == "out_of_scope"
    assert workgroup_in_scope(WorkgroupSnapshot("etl-a", True, False), ["*"], "x/exempt") == "not_spark"
    exempt = WorkgroupSnapshot("etl-a", True, True, {"x/exempt": "True"})
    assert workgroup_in_scope(exempt, ["*"], "x/exempt") == "exempt_workgroup"


def test_accrual_rate_prefers_two_observations() -> None:
    assert accrual_rate(2000, T0 + timedelta(seconds=2), (1000, T0 + timedelta(seconds=1)), T0) == pytest.approx(1.0)
    assert accrual_rate(3000, T0 + timedelta(seconds=1), None, T0) == pytest.approx(3.0)
    assert accrual_rate(0, T0, None, None) is None
