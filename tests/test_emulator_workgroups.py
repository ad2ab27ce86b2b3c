"""Workgroup operations and tagging over HTTP with boto3."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from athena_spark_emulator.testing import EmulatorHandle

SPARK = {"EngineVersion": {"SelectedEngineVersion": "PySpark engine version 3"}}
ARN = "arn:aws:athena:us-east-1:123456789012:workgroup/"


@pytest.fixture
def athena(manual_emulator: EmulatorHandle) -> Any:
    return manual_emulator.boto3_client()


def test_start_state_has_primary_sql_and_configured_spark_workgroups(athena: Any) -> None:
    groups = {g["Name"]: g for g in athena.list_work_groups()["WorkGroups"]}
    assert set(groups) == {"primary", "spark"}
    assert groups["primary"]["EngineVersion"]["EffectiveEngineVersion"] == "Athena engine version 3"
    spark = athena.get_work_group(WorkGroup="spark")["WorkGroup"]
    assert spark["State"] == "ENABLED"
    assert spark["Configuration"]["EngineVersion"]["EffectiveEngineVersion"] == "PySpark engine version 3"


def test_create_update_delete(athena: Any) -> None:
    athena.create_work_group(Name="etl", Description="nightly", Configuration=SPARK,
                             Tags=[{"Key": "team", "Value": "data"}])
    with pytest.raises(ClientError, match="already created"):
        athena.create_work_group(Name="etl")
    athena.update_work_group(WorkGroup="etl", State="DISABLED", Description="paused",
                             ConfigurationUpdates={"PublishCloudWatchMetricsEnabled": True})
    group = athena.get_work_group(WorkGroup="etl")["WorkGroup"]
    assert (group["State"], group["Description"]) == ("DISABLED", "paused")
    assert group["Configuration"]["PublishCloudWatchMetricsEnabled"] is True
    athena.update_work_group(WorkGroup="etl", State="ENABLED")
    session_id = athena.start_session(WorkGroup="etl", EngineConfiguration={})["SessionId"]
    with pytest.raises(ClientError, match="RecursiveDeleteOption"):
        athena.delete_work_group(WorkGroup="etl")
    athena.delete_work_group(WorkGroup="etl", RecursiveDeleteOption=True)
    assert athena.get_session_status(SessionId=session_id)["Status"]["State"] in ("TERMINATING", "TERMINATED")
    with pytest.raises(ClientError, match="not found"):
        athena.get_work_group(WorkGroup="etl")
    with pytest.raises(ClientError, match="cannot be deleted"):
        athena.delete_work_group(WorkGroup="primary")


def test_list_work_groups_paginates(athena: Any) -> None:
    for index in range(5):
        athena.create_work_group(Name=f"wg-{index}")
    first = athena.list_work_groups(MaxResults=3)
    rest = athena.list_work_groups(MaxResults=50, NextToken=first["NextToken"])
    names = [g["Name"] for g in first["WorkGroups"] + rest["WorkGroups"]]
    assert names == sorted(names) and len(names) == 7
    assert "NextToken" not in rest


def test_tags_by_workgroup_arn(athena: Any) -> None:
    athena.tag_resource(ResourceARN=ARN + "spark", Tags=[{"Key": "team", "Value": "a"},
                                                         {"Key": "owner", "Value": "bo"}])
    athena.tag_resource(ResourceARN=ARN + "spark", Tags=[{"Key": "team", "Value": "b"}])
    assert athena.list_tags_for_resource(ResourceARN=ARN + "spark")["Tags"] == [
        {"Key": "team", "Value": "b"}, {"Key": "owner", "Value": "bo"}]
    athena.untag_resource(ResourceARN=ARN + "spark", TagKeys=["team"])
    remaining = athena.list_tags_for_resource(ResourceARN=ARN + "spark")["Tags"]
    assert remaining == [{"Key": "owner", "Value": "bo"}]
    with pytest.raises(ClientError) as caught:
        athena.tag_resource(ResourceARN=ARN + "missing", Tags=[{"Key": "k", "Value": "v"}])
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError):
        athena.untag_resource(ResourceARN="arn:aws:athena:eu-west-1:1:workgroup/spark", TagKeys=["k"])


def test_list_tags_paginates(athena: Any) -> None:
    tags = [{"Key": f"k{index:03d}", "Value": str(index)} for index in range(80)]
    athena.tag_resource(ResourceARN=ARN + "spark", Tags=tags)
    first = athena.list_tags_for_resource(ResourceARN=ARN + "spark", MaxResults=75)
    rest = athena.list_tags_for_resource(ResourceARN=ARN + "spark", MaxResults=75,
                                         NextToken=first["NextToken"])
    assert first["Tags"] + rest["Tags"] == tags


def test_copy_workgroup_tags_on_start_session(manual_emulator: EmulatorHandle, athena: Any) -> None:
    athena.tag_resource(ResourceARN=ARN + "spark", Tags=[{"Key": "team", "Value": "a"}])
    athena.start_session(WorkGroup="spark", EngineConfiguration={}, CopyWorkGroupTags=True)
    state = manual_emulator.state()
    assert state["sessions"]["total"] == 1
    assert next(w for w in state["workgroups"] if w["name"] == "spark")["tags"] == {"team": "a"}
