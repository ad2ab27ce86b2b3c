"""Mixed-engine scenarios in virtual time: one PySpark engine version 3 and one Apache Spark version 3.5
(Spark Connect) workgroup, the real daemon and the emulator on one ManualClock, a real aiobotocore client over
HTTP; evidence from the emulator's audit log (exact virtual instants) and the daemon's metrics.

Instants follow from ``tests/daemon_fixtures.py`` (discovery every 250 ms) and ``CROSSING_MARGIN`` (a check lands
10 ms after the crossing it waits for). Workloads start at T0 + 100 ms, between two sweeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from supervisor.core.scheduling import CROSSING_MARGIN
from supervisor.storage.sqlite import SqliteStorage
from tests.virtual_fixtures import VirtualWorld, ms, times

# Sweeps every second rather than every 250 ms (tests/daemon_fixtures.py) wherever the instants asserted follow
# from crossings and timers, not from when a sweep lists something (targets start 100 ms after the daemon, so the
# sweep at 1 s lists them before their crossings): a quarter of the listing requests.
SWEEPS = "1s"

SPARK_CONNECT = "Apache Spark version 3.5"
OFFSET = ms(0.1)
CALCULATION_CALLS = ("ListCalculationExecutions", "GetCalculationExecution", "GetCalculationExecutionStatus",
                     "StopCalculationExecution", "StartCalculationExecution")


async def create_connect_workgroup(world: VirtualWorld, name: str) -> None:
    await world.athena.create_work_group(
        Name=name, Configuration={"EngineVersion": {"SelectedEngineVersion": SPARK_CONNECT}})


async def start_connect_session(world: VirtualWorld, workgroup: str, description: str) -> str:
    response = await world.athena.start_session(
        WorkGroup=workgroup, Description=description,
        EngineConfiguration={"Classifications": [{"Name": "spark-defaults", "Properties": {}}]})
    return str(response["SessionId"])


def calculation_calls_about(world: VirtualWorld, session_ids: set[str]) -> list[Any]:
    return [call for operation in CALCULATION_CALLS for call in world.calls(operation, status=None)
            if call.request.get("SessionId") in session_ids]


async def test_calculations_are_never_listed_for_spark_connect_sessions(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    await create_connect_workgroup(world, "etl-connect")
    async with world.daemon(discovery_interval=SWEEPS):  # etl-limits: calculation max_runtime 1500ms on etl-*
        await world.vt.run_for(OFFSET)
        connect = await start_connect_session(world, "etl-connect", "# sim: start=0s busy=forever dpus=4")
        session_id = await world.start_session("etl-a")
        calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s")
        submitted = world.now
        await world.vt.run_for(5)
        assert world.calls("ListSessions", WorkGroup="etl-connect", StateFilter="BUSY")
        assert await world.session_state(connect) == "BUSY"
        assert calculation_calls_about(world, {connect}) == []
        # The PySpark 3 workgroup is supervised as before.
        assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [
            submitted + ms(1.5) + CROSSING_MARGIN]
        assert world.calls("ListCalculationExecutions", SessionId=session_id)
    assert not world.calls("TerminateSession")


MIXED_POLICIES = [
    {"name": "connect-runaway", "workgroups": ["etl-connect"], "session": {"max_busy": "2s"}},
    {"name": "etl-limits", "workgroups": ["etl-*"], "calculation": {"max_runtime": "1500ms"}},
]


async def test_mixed_engines_max_busy_stops_a_runaway_spark_connect_job_and_calculations_are_limited_as_before(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    await create_connect_workgroup(world, "etl-connect")
    async with world.daemon(discovery_interval=SWEEPS, policies=MIXED_POLICIES):
        await world.vt.run_for(OFFSET)
        runaway = await start_connect_session(world, "etl-connect", "# sim: start=0s busy=forever dpus=8")
        busy_since = world.now
        steady = await start_connect_session(world, "etl-connect", "# sim: start=0s busy=1s every=3s dpus=2")
        session_id = await world.start_session("etl-a")
        calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s")
        submitted = world.now
        status = (await world.athena.get_session_status(SessionId=runaway))["Status"]
        assert status["State"] == "BUSY" and status["LastModifiedDateTime"] == busy_since
        await world.vt.run_for(10)
        crossing = busy_since + ms(2)
        # Terminated at its exact crossing (plus the check margin), after one fresh look at it.
        assert times(world.calls("TerminateSession", SessionId=runaway)) == [crossing + CROSSING_MARGIN]
        assert crossing + CROSSING_MARGIN in times(world.calls("GetSessionStatus", SessionId=runaway))
        assert await world.session_state(runaway) == "TERMINATED"
        assert world.metric("athena_supervisor_violations_total", policy="connect-runaway", rule="max_busy") == 1
        assert world.metric("athena_supervisor_enforcement_lag_seconds_sum") == pytest.approx(
            2 * CROSSING_MARGIN.total_seconds())
        # Jobs of 1 s every 3 s never keep the other session busy 2 s without a break.
        assert await world.session_state(steady) in ("BUSY", "IDLE")
        assert not world.calls("TerminateSession", SessionId=steady)
        # No calculation call is ever made about a Spark Connect session.
        assert calculation_calls_about(world, {runaway, steady}) == []
        # The PySpark 3 workgroup's calculation limit is enforced as before.
        assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [
            submitted + ms(1.5) + CROSSING_MARGIN]
    assert len(world.calls("TerminateSession")) == 1
    # The journal's decisions name the engine.
    storage = SqliteStorage(world.journal_path)
    try:
        decisions = {entry.target_id: entry.detail for entry in storage.journal.recent_events(50)
                     if entry.event == "decision"}
    finally:
        storage.close_now()
    assert decisions[runaway]["engine"] == SPARK_CONNECT and decisions[runaway]["rule"] == "max_busy"
    assert decisions[calculation_id]["engine"] == "PySpark engine version 3"


@pytest.fixture
def warnings_logged() -> Iterator[None]:
    """Warnings reach ``capture_logs`` even after another test configured logging at a higher level, to a stream
    since closed (``setup-dynamodb``'s): structlog's defaults meanwhile."""
    saved = structlog.get_config()
    structlog.reset_defaults()
    try:
        yield
    finally:
        structlog.configure(**saved)


@pytest.mark.usefixtures("warnings_logged")
async def test_limits_the_engine_makes_inapplicable_are_reported_once_per_workgroup(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    await create_connect_workgroup(world, "etl-connect")
    budgets = [{"name": "etl-budget", "workgroups": ["etl-*"], "period": "daily", "limit_usd": 100,
                "thresholds": [{"at_percent": 100, "action": "stop_calculations"}]}]
    with capture_logs() as logs:
        # Sweeps every minute (not every 5 s): the limits are reported when the workgroups are re-read, every
        # minute, which a sweep does when due; 40 requests instead of 254, and a late re-read now fails the count.
        async with world.daemon(budgets=budgets, discovery_interval="1m"):  # etl-limits: calculation limits
            await world.vt.run_for(125)  # the workgroups are re-read every minute: three times
            assert len(world.calls("ListWorkGroups")) == 3
            for kind in ("calculation_limits", "budget_stop_calculations"):
                assert world.metric("athena_supervisor_inapplicable_limits", workgroup="etl-connect", kind=kind) == 1
                assert world.metric("athena_supervisor_inapplicable_limits", workgroup="etl-a", kind=kind) == 0
    calculation = [entry for entry in logs if entry["event"] == "policy.calculation_limits_inapplicable"]
    assert [(e["workgroup"], e["engine"], e["policy"]) for e in calculation] == [
        ("etl-connect", SPARK_CONNECT, "etl-limits")]
    budget = [entry for entry in logs if entry["event"] == "budget.stop_calculations_inapplicable"]
    assert [(e["workgroup"], e["budgets"]) for e in budget] == [("etl-connect", ["etl-budget"])]


async def test_max_busy_also_terminates_a_pyspark_3_session_busy_with_calculations(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    policies = [{"name": "busy", "workgroups": ["etl-*"], "session": {"max_busy": "3s"}}]
    async with world.daemon(discovery_interval=SWEEPS, policies=policies):
        await world.vt.run_for(OFFSET)
        session_id = await world.start_session("etl-a")
        await world.start_calculation(session_id, "# sim: runtime=2s")
        busy_since = world.now
        await world.vt.run_for(1)
        await world.start_calculation(session_id, "# sim: runtime=10s")  # queued: BUSY without a break
        await world.vt.run_for(5)
        assert times(world.calls("TerminateSession", SessionId=session_id)) == [busy_since + ms(3) + CROSSING_MARGIN]
        assert world.metric("athena_supervisor_violations_total", policy="busy", rule="max_busy") == 1


async def test_session_cost_limits_and_budgets_work_for_spark_connect_sessions(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    await create_connect_workgroup(world, "etl-connect")
    await create_connect_workgroup(world, "etl-connect-b")
    # 1 coordinator DPU + a 20-DPU job from StartSession: 21 DPU-ms per ms. $0.005 is 51,429 DPU-ms: 2.449 s in,
    # after four passes have listed the session (a limit crossed seconds in, not ten: the passes every 500 ms the
    # budget needs are ~20 requests a second).
    policies = [{"name": "connect-cost", "workgroups": ["etl-connect"], "session": {"max_cost_usd": 0.005}}]
    # The budget counts the other workgroup's session from the accounting pass that first lists it (at 500 ms, a
    # pass each discovery_interval): 0.001 USD (10,286 DPU-ms) is first seen by the next pass, 500 ms after that
    # start (10,500 DPU-ms), 900 ms after the session started, which terminates it at once. Passes every 500 ms,
    # not 250 ms: half the sweeps (626 -> 330 requests) and one pass late would now miss the 1 s bound.
    budgets = [{"name": "connect-budget", "workgroups": ["etl-connect-b"], "period": "rolling:1h", "limit_usd": 0.001,
                "thresholds": [{"at_percent": 100, "action": "terminate_sessions"}]}]
    async with world.daemon(policies=policies, budgets=budgets, discovery_interval="500ms"):
        await world.vt.run_for(OFFSET)
        costly = await start_connect_session(world, "etl-connect", "# sim: start=0s busy=forever dpus=20")
        started = world.now
        budgeted = await start_connect_session(world, "etl-connect-b", "# sim: start=0s busy=forever dpus=20")
        await world.vt.run_for(5)  # five passes after the crossing
        (terminated,) = times(world.calls("TerminateSession", SessionId=costly))
        crossing = started + ms(51_428.6 / 21 / 1000)
        assert crossing <= terminated <= crossing + ms(1)  # interpolated from the accrual rate
        assert world.metric("athena_supervisor_violations_total", policy="connect-cost", rule="max_cost_usd") == 1
        (budget_terminated,) = times(world.calls("TerminateSession", SessionId=budgeted))
        assert budget_terminated <= started + ms(1)
        assert world.metric("athena_supervisor_actions_total", action="terminate", policy="connect-budget",
                            outcome="sent") == 1
        assert calculation_calls_about(world, {costly, budgeted}) == []
