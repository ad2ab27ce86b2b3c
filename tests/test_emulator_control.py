"""The control API: audit log, faults, reset, state and populate."""

from __future__ import annotations

import random
import re
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from athena_spark_emulator import ControlError, Faults, ManualClock
from athena_spark_emulator.audit import iso_millis
from athena_spark_emulator.testing import EmulatorFactory, EmulatorHandle

ISO_MILLIS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def athena(manual_emulator: EmulatorHandle) -> Any:
    return manual_emulator.boto3_client(parameter_validation=False)


def code_of(call: Any, **kwargs: Any) -> str:
    try:
        call(**kwargs)
    except ClientError as error:
        return str(error.response["Error"]["Code"])
    return "OK"


def test_calls_audit_log(manual_emulator: EmulatorHandle, athena: Any, emulator_clock: ManualClock) -> None:
    athena.list_work_groups()
    emulator_clock.advance(10)
    marker = iso_millis(emulator_clock.now())
    assert code_of(athena.get_session, SessionId="nope") == "ResourceNotFoundException"
    athena.list_sessions(WorkGroup="spark", MaxResults=5)
    calls = manual_emulator.calls()
    assert [c["operation"] for c in calls] == ["ListWorkGroups", "GetSession", "ListSessions"]
    assert all(ISO_MILLIS.match(c["time"]) for c in calls)
    assert calls[1] == {"time": marker, "account": "123456789012", "region": "us-east-1", "operation": "GetSession",
                        "request": {"SessionId": "nope"}, "status": 400, "error": "ResourceNotFoundException",
                        "via": "api"}
    assert calls[2]["request"] == {"WorkGroup": "spark", "MaxResults": 5} and calls[2]["error"] is None
    assert [c["operation"] for c in manual_emulator.calls(since=marker)] == ["GetSession", "ListSessions"]
    assert len(manual_emulator.calls(operation="ListSessions")) == 1
    with pytest.raises(ControlError, match="since"):
        manual_emulator.calls(since="yesterday")


def test_throttle_per_operation_and_global(manual_emulator: EmulatorHandle, athena: Any,
                                           emulator_clock: ManualClock) -> None:
    manual_emulator.set_faults("ListSessions", throttle_tps=2, burst=2)
    results = [code_of(athena.list_sessions, WorkGroup="spark") for _ in range(3)]
    assert results == ["OK", "OK", "TooManyRequestsException"]
    assert code_of(athena.list_work_groups) == "OK"  # other operations are not affected
    emulator_clock.advance(0.5)
    assert code_of(athena.list_sessions, WorkGroup="spark") == "OK"
    assert code_of(athena.list_sessions, WorkGroup="spark") == "TooManyRequestsException"
    manual_emulator.clear_faults("ListSessions")
    manual_emulator.set_faults(throttle_tps=1, burst=1)
    assert [code_of(athena.list_work_groups) for _ in range(2)] == ["OK", "TooManyRequestsException"]
    manual_emulator.populate({"workgroups": [{"name": "bypass"}]})  # control API is never throttled
    manual_emulator.clear_faults()
    assert [code_of(athena.list_work_groups) for _ in range(3)] == ["OK"] * 3
    assert manual_emulator.state()["faults"] == {"global": None, "operations": {}, "errors": [], "states": [],
                                                 "removals": []}


def test_error_rate_is_seeded_and_spares_the_control_api(emulator_factory: EmulatorFactory) -> None:
    handle = emulator_factory(faults=Faults(random.Random(7)))
    athena = handle.boto3_client()
    handle.set_faults(error_rate=0.5)
    results = [code_of(athena.list_work_groups) for _ in range(40)]
    assert 10 <= results.count("InternalServerException") <= 30
    assert set(results) == {"OK", "InternalServerException"}
    assert handle.state()["faults"]["global"]["error_rate"] == 0.5
    assert {c["status"] for c in handle.calls() if c["error"]} == {500}


def test_latency_fault(emulator: EmulatorHandle) -> None:
    athena = emulator.boto3_client()
    athena.get_work_group(WorkGroup="primary")
    emulator.set_faults("GetWorkGroup", latency="150ms")
    begin = time.perf_counter()
    athena.get_work_group(WorkGroup="primary")
    assert time.perf_counter() - begin >= 0.15
    begin = time.perf_counter()
    athena.list_work_groups()
    assert time.perf_counter() - begin < 0.15


def test_bad_fault_specs(manual_emulator: EmulatorHandle) -> None:
    with pytest.raises(ControlError, match="error_rate"):
        manual_emulator.set_faults(error_rate=2)
    with pytest.raises(ControlError, match="latency"):
        manual_emulator.set_faults(latency="soon")
    with pytest.raises(ControlError, match="throttle_tps"):
        manual_emulator.set_faults(throttle_tps=-1)


def test_throttle_tps_option_survives_reset(emulator_factory: EmulatorFactory) -> None:
    handle = emulator_factory(clock=ManualClock(), throttle_tps=1)
    athena = handle.boto3_client()
    assert [code_of(athena.list_work_groups) for _ in range(2)] == ["OK", "TooManyRequestsException"]
    handle.reset()
    assert handle.state()["faults"]["global"]["throttle_tps"] == 1


def test_reset_and_state(manual_emulator: EmulatorHandle, athena: Any) -> None:
    athena.create_work_group(Name="extra")
    session_id = athena.start_session(WorkGroup="spark", EngineConfiguration={})["SessionId"]
    athena.start_calculation_execution(SessionId=session_id, CodeBlock="1")
    state = manual_emulator.state()
    assert state["sessions"] == {"total": 1, "by_state": {"CREATING": 1}}
    assert state["calculations"] == {"total": 1, "by_state": {"QUEUED": 1}}
    assert {w["name"] for w in state["workgroups"]} == {"primary", "spark", "extra"}
    assert state["calls"] == 3
    manual_emulator.set_faults(error_rate=1)
    manual_emulator.reset()
    state = manual_emulator.state()
    assert {w["name"] for w in state["workgroups"]} == {"primary", "spark"}
    assert state["sessions"]["total"] == 0 and state["calls"] == 0
    assert state["faults"]["global"] is None
    assert code_of(athena.get_session, SessionId=session_id) == "ResourceNotFoundException"


def test_populate_places_work_in_the_past(manual_emulator: EmulatorHandle, athena: Any,
                                         emulator_clock: ManualClock) -> None:
    manual_emulator.set_faults(throttle_tps=1, burst=1)
    created = manual_emulator.populate({
        "workgroups": [{"name": "etl-a", "tags": {"team": "x"}}],
        "sessions": [{"workgroup": "etl-a", "count": 3, "description": "# sim: start=1s",
                      "started_ago": "30s",
                      "calculations": [{"code": "# sim: runtime=600s dpus=4 on_stop=ignore",
                                        "submitted_ago": "25s"},
                                       {"code": "# sim: runtime=1s", "submitted_ago": 20, "count": 2}]}],
    })
    assert created["workgroups"] == ["etl-a"]
    assert len(created["sessions"]) == 3
    first = created["sessions"][0]
    assert first["WorkGroup"] == "etl-a" and len(first["CalculationExecutionIds"]) == 3
    manual_emulator.clear_faults()
    calc = athena.get_calculation_execution(CalculationExecutionId=first["CalculationExecutionIds"][0])
    assert calc["Status"]["State"] == "RUNNING"
    assert calc["Statistics"]["DpuExecutionInMillis"] == 4 * 25_000
    session = athena.get_session(SessionId=first["SessionId"])
    assert session["Status"]["State"] == "BUSY"
    assert session["Statistics"]["DpuExecutionInMillis"] == 30_000 + 4 * 25_000
    assert athena.list_tags_for_resource(
        ResourceARN="arn:aws:athena:us-east-1:123456789012:workgroup/etl-a")["Tags"] == [
        {"Key": "team", "Value": "x"}]
    assert manual_emulator.calls(operation="ListTagsForResource")  # audit log holds API calls only
    assert all(c["operation"] != "populate" for c in manual_emulator.calls())
    emulator_clock.advance(575)
    assert athena.get_calculation_execution_status(
        CalculationExecutionId=first["CalculationExecutionIds"][0])["Status"]["State"] == "COMPLETED"


@pytest.mark.parametrize(("spec", "path"), [
    ({"sessions": [{"workgroup": "nope"}]}, "sessions[0].workgroup"),
    ({"sessions": [{"workgroup": "spark", "started_ago": "yesterday"}]}, "sessions[0].started_ago"),
    ({"sessions": [{"workgroup": "spark", "calculations": [{"code": "# sim: dpus=x"}]}]},
     "sessions[0].calculations[0].code"),
    ({"workgroups": [{"name": "w", "engine": "hive"}]}, "workgroups[0].engine"),
    ({"sessoins": []}, "populate"),
])
def test_populate_rejects_bad_specs(manual_emulator: EmulatorHandle, spec: dict[str, Any], path: str) -> None:
    with pytest.raises(ControlError) as caught:
        manual_emulator.populate(spec)
    assert path in str(caught.value) and "HTTP 400" in str(caught.value)
