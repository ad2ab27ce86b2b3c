"""The rest of botocore's ``athena`` model, field by field, over HTTP with boto3 (every successful response checked
against its output shape): calculation states CREATING and CREATED, ListSessions' default listing, workgroup
members Athena ignores on write or derives, session members inherited from the workgroup, ListEngineVersions,
ListApplicationDPUSizes and the notebook operations."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from athena_spark_emulator import ManualClock
from athena_spark_emulator.model import load_athena_model
from athena_spark_emulator.service import HANDLERS
from athena_spark_emulator.testing import EmulatorHandle

DOCS = Path(__file__).resolve().parent.parent / "docs" / "emulator.md"

ENGINE = {"CoordinatorDpuSize": 1, "MaxConcurrentDpus": 4, "DefaultExecutorDpuSize": 1}
CONNECT = {"EngineVersion": {"SelectedEngineVersion": "Apache Spark version 3.5"}}
INSTANCE = "arn:aws:sso:::instance/ssoins-0123456789abcdef"


@pytest.fixture
def clock(emulator_clock: ManualClock) -> ManualClock:
    return emulator_clock


@pytest.fixture
def athena(manual_emulator: EmulatorHandle) -> Any:
    return manual_emulator.boto3_client()


def error_of(call: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    return str(caught.value.response["Error"]["Code"]), str(caught.value.response["Error"]["Message"])


def session(athena: Any, description: str = "# sim: start=0s", workgroup: str = "spark", **extra: Any) -> str:
    session_id: str = athena.start_session(WorkGroup=workgroup, EngineConfiguration=extra.pop("engine", ENGINE),
                                           Description=description, **extra)["SessionId"]
    return session_id


def test_calculations_go_through_creating_and_created(athena: Any, clock: ManualClock) -> None:
    session_id = session(athena)
    started = athena.start_calculation_execution(SessionId=session_id,
                                                 CodeBlock="# sim: creating=1s created=2s runtime=5s")
    calculation_id = started["CalculationExecutionId"]
    assert started["State"] == "CREATING"
    clock.advance(1)
    assert athena.get_calculation_execution_status(CalculationExecutionId=calculation_id)["Status"]["State"] == \
        "CREATED"
    listed = athena.list_calculation_executions(SessionId=session_id, StateFilter="CREATED")["Calculations"]
    assert [c["CalculationExecutionId"] for c in listed] == [calculation_id]
    assert athena.get_session_status(SessionId=session_id)["Status"]["State"] == "BUSY"
    clock.advance(2)
    assert athena.get_calculation_execution(CalculationExecutionId=calculation_id)["Status"]["State"] == "RUNNING"
    stopped = athena.start_calculation_execution(SessionId=session_id, CodeBlock="# sim: creating=10s")
    assert athena.stop_calculation_execution(CalculationExecutionId=stopped["CalculationExecutionId"])["State"] == \
        "CANCELING"
    clock.advance(1)
    status = athena.get_calculation_execution(CalculationExecutionId=stopped["CalculationExecutionId"])["Status"]
    assert status["State"] == "CANCELED"


def test_list_sessions_lists_active_sessions_unless_filtered(athena: Any, clock: ManualClock) -> None:
    ended = session(athena, "# sim: start=0s terminate_latency=0s")
    athena.terminate_session(SessionId=ended)
    terminating = session(athena, "# sim: start=0s on_terminate=stuck")
    athena.terminate_session(SessionId=terminating)
    degraded = session(athena, "# sim: start=0s degraded_after=1s")
    creating = session(athena, "# sim: start=10s")
    idle = session(athena)
    clock.advance(1)
    listed = [s["SessionId"] for s in athena.list_sessions(WorkGroup="spark")["Sessions"]]
    assert listed == [idle, creating, degraded]
    assert [s["SessionId"] for s in athena.list_sessions(WorkGroup="spark", StateFilter="TERMINATED")[
        "Sessions"]] == [ended]
    assert [s["SessionId"] for s in athena.list_sessions(WorkGroup="spark", StateFilter="TERMINATING")[
        "Sessions"]] == [terminating]


def raw_call(emulator: EmulatorHandle, operation: str, body: dict[str, Any]) -> int:
    """A call as a newer SDK would send it (botocore cannot serialize members its model lacks)."""
    request = urllib.request.Request(emulator.endpoint_url, data=json.dumps(body).encode(), method="POST", headers={
        "X-Amz-Target": f"AmazonAthena.{operation}", "Content-Type": "application/x-amz-json-1.1"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def test_workgroup_configuration_keeps_only_what_athena_stores(manual_emulator: EmulatorHandle) -> None:
    # A newer SDK may send members this model does not know (SystemTableStatuses): Athena ignores them on write.
    assert raw_call(manual_emulator, "CreateWorkGroup", {"Name": "wg", "Configuration": {
        "EngineVersion": {"SelectedEngineVersion": "PySpark engine version 3", "EffectiveEngineVersion": "x"},
        "SystemTableStatuses": [{"Name": "t", "Status": "ENABLED"}],
        "ResultConfiguration": {"OutputLocation": "s3://bucket/out/", "Unheard": 1}}}) == 200
    assert raw_call(manual_emulator, "UpdateWorkGroup", {"WorkGroup": "wg", "ConfigurationUpdates": {
        "SystemTableStatuses": [], "Futuristic": True}}) == 200
    athena = manual_emulator.boto3_client()
    configuration = athena.get_work_group(WorkGroup="wg")["WorkGroup"]["Configuration"]
    assert configuration == {
        "EngineVersion": {"SelectedEngineVersion": "PySpark engine version 3",
                          "EffectiveEngineVersion": "PySpark engine version 3"},
        "ResultConfiguration": {"OutputLocation": "s3://bucket/out/"}}


def test_identity_center_application_arn(athena: Any) -> None:
    athena.create_work_group(Name="idc", Configuration={
        "EngineVersion": {"SelectedEngineVersion": "PySpark engine version 3"},
        "IdentityCenterConfiguration": {"EnableIdentityCenter": True, "IdentityCenterInstanceArn": INSTANCE}})
    arn = athena.get_work_group(WorkGroup="idc")["WorkGroup"]["IdentityCenterApplicationArn"]
    assert arn.startswith("arn:aws:sso::123456789012:application/ssoins-0123456789abcdef/apl-")
    summaries = {w["Name"]: w for w in athena.list_work_groups()["WorkGroups"]}
    assert summaries["idc"]["IdentityCenterApplicationArn"] == arn
    assert "IdentityCenterApplicationArn" not in summaries["spark"]


def test_sessions_inherit_monitoring_and_result_encryption_from_their_workgroup(athena: Any) -> None:
    monitoring = {"S3LoggingConfiguration": {"Enabled": True, "LogLocation": "s3://logs/spark/"}}
    encryption = {"EncryptionOption": "SSE_KMS", "KmsKey": "arn:aws:kms:us-east-1:123456789012:key/k"}
    athena.create_work_group(Name="secure", Configuration={
        "EngineVersion": {"SelectedEngineVersion": "PySpark engine version 3"}, "MonitoringConfiguration": monitoring,
        "ResultConfiguration": {"OutputLocation": "s3://out/", "EncryptionConfiguration": encryption}})
    inherited = athena.get_session(SessionId=session(athena, workgroup="secure"))
    assert inherited["MonitoringConfiguration"] == monitoring
    assert inherited["SessionConfiguration"]["EncryptionConfiguration"] == encryption
    own = {"ManagedLoggingConfiguration": {"Enabled": True}}
    assert athena.get_session(SessionId=session(athena, workgroup="secure", MonitoringConfiguration=own))[
        "MonitoringConfiguration"] == own
    plain = athena.get_session(SessionId=session(athena))
    assert "MonitoringConfiguration" not in plain and "EncryptionConfiguration" not in plain["SessionConfiguration"]


def test_engine_versions_and_application_dpu_sizes(athena: Any) -> None:
    first = athena.list_engine_versions(MaxResults=2)
    rest = athena.list_engine_versions(MaxResults=10, NextToken=first["NextToken"])
    versions = [v["SelectedEngineVersion"] for v in first["EngineVersions"] + rest["EngineVersions"]]
    assert versions == ["AUTO", "Athena engine version 3", "PySpark engine version 3", "Apache Spark version 3.5"]
    assert first["EngineVersions"][0]["EffectiveEngineVersion"] == "Athena engine version 3"
    sizes = athena.list_application_dpu_sizes()["ApplicationDPUSizes"]
    assert sizes == [{"ApplicationRuntimeId": "Athena notebook version 1", "SupportedDPUSizes": [1]}]


def test_notebook_lifecycle(athena: Any, clock: ManualClock) -> None:
    token = "0123abcd-0123-0123-0123-0123456789ab"
    notebook_id = athena.create_notebook(WorkGroup="spark", Name="analysis", ClientRequestToken=token)["NotebookId"]
    assert athena.create_notebook(WorkGroup="spark", Name="analysis", ClientRequestToken=token)["NotebookId"] == \
        notebook_id
    assert error_of(athena.create_notebook, WorkGroup="spark", Name="analysis")[0] == "InvalidRequestException"
    payload = json.dumps({"cells": [{"cell_type": "code", "source": "spark.range(3).count()"}]})
    imported = athena.import_notebook(WorkGroup="spark", Name="imported", Type="IPYNB", Payload=payload)["NotebookId"]
    assert athena.export_notebook(NotebookId=imported)["Payload"] == payload
    code, message = error_of(athena.import_notebook, WorkGroup="spark", Name="x", Type="IPYNB")
    assert code == "InvalidRequestException" and "either Payload or NotebookS3LocationUri" in message
    metadata = athena.get_notebook_metadata(NotebookId=notebook_id)["NotebookMetadata"]
    assert (metadata["Name"], metadata["WorkGroup"], metadata["Type"]) == ("analysis", "spark", "IPYNB")
    page = athena.list_notebook_metadata(WorkGroup="spark", MaxResults=1)
    rest = athena.list_notebook_metadata(WorkGroup="spark", NextToken=page["NextToken"])
    assert [n["Name"] for n in page["NotebookMetadataList"] + rest["NotebookMetadataList"]] == ["analysis", "imported"]
    assert [n["Name"] for n in athena.list_notebook_metadata(WorkGroup="spark", Filters={"Name": "imp"})[
        "NotebookMetadataList"]] == ["imported"]

    engine = {**ENGINE, "AdditionalConfigs": {"NotebookId": notebook_id}}
    session_id = session(athena, engine=engine, NotebookVersion="Athena notebook version 1")
    assert error_of(athena.start_session, WorkGroup="spark", EngineConfiguration=ENGINE,
                    NotebookVersion="Athena notebook version 1")[0] == "InvalidRequestException"
    sessions = athena.list_notebook_sessions(NotebookId=notebook_id)["NotebookSessionsList"]
    assert [s["SessionId"] for s in sessions] == [session_id]
    code, message = error_of(athena.update_notebook, NotebookId=notebook_id, Payload=payload, Type="IPYNB")
    assert code == "InvalidRequestException" and "SessionId is required" in message
    clock.advance(5)
    athena.update_notebook(NotebookId=notebook_id, Payload=payload, Type="IPYNB", SessionId=session_id)
    exported = athena.export_notebook(NotebookId=notebook_id)
    assert exported["Payload"] == payload
    assert exported["NotebookMetadata"]["LastModifiedTime"] > exported["NotebookMetadata"]["CreationTime"]
    url = athena.create_presigned_notebook_url(SessionId=session_id)
    assert url["NotebookUrl"].startswith("https://") and url["AuthTokenExpirationTime"] == int(clock.now()) + 600
    assert error_of(athena.update_notebook_metadata, NotebookId=notebook_id, Name="imported")[0] == \
        "InvalidRequestException"
    athena.update_notebook_metadata(NotebookId=notebook_id, Name="renamed")
    assert athena.get_notebook_metadata(NotebookId=notebook_id)["NotebookMetadata"]["Name"] == "renamed"
    athena.terminate_session(SessionId=session_id)
    clock.advance(2)
    assert athena.list_notebook_sessions(NotebookId=notebook_id)["NotebookSessionsList"] == []
    athena.delete_notebook(NotebookId=notebook_id)
    assert error_of(athena.get_notebook_metadata, NotebookId=notebook_id)[0] == "InvalidRequestException"
    assert error_of(athena.list_notebook_sessions, NotebookId=notebook_id)[0] == "ResourceNotFoundException"


def test_notebooks_only_in_pyspark_3_workgroups(athena: Any) -> None:
    athena.create_work_group(Name="connect", Configuration=CONNECT)
    code, message = error_of(athena.create_notebook, WorkGroup="connect", Name="nb")
    assert code == "InvalidRequestException" and "notebooks are available only in PySpark engine version 3" in message
    assert error_of(athena.list_notebook_metadata, WorkGroup="primary")[0] == "InvalidRequestException"
    connect_session = session(athena, workgroup="connect", engine={})
    assert error_of(athena.create_presigned_notebook_url, SessionId=connect_session)[0] == "InvalidRequestException"
    assert error_of(athena.create_presigned_notebook_url, SessionId="nope")[0] == "ResourceNotFoundException"


def test_the_docs_table_names_every_operation_of_the_model() -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("### Every Spark-related operation of the model"):text.index("### Model version")]
    emulated = {name for row in re.findall(r"^\| (`[^|]+) \| yes \|", section, re.MULTILINE)
                for name in re.findall(r"`(\w+)`", row)}
    assert emulated == set(HANDLERS)
    named = set(re.findall(r"`(\w+)`", section))
    assert set(load_athena_model().operation_names) <= named
