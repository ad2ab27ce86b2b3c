"""Injected errors for one session, calculation, workgroup or operation, through boto3 over HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError

from athena_spark_emulator import ControlError, Emulator, ManualClock
from athena_spark_emulator.testing import EmulatorHandle
from tests.virtual_fixtures import _test_client_session  # one session (and model loader) for the tests' clients

ENGINE = {"CoordinatorDpuSize": 1, "MaxConcurrentDpus": 4, "DefaultExecutorDpuSize": 1}


@pytest.fixture
def athena(manual_emulator: EmulatorHandle) -> Any:
    return manual_emulator.boto3_client()


def session(athena: Any, workgroup: str = "spark") -> str:
    session_id: str = athena.start_session(WorkGroup=workgroup, EngineConfiguration=ENGINE,
                                           Description="# sim: start=0s")["SessionId"]
    return session_id


def calculation(athena: Any, session_id: str) -> str:
    calculation_id: str = athena.start_calculation_execution(
        SessionId=session_id, CodeBlock="# sim: runtime=60s")["CalculationExecutionId"]
    return calculation_id


def post_json(url: str, body: Any) -> tuple[int, Any]:
    """POST a raw JSON body (the ControlClient drops what it would not send); return status and answer."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def error_of(call: Any, **kwargs: Any) -> tuple[str, int, str] | None:
    """``(code, HTTP status, message)`` of a failed call, None when it succeeded."""
    try:
        call(**kwargs)
    except ClientError as error:
        return (error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"],
                error.response["Error"]["Message"])
    return None


def test_errors_for_one_session_spare_the_others(manual_emulator: EmulatorHandle, athena: Any) -> None:
    target, other = session(athena), session(athena)
    rule = manual_emulator.add_error("ResourceNotFoundException", session_id=target)
    assert rule == {"id": "error-1", "operation": None, "session_id": target, "calculation_id": None,
                    "workgroup": None, "error": "ResourceNotFoundException", "message": None, "count": None}
    assert error_of(athena.get_session, SessionId=target) == (
        "ResourceNotFoundException", 400, f"Session {target} is not found.")
    assert error_of(athena.get_session_status, SessionId=target) is not None
    assert error_of(athena.get_session, SessionId=other) is None
    assert error_of(athena.list_sessions, WorkGroup="spark") is None  # not about that session
    calls = manual_emulator.calls(operation="GetSession")
    assert [(c["status"], c["error"]) for c in calls] == [(400, "ResourceNotFoundException"), (200, None)]


def test_a_calculation_call_matches_its_session_and_its_workgroup(manual_emulator: EmulatorHandle,
                                                                  athena: Any) -> None:
    session_id = session(athena)
    calculation_id = calculation(athena, session_id)
    manual_emulator.add_error("AccessDeniedException", workgroup="spark", operation="GetCalculationExecution")
    code, status, message = error_of(athena.get_calculation_execution,
                                     CalculationExecutionId=calculation_id) or ("", 0, "")
    assert (code, status) == ("AccessDeniedException", 400)
    assert message == ("User: arn:aws:iam::123456789012:user/athena-emulator is not authorized to perform: "
                       "athena:GetCalculationExecution on resource: "
                       "arn:aws:athena:us-east-1:123456789012:workgroup/spark because no identity-based policy "
                       "allows the athena:GetCalculationExecution action")
    assert error_of(athena.get_calculation_execution_status, CalculationExecutionId=calculation_id) is None
    manual_emulator.clear_errors()
    manual_emulator.add_error("InvalidRequestException", session_id=session_id, message="no such luck")
    assert error_of(athena.stop_calculation_execution, CalculationExecutionId=calculation_id) == (
        "InvalidRequestException", 400, "no such luck")
    # the stop never reached the service: the calculation still runs
    manual_emulator.clear_errors()
    assert athena.get_calculation_execution_status(
        CalculationExecutionId=calculation_id)["Status"]["State"] == "RUNNING"


def test_a_calculation_rule_answers_for_that_calculation_only(manual_emulator: EmulatorHandle,
                                                             athena: Any) -> None:
    session_id = session(athena)
    first, second = calculation(athena, session_id), calculation(athena, session_id)
    manual_emulator.add_error("ResourceNotFoundException", calculation_id=first)
    code, _, message = error_of(athena.get_calculation_execution_status,
                                CalculationExecutionId=first) or ("", 0, "")
    assert (code, message) == ("ResourceNotFoundException", f"Calculation {first} is not found.")
    assert error_of(athena.get_calculation_execution_status, CalculationExecutionId=second) is None
    assert error_of(athena.get_session, SessionId=session_id) is None


def test_workgroup_rule_hits_start_session_and_list_sessions(manual_emulator: EmulatorHandle,
                                                             athena: Any) -> None:
    athena.create_work_group(Name="other", Configuration={
        "EngineVersion": {"SelectedEngineVersion": "PySpark engine version 3"}})
    manual_emulator.add_error("AccessDeniedException", workgroup="spark")
    assert (error_of(athena.list_sessions, WorkGroup="spark") or ())[:2] == ("AccessDeniedException", 400)
    assert error_of(athena.start_session, WorkGroup="spark", EngineConfiguration=ENGINE) is not None
    assert error_of(athena.list_sessions, WorkGroup="other") is None
    session(athena, "other")
    assert manual_emulator.state()["sessions"]["total"] == 1  # the refused StartSession created nothing


def test_count_answers_the_next_n_matching_calls_then_the_rule_is_gone(manual_emulator: EmulatorHandle,
                                                                       athena: Any) -> None:
    session_id = session(athena)
    manual_emulator.add_error("InternalServerException", operation="GetSession", session_id=session_id, count=2)
    assert error_of(athena.get_session_status, SessionId=session_id) is None  # other operation: not counted
    codes = [error_of(athena.get_session, SessionId=session_id) for _ in range(3)]
    assert [c[:2] if c else None for c in codes] == [("InternalServerException", 500)] * 2 + [None]
    assert manual_emulator.faults()["errors"] == []


def test_remaining_count_is_visible_and_rules_answer_in_installation_order(manual_emulator: EmulatorHandle,
                                                                           athena: Any) -> None:
    session_id = session(athena)
    manual_emulator.add_error("ResourceNotFoundException", session_id=session_id, count=3)
    second = manual_emulator.add_error("AccessDeniedException", operation="GetSession")
    assert (error_of(athena.get_session, SessionId=session_id) or ("",))[0] == "ResourceNotFoundException"
    assert [r["count"] for r in manual_emulator.faults()["errors"]] == [2, None]
    assert manual_emulator.clear_errors("error-1") == [second]
    assert (error_of(athena.get_session, SessionId=session_id) or ("",))[0] == "AccessDeniedException"


def test_reset_and_bare_delete_clear_error_rules(manual_emulator: EmulatorHandle, athena: Any) -> None:
    session_id = session(athena)
    manual_emulator.add_error("ResourceNotFoundException", session_id=session_id)
    manual_emulator.clear_faults()
    assert error_of(athena.get_session, SessionId=session_id) is None
    manual_emulator.add_error("ResourceNotFoundException", operation="ListWorkGroups")
    manual_emulator.reset()
    assert manual_emulator.faults()["errors"] == []
    assert error_of(athena.list_work_groups) is None


@pytest.mark.parametrize(("body", "problem"), [
    ({"error": "ResourceNotFoundException"}, "at least one of"),
    ({"error": "NoSuchThing", "operation": "GetSession"}, "error must be one of"),
    ({"error": "AccessDeniedException", "operation": "GetSesion"}, "unknown operation 'GetSesion'"),
    ({"error": "AccessDeniedException", "session_id": 5}, "session_id must be a non-empty string"),
    ({"error": "AccessDeniedException", "workgroup": "w", "count": 0}, "count must be a whole number"),
    ({"error": "AccessDeniedException", "workgroup": "w", "when": "now"}, "unknown keys: when"),
])
def test_bad_error_rules_are_refused(manual_emulator: EmulatorHandle, body: dict[str, Any], problem: str) -> None:
    status, answer = post_json(f"{manual_emulator.control_url}/faults/errors", body)
    assert status == 400 and problem in answer["error"]
    assert manual_emulator.faults()["errors"] == []
    with pytest.raises(ControlError, match="HTTP 404"):
        manual_emulator.clear_errors("error-99")


async def test_python_api_on_the_backend(emulator_clock: ManualClock) -> None:
    async with Emulator(clock=emulator_clock, workgroups=("spark",)) as emu, _test_client_session().create_client(
        "athena", endpoint_url=emu.endpoint_url, region_name="us-east-1", aws_access_key_id="a",
        aws_secret_access_key="b", config=AioConfig(retries={"total_max_attempts": 1}),
    ) as athena:
        session_id = (await athena.start_session(WorkGroup="spark", EngineConfiguration=ENGINE))["SessionId"]
        rule = emu.backend.add_error("ResourceNotFoundException", session_id=session_id, count=1)
        with pytest.raises(ClientError) as caught:
            await athena.get_session(SessionId=session_id)
        assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
        assert caught.value.response["Error"]["Message"] == f"Session {session_id} is not found."
        assert (await athena.get_session(SessionId=session_id))["SessionId"] == session_id
        assert rule["id"] == "error-1" and emu.backend.injections.to_json()["errors"] == []
        with pytest.raises(ValueError, match="error must be one of"):
            emu.backend.add_error("Nope", workgroup="spark")
