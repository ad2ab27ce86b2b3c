"""The CloudTrail record of one call (pure): member names lowered by the model, code hidden, whole seconds."""

from __future__ import annotations

import pytest

from athena_spark_emulator.cloudtrail import HIDDEN, ApiCall, cloudtrail_event, event_time, lowered
from athena_spark_emulator.identity import Identity
from athena_spark_emulator.model import load_athena_model

MODEL = load_athena_model()


def call(operation: str, request: dict[str, object], response: dict[str, object]) -> ApiCall:
    return ApiCall(operation, request, response, Identity("123456789012", "eu-west-1"), "AKIAEXAMPLE",
                   1_767_225_605.999, "req-1", "boto3/1", "10.0.0.7")


@pytest.mark.parametrize(("stamp", "text"), [
    (1_767_225_600.0, "2026-01-01T00:00:00Z"),
    (1_767_225_605.999, "2026-01-01T00:00:05Z"),  # cut, not rounded
    (1_767_225_659.5, "2026-01-01T00:00:59Z"),
])
def test_event_time_is_the_whole_second(stamp: float, text: str) -> None:
    assert event_time(stamp) == text


def test_member_names_are_lowered_and_map_keys_kept() -> None:
    shape = MODEL.operation_model("StartSession").input_shape
    request = {"WorkGroup": "etl", "Tags": [{"Key": "Team", "Value": "X"}],
               "EngineConfiguration": {"MaxConcurrentDpus": 4, "SparkProperties": {"Spark.Key": "v"},
                                       "Classifications": [{"Name": "spark", "Properties": {"A.B": "1"}}]},
               "FutureMember": {"Nested": [{"Inner": 1}]}}
    assert lowered(request, shape) == {
        "workGroup": "etl", "tags": [{"key": "Team", "value": "X"}],
        "engineConfiguration": {"maxConcurrentDpus": 4, "sparkProperties": {"Spark.Key": "v"},
                                "classifications": [{"name": "spark", "properties": {"A.B": "1"}}]},
        "futureMember": {"nested": [{"inner": 1}]},  # unknown to the model: every key is a member name
    }


def test_the_calculation_code_is_hidden() -> None:
    event = cloudtrail_event(call("StartCalculationExecution", {
        "SessionId": "s-1", "CodeBlock": "print('secret')", "CalculationConfiguration": {"CodeBlock": "x"}},
        {"CalculationExecutionId": "c-1", "State": "QUEUED"}),
        MODEL.operation_model("StartCalculationExecution"), envelope_id="e-1", event_id="t-1")
    detail = event["detail"]
    assert detail["requestParameters"] == {"sessionId": "s-1", "codeBlock": HIDDEN, "calculationConfiguration": HIDDEN}
    assert detail["responseElements"] == {"calculationExecutionId": "c-1", "state": "QUEUED"}
    assert "secret" not in str(event)


def test_the_envelope_and_detail() -> None:
    event = cloudtrail_event(call("TagResource", {"ResourceARN": "arn:x", "Tags": []}, {}),
                             MODEL.operation_model("TagResource"), envelope_id="e-1", event_id="t-1")
    assert event == {
        "version": "0", "id": "e-1", "detail-type": "AWS API Call via CloudTrail", "source": "aws.athena",
        "account": "123456789012", "time": "2026-01-01T00:00:05Z", "region": "eu-west-1", "resources": [],
        "detail": {
            "eventVersion": "1.09",
            "userIdentity": {"type": "IAMUser", "principalId": Identity("123456789012", "eu-west-1").user_id,
                             "arn": "arn:aws:iam::123456789012:user/athena-emulator", "accountId": "123456789012",
                             "accessKeyId": "AKIAEXAMPLE", "userName": "athena-emulator"},
            "eventTime": "2026-01-01T00:00:05Z", "eventSource": "athena.amazonaws.com", "eventName": "TagResource",
            "awsRegion": "eu-west-1", "sourceIPAddress": "10.0.0.7", "userAgent": "boto3/1",
            "requestParameters": {"resourceARN": "arn:x", "tags": []}, "responseElements": None,
            "requestID": "req-1", "eventID": "t-1", "readOnly": False, "eventType": "AwsApiCall",
            "managementEvent": True, "recipientAccountId": "123456789012", "eventCategory": "Management"},
    }
