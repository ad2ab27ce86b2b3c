"""End-to-end: the real daemon, a real aiobotocore client over HTTP, the emulator; evidence from the
emulator's audit log and the daemon's /metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from athena_spark_emulator.testing import EmulatorHandle
from supervisor.core import escalation as machine
from supervisor.core.model import TargetKind, TargetRef, Verdict
from supervisor.storage.sqlite import SqliteStorage
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


def start_running_sessions(client: Any, count: int, workgroup: str = "etl-a") -> list[str]:
    """``count`` sessions, each running one long calculation; returns the calculation ids."""
    sessions = [start_session(client, workgroup) for _ in range(count)]
    for session_id in sessions:
        wait_idle(client, session_id)
    return [start_calculation(client, session_id, "# sim: runtime=60s") for session_id in sessions]


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


async def test_calculation_ignoring_stop_gets_its_session_terminated_after_stop_grace(
    emulator: EmulatorHandle, athena: Any, supervisor_factory: SupervisorFactory
) -> None:
    session_id = start_session(athena, "etl-a")
    wait_idle(athena, session_id)
    calculation_id = start_calculation(athena, session_id, "# sim: runtime=60s dpus=2 on_stop=ignore")
    async with supervisor_factory() as service:
        terminates = await eventually(lambda: calls_of(emulator, "TerminateSession", SessionId=session_id))
        stops = calls_of(emulator, "StopCalculationExecution", CalculationExecutionId=calculation_id)
        assert len(stops) == 1
        waited = (call_time(terminates[0]) - call_time(stops[0])).total_seconds()
        assert 1.0 <= waited < 2.5, f"TerminateSession {waited:.3f}s after the Stop (stop_grace 1s)"
        await eventually(lambda: athena.get_session_status(SessionId=session_id)["Status"]["State"] == "TERMINATED")
        await eventually(lambda: athena.get_calculation_execution(
            CalculationExecutionId=calculation_id)["Status"]["State"] == "FAILED")

        async def settled() -> bool:
            return await metric(service.http_url, "athena_supervisor_escalations_total", outcome="terminated") == 1

        await eventually(settled)
        assert await metric(service.http_url, "athena_supervisor_escalations_total", outcome="escalated") == 1
        assert await metric(service.http_url, "athena_supervisor_actions_total",
                            action="terminate", policy="etl-limits", outcome="sent") == 1
    assert len(calls_of(emulator, "TerminateSession")) == 1


async def test_session_stuck_terminating_counts_escalation_failures_and_retries(
    emulator: EmulatorHandle, athena: Any, supervisor_factory: SupervisorFactory
) -> None:
    session_id = start_session(athena, "etl-a", "# sim: start=0.1s on_terminate=stuck")
    wait_idle(athena, session_id)
    policies = [{"name": "idle", "workgroups": ["etl-*"], "session": {"max_idle": "500ms"}}]
    async with supervisor_factory(policies=policies) as service:
        await eventually(lambda: len(calls_of(emulator, "TerminateSession", SessionId=session_id)) >= 2, within=15)

        async def failed() -> bool:
            return await metric(service.http_url, "athena_supervisor_escalations_total", outcome="failed") >= 1

        await eventually(failed)
        assert athena.get_session_status(SessionId=session_id)["Status"]["State"] == "TERMINATING"
        assert await metric(service.http_url, "athena_supervisor_escalations_in_flight") == 1


async def test_idle_and_age_limits_terminate_sessions(
    emulator: EmulatorHandle, athena: Any, supervisor_factory: SupervisorFactory
) -> None:
    athena.create_work_group(Name="etl-b-young", Configuration={"EngineVersion": SPARK_ENGINE})
    idle_session = start_session(athena, "etl-a")
    busy_session = start_session(athena, "etl-b-young")
    wait_idle(athena, idle_session)
    idle_since = athena.get_session(SessionId=idle_session)["Status"]["IdleSinceDateTime"]
    policies = [
        {"name": "idle", "workgroups": ["etl-a"], "session": {"max_idle": "1s"}},
        {"name": "age", "workgroups": ["etl-b-*"], "session": {"max_age": "2s"}},
    ]
    async with supervisor_factory(policies=policies) as service:
        wait_idle(athena, busy_session)
        start_calculation(athena, busy_session, "# sim: runtime=60s")
        idle_terminates = await eventually(lambda: calls_of(emulator, "TerminateSession", SessionId=idle_session))
        idle_lag = (call_time(idle_terminates[0]) - idle_since).total_seconds() - 1.0
        assert 0 <= idle_lag < 0.5
        age_terminates = await eventually(lambda: calls_of(emulator, "TerminateSession", SessionId=busy_session))
        started = athena.get_session(SessionId=busy_session)["Status"]["StartDateTime"]
        age_lag = (call_time(age_terminates[0]) - started).total_seconds() - 2.0
        assert 0 <= age_lag < 0.5
        assert await metric(service.http_url, "athena_supervisor_violations_total", policy="age", rule="max_age") == 1
        assert await metric(service.http_url, "athena_supervisor_violations_total", policy="idle",
                            rule="max_idle") == 1


async def test_dpu_and_cost_limits_are_enforced_near_the_predicted_crossing(
    emulator: EmulatorHandle, athena: Any, supervisor_factory: SupervisorFactory
) -> None:
    athena.create_work_group(Name="etl-cost", Configuration={"EngineVersion": SPARK_ENGINE})
    dpu_session = start_session(athena, "etl-a")
    cost_session = start_session(athena, "etl-cost")
    wait_idle(athena, dpu_session)
    wait_idle(athena, cost_session)
    # 8 DPUs reach 0.005 DPU-hours (18 DPU-seconds) 2.25 s after they start running.
    dpu_calculation = start_calculation(athena, dpu_session, "# sim: runtime=60s dpus=8")
    # The session accrues 1 (coordinator) + 4 DPUs; 0.00035 USD = 0.001 DPU-hours = 3.6 DPU-seconds more.
    start_calculation(athena, cost_session, "# sim: runtime=60s dpus=4")
    cost_base = athena.get_session(SessionId=cost_session)["Statistics"]["DpuExecutionInMillis"]
    cost_limit = (cost_base + 2 * 5 * 1000 + 3600) / 3.6e6 * 0.35
    policies = [
        {"name": "dpu", "workgroups": ["etl-a"], "calculation": {"max_dpu_hours": 0.005}},
        {"name": "cost", "workgroups": ["etl-cost"], "session": {"max_cost_usd": round(cost_limit, 8)}},
    ]
    submitted = athena.get_calculation_execution(
        CalculationExecutionId=dpu_calculation)["Status"]["SubmissionDateTime"]
    async with supervisor_factory(policies=policies) as service:
        stops = await eventually(lambda: calls_of(emulator, "StopCalculationExecution",
                                                  CalculationExecutionId=dpu_calculation))
        lag = (call_time(stops[0]) - submitted).total_seconds() - 2.25
        assert -0.05 <= lag < 0.6, f"DPU stop {lag:.3f}s after the crossing"
        terminates = await eventually(lambda: calls_of(emulator, "TerminateSession", SessionId=cost_session),
                                      within=15)
        assert terminates
        assert await metric(service.http_url, "athena_supervisor_violations_total", policy="cost",
                            rule="max_cost_usd") == 1
        assert await metric(service.http_url, "athena_supervisor_violations_total", policy="dpu",
                            rule="max_dpu_hours") == 1


async def test_dry_run_journals_and_counts_but_never_acts(
    emulator: EmulatorHandle, athena: Any, supervisor_factory: SupervisorFactory
) -> None:
    session_id = start_session(athena, "etl-a")
    wait_idle(athena, session_id)
    calculation_id = start_calculation(athena, session_id, "# sim: runtime=60s")
    async with supervisor_factory(mode="dry-run") as service:

        async def counted() -> bool:
            return await metric(service.http_url, "athena_supervisor_actions_total",
                                action="stop", policy="etl-limits", outcome="dry_run") == 1

        await eventually(counted)
        events = service.storage.journal.recent_events(10, target_id=calculation_id)
        assert [e.event for e in events] == ["decision"]
        assert events[0].detail["mode"] == "dry-run"
        assert events[0].detail["rule"] == "max_runtime"
        assert events[0].detail["limit"] == 1.5
    assert not calls_of(emulator, "StopCalculationExecution")
    assert not calls_of(emulator, "TerminateSession")


async def test_exempt_and_out_of_scope_sessions_are_left_alone(
    emulator: EmulatorHandle, athena: Any, supervisor_factory: SupervisorFactory
) -> None:
    watched = start_session(athena, "etl-a")
    exempt_by_description = start_session(athena, "etl-a", "# sim: start=0.1s\n[supervisor:exempt] nightly")
    exempt_by_tag = start_session(athena, "etl-exempt")
    out_of_scope = start_session(athena, "adhoc")
    for session_id in (watched, exempt_by_description, exempt_by_tag, out_of_scope):
        wait_idle(athena, session_id)
    calculations = {
        session_id: start_calculation(athena, session_id, "# sim: runtime=60s")
        for session_id in (watched, exempt_by_description, exempt_by_tag, out_of_scope)
    }
    policies = [{"name": "all", "workgroups": ["*"], "calculation": {"max_runtime": "1s"}}]
    async with supervisor_factory(policies=policies):
        await eventually(lambda: calls_of(emulator, "StopCalculationExecution",
                                          CalculationExecutionId=calculations[watched]))
        await anyio.sleep(1.0)  # several more sweeps: nothing else may be touched
    stopped = {call["request"]["CalculationExecutionId"] for call in calls_of(emulator, "StopCalculationExecution")}
    assert stopped == {calculations[watched]}
    assert not calls_of(emulator, "TerminateSession")
    listed = {call["request"].get("WorkGroup") for call in calls_of(emulator, "ListSessions")}
    assert listed == {"etl-a"}, "only in-scope, non-exempt Spark workgroups are listed"


async def test_throttling_is_absorbed(
    emulator: EmulatorHandle, athena: Any, supervisor_factory: SupervisorFactory
) -> None:
    session_id = start_session(athena, "etl-a")
    wait_idle(athena, session_id)
    calculation_id = start_calculation(athena, session_id, "# sim: runtime=60s")
    emulator.set_faults(throttle_tps=8, burst=2)
    async with supervisor_factory() as service:
        await eventually(lambda: calls_of(emulator, "StopCalculationExecution", CalculationExecutionId=calculation_id))

        async def throttled() -> bool:
            return sum([
                await metric(service.http_url, "athena_supervisor_aws_api_calls_total", operation=op,
                             outcome="throttled")
                for op in ("ListSessions", "ListWorkGroups", "ListCalculationExecutions", "ListTagsForResource",
                           "GetCalculationExecutionStatus", "StopCalculationExecution")
            ]) > 0

        await eventually(throttled)
        ready = await readyz(service.http_url)
        assert ready == 200
    throttled_calls = [c for c in emulator.calls() if c["error"] == "TooManyRequestsException"]
    assert throttled_calls


async def readyz(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/readyz") as response:
        return response.status


async def test_circuit_breaker_holds_actions_when_a_cycle_would_hit_an_abnormal_share(
    emulator: EmulatorHandle, athena: Any, supervisor_factory: SupervisorFactory
) -> None:
    start_running_sessions(athena, 4)
    safety = {"max_actions_per_minute": 100, "circuit_breaker_fraction": 0.5, "circuit_breaker_min_targets": 2}
    async with supervisor_factory(safety=safety) as service:

        async def tripped() -> bool:
            return await metric(service.http_url, "athena_supervisor_circuit_breaker_open") == 1

        await eventually(tripped)
        assert await metric(service.http_url, "athena_supervisor_held_actions_total", reason="circuit_breaker") >= 1
        await anyio.sleep(0.5)
    assert len(calls_of(emulator, "StopCalculationExecution")) == 2, "only half of the 4 sessions may be hit"


async def test_max_actions_per_minute_delays_but_never_drops(
    emulator: EmulatorHandle, athena: Any, supervisor_factory: SupervisorFactory
) -> None:
    start_running_sessions(athena, 3)
    async with supervisor_factory(safety={"max_actions_per_minute": 2, "circuit_breaker_fraction": 1.0}) as service:

        async def held() -> bool:
            return await metric(service.http_url, "athena_supervisor_held_actions_total", reason="rate_limit") >= 1

        await eventually(held)
        await eventually(lambda: len(calls_of(emulator, "StopCalculationExecution")) == 2)
        await anyio.sleep(0.3)
        assert len(calls_of(emulator, "StopCalculationExecution")) == 2
        open_escalations = [e for e in service.storage.journal.open_escalations() if e.phase.value == "stop_pending"]
        assert len(open_escalations) == 1, "the third stop waits in the journal for a slot"


async def test_a_pending_escalation_whose_policy_was_removed_is_voided_on_restart(
    emulator: EmulatorHandle, athena: Any, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    [calculation_id] = start_running_sessions(athena, 1)
    session_id = athena.get_calculation_execution(CalculationExecutionId=calculation_id)["SessionId"]
    storage = SqliteStorage(tmp_path / "journal.db")
    journal = storage.journal  # the file supervisor_factory uses
    now = datetime.now(UTC)
    held = Verdict(target=TargetRef(TargetKind.CALCULATION, calculation_id, session_id, "etl-a"),
                   policy="removed-policy", rule="max_runtime", observed=99.0, limit=1.0, unit="seconds",
                   crossed_at=now, decided_at=now,
                   action="stop", mode="enforce")
    journal.begin_escalation(machine.begin(held, "held-1", now), "decision")
    storage.close_now()
    policies = [{"name": "other", "workgroups": ["etl-*"], "calculation": {"max_runtime": "1h"}}]
    async with supervisor_factory(policies=policies) as service:

        async def voided() -> bool:
            return await metric(service.http_url, "athena_supervisor_escalations_total", outcome="voided") == 1

        await eventually(voided)
        entry = service.storage.journal.recent_events(1, target_id=calculation_id)[0]
        assert entry.event == "escalation.voided"
        assert entry.detail["reason"] == "policy 'removed-policy' is no longer configured"
    assert not calls_of(emulator, "StopCalculationExecution")


@pytest.mark.usefixtures("no_aws_credentials")
async def test_without_credentials_the_daemon_stays_up_and_says_why_it_is_not_ready(
    supervisor_factory: SupervisorFactory,
) -> None:
    async with supervisor_factory() as service:

        async def explained() -> Any:
            async with aiohttp.ClientSession() as http, http.get(f"{service.http_url}/readyz") as response:
                body = await response.json()
                return response.status == 503 and "NoCredentialsError" in body["reason"]

        await eventually(explained)
        async with aiohttp.ClientSession() as http, http.get(f"{service.http_url}/healthz") as response:
            assert response.status == 200


async def test_rare_session_states_are_listed_every_fifth_sweep_and_their_sessions_kept_between(
    emulator: EmulatorHandle, athena: Any, supervisor_factory: SupervisorFactory
) -> None:
    starting = start_session(athena, "etl-a", "# sim: start=60s")  # stays CREATING for the whole test
    policies = [{"name": "age", "workgroups": ["etl-*"], "session": {"max_age": "2s"}}]
    async with supervisor_factory(policies=policies) as service:
        terminates = await eventually(lambda: calls_of(emulator, "TerminateSession", SessionId=starting))
        started = athena.get_session(SessionId=starting)["Status"]["StartDateTime"]
        assert 0 <= (call_time(terminates[0]) - started).total_seconds() - 2.0 < 0.5
        sweeps = service.discovery.sweeps
        assert sweeps >= 6
    by_state: dict[str, int] = {}
    for call in calls_of(emulator, "ListSessions", WorkGroup="etl-a"):
        by_state[call["request"]["StateFilter"]] = by_state.get(call["request"]["StateFilter"], 0) + 1
    # The daemon may have been stopped in the middle of a sweep's listings: allow one sweep's difference.
    frequent = max(by_state["IDLE"], by_state["BUSY"])
    assert frequent >= 6 and abs(by_state["IDLE"] - by_state["BUSY"]) <= 1, by_state
    for rare in ("CREATING", "CREATED", "DEGRADED"):
        assert -(-(frequent - 1) // 5) <= by_state[rare] <= -(-frequent // 5), by_state
