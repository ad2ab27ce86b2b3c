"""End-to-end: the real daemon, a real aiobotocore client over HTTP, the emulator; evidence from the
emulator's audit log and the daemon's /metrics."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import aiohttp
import pytest

from supervisor.emulator.testing import EmulatorHandle
from tests.daemon_fixtures import SPARK_ENGINE, SupervisorFactory, eventually

pytestmark = pytest.mark.slow


def start_session(client: Any, workgroup: str, description: str = "# sim: start=0.1s") -> str:
    session_id: str = client.start_session(
        WorkGroup=workgroup, Description=description,
        EngineConfiguration={"CoordinatorDpuSize": 1, "MaxConcurrentDpus": 20, "DefaultExecutorDpuSize": 1},
    )["SessionId"]
    return session_id


def wait_idle(client: Any, session_id: str) -> None:
    import time

    deadline = time.monotonic() + 5
    while client.get_session_status(SessionId=session_id)["Status"]["State"] != "IDLE":
        assert time.monotonic() < deadline, "session never became IDLE"
        time.sleep(0.02)


def start_calculation(client: Any, session_id: str, pragma: str) -> str:
    calculation_id: str = client.start_calculation_execution(
        SessionId=session_id, CodeBlock=f"{pragma}\nspark.range(10).count()"
    )["CalculationExecutionId"]
    return calculation_id


def calls_of(emulator: EmulatorHandle, operation: str, **request: str) -> list[dict[str, Any]]:
    return [
        call for call in emulator.calls(operation=operation)
        if call["status"] == 200 and all(call["request"].get(k) == v for k, v in request.items())
    ]


def call_time(call: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(call["time"].replace("Z", "+00:00"))


async def metric(url: str, name: str, **labels: str) -> float:
    """Read one sample from the daemon's /metrics over HTTP (0 when absent)."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as response:
        text = await response.text()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        sample_name, _, sample_labels = sample.partition("{")
        if sample_name != name:
            continue
        have = ",".join(sorted(sample_labels.rstrip("}").split(","))) if sample_labels else ""
        if have == wanted:
            return float(value)
    return 0.0


@pytest.fixture
def athena(emulator: EmulatorHandle) -> Any:
    client = emulator.boto3_client()
    for name in ("etl-a", "etl-exempt", "adhoc"):
        client.create_work_group(Name=name, Configuration={"EngineVersion": SPARK_ENGINE})
    client.tag_resource(ResourceARN="arn:aws:athena:us-east-1:123456789012:workgroup/etl-exempt",
                        Tags=[{"Key": "athena-supervisor/exempt", "Value": "true"}])
    return client


async def test_runtime_violation_is_stopped_right_after_its_crossing(
    emulator: EmulatorHandle, athena: Any, supervisor_factory: SupervisorFactory
) -> None:
    session_id = start_session(athena, "etl-a")
    wait_idle(athena, session_id)
    calculation_id = start_calculation(athena, session_id, "# sim: runtime=60s dpus=2")
    submitted = athena.get_calculation_execution(CalculationExecutionId=calculation_id)["Status"]["SubmissionDateTime"]
    async with supervisor_factory() as service:
        stops = await eventually(lambda: calls_of(emulator, "StopCalculationExecution",
                                                  CalculationExecutionId=calculation_id))
        lag = (call_time(stops[0]) - submitted).total_seconds() - 1.5
        assert 0 <= lag < 0.5, f"stop sent {lag:.3f}s after the crossing"
        await eventually(lambda: athena.get_calculation_execution(
            CalculationExecutionId=calculation_id)["Status"]["State"] == "CANCELED")
        assert await metric(service.http_url, "athena_supervisor_actions_total",
                            action="stop", policy="etl-limits", outcome="sent") == 1
        assert await metric(service.http_url, "athena_supervisor_violations_total",
                            policy="etl-limits", rule="max_runtime") == 1
        assert await metric(service.http_url, "athena_supervisor_enforcement_lag_seconds_count") == 1
    assert len(calls_of(emulator, "StopCalculationExecution")) == 1
    assert not calls_of(emulator, "TerminateSession")
