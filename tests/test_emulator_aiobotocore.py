"""Every implemented operation through aiobotocore against ``Emulator`` in the test's own event loop."""

from __future__ import annotations

from typing import Any

import pytest
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError

from athena_spark_emulator import Emulator
from athena_spark_emulator.service import HANDLERS
from athena_spark_emulator.shapecheck import check_output
from tests.virtual_fixtures import _test_client_session  # one session (and model loader) for the tests' clients

ARN = "arn:aws:athena:eu-west-1:210987654321:workgroup/etl"
CONNECT_ARN = "arn:aws:athena:eu-west-1:210987654321:workgroup/connect"


async def call(client: Any, operation: str, **kwargs: Any) -> dict[str, Any]:
    method = next(name for name, api in client.meta.method_to_api_mapping.items() if api == operation)
    response: dict[str, Any] = await getattr(client, method)(**kwargs)
    check_output(client.meta.service_model.operation_model(operation), response)
    return response


async def test_every_operation_with_aiobotocore() -> None:
    async with Emulator(port=0, account_id="210987654321", region="eu-west-1") as emu:
        assert emu.control_url == emu.endpoint_url + "/_emulator"
        session = _test_client_session()
        async with session.create_client(
            "athena", endpoint_url=emu.endpoint_url, region_name="eu-west-1", aws_access_key_id="a",
            aws_secret_access_key="b", config=AioConfig(retries={"total_max_attempts": 1}),
        ) as athena:
            await call(athena, "CreateWorkGroup", Name="etl", Configuration={
                "EngineVersion": {"SelectedEngineVersion": "PySpark engine version 3"}})
            await call(athena, "UpdateWorkGroup", WorkGroup="etl", Description="d")
            assert (await call(athena, "GetWorkGroup", WorkGroup="etl"))["WorkGroup"]["Description"] == "d"
            assert len((await call(athena, "ListWorkGroups"))["WorkGroups"]) == 2
            await call(athena, "TagResource", ResourceARN=ARN, Tags=[{"Key": "k", "Value": "v"}])
            assert (await call(athena, "ListTagsForResource", ResourceARN=ARN))["Tags"][0]["Key"] == "k"
            await call(athena, "UntagResource", ResourceARN=ARN, TagKeys=["k"])
            started = await call(athena, "StartSession", WorkGroup="etl", EngineConfiguration={},
                                 Description="# sim: start=0s terminate_latency=0s")
            sid = started["SessionId"]
            assert started["State"] == "IDLE"
            await call(athena, "GetSession", SessionId=sid)
            await call(athena, "GetSessionStatus", SessionId=sid)
            await call(athena, "ListSessions", WorkGroup="etl")
            calc = await call(athena, "StartCalculationExecution", SessionId=sid,
                              CodeBlock="# sim: runtime=60s stop_latency=0s")
            cid = calc["CalculationExecutionId"]
            assert calc["State"] == "RUNNING"
            await call(athena, "ListExecutors", SessionId=sid)
            await call(athena, "GetCalculationExecution", CalculationExecutionId=cid)
            await call(athena, "GetCalculationExecutionStatus", CalculationExecutionId=cid)
            await call(athena, "GetCalculationExecutionCode", CalculationExecutionId=cid)
            await call(athena, "ListCalculationExecutions", SessionId=sid)
            assert (await call(athena, "StopCalculationExecution", CalculationExecutionId=cid))["State"] == \
                "CANCELED"
            await call(athena, "ListEngineVersions")
            await call(athena, "ListApplicationDPUSizes")
            nid = (await call(athena, "CreateNotebook", WorkGroup="etl", Name="nb"))["NotebookId"]
            await call(athena, "ImportNotebook", WorkGroup="etl", Name="nb2", Type="IPYNB", Payload="{}")
            await call(athena, "ExportNotebook", NotebookId=nid)
            await call(athena, "GetNotebookMetadata", NotebookId=nid)
            await call(athena, "ListNotebookMetadata", WorkGroup="etl")
            await call(athena, "ListNotebookSessions", NotebookId=nid)
            await call(athena, "UpdateNotebook", NotebookId=nid, Payload="{}", Type="IPYNB")
            await call(athena, "UpdateNotebookMetadata", NotebookId=nid, Name="nb1")
            await call(athena, "CreatePresignedNotebookUrl", SessionId=sid)
            await call(athena, "DeleteNotebook", NotebookId=nid)
            assert (await call(athena, "TerminateSession", SessionId=sid))["State"] == "TERMINATED"
            await call(athena, "DeleteWorkGroup", WorkGroup="etl")
            await call(athena, "CreateWorkGroup", Name="connect", Configuration={
                "EngineVersion": {"SelectedEngineVersion": "Apache Spark version 3.5"}})
            connect = (await call(athena, "StartSession", WorkGroup="connect", EngineConfiguration={
                "Classifications": [{"Name": "spark-defaults", "Properties": {"spark.sql.shuffle.partitions": "8"}}]},
                Description="# sim: start=0s busy=60s dpus=4"))["SessionId"]
            await call(athena, "GetSessionEndpoint", SessionId=connect)
            await call(athena, "GetResourceDashboard", ResourceARN=f"{CONNECT_ARN}/session/{connect}")
        async with session.create_client(
            "athena", endpoint_url=emu.endpoint_url, region_name="eu-west-1", aws_access_key_id="a",
            aws_secret_access_key="b", config=AioConfig(parameter_validation=False,
                                                        retries={"total_max_attempts": 1}),
        ) as unchecked:
            with pytest.raises(ClientError) as caught:
                await unchecked.list_sessions(WorkGroup="primary", MaxResults=500)
            assert caught.value.response["Error"]["Code"] == "InvalidRequestException"
        operations = [c["operation"] for c in emu.backend.audit.entries()]
        assert len(operations) == 37 and operations[-1] == "ListSessions"
        assert set(HANDLERS) <= set(operations)  # every implemented Athena operation was called
