"""End-to-end budgets: the real daemon against the emulator; evidence from the audit log, /metrics, the
journal and the events the daemon emitted."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from supervisor.config import parse_settings
from supervisor.emulator.testing import EmulatorHandle
from supervisor.events import EventName, EventSink
from supervisor.service import RunningService, running_service
from tests.daemon_fixtures import SPARK_ENGINE, base_config, eventually
from tests.test_daemon_e2e import calls_of, metric, start_calculation, start_session, wait_idle

pytestmark = pytest.mark.slow
PRICE = 0.35


class Recorder:
    """An EventSink that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, event: EventName, payload: Mapping[str, Any]) -> None:
        self.events.append((event, dict(payload)))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [payload for event, payload in self.events if event == name]


@pytest.fixture
def athena(emulator: EmulatorHandle) -> Any:
    client = emulator.boto3_client()
    for name in ("etl-a", "etl-b"):
        client.create_work_group(Name=name, Configuration={"EngineVersion": SPARK_ENGINE})
    return client


@pytest.fixture
def daemon(emulator: EmulatorHandle, tmp_path: Path) -> Any:
    @asynccontextmanager
    async def start(events: EventSink | None = None, **overrides: Any) -> AsyncIterator[RunningService]:
        overrides.setdefault("policies", [])
        settings = parse_settings(base_config(emulator, tmp_path / "journal.db", **overrides), environ={})
        async with running_service(settings, registry=CollectorRegistry(), events=events) as service:
            yield service

    return start


def usd(millis: int) -> float:
    return millis / 3.6e6 * PRICE


async def test_thresholds_fire_once_in_order_and_stop_calculations(
    emulator: EmulatorHandle, athena: Any, daemon: Any
) -> None:
    session_id = start_session(athena, "etl-a")
    wait_idle(athena, session_id)
    # 1 + 8 DPUs: 0.001 USD (10.3 DPU-seconds) is reached about 1.1 s after the calculation starts.
    calculation_id = start_calculation(athena, session_id, "# sim: runtime=60s dpus=8")
    budgets = [{"name": "etl-daily", "workgroups": ["etl-*"], "period": "rolling:1h", "limit_usd": 0.001,
                "thresholds": [{"at_percent": 50, "action": "notify"},
                               {"at_percent": 100, "action": "stop_calculations"}]}]
    recorder = Recorder()
    async with daemon(events=recorder, budgets=budgets) as service:
        await eventually(lambda: calls_of(emulator, "StopCalculationExecution", CalculationExecutionId=calculation_id))
        assert await metric(service.http_url, "athena_supervisor_budget_limit_usd", budget="etl-daily") == 0.001
        assert await metric(service.http_url, "athena_supervisor_budget_spent_usd", budget="etl-daily") >= 0.001
        assert await metric(service.http_url, "athena_supervisor_actions_total",
                            action="stop", policy="etl-daily", outcome="sent") == 1
        await eventually(lambda: athena.get_calculation_execution(
            CalculationExecutionId=calculation_id)["Status"]["State"] == "CANCELED")
        sweeps = service.supervisor.sweeps
        await eventually(lambda: service.supervisor.sweeps >= sweeps + 3)
    fired = recorder.named("budget_threshold")
    assert [(p["at_percent"], p["action"]) for p in fired] == [(50, "notify"), (100, "stop_calculations")]
    violations = recorder.named("violation")
    assert [(v["target_id"], v["rule"], v["unit"]) for v in violations] == [
        (calculation_id, "budget:etl-daily", "usd")]
    assert len(calls_of(emulator, "StopCalculationExecution")) == 1
