"""End-to-end budgets: the real daemon against the emulator; evidence from the audit log, /metrics, the
journal and the events the daemon emitted."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from athena_spark_emulator.testing import EmulatorHandle
from supervisor.config import parse_settings
from supervisor.events import EventName, EventSink
from supervisor.service import RunningService, running_service
from tests.daemon_fixtures import SPARK_ENGINE, base_config, eventually
from tests.test_daemon_e2e import call_time, calls_of, metric, start_calculation, start_session, wait_idle

pytestmark = pytest.mark.slow
PRICE = 0.35


class Recorder:
    """An EventSink that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.times: list[float] = []

    def emit(self, event: EventName, payload: Mapping[str, Any]) -> None:
        self.events.append((event, dict(payload)))
        self.times.append(time.monotonic())

    def first(self, name: str, owner: str) -> float:
        """When the first ``name`` event of a policy or budget called ``owner`` arrived (monotonic)."""
        return next(t for (event, p), t in zip(self.events, self.times, strict=True)
                    if event == name and owner in (p.get("budget"), p.get("policy")))

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
        await eventually(lambda: athena.get_calculation_execution(
            CalculationExecutionId=calculation_id)["Status"]["State"] == "CANCELED")
        assert await metric(service.http_url, "athena_supervisor_actions_total",
                            action="stop", policy="etl-daily", outcome="sent") == 1
        sweeps = service.discovery.sweeps
        await eventually(lambda: service.discovery.sweeps >= sweeps + 3)
    fired = recorder.named("budget_threshold")
    assert [(p["at_percent"], p["action"]) for p in fired] == [(50, "notify"), (100, "stop_calculations")]
    violations = recorder.named("violation")
    assert [(v["target_id"], v["rule"], v["unit"]) for v in violations] == [
        (calculation_id, "budget:etl-daily", "usd")]
    assert len(calls_of(emulator, "StopCalculationExecution")) == 1


async def test_disable_workgroup_then_enable_when_the_rolling_window_resets(
    emulator: EmulatorHandle, athena: Any, daemon: Any
) -> None:
    session_id = start_session(athena, "etl-a")
    wait_idle(athena, session_id)
    # Idle, the session spends 1 DPU: 2 DPU-seconds per 2 s window (33 %). A 1.5 s calculation on 8 more DPUs
    # pushes the window past 6 DPU-seconds; 2 s after it ends the window is back to 2 DPU-seconds.
    budgets = [{"name": "etl-burst", "workgroups": ["etl-a"], "period": "rolling:2s",
                "limit_usd": round(usd(6000), 9), "thresholds": [{"at_percent": 100, "action": "disable_workgroup"}]}]
    recorder = Recorder()
    async with daemon(events=recorder, budgets=budgets) as service:
        start_calculation(athena, session_id, "# sim: runtime=1.5s dpus=8")
        await eventually(lambda: calls_of(emulator, "UpdateWorkGroup", WorkGroup="etl-a", State="DISABLED"))
        assert athena.get_work_group(WorkGroup="etl-a")["WorkGroup"]["State"] == "DISABLED"
        await eventually(lambda: calls_of(emulator, "UpdateWorkGroup", WorkGroup="etl-a", State="ENABLED"), within=8)
        assert athena.get_work_group(WorkGroup="etl-a")["WorkGroup"]["State"] == "ENABLED"
        assert await metric(service.http_url, "athena_supervisor_actions_total", action="disable_workgroup",
                            policy="etl-burst", outcome="sent") == 1

        async def enabled_counted() -> bool:  # counted once the answer is journaled, just after the call
            return await metric(service.http_url, "athena_supervisor_actions_total", action="enable_workgroup",
                                policy="etl-burst", outcome="sent") == 1

        await eventually(enabled_counted)
        events = [e.event for e in reversed(service.storage.journal.recent_events(100)) if e.policy == "etl-burst"]
    assert events == ["budget_threshold", "workgroup.disable_intent", "workgroup.disabled", "budget.reset",
                      "workgroup.enable_intent", "workgroup.enabled"]
    assert [name for name, _ in recorder.events] == ["budget_threshold", "workgroup_disabled", "workgroup_enabled"]
    assert len(calls_of(emulator, "UpdateWorkGroup")) == 2, "etl-b is not in the budget"


async def test_spend_is_exact_across_a_restart_and_sessions_that_ended_unseen(
    emulator: EmulatorHandle, athena: Any, daemon: Any
) -> None:
    budgets = [{"name": "etl", "workgroups": ["etl-*"], "period": "rolling:1h", "limit_usd": 100,
                "thresholds": [{"at_percent": 100, "action": "notify"}]}]
    seen = start_session(athena, "etl-a")
    wait_idle(athena, seen)
    start_calculation(athena, seen, "# sim: runtime=60s dpus=4")
    async with daemon(budgets=budgets) as service:
        async def counted() -> bool:
            return await metric(service.http_url, "athena_supervisor_budget_spent_usd", budget="etl") > 0

        await eventually(counted)
    # While the daemon is down: the seen session ends, another one starts and ends unseen.
    athena.terminate_session(SessionId=seen)
    unseen = start_session(athena, "etl-b")
    wait_idle(athena, unseen)
    start_calculation(athena, unseen, "# sim: runtime=0.3s dpus=3")
    await eventually(lambda: athena.get_session_status(SessionId=unseen)["Status"]["State"] == "IDLE", within=5)
    athena.terminate_session(SessionId=unseen)
    for session_id in (seen, unseen):
        await eventually(lambda s=session_id: athena.get_session_status(SessionId=s)["Status"]["State"] == "TERMINATED")
    async with daemon(budgets=budgets) as service:
        # Started and ended between two looks of the running daemon.
        flash = start_session(athena, "etl-a", "# sim: start=0.05s terminate_latency=0.05s")
        athena.terminate_session(SessionId=flash)
        await eventually(lambda: athena.get_session_status(SessionId=flash)["Status"]["State"] == "TERMINATED")
        finals = {s: athena.get_session(SessionId=s)["Statistics"]["DpuExecutionInMillis"]
                  for s in (seen, unseen, flash)}
        expected = usd(sum(finals.values()))

        async def exact() -> bool:
            spent = await metric(service.http_url, "athena_supervisor_budget_spent_usd", budget="etl")
            return abs(spent - expected) < 1e-9

        await eventually(exact)
        passes = service.accounting.passes
        await eventually(lambda: service.accounting.passes >= passes + 3)
        assert abs(await metric(service.http_url, "athena_supervisor_budget_spent_usd", budget="etl") - expected) < 1e-9
    finals_after = {s: athena.get_session(SessionId=s)["Statistics"]["DpuExecutionInMillis"] for s in finals}
    assert finals_after == finals, "sessions ended: their statistics are final"


async def test_a_fresh_install_counts_what_ended_before_it_started(
    emulator: EmulatorHandle, athena: Any, daemon: Any
) -> None:
    """The first accounting pass waits for discovery to know the watched workgroups: a pass with none known
    lists nothing, and must not move the checkpoint past what it did not list."""
    # Started 10 minutes ago and idle-timed out (1 minute) about 9 minutes ago: before the daemon starts, and
    # outside the minute of clock-skew margin a later pass would list again.
    created = emulator.populate({"sessions": [{"workgroup": "etl-a", "started_ago": "10m", "idle_timeout_minutes": 1,
                                               "description": "# sim: start=1s"}]})
    ended = athena.get_session(SessionId=created["sessions"][0]["SessionId"])
    assert ended["Status"]["State"] == "TERMINATED"
    expected = usd(ended["Statistics"]["DpuExecutionInMillis"])
    assert expected > 0
    budgets = [{"name": "etl", "workgroups": ["etl-*"], "period": "rolling:1h", "limit_usd": 100,
                "thresholds": [{"at_percent": 100, "action": "notify"}]}]
    async with daemon(budgets=budgets) as service:
        assert service.accounting is not None
        await eventually(lambda: service.accounting is not None and service.accounting.passes >= 3)
        spent = await metric(service.http_url, "athena_supervisor_budget_spent_usd", budget="etl")
        assert abs(spent - expected) < 1e-9
        first_pass = min(call_time(c) for c in calls_of(emulator, "ListSessions", StateFilter="TERMINATED"))
        first_sweep_listing = min(call_time(c) for c in calls_of(emulator, "ListSessions", StateFilter="IDLE"))
        assert first_pass > first_sweep_listing


async def test_a_pass_before_any_workgroup_is_known_keeps_the_checkpoint(
    emulator: EmulatorHandle, athena: Any, daemon: Any
) -> None:
    """While ListWorkGroups fails, discovery watches nothing and accounting lists nothing: the checkpoint stays,
    and once the workgroups are known the session that ended before the start is counted."""
    created = emulator.populate({"sessions": [{"workgroup": "etl-a", "started_ago": "10m", "idle_timeout_minutes": 1,
                                               "description": "# sim: start=1s"}]})
    expected = usd(athena.get_session(SessionId=created["sessions"][0]["SessionId"])["Statistics"][
        "DpuExecutionInMillis"])
    emulator.add_error("AccessDeniedException", operation="ListWorkGroups")
    budgets = [{"name": "etl", "workgroups": ["etl-*"], "period": "rolling:1h", "limit_usd": 100,
                "thresholds": [{"at_percent": 100, "action": "notify"}]}]
    async with daemon(budgets=budgets) as service:
        await eventually(lambda: service.accounting is not None and service.accounting.passes >= 2)
        assert not calls_of(emulator, "ListSessions")
        emulator.clear_errors()

        async def counted() -> bool:
            spent = await metric(service.http_url, "athena_supervisor_budget_spent_usd", budget="etl")
            return abs(spent - expected) < 1e-9

        await eventually(counted)


async def test_warnings_arrive_before_the_action(
    emulator: EmulatorHandle, athena: Any, daemon: Any
) -> None:
    budget_session = start_session(athena, "etl-a")
    policy_session = start_session(athena, "etl-b")
    wait_idle(athena, budget_session)
    wait_idle(athena, policy_session)
    budgets = [{"name": "etl-a-budget", "workgroups": ["etl-a"], "period": "rolling:1h", "notify_before": "1500ms",
                "limit_usd": round(usd(30_000), 9),  # 1 + 9 DPUs: about 3 s after the calculation starts
                "thresholds": [{"at_percent": 100, "action": "stop_calculations"}]}]
    policies = [{"name": "etl-b-runtime", "workgroups": ["etl-b"], "notify_before": "1s",
                 "calculation": {"max_runtime": "2s"}}]
    recorder = Recorder()
    async with daemon(events=recorder, budgets=budgets, policies=policies):
        budget_calculation = start_calculation(athena, budget_session, "# sim: runtime=60s dpus=9")
        policy_calculation = start_calculation(athena, policy_session, "# sim: runtime=60s dpus=1")
        for calculation_id in (budget_calculation, policy_calculation):
            await eventually(lambda c=calculation_id: calls_of(emulator, "StopCalculationExecution",
                                                               CalculationExecutionId=c))
    names = [(name, payload.get("budget") or payload.get("policy")) for name, payload in recorder.events]
    budget_order = [name for name, owner in names if owner == "etl-a-budget"]
    policy_order = [name for name, owner in names if owner == "etl-b-runtime"]
    assert budget_order[:3] == ["warning", "budget_threshold", "violation"]
    assert policy_order[:2] == ["warning", "violation"]
    budget_warning = next(p for p in recorder.named("warning") if p.get("budget") == "etl-a-budget")
    assert budget_warning["rule"] == "threshold:100" and budget_warning["predicted_at"]
    # Warned about notify_before ahead (less a sweep or two for the burn rate to settle).
    assert recorder.first("violation", "etl-a-budget") - recorder.first("warning", "etl-a-budget") > 0.8
    assert recorder.first("violation", "etl-b-runtime") - recorder.first("warning", "etl-b-runtime") > 0.8
    policy_warning = next(p for p in recorder.named("warning") if p.get("policy") == "etl-b-runtime")
    assert policy_warning["rule"] == "max_runtime" and policy_warning["target_id"] == policy_calculation


async def test_terminate_sessions_threshold_terminates_every_session_of_the_budget(
    emulator: EmulatorHandle, athena: Any, daemon: Any
) -> None:
    busy = start_session(athena, "etl-a")
    idle = start_session(athena, "etl-a")
    other = start_session(athena, "etl-b")
    for session_id in (busy, idle, other):
        wait_idle(athena, session_id)
    start_calculation(athena, busy, "# sim: runtime=60s dpus=8")
    budgets = [{"name": "etl-a-cap", "workgroups": ["etl-a"], "period": "rolling:1h", "limit_usd": 0.001,
                "thresholds": [{"at_percent": 100, "action": "terminate_sessions"}]}]
    recorder = Recorder()
    async with daemon(events=recorder, budgets=budgets) as service:
        for session_id in (busy, idle):
            await eventually(lambda s=session_id: calls_of(emulator, "TerminateSession", SessionId=s))

        async def both_counted() -> bool:
            return await metric(service.http_url, "athena_supervisor_actions_total", action="terminate",
                                policy="etl-a-cap", outcome="sent") == 2

        await eventually(both_counted)
    assert not calls_of(emulator, "TerminateSession", SessionId=other), "etl-b is outside the budget"
    assert not calls_of(emulator, "StopCalculationExecution")
    violations = {(v["target_id"], v["action"]) for v in recorder.named("violation")}
    assert violations == {(busy, "terminate"), (idle, "terminate")}
