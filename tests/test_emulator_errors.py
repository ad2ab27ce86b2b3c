"""Every error type, with botocore's client-side validation off so the emulator's own validation answers."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError

from athena_spark_emulator import ManualClock
from athena_spark_emulator.testing import EmulatorHandle


@pytest.fixture
def raw(manual_emulator: EmulatorHandle) -> Any:
    return manual_emulator.boto3_client(parameter_validation=False)


@pytest.fixture
def session_id(raw: Any) -> str:
    sid: str = raw.start_session(WorkGroup="spark", EngineConfiguration={},
                                 Description="# sim: start=0s terminate_latency=0s")["SessionId"]
    return sid


def error_of(call: Any, **kwargs: Any) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    response = caught.value.response
    return (response["Error"]["Code"], response["Error"]["Message"],
            response["ResponseMetadata"]["HTTPStatusCode"])


@pytest.mark.parametrize(("operation", "kwargs", "member"), [
    ("get_session", {}, "SessionId"),
    ("start_session", {"WorkGroup": "spark"}, "EngineConfiguration"),
    ("list_sessions", {"WorkGroup": "spark", "MaxResults": 0}, "MaxResults"),
    ("list_sessions", {"WorkGroup": "spark", "MaxResults": 101}, "MaxResults"),
    ("list_sessions", {"WorkGroup": "spark", "MaxResults": "ten"}, "MaxResults"),
    ("list_sessions", {"WorkGroup": "spark", "StateFilter": "SLEEPING"}, "StateFilter"),
    ("list_sessions", {"WorkGroup": "bad name!"}, "WorkGroup"),
    ("start_session", {"WorkGroup": "spark", "EngineConfiguration": {"MaxConcurrentDpus": 1}},
     "EngineConfiguration.MaxConcurrentDpus"),
    ("start_session", {"WorkGroup": "spark", "EngineConfiguration": {}, "SessionIdleTimeoutInMinutes": 481},
     "SessionIdleTimeoutInMinutes"),
    ("start_session", {"WorkGroup": "spark", "EngineConfiguration": {}, "Description": ""}, "Description"),
    ("start_session", {"WorkGroup": "spark", "EngineConfiguration": {}, "ClientRequestToken": "short"},
     "ClientRequestToken"),
    ("get_calculation_execution", {"CalculationExecutionId": "x" * 37}, "CalculationExecutionId"),
    ("list_work_groups", {"MaxResults": 51}, "MaxResults"),
    ("create_work_group", {"Name": "wg", "Tags": [{"Key": "", "Value": "v"}]}, "Tags.1.Key"),
])
def test_model_constraints_are_invalid_request_naming_the_member(raw: Any, operation: str,
                                                                 kwargs: dict[str, Any], member: str) -> None:
    code, message, status = error_of(getattr(raw, operation), **kwargs)
    assert (code, status) == ("InvalidRequestException", 400)
    assert f"'{member}'" in message


def test_code_block_longer_than_68000_chars(raw: Any, session_id: str) -> None:
    code, message, _ = error_of(raw.start_calculation_execution, SessionId=session_id, CodeBlock="x" * 68001)
    assert code == "InvalidRequestException" and "'CodeBlock'" in message
    assert raw.start_calculation_execution(SessionId=session_id, CodeBlock="x" * 68000)["State"]


@pytest.mark.parametrize(("code_block", "key"), [
    ("# sim: runtime=fast", "runtime"),
    ("# sim: dpus=0", "dpus"),
    ("# sim: outcome=maybe", "outcome"),
    ("# sim: on_stop=later", "on_stop"),
    ("# sim: stop_latency=-1s", "stop_latency"),
    ("# sim: colour=blue", "colour"),
    ("# sim: runtime", "runtime"),
])
def test_malformed_calculation_pragma_names_the_key(raw: Any, session_id: str, code_block: str, key: str
                                                    ) -> None:
    code, message, _ = error_of(raw.start_calculation_execution, SessionId=session_id, CodeBlock=code_block)
    assert code == "InvalidRequestException" and repr(key) in message


@pytest.mark.parametrize(("description", "key"), [
    ("# sim: start=soon", "start"),
    ("# sim: on_terminate=maybe", "on_terminate"),
    ("# sim: runtime=1s", "runtime"),
    ("# sim: created_for=never", "created_for"),
    ("# sim: degraded_after=forever", "degraded_after"),
    ("# sim: fail_after=-5s", "fail_after"),
])
def test_malformed_session_pragma_names_the_key(raw: Any, description: str, key: str) -> None:
    code, message, _ = error_of(raw.start_session, WorkGroup="spark", EngineConfiguration={},
                                Description=description)
    assert code == "InvalidRequestException" and repr(key) in message


def test_semantic_invalid_requests(raw: Any, session_id: str, emulator_clock: ManualClock) -> None:
    code, message, _ = error_of(raw.start_session, WorkGroup="primary", EngineConfiguration={})
    assert code == "InvalidRequestException" and "Spark" in message
    raw.update_work_group(WorkGroup="spark", State="DISABLED")
    code, message, _ = error_of(raw.start_session, WorkGroup="spark", EngineConfiguration={})
    assert code == "InvalidRequestException" and "disabled" in message
    raw.terminate_session(SessionId=session_id)
    code, message, _ = error_of(raw.start_calculation_execution, SessionId=session_id, CodeBlock="1")
    assert code == "InvalidRequestException" and "TERMINATED" in message
    code, message, _ = error_of(raw.list_sessions, WorkGroup="spark", NextToken="%%%")
    assert code == "InvalidRequestException" and "NextToken" in message
    code, message, _ = error_of(raw.start_query_execution, QueryString="SELECT 1")
    assert code == "InvalidRequestException" and "not implemented" in message


@pytest.mark.parametrize(("operation", "kwargs"), [
    ("get_session", {"SessionId": "nope"}),
    ("get_session_status", {"SessionId": "nope"}),
    ("terminate_session", {"SessionId": "nope"}),
    ("list_executors", {"SessionId": "nope"}),
    ("get_session_endpoint", {"SessionId": "nope"}),
    ("list_calculation_executions", {"SessionId": "nope"}),
    ("start_calculation_execution", {"SessionId": "nope", "CodeBlock": "1"}),
    ("get_calculation_execution", {"CalculationExecutionId": "nope"}),
    ("get_calculation_execution_status", {"CalculationExecutionId": "nope"}),
    ("get_calculation_execution_code", {"CalculationExecutionId": "nope"}),
    ("stop_calculation_execution", {"CalculationExecutionId": "nope"}),
    ("list_sessions", {"WorkGroup": "nope"}),
    ("start_session", {"WorkGroup": "nope", "EngineConfiguration": {}}),
    ("list_tags_for_resource", {"ResourceARN": "arn:aws:athena:us-east-1:123456789012:workgroup/nope"}),
])
def test_unknown_ids_are_resource_not_found(raw: Any, operation: str, kwargs: dict[str, Any]) -> None:
    assert error_of(getattr(raw, operation), **kwargs)[::2] == ("ResourceNotFoundException", 400)


def test_throttled_and_injected_faults(manual_emulator: EmulatorHandle, raw: Any) -> None:
    manual_emulator.set_faults("ListWorkGroups", throttle_tps=1, burst=1)
    raw.list_work_groups()
    assert error_of(raw.list_work_groups)[::2] == ("TooManyRequestsException", 400)
    manual_emulator.set_faults("GetWorkGroup", error_rate=1.0)
    assert error_of(raw.get_work_group, WorkGroup="primary")[::2] == ("InternalServerException", 500)
    errors = [call["error"] for call in manual_emulator.calls()]
    assert errors == [None, "TooManyRequestsException", "InternalServerException"]


def post(url: str, body: bytes, target: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/x-amz-json-1.1"}
    if target is not None:
        headers["X-Amz-Target"] = target
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize(("body", "target", "error"), [
    (b"{}", "AmazonAthena.NoSuchThing", "UnknownOperationException"),
    (b"{}", "DynamoDB_20120810.GetItem", "UnknownOperationException"),
    (b"{}", None, "UnknownOperationException"),
    (b"{not json", "AmazonAthena.ListWorkGroups", "SerializationException"),
    (b"[1, 2]", "AmazonAthena.ListWorkGroups", "SerializationException"),
])
def test_bad_targets_and_bodies(manual_emulator: EmulatorHandle, body: bytes, target: str | None,
                                error: str) -> None:
    status, payload = post(manual_emulator.endpoint_url + "/", body, target)
    assert (status, payload["__type"]) == (400, error)
    assert payload["Message"]
    assert manual_emulator.calls()[-1]["error"] == error
