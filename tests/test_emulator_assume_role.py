"""``sts:AssumeRole`` on the emulator: issued credentials, their account, role rules and expiry.

Real boto3 and aiobotocore STS/Athena clients over HTTP; every successful STS and Athena response is
checked against botocore's output shape.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError

from athena_spark_emulator import ManualClock
from athena_spark_emulator.shapecheck import check_output
from athena_spark_emulator.testing import EmulatorHandle
from tests.virtual_fixtures import _test_client_session  # one session (and model loader) for the tests' clients

ROLE_ACCOUNT = "333333333333"
ROLE = f"arn:aws:iam::{ROLE_ACCOUNT}:role/ops/athena-guard"
SPARK = {"EngineVersion": {"SelectedEngineVersion": "PySpark engine version 3"}}


OK = ("OK", 200, "")


def error_of(call: Any, **kwargs: Any) -> tuple[str, int, str]:
    """``(code, HTTP status, message)`` of the error a call answers, or :data:`OK`."""
    try:
        call(**kwargs)
    except ClientError as error:
        return (error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"],
                error.response["Error"]["Message"])
    return OK


@pytest.fixture
def sts(manual_emulator: EmulatorHandle) -> Any:
    return manual_emulator.boto3_client("sts")


def assume(sts: Any, **extra: Any) -> dict[str, Any]:
    credentials: dict[str, Any] = sts.assume_role(RoleArn=ROLE, RoleSessionName="guard", **extra)["Credentials"]
    return credentials


def test_assume_role_issues_temporary_credentials(manual_emulator: EmulatorHandle, sts: Any,
                                                  emulator_clock: ManualClock) -> None:
    answer = sts.assume_role(RoleArn=ROLE, RoleSessionName="guard", ExternalId="ext-1")
    credentials = answer["Credentials"]
    assert credentials["AccessKeyId"].startswith("ASIA") and len(credentials["AccessKeyId"]) == 20
    assert len(credentials["SecretAccessKey"]) == 40 and credentials["SessionToken"]
    assert credentials["Expiration"].timestamp() == emulator_clock.now() + 3600
    user = answer["AssumedRoleUser"]
    assert user["Arn"] == f"arn:aws:sts::{ROLE_ACCOUNT}:assumed-role/athena-guard/guard"
    assert user["AssumedRoleId"].startswith("AROA") and user["AssumedRoleId"].endswith(":guard")
    again = assume(sts, DurationSeconds=43200)
    assert again["AccessKeyId"] != credentials["AccessKeyId"]
    assert again["Expiration"].timestamp() == emulator_clock.now() + 43200
    (call, _) = manual_emulator.calls(operation="AssumeRole")
    assert call["request"] == {"Action": "AssumeRole", "Version": "2011-06-15", "RoleArn": ROLE,
                               "RoleSessionName": "guard", "ExternalId": "ext-1"}
    assert (call["account"], call["region"], call["status"]) == ("123456789012", "us-east-1", 200)


def test_calls_with_issued_credentials_land_in_the_role_account(manual_emulator: EmulatorHandle,
                                                                sts: Any) -> None:
    credentials = assume(sts)
    role = manual_emulator.boto3_client(credentials=credentials, region="eu-west-1")
    role.create_work_group(Name="etl", Configuration=SPARK)
    session_id = role.start_session(WorkGroup="etl", EngineConfiguration={})["SessionId"]
    same_account = manual_emulator.boto3_client(account=ROLE_ACCOUNT, region="eu-west-1")
    assert same_account.get_session(SessionId=session_id)["WorkGroup"] == "etl"
    assert error_of(manual_emulator.boto3_client().get_session, SessionId=session_id)[0] == "ResourceNotFoundException"
    assert manual_emulator.state(account=ROLE_ACCOUNT)["sessions"]["total"] == 1
    assert {(c["account"], c["region"]) for c in manual_emulator.calls(operation="StartSession")} == {
        (ROLE_ACCOUNT, "eu-west-1")}


def test_get_caller_identity_for_each_kind_of_credentials(manual_emulator: EmulatorHandle, sts: Any) -> None:
    default = sts.get_caller_identity()
    assert (default["Account"], default["Arn"]) == ("123456789012", "arn:aws:iam::123456789012:user/athena-emulator")
    assert default["UserId"].startswith("AIDA") and len(default["UserId"]) == 21
    by_key = manual_emulator.boto3_client("sts", account="111111111111").get_caller_identity()
    assert (by_key["Account"], by_key["Arn"]) == ("111111111111", "arn:aws:iam::111111111111:user/athena-emulator")
    assert by_key["UserId"] != default["UserId"]
    role = manual_emulator.boto3_client("sts", credentials=assume(sts)).get_caller_identity()
    assert role["Account"] == ROLE_ACCOUNT
    assert role["Arn"] == f"arn:aws:sts::{ROLE_ACCOUNT}:assumed-role/athena-guard/guard"
    assert role["UserId"].startswith("AROA") and role["UserId"].endswith(":guard")
    assert [c["account"] for c in manual_emulator.calls(operation="GetCallerIdentity")] == [
        "123456789012", "111111111111", ROLE_ACCOUNT]


def test_a_denied_role_answers_access_denied(manual_emulator: EmulatorHandle, sts: Any) -> None:
    rule = manual_emulator.set_role(ROLE, deny=True)
    assert rule == {"role_arn": ROLE, "deny": True, "external_id": None}
    with pytest.raises(ClientError) as caught:
        assume(sts)
    error = caught.value.response
    assert (error["Error"]["Code"], error["Error"]["Type"], error["ResponseMetadata"]["HTTPStatusCode"]) == (
        "AccessDenied", "Sender", 403)
    assert error["Error"]["Message"].startswith(
        "User: arn:aws:iam::123456789012:user/athena-emulator is not authorized to perform: sts:AssumeRole on "
        f"resource: {ROLE}")
    other = "arn:aws:iam::444444444444:role/other"
    assert sts.assume_role(RoleArn=other, RoleSessionName="s2")["AssumedRoleUser"]["Arn"].startswith(
        "arn:aws:sts::444444444444:assumed-role/other/")
    assert manual_emulator.calls(operation="AssumeRole")[0]["error"] == "AccessDenied"
    assert manual_emulator.clear_roles(ROLE) == []
    assert assume(sts)["AccessKeyId"].startswith("ASIA")


def test_a_role_may_require_an_external_id(manual_emulator: EmulatorHandle, sts: Any) -> None:
    manual_emulator.set_role(ROLE, external_id="tenant-42")
    assert error_of(assume, sts=sts)[:2] == ("AccessDenied", 403)
    assert error_of(assume, sts=sts, ExternalId="tenant-41")[:2] == ("AccessDenied", 403)
    assert assume(sts, ExternalId="tenant-42")["AccessKeyId"].startswith("ASIA")
    assert manual_emulator.roles() == [{"role_arn": ROLE, "deny": False, "external_id": "tenant-42"}]
    manual_emulator.reset()  # forgets role rules too
    assert manual_emulator.roles() == []


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"DurationSeconds": 899}, "Member must have value greater than or equal to 900"),
    ({"DurationSeconds": 43201}, "Member must have value less than or equal to 43200"),
    ({"RoleSessionName": "a b"}, "RoleSessionName"),
    ({"RoleSessionName": "x"}, "Member must have length greater than or equal to 2"),
    ({"RoleArn": "arn:aws:iam::123:role/short-account"}, "is not a valid role ARN"),
    ({"RoleArn": "arn:aws:iam::333333333333:user/not-a-role"}, "is not a valid role ARN"),
])
def test_invalid_requests_answer_validation_error(manual_emulator: EmulatorHandle, kwargs: dict[str, Any],
                                                  problem: str) -> None:
    unchecked = manual_emulator.boto3_client("sts", parameter_validation=False)
    request = {"RoleArn": ROLE, "RoleSessionName": "guard", **kwargs}
    code, status, message = error_of(unchecked.assume_role, **request)
    assert (code, status) == ("ValidationError", 400)
    assert problem in message


def test_expired_credentials_are_refused(manual_emulator: EmulatorHandle, sts: Any,
                                         emulator_clock: ManualClock) -> None:
    credentials = assume(sts, DurationSeconds=900)
    athena = manual_emulator.boto3_client(credentials=credentials)
    role_sts = manual_emulator.boto3_client("sts", credentials=credentials)
    emulator_clock.advance(899)
    assert athena.list_work_groups()["WorkGroups"][0]["Name"] == "primary"
    emulator_clock.advance(1)
    assert error_of(athena.list_work_groups) == (
        "ExpiredTokenException", 400, "The security token included in the request is expired")
    assert error_of(role_sts.get_caller_identity)[:2] == ("ExpiredToken", 403)
    assert error_of(role_sts.assume_role, RoleArn=ROLE, RoleSessionName="again")[:2] == (
        "ExpiredToken", 403)
    refused = manual_emulator.calls(account=ROLE_ACCOUNT)[-3:]
    assert [(c["operation"], c["status"], c["error"]) for c in refused] == [
        ("ListWorkGroups", 400, "ExpiredTokenException"), ("GetCallerIdentity", 403, "ExpiredToken"),
        ("AssumeRole", 403, "ExpiredToken")]
    fresh = manual_emulator.boto3_client(credentials=assume(sts))  # what a client's refresh does
    assert fresh.list_work_groups()["WorkGroups"][0]["Name"] == "primary"


def test_a_session_token_that_is_not_the_credentials_is_refused(manual_emulator: EmulatorHandle,
                                                                sts: Any) -> None:
    credentials = {**assume(sts), "SessionToken": "forged"}
    assert error_of(manual_emulator.boto3_client(credentials=credentials).list_work_groups)[:2] == (
        "UnrecognizedClientException", 400)
    role_sts = manual_emulator.boto3_client("sts", credentials=credentials)
    assert error_of(role_sts.get_caller_identity)[:2] == ("InvalidClientTokenId", 403)


def test_role_chaining_acts_as_the_assumed_role(manual_emulator: EmulatorHandle, sts: Any) -> None:
    first = manual_emulator.boto3_client("sts", credentials=assume(sts))
    second = first.assume_role(RoleArn="arn:aws:iam::555555555555:role/next", RoleSessionName="chain")
    assert manual_emulator.calls(operation="AssumeRole")[-1]["account"] == ROLE_ACCOUNT
    chained = manual_emulator.boto3_client("sts", credentials=second["Credentials"])
    assert chained.get_caller_identity()["Account"] == "555555555555"


def test_faults_named_for_assume_role(manual_emulator: EmulatorHandle, sts: Any) -> None:
    manual_emulator.add_error("AccessDeniedException", operation="AssumeRole", count=1)
    assert error_of(assume, sts=sts)[:2] == ("AccessDenied", 400)
    manual_emulator.add_error("InternalServerException", operation="AssumeRole", count=1)
    assert error_of(assume, sts=sts)[:2] == ("InternalFailure", 500)
    manual_emulator.set_faults("AssumeRole", throttle_tps=0.001, burst=1)
    assert [error_of(assume, sts=sts)[:2] for _ in range(2)] == [OK[:2], ("Throttling", 400)]
    # a rule in another account-region spares the default's callers
    manual_emulator.clear_faults()
    manual_emulator.add_error("AccessDeniedException", operation="AssumeRole", account="111111111111")
    assert error_of(assume, sts=sts) == OK
    other = manual_emulator.boto3_client("sts", account="111111111111")
    assert error_of(assume, sts=other)[:2] == ("AccessDenied", 400)


def test_reset_forgets_issued_credentials(manual_emulator: EmulatorHandle, sts: Any) -> None:
    credentials = assume(sts)
    manual_emulator.reset(account=ROLE_ACCOUNT)  # a filtered reset keeps them
    role_sts = manual_emulator.boto3_client("sts", credentials=credentials)
    assert role_sts.get_caller_identity()["Account"] == ROLE_ACCOUNT
    manual_emulator.reset()
    assert role_sts.get_caller_identity()["Account"] == "123456789012"  # now just another access key


async def test_assume_role_with_aiobotocore(manual_emulator: EmulatorHandle) -> None:
    session = _test_client_session()
    config = AioConfig(retries={"total_max_attempts": 1})
    async with session.create_client("sts", config=config, **manual_emulator.client_kwargs()) as sts:
        answer = await sts.assume_role(RoleArn=ROLE, RoleSessionName="aio", DurationSeconds=900)
        check_output(sts.meta.service_model.operation_model("AssumeRole"), answer)
    async with session.create_client("athena", config=config, **manual_emulator.client_kwargs(
            credentials=answer["Credentials"], region="ap-south-1")) as athena:
        await athena.create_work_group(Name="aio")
        groups = await athena.list_work_groups()
        check_output(athena.meta.service_model.operation_model("ListWorkGroups"), groups)
        assert {g["Name"] for g in groups["WorkGroups"]} == {"primary", "aio"}
    async with session.create_client("sts", config=config, **manual_emulator.client_kwargs(
            credentials=answer["Credentials"])) as role_sts:
        identity = await role_sts.get_caller_identity()
        check_output(role_sts.meta.service_model.operation_model("GetCallerIdentity"), identity)
        assert identity["Arn"] == f"arn:aws:sts::{ROLE_ACCOUNT}:assumed-role/athena-guard/aio"
    assert [(a["account"], a["region"]) for a in manual_emulator.state(account=ROLE_ACCOUNT)["accounts"]] == [
        (ROLE_ACCOUNT, "ap-south-1"), (ROLE_ACCOUNT, "us-east-1")]


def test_bad_role_rules_are_refused(manual_emulator: EmulatorHandle) -> None:
    from athena_spark_emulator import ControlError

    for kwargs, problem in (({"role_arn": "arn:aws:iam::1:role/x"}, "not a valid role ARN"),
                            ({"role_arn": ROLE, "external_id": ""}, "external_id")):
        with pytest.raises(ControlError, match=problem):
            manual_emulator.set_role(**kwargs)
    with pytest.raises(ControlError, match="HTTP 404"):
        manual_emulator.clear_roles("arn:aws:iam::333333333333:role/unknown")
