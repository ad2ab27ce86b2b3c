"""Reported-state overrides: Get*/List* answers show the injected state (even one no SDK knows), the
lifecycle underneath carries on."""

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
    # Shapes are not checked: HIBERNATING is not in the model's enum (which is the point).
    return manual_emulator.boto3_client(check_shapes=False)


def session(athena: Any) -> str:
    session_id: str = athena.start_session(WorkGroup="spark", EngineConfiguration=ENGINE,
                                           Description="# sim: start=0s terminate_latency=2s")["SessionId"]
    return session_id


def listed_states(athena: Any, **filters: Any) -> dict[str, str]:
    return {s["SessionId"]: s["Status"]["State"]
            for s in athena.list_sessions(WorkGroup="spark", **filters)["Sessions"]}


def test_a_session_reports_an_unknown_state(manual_emulator: EmulatorHandle, athena: Any,
                                            emulator_clock: ManualClock) -> None:
    target, other = session(athena), session(athena)
    rule = manual_emulator.override_state("HIBERNATING", session_id=target)
    assert rule == {"id": "state-1", "session_id": target, "calculation_id": None, "state": "HIBERNATING"}
    assert athena.get_session(SessionId=target)["Status"]["State"] == "HIBERNATING"
    assert athena.get_session_status(SessionId=target)["Status"]["State"] == "HIBERNATING"
    assert listed_states(athena) == {target: "HIBERNATING", other: "IDLE"}
    assert listed_states(athena, StateFilter="IDLE") == {other: "IDLE"}  # filters see what is reported
    assert manual_emulator.state()["sessions"]["by_state"] == {"IDLE": 2}  # the control API shows the truth
    # The lifecycle goes on underneath: TerminateSession acts and answers the real state.
    assert athena.terminate_session(SessionId=target)["State"] == "TERMINATING"
    emulator_clock.advance(2)
    assert athena.get_session(SessionId=target)["Status"]["State"] == "HIBERNATING"
    manual_emulator.clear_state_overrides(rule["id"])
    assert athena.get_session(SessionId=target)["Status"]["State"] == "TERMINATED"


def test_a_calculation_reports_a_state_that_contradicts_its_lifecycle(manual_emulator: EmulatorHandle,
                                                                      athena: Any,
                                                                      emulator_clock: ManualClock) -> None:
    session_id = session(athena)
    calculation_id = athena.start_calculation_execution(
        SessionId=session_id, CodeBlock="# sim: runtime=5s")["CalculationExecutionId"]
    emulator_clock.advance(10)  # COMPLETED by now
    manual_emulator.override_state("RUNNING", calculation_id=calculation_id)
    full = athena.get_calculation_execution(CalculationExecutionId=calculation_id)
    assert full["Status"]["State"] == "RUNNING"
    assert "CompletionDateTime" in full["Status"] and "ResultS3Uri" in full["Result"]  # the rest is true
    assert athena.get_calculation_execution_status(
        CalculationExecutionId=calculation_id)["Status"]["State"] == "RUNNING"
    listed = athena.list_calculation_executions(SessionId=session_id)["Calculations"]
    assert [c["Status"]["State"] for c in listed] == ["RUNNING"]
    assert athena.list_calculation_executions(SessionId=session_id, StateFilter="COMPLETED")["Calculations"] == []
    assert athena.stop_calculation_execution(CalculationExecutionId=calculation_id)["State"] == "COMPLETED"
    assert athena.get_session(SessionId=session_id)["Status"]["State"] == "IDLE"  # sessions are not affected


def test_a_new_override_for_the_same_resource_replaces_it(manual_emulator: EmulatorHandle, athena: Any) -> None:
    session_id = session(athena)
    manual_emulator.override_state("HIBERNATING", session_id=session_id)
    manual_emulator.override_state("DEGRADED", session_id=session_id)
    assert [r["state"] for r in manual_emulator.faults()["states"]] == ["DEGRADED"]
    assert athena.get_session(SessionId=session_id)["Status"]["State"] == "DEGRADED"
    manual_emulator.reset()
    assert manual_emulator.faults()["states"] == []


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"state": "X"}, "exactly one of session_id, calculation_id"),
    ({"state": "X", "session_id": "a", "calculation_id": "b"}, "exactly one of"),
    ({"state": "", "session_id": "a"}, "state must be a non-empty string"),
])
def test_bad_overrides_are_refused(manual_emulator: EmulatorHandle, kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ControlError, match=problem):
        manual_emulator.override_state(**kwargs)
    assert manual_emulator.faults()["states"] == []


async def test_python_api_on_the_backend(emulator_clock: ManualClock) -> None:
    async with Emulator(clock=emulator_clock, workgroups=("spark",)) as emu, _test_client_session().create_client(
        "athena", endpoint_url=emu.endpoint_url, region_name="us-east-1", aws_access_key_id="a",
        aws_secret_access_key="b", config=AioConfig(retries={"total_max_attempts": 1}),
    ) as athena:
        session_id = (await athena.start_session(WorkGroup="spark", EngineConfiguration=ENGINE))["SessionId"]
        emu.backend.override_state("HIBERNATING", session_id=session_id)
        assert (await athena.get_session_status(SessionId=session_id))["Status"]["State"] == "HIBERNATING"
        assert emu.backend.clear_state_overrides() == []
        assert (await athena.get_session_status(SessionId=session_id))["Status"]["State"] == "CREATING"
