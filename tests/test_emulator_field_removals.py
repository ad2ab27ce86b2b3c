"""Answers with members missing: dotted paths, applied to each list item, optionally for one resource."""

from __future__ import annotations

from typing import Any

import pytest
from aiobotocore.config import AioConfig

from athena_spark_emulator import ControlError, Emulator, ManualClock
from athena_spark_emulator.testing import EmulatorHandle
from tests.virtual_fixtures import _test_client_session  # one session (and model loader) for the tests' clients

ENGINE = {"CoordinatorDpuSize": 1, "MaxConcurrentDpus": 4, "DefaultExecutorDpuSize": 1}


@pytest.fixture
def athena(manual_emulator: EmulatorHandle) -> Any:
    # Shapes are not checked: some removals take out members the model requires (which is the point).
    return manual_emulator.boto3_client(check_shapes=False)


def session(athena: Any) -> str:
    session_id: str = athena.start_session(WorkGroup="spark", EngineConfiguration=ENGINE,
                                           Description="# sim: start=0s")["SessionId"]
    return session_id


def calculations(athena: Any, session_id: str, count: int) -> list[str]:
    return [athena.start_calculation_execution(SessionId=session_id, CodeBlock="# sim: runtime=5s")[
        "CalculationExecutionId"] for _ in range(count)]


def test_members_removed_from_every_list_item_and_from_get(manual_emulator: EmulatorHandle, athena: Any) -> None:
    session_id = session(athena)
    first, second = calculations(athena, session_id, 2)
    rule = manual_emulator.remove_fields("ListCalculationExecutions",
                                         ["Status.SubmissionDateTime", "CalculationExecutionId"])
    assert rule == {"id": "removal-1", "operation": "ListCalculationExecutions", "session_id": None,
                    "calculation_id": None, "workgroup": None,
                    "fields": ["Status.SubmissionDateTime", "CalculationExecutionId"]}
    manual_emulator.remove_fields("GetCalculationExecution", ["Status.SubmissionDateTime"])
    items = athena.list_calculation_executions(SessionId=session_id)["Calculations"]
    assert len(items) == 2
    for item in items:
        assert "CalculationExecutionId" not in item
        assert "SubmissionDateTime" not in item["Status"] and item["Status"]["State"] in ("RUNNING", "QUEUED")
    status = athena.get_calculation_execution(CalculationExecutionId=first)["Status"]
    assert "SubmissionDateTime" not in status and status["State"] == "RUNNING"
    # other operations answer in full
    assert "SubmissionDateTime" in athena.get_calculation_execution_status(CalculationExecutionId=second)["Status"]


def test_one_session_loses_its_id_in_list_sessions(manual_emulator: EmulatorHandle, athena: Any) -> None:
    target, other = session(athena), session(athena)
    manual_emulator.remove_fields("ListSessions", ["SessionId"], session_id=target)
    items = athena.list_sessions(WorkGroup="spark")["Sessions"]
    assert [item.get("SessionId") for item in items] == [other, None]  # newest first: target is older
    assert items[1]["Status"]["State"] == "IDLE"


def test_one_calculation_loses_its_status_in_list_calculations(manual_emulator: EmulatorHandle,
                                                               athena: Any) -> None:
    session_id = session(athena)
    first, second = calculations(athena, session_id, 2)
    manual_emulator.remove_fields("ListCalculationExecutions", ["Status"], calculation_id=second)
    items = {item["CalculationExecutionId"]: item
             for item in athena.list_calculation_executions(SessionId=session_id)["Calculations"]}
    assert "Status" not in items[second] and "Status" in items[first]


def test_removal_never_changes_the_stored_state(manual_emulator: EmulatorHandle, athena: Any) -> None:
    session_id = session(athena)
    rule = manual_emulator.remove_fields("GetSession", ["EngineConfiguration.CoordinatorDpuSize", "Statistics"],
                                         session_id=session_id)
    answer = athena.get_session(SessionId=session_id)
    assert "CoordinatorDpuSize" not in answer["EngineConfiguration"] and "Statistics" not in answer
    assert answer["EngineConfiguration"]["MaxConcurrentDpus"] == 4
    assert manual_emulator.clear_field_removals(rule["id"]) == []
    answer = athena.get_session(SessionId=session_id)
    assert answer["EngineConfiguration"]["CoordinatorDpuSize"] == 1 and "Statistics" in answer


def test_errors_are_not_edited_and_reset_clears(manual_emulator: EmulatorHandle, athena: Any) -> None:
    manual_emulator.remove_fields("GetSession", ["Message"])
    with pytest.raises(Exception, match="Session nope is not found"):
        athena.get_session(SessionId="nope")
    manual_emulator.reset()
    assert manual_emulator.faults()["removals"] == []


@pytest.mark.parametrize(("operation", "fields", "problem"), [
    ("ListSesions", ["SessionId"], "unknown operation"),
    ("ListSessions", [], "fields must be a non-empty list"),
    ("ListSessions", ["Status..State"], "fields must be a non-empty list"),
])
def test_bad_removals_are_refused(manual_emulator: EmulatorHandle, operation: str, fields: list[str],
                                  problem: str) -> None:
    with pytest.raises(ControlError, match=problem):
        manual_emulator.remove_fields(operation, fields)
    assert manual_emulator.faults()["removals"] == []


async def test_python_api_on_the_backend(emulator_clock: ManualClock) -> None:
    async with Emulator(clock=emulator_clock, workgroups=("spark",)) as emu, _test_client_session().create_client(
        "athena", endpoint_url=emu.endpoint_url, region_name="us-east-1", aws_access_key_id="a",
        aws_secret_access_key="b", config=AioConfig(retries={"total_max_attempts": 1}),
    ) as athena:
        await athena.start_session(WorkGroup="spark", EngineConfiguration=ENGINE)
        emu.backend.remove_fields("ListSessions", ["Status.StartDateTime"])
        (item,) = (await athena.list_sessions(WorkGroup="spark"))["Sessions"]
        assert "StartDateTime" not in item["Status"] and item["Status"]["State"] == "CREATING"
        with pytest.raises(ValueError, match="operation is required"):
            emu.backend.install("removals", {"fields": ["SessionId"]})
