"""``sts:GetCallerIdentity`` on the emulator's endpoint, through real boto3 and aiobotocore STS clients."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from athena_spark_emulator.testing import EmulatorFactory, EmulatorHandle
from tests.virtual_fixtures import _test_client_session  # one session (and model loader) for the tests' clients

ACCOUNT = "210987654321"


def sts_client(emulator: EmulatorHandle) -> Any:
    return boto3.client("sts", config=Config(retries={"total_max_attempts": 1}), **emulator.client_kwargs())


def code_of(call: Any) -> tuple[str, int] | None:
    try:
        call()
    except ClientError as error:
        return error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"]
    return None


def test_get_caller_identity_answers_the_configured_account(emulator_factory: EmulatorFactory) -> None:
    emulator = emulator_factory(account_id=ACCOUNT, workgroups=["spark"])
    identity = sts_client(emulator).get_caller_identity()
    assert identity["Account"] == ACCOUNT
    assert identity["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/athena-emulator"
    assert identity["UserId"].startswith("AIDA") and len(identity["UserId"]) == 21
    # Athena on the same endpoint is unaffected, and both are audited
    assert emulator.boto3_client().list_sessions(WorkGroup="spark")["Sessions"] == []
    calls = emulator.calls()
    assert [(c["operation"], c["status"], c["error"]) for c in calls] == [
        ("GetCallerIdentity", 200, None), ("ListSessions", 200, None)]
    assert calls[0]["request"] == {"Action": "GetCallerIdentity", "Version": "2011-06-15"}


async def test_aiobotocore_sts_client(emulator: EmulatorHandle) -> None:
    async with _test_client_session().create_client("sts", **emulator.client_kwargs()) as sts:
        identity = await sts.get_caller_identity()
    assert identity["Account"] == "123456789012"


def test_other_sts_actions_are_invalid(emulator: EmulatorHandle) -> None:
    assert code_of(sts_client(emulator).get_session_token) == ("InvalidAction", 400)
    assert emulator.calls()[-1]["operation"] == "GetSessionToken"


def test_faults_named_for_get_caller_identity_apply_in_sts_terms(emulator: EmulatorHandle) -> None:
    sts = sts_client(emulator)
    emulator.set_faults(throttle_tps=0.001, burst=1)  # a global Athena throttle does not reach STS
    assert [code_of(sts.get_caller_identity) for _ in range(3)] == [None, None, None]
    emulator.clear_faults()
    emulator.add_error("AccessDeniedException", operation="GetCallerIdentity", count=1)
    assert code_of(sts.get_caller_identity) == ("AccessDenied", 400)
    emulator.add_error("InternalServerException", operation="GetCallerIdentity", count=1)
    assert code_of(sts.get_caller_identity) == ("InternalFailure", 500)
    emulator.set_faults("GetCallerIdentity", throttle_tps=0.001, burst=1)
    assert [code_of(sts.get_caller_identity) for _ in range(2)] == [None, ("Throttling", 400)]
    assert [c["error"] for c in emulator.calls(operation="GetCallerIdentity")][-4:] == [
        "AccessDenied", "InternalFailure", None, "Throttling"]


def test_a_form_post_without_an_action_is_invalid(emulator: EmulatorHandle) -> None:
    request = urllib.request.Request(emulator.endpoint_url, data=b"Version=2011-06-15", method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400
    body = caught.value.read().decode()
    assert "<Code>InvalidAction</Code>" in body and "<Type>Sender</Type>" in body
