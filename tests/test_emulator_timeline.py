"""The lazy lifecycle: plans and views derived from facts, without a server."""

from __future__ import annotations

from dataclasses import replace

import pytest

from athena_spark_emulator.pragma import parse_calculation_pragma, parse_session_pragma
from athena_spark_emulator.records import CalculationRecord, SessionRecord
from athena_spark_emulator.timeline import calculation_view, plan_session, session_view

T0 = 1_000.0


def session(description: str = "# sim: start=1s", *, idle: int = 1, terminate_at: float | None = None
            ) -> SessionRecord:
    return SessionRecord(id="s", seq=1, workgroup="wg", description=description,
                         engine_configuration={"CoordinatorDpuSize": 1}, request={},
                         idle_timeout_minutes=idle,
                         pragma=parse_session_pragma(description), created_at=T0, tags={},
                         terminate_requested_at=terminate_at)


def calc(cid: str, submitted: float, code: str, stop: float | None = None) -> CalculationRecord:
    return CalculationRecord(id=cid, seq=int(submitted), session_id="s", description=None, code=code,
                             pragma=parse_calculation_pragma(code), submitted_at=submitted,
                             stop_requested_at=stop)


def states(rec: SessionRecord, calcs: list[CalculationRecord], t: float) -> tuple[str, list[str]]:
    plan = plan_session(rec, calcs)
    return (session_view(rec, calcs, plan, t).state,
            [calculation_view(c, plan.calculations[c.id], t).state for c in calcs])


def test_session_creating_then_idle_then_idle_timeout() -> None:
    rec = session()
    assert states(rec, [], T0 + 0.5)[0] == "CREATING"
    assert states(rec, [], T0 + 1)[0] == "IDLE"
    assert states(rec, [], T0 + 60.999)[0] == "IDLE"
    plan = plan_session(rec, [])
    view = session_view(rec, [], plan, T0 + 61)
    assert (view.state, view.end) == ("TERMINATED", T0 + 61)
    assert view.dpu_millis == 61_000  # coordinator DPU until the end, not after


def test_calculations_run_one_at_a_time_in_submission_order() -> None:
    rec = session()
    calcs = [calc("a", T0 + 2, "# sim: runtime=10s dpus=3"),
             calc("b", T0 + 3, "# sim: runtime=5s dpus=2"),
             calc("c", T0 + 4, "# sim: runtime=1s queue=20s")]
    plan = plan_session(rec, calcs)
    assert [plan.calculations[c].run_start for c in "abc"] == [T0 + 2, T0 + 12, T0 + 24]
    assert states(rec, calcs, T0 + 5) == ("BUSY", ["RUNNING", "QUEUED", "QUEUED"])
    assert states(rec, calcs, T0 + 13) == ("BUSY", ["COMPLETED", "RUNNING", "QUEUED"])
    assert states(rec, calcs, T0 + 25) == ("IDLE", ["COMPLETED", "COMPLETED", "COMPLETED"])
    view = calculation_view(calcs[1], plan.calculations["b"], T0 + 14.5)
    assert (view.dpu_millis, view.progress) == (5_000, "50%")
    s_view = session_view(rec, calcs, plan, T0 + 30)
    assert s_view.idle_since == T0 + 25
    assert s_view.dpu_millis == 30_000 + 3 * 10_000 + 2 * 5_000 + 2 * 1_000


def test_calculation_submitted_while_creating_waits_for_ready() -> None:
    rec = session("# sim: start=5s")
    calcs = [calc("a", T0 + 1, "# sim: runtime=1s")]
    assert states(rec, calcs, T0 + 2) == ("CREATING", ["QUEUED"])
    assert plan_session(rec, calcs).calculations["a"].run_start == T0 + 5


def test_stop_honored_while_running_cancels_after_latency() -> None:
    rec = session()
    calcs = [calc("a", T0 + 2, "# sim: runtime=100s stop_latency=2s", stop=T0 + 10)]
    assert states(rec, calcs, T0 + 11)[1] == ["CANCELING"]
    assert states(rec, calcs, T0 + 12)[1] == ["CANCELED"]
    plan = plan_session(rec, calcs)
    assert calculation_view(calcs[0], plan.calculations["a"], T0 + 50).dpu_millis == 2 * 10_000


def test_stop_while_queued_never_runs_and_frees_the_runner() -> None:
    rec = session()
    calcs = [calc("a", T0 + 2, "# sim: runtime=10s"),
             calc("b", T0 + 3, "# sim: runtime=10s stop_latency=0s", stop=T0 + 4),
             calc("c", T0 + 5, "# sim: runtime=1s")]
    plan = plan_session(rec, calcs)
    assert plan.calculations["b"].run_start is None
    assert plan.calculations["c"].run_start == T0 + 12
    assert states(rec, calcs, T0 + 4) == ("BUSY", ["RUNNING", "CANCELED", "QUEUED"])


def test_ignored_stop_keeps_running_as_canceling_until_its_outcome() -> None:
    rec = session()
    calcs = [calc("a", T0 + 2, "# sim: runtime=10s on_stop=ignore outcome=failed", stop=T0 + 3)]
    assert states(rec, calcs, T0 + 11)[1] == ["CANCELING"]
    assert states(rec, calcs, T0 + 12)[1] == ["FAILED"]


def test_terminate_fails_pending_calculations_when_the_session_ends() -> None:
    calcs = [calc("a", T0 + 2, "# sim: runtime=100s dpus=4"), calc("b", T0 + 3, "# sim: runtime=1s")]
    rec = session("# sim: start=1s terminate_latency=3s", terminate_at=T0 + 10)
    assert states(rec, calcs, T0 + 11) == ("TERMINATING", ["RUNNING", "QUEUED"])
    assert states(rec, calcs, T0 + 13) == ("TERMINATED", ["FAILED", "FAILED"])
    plan = plan_session(rec, calcs)
    assert calculation_view(calcs[0], plan.calculations["a"], T0 + 99).dpu_millis == 4 * 11_000
    assert session_view(rec, calcs, plan, T0 + 99).dpu_millis == 13_000 + 4 * 11_000


def test_stuck_terminate_never_ends_and_running_work_continues() -> None:
    calcs = [calc("a", T0 + 2, "# sim: runtime=20s")]
    rec = session("# sim: on_terminate=stuck", terminate_at=T0 + 5)
    assert states(rec, calcs, T0 + 10_000) == ("TERMINATING", ["COMPLETED"])


def test_idle_timeout_counts_only_idle_time() -> None:
    rec = session(idle=1)
    calcs = [calc("a", T0 + 50, "# sim: runtime=100s")]
    assert states(rec, calcs, T0 + 200) == ("IDLE", ["COMPLETED"])
    assert plan_session(rec, calcs).end_at == T0 + 150 + 60


@pytest.mark.parametrize("t", [T0 + 0.1, T0 + 5])
def test_views_never_go_backwards_when_facts_are_added_later(t: float) -> None:
    rec = session()
    before = states(rec, [], t)
    after = states(replace(rec, terminate_requested_at=t + 1), [], t)
    assert before == after


def test_created_for_keeps_the_session_created_and_its_calculations_queued() -> None:
    rec = session("# sim: start=1s created_for=5s")
    calcs = [calc("a", T0 + 2, "# sim: runtime=10s")]
    assert states(rec, calcs, T0 + 0.5) == ("CREATING", ["QUEUED"])
    assert states(rec, calcs, T0 + 3) == ("CREATED", ["QUEUED"])
    plan = plan_session(rec, calcs)
    assert session_view(rec, calcs, plan, T0 + 3).last_modified == T0 + 1
    assert plan.calculations["a"].run_start == T0 + 6
    assert states(rec, calcs, T0 + 7) == ("BUSY", ["RUNNING"])
    assert states(rec, calcs, T0 + 17) == ("IDLE", ["COMPLETED"])


def test_created_forever_never_runs_work_never_times_out_but_terminates() -> None:
    calcs = [calc("a", T0 + 2, "# sim: runtime=1s")]
    assert states(session("# sim: created_for=forever"), calcs, T0 + 86_400) == ("CREATED", ["QUEUED"])
    rec = session("# sim: created_for=forever terminate_latency=1s", terminate_at=T0 + 100)
    assert states(rec, calcs, T0 + 101) == ("TERMINATED", ["FAILED"])
    assert session_view(rec, calcs, plan_session(rec, calcs), T0 + 200).dpu_millis == 101_000


def test_degraded_keeps_running_its_work_accrues_and_never_times_out() -> None:
    rec = session("# sim: start=1s degraded_after=30s", idle=1)
    calcs = [calc("a", T0 + 2, "# sim: runtime=60s dpus=2")]
    assert states(rec, calcs, T0 + 29) == ("BUSY", ["RUNNING"])
    assert states(rec, calcs, T0 + 30) == ("DEGRADED", ["RUNNING"])
    assert states(rec, calcs, T0 + 62) == ("DEGRADED", ["COMPLETED"])
    plan = plan_session(rec, calcs)
    view = session_view(rec, calcs, plan, T0 + 10_000)
    assert (view.state, view.last_modified, view.end) == ("DEGRADED", T0 + 30, None)
    assert view.dpu_millis == 10_000_000 + 2 * 60_000
    terminated = session("# sim: start=1s degraded_after=30s terminate_latency=2s", terminate_at=T0 + 40)
    assert states(terminated, [], T0 + 41)[0] == "TERMINATING"
    assert states(terminated, [], T0 + 42)[0] == "TERMINATED"


def test_degraded_after_counts_from_start_session_but_not_before_created() -> None:
    assert states(session("# sim: start=5s degraded_after=1s"), [], T0 + 4)[0] == "CREATING"
    assert states(session("# sim: start=5s degraded_after=1s"), [], T0 + 5)[0] == "DEGRADED"
    # timed out while IDLE before it would degrade: TERMINATED as usual
    rec = session("# sim: start=1s degraded_after=120s", idle=1)
    assert states(rec, [], T0 + 61)[0] == "TERMINATED"


def test_fail_after_ends_the_session_failed_and_fails_its_pending_work() -> None:
    rec = session("# sim: start=1s fail_after=10s")
    calcs = [calc("a", T0 + 2, "# sim: runtime=60s dpus=3"), calc("b", T0 + 3, "# sim: runtime=1s"),
             calc("c", T0 + 4, "# sim: runtime=1s", stop=T0 + 5)]
    assert states(rec, calcs, T0 + 9) == ("BUSY", ["RUNNING", "QUEUED", "CANCELED"])
    assert states(rec, calcs, T0 + 10) == ("FAILED", ["FAILED", "FAILED", "CANCELED"])
    plan = plan_session(rec, calcs)
    view = session_view(rec, calcs, plan, T0 + 500)
    assert (view.end, view.reason) == (T0 + 10, "Session failed (simulated by the session pragma)")
    assert view.dpu_millis == 10_000 + 3 * 8_000  # nothing accrues after the failure
    assert plan.calculations["a"].reason == "Calculation failed because its session failed"
    assert plan.calculations["b"].run_start is None  # queued work never starts


def test_fail_after_wins_over_a_stuck_termination_and_loses_to_an_earlier_end() -> None:
    stuck = session("# sim: on_terminate=stuck fail_after=30s", terminate_at=T0 + 5)
    assert states(stuck, [], T0 + 29)[0] == "TERMINATING"
    assert states(stuck, [], T0 + 30)[0] == "FAILED"
    timed_out = session("# sim: start=1s fail_after=120s", idle=1)
    assert states(timed_out, [], T0 + 200)[0] == "TERMINATED"
    creating = session("# sim: start=10s fail_after=2s")
    assert states(creating, [], T0 + 2)[0] == "FAILED"
