"""The demo's user: creates workgroups, sessions and calculations through the Athena API, and looks at them.

This plays the part of the people whose Spark work the supervisor watches, so it has its own aiobotocore
client (the daemon's :mod:`supervisor.gateway` may only call what the supervisor's IAM policy grants).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from aiobotocore.session import get_session

SPARK_ENGINE = {"SelectedEngineVersion": "PySpark engine version 3"}
ENGINE_CONFIGURATION = {"CoordinatorDpuSize": 1, "MaxConcurrentDpus": 60, "DefaultExecutorDpuSize": 1}
# Apache Spark version 3.5 takes Spark properties as classifications, and no DPU sizes.
SPARK_CONNECT_CONFIGURATION = {"MaxConcurrentDpus": 60, "Classifications": [
    {"Name": "spark-defaults", "Properties": {"spark.sql.shuffle.partitions": "16"}}]}
# The emulator accepts any SigV4 credentials; these are never sent anywhere else.
DUMMY_CREDENTIALS = {"aws_access_key_id": "demo", "aws_secret_access_key": "demo"}


class Athena:
    """A thin async wrapper over an aiobotocore Athena client (one call per method)."""

    def __init__(self, client: Any, *, region: str, account_id: str) -> None:
        self._client = client
        self.region = region
        self.account_id = account_id

    async def create_spark_workgroup(self, name: str, *, tags: dict[str, str] | None = None,
                                     engine: str = SPARK_ENGINE["SelectedEngineVersion"]) -> None:
        await self._client.create_work_group(
            Name=name, Configuration={"EngineVersion": {"SelectedEngineVersion": engine}},
            Tags=[{"Key": key, "Value": value} for key, value in (tags or {}).items()],
        )

    async def start_session(self, workgroup: str, description: str, *, spark_connect: bool = False) -> str:
        response = await self._client.start_session(
            WorkGroup=workgroup, Description=description,
            EngineConfiguration=SPARK_CONNECT_CONFIGURATION if spark_connect else ENGINE_CONFIGURATION,
        )
        return str(response["SessionId"])

    async def session_state(self, session_id: str) -> str:
        response = await self._client.get_session_status(SessionId=session_id)
        return str(response["Status"]["State"])

    async def wait_ready(self, session_id: str, *, within: float = 30.0) -> None:
        """Until the session is IDLE (or BUSY: a Spark Connect session whose job started at once)."""
        deadline = time.monotonic() + within
        while (state := await self.session_state(session_id)) not in ("IDLE", "BUSY"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"session {session_id} is {state}, not IDLE, after {within:g}s")
            await anyio.sleep(0.1)

    async def start_calculation(self, session_id: str, code: str) -> str:
        response = await self._client.start_calculation_execution(SessionId=session_id, CodeBlock=code)
        return str(response["CalculationExecutionId"])

    async def calculation(self, calculation_id: str) -> dict[str, Any]:
        response: dict[str, Any] = await self._client.get_calculation_execution_status(
            CalculationExecutionId=calculation_id
        )
        return response


@asynccontextmanager
async def athena_client(endpoint_url: str, *, region: str, account_id: str) -> AsyncIterator[Athena]:
    """An Athena client for ``endpoint_url`` signed with dummy credentials."""
    async with get_session().create_client(
        "athena", region_name=region, endpoint_url=endpoint_url, **DUMMY_CREDENTIALS
    ) as client:
        yield Athena(client, region=region, account_id=account_id)
