"""Mixed-engine scenarios in virtual time: one PySpark engine version 3 and one Apache Spark version 3.5
(Spark Connect) workgroup, the real daemon and the emulator on one ManualClock, a real aiobotocore client over
HTTP; evidence from the emulator's audit log (exact virtual instants) and the daemon's metrics.

Instants follow from ``tests/daemon_fixtures.py`` (discovery every 250 ms) and ``CROSSING_MARGIN`` (a check lands
10 ms after the crossing it waits for). Workloads start at T0 + 100 ms, between two sweeps.
"""

from __future__ import annotations

from typing import Any

from supervisor.core.scheduling import CROSSING_MARGIN
from tests.virtual_fixtures import VirtualWorld, ms, times

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
    async with world.daemon():  # etl-limits: calculation max_runtime 1500ms on etl-*
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
