"""Many accounts and regions in one emulator: the account rule, disjoint state, and the control API's scopes.

Real HTTP with boto3 and aiobotocore (every successful response checked against botocore's output shape).
"""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError

from athena_spark_emulator import ControlError, Emulator, ManualClock
from athena_spark_emulator.callers import Callers
from athena_spark_emulator.credentials import Keyring
from athena_spark_emulator.identity import AssumedRole
from athena_spark_emulator.shapecheck import check_output
from athena_spark_emulator.signing import Signature, parse_authorization
from athena_spark_emulator.testing import EmulatorFactory, EmulatorHandle
from tests.virtual_fixtures import _test_client_session  # one session (and model loader) for the tests' clients

DEFAULT = "123456789012"
ALICE = "111111111111"
BOB = "222222222222"
SPARK = {"EngineVersion": {"SelectedEngineVersion": "PySpark engine version 3"}}


def code_of(call: Any, **kwargs: Any) -> str:
    try:
        call(**kwargs)
    except ClientError as error:
        return str(error.response["Error"]["Code"])
    return "OK"


def names(athena: Any) -> set[str]:
    return {group["Name"] for group in athena.list_work_groups()["WorkGroups"]}


def spark_session(athena: Any, workgroup: str = "etl") -> str:
    athena.create_work_group(Name=workgroup, Configuration=SPARK)
    session_id: str = athena.start_session(WorkGroup=workgroup, EngineConfiguration={})["SessionId"]
    return session_id


# --- the account rule, in process ------------------------------------------------------------------------

def authorization(access_key_id: str, scope: str = "20261125/eu-west-1/athena/aws4_request") -> str:
    return (f"AWS4-HMAC-SHA256 Credential={access_key_id}/{scope}, SignedHeaders=host;x-amz-date, "
            "Signature=0123abcd")


@pytest.mark.parametrize(("header", "signature"), [
    (authorization("AKIDEXAMPLE"), Signature("AKIDEXAMPLE", "eu-west-1", "athena")),
    (authorization("111111111111", "20261125/us-gov-west-1/sts/aws4_request"),
     Signature("111111111111", "us-gov-west-1", "sts")),
    (authorization("AKIDEXAMPLE", "garbage"), Signature("AKIDEXAMPLE")),
    (authorization("AKIDEXAMPLE", "20261125/EU WEST/athena/aws4_request"), Signature("AKIDEXAMPLE")),
    ("AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00", None),
    ("Basic dXNlcjpwYXNz", None),
    ("", None),
    (None, None),
])
def test_parse_authorization(header: str | None, signature: Signature | None) -> None:
    assert parse_authorization(header) == signature


def test_the_account_rule() -> None:
    keyring = Keyring()
    callers = Callers(keyring, default_account="999999999999", default_region="ap-south-1")
    role = AssumedRole("arn:aws:iam::333333333333:role/ops", "333333333333", "ops", "night")
    issued = keyring.issue(role, expiration=100.0)

    def who(header: str | None, token: str | None = None, now: float = 0.0) -> tuple[str, str, str | None]:
        caller = callers.identify(header, token, now)
        refusal = caller.refusal.error_type if caller.refusal is not None else None
        return caller.identity.account_id, caller.identity.region, refusal

    assert who(authorization("111111111111")) == ("111111111111", "eu-west-1", None)       # 12 digits
    assert who(authorization("AKIAIOSFODNN7EXAMPLE")) == ("999999999999", "eu-west-1", None)  # the default
    assert who(authorization("1111111111111")) == ("999999999999", "eu-west-1", None)      # 13 digits
    assert who(authorization("111111111111", "nope")) == ("111111111111", "ap-south-1", None)
    assert who(None) == ("999999999999", "ap-south-1", None)                              # unsigned
    signed = authorization(issued.access_key_id)
    assert who(signed, issued.session_token, 99.9) == ("333333333333", "eu-west-1", None)
    assert who(signed, issued.session_token, 100.0) == ("333333333333", "eu-west-1", "ExpiredTokenException")
    assert who(signed, "forged", 0.0) == ("333333333333", "eu-west-1", "UnrecognizedClientException")
    assert who(signed, None, 0.0)[2] == "UnrecognizedClientException"
    assert callers.identify(signed, issued.session_token, 0.0).identity.caller_arn == \
        "arn:aws:sts::333333333333:assumed-role/ops/night"


# --- disjoint state ---------------------------------------------------------------------------------------

def test_two_accounts_by_12_digit_keys_see_disjoint_workgroups_and_sessions(manual_emulator: EmulatorHandle
                                                                            ) -> None:
    alice = manual_emulator.boto3_client(account=ALICE)
    bob = manual_emulator.boto3_client(account=BOB)
    default = manual_emulator.boto3_client()
    session_id = spark_session(alice)
    assert names(alice) == {"primary", "etl"}
    assert names(bob) == {"primary"}  # a new account-region starts with primary only
    assert names(default) == {"primary", "spark"}  # the workgroups given at start are the default's
    assert alice.get_session(SessionId=session_id)["WorkGroup"] == "etl"
    assert code_of(bob.get_session, SessionId=session_id) == "ResourceNotFoundException"
    assert code_of(default.terminate_session, SessionId=session_id) == "ResourceNotFoundException"
    assert bob.list_sessions(WorkGroup="primary")["Sessions"] == []
    assert code_of(bob.start_session, WorkGroup="etl", EngineConfiguration={}) == "ResourceNotFoundException"
    spark_session(bob)  # the same name in another account is another workgroup
    assert len(alice.list_sessions(WorkGroup="etl")["Sessions"]) == 1
    assert len(bob.list_sessions(WorkGroup="etl")["Sessions"]) == 1


def test_workgroup_arns_name_the_account_and_region(manual_emulator: EmulatorHandle) -> None:
    alice = manual_emulator.boto3_client(account=ALICE, region="eu-west-1")
    alice.create_work_group(Name="etl", Configuration=SPARK)
    arn = f"arn:aws:athena:eu-west-1:{ALICE}:workgroup/etl"
    alice.tag_resource(ResourceARN=arn, Tags=[{"Key": "team", "Value": "a"}])
    assert alice.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "team", "Value": "a"}]
    other_region = f"arn:aws:athena:us-east-1:{ALICE}:workgroup/etl"
    assert code_of(alice.list_tags_for_resource, ResourceARN=other_region) == "ResourceNotFoundException"
    bob = manual_emulator.boto3_client(account=BOB, region="eu-west-1")
    assert code_of(bob.list_tags_for_resource, ResourceARN=arn) == "ResourceNotFoundException"
    session_id = alice.start_session(WorkGroup="etl", EngineConfiguration={})["SessionId"]
    directory = alice.get_session(SessionId=session_id)["SessionConfiguration"]["WorkingDirectory"]
    assert directory.startswith(f"s3://athena-emulator-{ALICE}/etl/")
    alice.create_work_group(Name="connect", Configuration={
        "EngineVersion": {"SelectedEngineVersion": "Apache Spark version 3.5"}})
    connect = alice.start_session(WorkGroup="connect", EngineConfiguration={},
                                  Description="# sim: start=0s")["SessionId"]
    assert ".eu-west-1." in alice.get_session_endpoint(SessionId=connect)["EndpointUrl"]
    dashboard = f"arn:aws:athena:eu-west-1:{ALICE}:workgroup/connect/session/{connect}"
    assert alice.get_resource_dashboard(ResourceARN=dashboard)["Url"].startswith(f"https://{connect}.")
    assert code_of(bob.get_resource_dashboard, ResourceARN=dashboard) == "ResourceNotFoundException"


def test_two_regions_of_one_account_are_disjoint(manual_emulator: EmulatorHandle) -> None:
    east = manual_emulator.boto3_client(account=ALICE, region="us-east-1")
    west = manual_emulator.boto3_client(account=ALICE, region="eu-west-1")
    session_id = spark_session(west)
    assert names(west) == {"primary", "etl"} and names(east) == {"primary"}
    assert code_of(east.get_session, SessionId=session_id) == "ResourceNotFoundException"
    state = manual_emulator.state(account=ALICE)
    assert [(a["account"], a["region"], a["sessions"]["total"]) for a in state["accounts"]] == [
        (ALICE, "eu-west-1", 1), (ALICE, "us-east-1", 0)]


def test_unsigned_requests_and_other_keys_use_the_configured_default(emulator_factory: EmulatorFactory) -> None:
    emulator = emulator_factory(account_id="210987654321", region="eu-west-1", workgroups=["etl"])
    assert emulator.client_kwargs()["region_name"] == "eu-west-1"
    assert names(emulator.boto3_client()) == {"primary", "etl"}
    request = urllib.request.Request(emulator.endpoint_url, data=b"{}", method="POST", headers={
        "X-Amz-Target": "AmazonAthena.ListWorkGroups", "Content-Type": "application/x-amz-json-1.1"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    assert [(c["account"], c["region"]) for c in emulator.calls()] == [("210987654321", "eu-west-1")] * 2
    assert emulator.state()["accounts"][0]["account"] == "210987654321"


async def test_accounts_and_regions_with_aiobotocore() -> None:
    async with Emulator(port=0, clock=ManualClock()) as emu:
        session = _test_client_session()

        def client(account: str, region: str) -> Any:
            return session.create_client(
                "athena", endpoint_url=emu.endpoint_url, region_name=region, aws_access_key_id=account,
                aws_secret_access_key="x", config=AioConfig(retries={"total_max_attempts": 1}))

        async with client(ALICE, "eu-west-1") as alice, client(BOB, "eu-west-1") as bob, \
                client(ALICE, "us-west-2") as alice_west:
            await alice.create_work_group(Name="etl", Configuration=SPARK)
            started = await alice.start_session(WorkGroup="etl", EngineConfiguration={})
            model = alice.meta.service_model
            listed = await alice.list_sessions(WorkGroup="etl")
            check_output(model.operation_model("ListSessions"), listed)
            assert [s["SessionId"] for s in listed["Sessions"]] == [started["SessionId"]]
            for other in (bob, alice_west):
                groups = await other.list_work_groups()
                check_output(model.operation_model("ListWorkGroups"), groups)
                assert [g["Name"] for g in groups["WorkGroups"]] == ["primary"]
                with pytest.raises(ClientError) as caught:
                    await other.get_session(SessionId=started["SessionId"])
                assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
        assert emu.backend_for(ALICE, "eu-west-1").store.sessions.keys() == {started["SessionId"]}
        assert emu.backend.store.sessions == {}
        assert [(c["account"], c["region"]) for c in emu.fleet.audit.entries(operation="GetSession")] == [
            (BOB, "eu-west-1"), (ALICE, "us-west-2")]


# --- the audit log ----------------------------------------------------------------------------------------

def test_audit_log_labels_and_filters(manual_emulator: EmulatorHandle) -> None:
    manual_emulator.boto3_client().list_work_groups()
    manual_emulator.boto3_client(account=ALICE).list_work_groups()
    manual_emulator.boto3_client(account=ALICE, region="eu-west-1").list_work_groups()
    manual_emulator.boto3_client(account=BOB, region="eu-west-1").list_work_groups()
    manual_emulator.boto3_client("sts", account=BOB, region="eu-west-1").get_caller_identity()

    def labels(**filters: str) -> list[tuple[str, str, str]]:
        return [(c["account"], c["region"], c["operation"]) for c in manual_emulator.calls(**filters)]

    assert labels() == [(DEFAULT, "us-east-1", "ListWorkGroups"), (ALICE, "us-east-1", "ListWorkGroups"),
                        (ALICE, "eu-west-1", "ListWorkGroups"), (BOB, "eu-west-1", "ListWorkGroups"),
                        (BOB, "eu-west-1", "GetCallerIdentity")]
    assert labels(account=ALICE) == [(ALICE, "us-east-1", "ListWorkGroups"), (ALICE, "eu-west-1", "ListWorkGroups")]
    assert labels(region="eu-west-1", operation="ListWorkGroups") == [(ALICE, "eu-west-1", "ListWorkGroups"),
                                                                      (BOB, "eu-west-1", "ListWorkGroups")]
    assert labels(account=BOB, region="eu-west-1") == [(BOB, "eu-west-1", "ListWorkGroups"),
                                                       (BOB, "eu-west-1", "GetCallerIdentity")]
    assert labels(account="333333333333") == []
    assert manual_emulator.state()["calls"] == 5
    assert manual_emulator.state(region="eu-west-1")["calls"] == 3
    with pytest.raises(ControlError, match="account: expected 12 digits"):
        manual_emulator.calls(account="alice")
    with pytest.raises(ControlError, match="region: expected a region name"):
        manual_emulator.calls(region="EU West")


# --- faults, populate, state and reset per account-region ------------------------------------------------

def test_faults_apply_to_one_account_region(manual_emulator: EmulatorHandle) -> None:
    alice = manual_emulator.boto3_client(account=ALICE, region="eu-west-1")
    alice_east = manual_emulator.boto3_client(account=ALICE)
    bob = manual_emulator.boto3_client(account=BOB, region="eu-west-1")
    default = manual_emulator.boto3_client()
    manual_emulator.set_faults(error_rate=1, account=ALICE, region="eu-west-1")
    manual_emulator.add_error("AccessDeniedException", operation="ListWorkGroups", region="eu-west-1", account=BOB)
    assert code_of(alice.list_work_groups) == "InternalServerException"
    assert code_of(bob.list_work_groups) == "AccessDeniedException"
    assert [code_of(client.list_work_groups) for client in (alice_east, default)] == ["OK", "OK"]
    assert manual_emulator.faults()["global"] is None  # the default account-region's
    assert manual_emulator.faults(account=ALICE, region="eu-west-1")["global"]["error_rate"] == 1
    (rule,) = manual_emulator.faults(account=BOB, region="eu-west-1")["errors"]
    assert rule["id"] == "error-1"
    assert manual_emulator.clear_errors(rule["id"], account=BOB, region="eu-west-1") == []
    assert code_of(bob.list_work_groups) == "OK"
    manual_emulator.clear_faults(account=ALICE, region="eu-west-1")
    assert code_of(alice.list_work_groups) == "OK"


def test_an_injected_access_denied_names_the_account_region(manual_emulator: EmulatorHandle) -> None:
    alice = manual_emulator.boto3_client(account=ALICE, region="eu-west-1")
    manual_emulator.add_error("AccessDeniedException", workgroup="primary", account=ALICE, region="eu-west-1")
    with pytest.raises(ClientError) as caught:
        alice.get_work_group(WorkGroup="primary")
    message = caught.value.response["Error"]["Message"]
    assert message.startswith(f"User: arn:aws:iam::{ALICE}:user/athena-emulator is not authorized")
    assert f"arn:aws:athena:eu-west-1:{ALICE}:workgroup/primary" in message


def test_the_start_throttle_is_per_account_region(emulator_factory: EmulatorFactory) -> None:
    emulator = emulator_factory(clock=ManualClock(), throttle_tps=1)
    clients = [emulator.boto3_client(), emulator.boto3_client(account=ALICE),
               emulator.boto3_client(account=ALICE, region="eu-west-1")]
    assert [code_of(client.list_work_groups) for client in clients] == ["OK"] * 3
    assert [code_of(client.list_work_groups) for client in clients] == ["TooManyRequestsException"] * 3
    assert emulator.faults(account=ALICE)["global"]["throttle_tps"] == 1


def test_populate_state_and_reset_per_account_region(manual_emulator: EmulatorHandle,
                                                     emulator_clock: ManualClock) -> None:
    manual_emulator.populate({"workgroups": [{"name": "etl"}], "sessions": [
        {"workgroup": "etl", "count": 2, "calculations": [{"code": "# sim: runtime=1h"}]}]},
        account=ALICE, region="eu-west-1")
    alice = manual_emulator.boto3_client(account=ALICE, region="eu-west-1")
    assert len(alice.list_sessions(WorkGroup="etl")["Sessions"]) == 2
    manual_emulator.populate({"sessions": [{"workgroup": "spark"}]})  # the default account-region
    emulator_clock.advance(5)
    assert manual_emulator.state(account=ALICE, region="eu-west-1") | {"now": None} == {
        "now": None,
        "workgroups": [
            {"account": ALICE, "region": "eu-west-1", "name": "primary", "state": "ENABLED",
             "engine": "Athena engine version 3", "tags": {}, "sessions": {}},
            {"account": ALICE, "region": "eu-west-1", "name": "etl", "state": "ENABLED",
             "engine": "PySpark engine version 3", "tags": {}, "sessions": {"BUSY": 2}},
        ],
        "sessions": {"total": 2, "by_state": {"BUSY": 2}},
        "calculations": {"total": 2, "by_state": {"RUNNING": 2}},
        "calls": 1,
        "faults": {"global": None, "operations": {}, "errors": [], "states": [], "removals": []},
        "accounts": [{"account": ALICE, "region": "eu-west-1", "workgroups": ["primary", "etl"],
                      "sessions": {"total": 2, "by_state": {"BUSY": 2}},
                      "calculations": {"total": 2, "by_state": {"RUNNING": 2}}, "calls": 1,
                      "faults": {"global": None, "operations": {}, "errors": [], "states": [], "removals": []}}],
    }
    everything = manual_emulator.state()
    assert everything["sessions"] == {"total": 3, "by_state": {"BUSY": 2, "IDLE": 1}}
    assert [(a["account"], a["region"]) for a in everything["accounts"]] == [(DEFAULT, "us-east-1"),
                                                                             (ALICE, "eu-west-1")]
    assert manual_emulator.state(account=BOB)["faults"] is None  # never used: not created by reading
    assert [a["account"] for a in manual_emulator.state()["accounts"]] == [DEFAULT, ALICE]

    manual_emulator.set_faults(error_rate=1, account=ALICE, region="eu-west-1")
    manual_emulator.reset(account=ALICE)  # only Alice's account-regions (and calls)
    state = manual_emulator.state()
    assert state["sessions"] == {"total": 1, "by_state": {"IDLE": 1}}
    assert state["calls"] == 0 and state["accounts"][1]["faults"]["global"] is None
    assert {(w["account"], w["name"]) for w in state["workgroups"]} == {
        (DEFAULT, "primary"), (DEFAULT, "spark"), (ALICE, "primary")}
    manual_emulator.boto3_client().list_work_groups()
    manual_emulator.reset()  # everything
    state = manual_emulator.state()
    assert state["sessions"]["total"] == 0 and state["calls"] == 0
    with pytest.raises(ControlError, match=r"sessions\[0\]\.workgroup: unknown workgroup 'spark'"):
        manual_emulator.populate({"sessions": [{"workgroup": "spark"}]}, account=BOB)

