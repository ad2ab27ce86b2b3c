"""End-to-end scenarios in virtual time: the real daemon and the emulator in this event loop on one
ManualClock, a real aiobotocore client over HTTP; evidence from the emulator's audit log (exact virtual
instants) and the daemon's metrics.

Instants follow from the configuration in ``tests/daemon_fixtures.py`` (discovery every 250 ms, stop_grace
and terminate_grace 1 s) and the daemon's constants: a check lands ``CROSSING_MARGIN`` (10 ms) after the
crossing it waits for, and an escalation looks again ``first_verify_after`` (1 s) after each call. The daemon
starts at T0; workloads start at T = T0 + 100 ms, between two sweeps, so a crossing is found by its deadline
check rather than by a sweep that happens to coincide with it.
"""

from __future__ import annotations

import itertools
from datetime import timedelta

import aiohttp
import pytest

from supervisor.core import escalation as machine
from supervisor.core.model import TargetKind, TargetRef, Verdict
from supervisor.core.scheduling import CROSSING_MARGIN
from supervisor.storage.sqlite import SqliteStorage
from tests.virtual_fixtures import EXEMPT_TAG, VirtualWorld, ms, times

# Sweeps every second rather than every 250 ms (tests/daemon_fixtures.py) wherever the instants asserted follow
# from crossings and timers, not from when a sweep lists something (targets start 100 ms after the daemon, so the
# sweep at 1 s lists them before their crossings): a quarter of the listing requests.
SWEEPS = "1s"
# Scenarios whose workload starts 100 ms before the daemon (listed by its first sweep, before any crossing) and whose
# asserted instants follow from crossings and the escalation's timers sweep every 5 s: a fifth of those requests.
FEW_SWEEPS = "5s"

MARGIN = CROSSING_MARGIN
VERIFY = timedelta(seconds=1)  # machine.Timing.first_verify_after
GRACE = timedelta(seconds=1)  # stop_grace and terminate_grace in daemon_config
OFFSET = ms(0.1)  # T - T0


async def readyz(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/readyz") as response:
        return response.status, await response.text()


async def test_runtime_violation_is_stopped_at_its_crossing(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    async with world.daemon(discovery_interval=SWEEPS):
        await world.vt.run_for(OFFSET)
        session_id = await world.start_session("etl-a")
        calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s dpus=2")
        submitted = world.now
        assert (await world.calculation(calculation_id))["Status"]["SubmissionDateTime"] == submitted
        await world.vt.run_until_true(lambda: world.calls("StopCalculationExecution"), limit=5)
        stopped = submitted + ms(1.5) + MARGIN
        assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [stopped]
        # A fresh look at enforcement priority just before the Stop, then one verification after VERIFY.
        await world.vt.run_until(stopped + VERIFY + ms(0.5))
        assert times(world.calls("GetCalculationExecutionStatus", CalculationExecutionId=calculation_id)) == [
            stopped, stopped + VERIFY]
        assert await world.calculation_state(calculation_id) == "CANCELED"  # stop_latency 1s
        assert world.metric("athena_supervisor_actions_total", action="stop", policy="etl-limits",
                            outcome="sent") == 1
        assert world.metric("athena_supervisor_violations_total", policy="etl-limits", rule="max_runtime") == 1
        assert world.metric("athena_supervisor_escalations_total", outcome="stopped") == 1
        assert world.metric("athena_supervisor_enforcement_lag_seconds_count") == 1
        assert world.metric("athena_supervisor_enforcement_lag_seconds_sum") == pytest.approx(MARGIN.total_seconds())
    assert len(world.calls("StopCalculationExecution")) == 1
    assert not world.calls("TerminateSession")


async def test_calculation_ignoring_stop_gets_its_session_terminated_after_stop_grace(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    async with world.daemon(discovery_interval=SWEEPS):
        await world.vt.run_for(OFFSET)
        session_id = await world.start_session("etl-a")
        calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s dpus=2 on_stop=ignore")
        submitted = world.now
        await world.vt.run_until_true(lambda: world.calls("TerminateSession"), limit=10)
        stopped = submitted + ms(1.5) + MARGIN
        assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [stopped]
        # The verification at stop + VERIFY is also the end of stop_grace: the session goes at once.
        terminated = stopped + GRACE
        assert times(world.calls("TerminateSession", SessionId=session_id)) == [terminated]
        await world.vt.run_until(terminated + VERIFY)
        assert times(world.calls("GetSessionStatus", SessionId=session_id)) == [terminated + VERIFY]
        assert await world.session_state(session_id) == "TERMINATED"
        assert await world.calculation_state(calculation_id) == "FAILED"
        assert world.metric("athena_supervisor_escalations_total", outcome="escalated") == 1
        assert world.metric("athena_supervisor_escalations_total", outcome="terminated") == 1
        assert world.metric("athena_supervisor_actions_total", action="terminate", policy="etl-limits",
                            outcome="sent") == 1
        await world.vt.run_for(5)
    assert len(world.calls("TerminateSession")) == 1


async def test_session_stuck_terminating_counts_escalation_failures_and_retries_with_backoff(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    policies = [{"name": "idle", "workgroups": ["etl-*"], "session": {"max_idle": "500ms"}}]
    session_id = await world.start_session("etl-a", "# sim: start=0s on_terminate=stuck")
    idle_since = world.now
    assert (await world.session(session_id))["Status"]["IdleSinceDateTime"] == idle_since
    await world.vt.run_for(OFFSET)
    # The session is idle before the daemon starts: its first sweep lists it before its crossing (max_idle 500 ms).
    async with world.daemon(policies=policies, discovery_interval=FEW_SWEEPS):
        first = idle_since + ms(0.5) + MARGIN
        # Each Terminate is verified after terminate_grace; a session still TERMINATING is a failure, retried
        # after a backoff of terminate_grace doubling per failure (1 s, 2 s, 4 s).
        second = first + GRACE + 1 * GRACE
        third = second + GRACE + 2 * GRACE
        fourth = third + GRACE + 4 * GRACE
        await world.vt.run_until(fourth + ms(0.5))
        assert times(world.calls("TerminateSession", SessionId=session_id)) == [first, second, third, fourth]
        assert world.metric("athena_supervisor_escalations_total", outcome="failed") == 3
        assert world.metric("athena_supervisor_escalations_in_flight") == 1
        assert await world.session_state(session_id) == "TERMINATING"


async def test_idle_and_age_limits_terminate_sessions_at_their_crossings(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    await world.create_workgroup("etl-b-young")
    policies = [
        {"name": "idle", "workgroups": ["etl-a"], "session": {"max_idle": "1s"}},
        {"name": "age", "workgroups": ["etl-b-*"], "session": {"max_age": "2s"}},
    ]
    async with world.daemon(discovery_interval=SWEEPS, policies=policies):
        await world.vt.run_for(OFFSET)
        idle_session = await world.start_session("etl-a")
        busy_session = await world.start_session("etl-b-young", "# sim: start=300ms")
        started = world.now
        await world.vt.run_for(ms(0.3))
        await world.start_calculation(busy_session, "# sim: runtime=60s")
        await world.vt.run_until(started + ms(2.5))
        assert times(world.calls("TerminateSession", SessionId=idle_session)) == [started + ms(1) + MARGIN]
        assert times(world.calls("TerminateSession", SessionId=busy_session)) == [started + ms(2) + MARGIN]
        assert (await world.session(busy_session))["Status"]["StartDateTime"] == started
        assert world.metric("athena_supervisor_violations_total", policy="age", rule="max_age") == 1
        assert world.metric("athena_supervisor_violations_total", policy="idle", rule="max_idle") == 1


async def test_dpu_and_cost_limits_are_enforced_at_the_predicted_crossing(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    await world.create_workgroup("etl-cost")
    # 8 DPUs accrue 8 DPU-seconds per second: 0.005 DPU-hours (18 DPU-seconds) 2.25 s after they start.
    # The cost session accrues 1 (coordinator) + 4 DPUs = 5 DPU-seconds per second:
    # 0.0035 USD = 0.01 DPU-hours = 36 DPU-seconds, 7.2 s after it starts.
    policies = [
        {"name": "dpu", "workgroups": ["etl-a"], "calculation": {"max_dpu_hours": 0.005}},
        {"name": "cost", "workgroups": ["etl-cost"], "session": {"max_cost_usd": 0.0035}},
    ]
    async with world.daemon(discovery_interval=SWEEPS, policies=policies):
        await world.vt.run_for(OFFSET)
        dpu_session = await world.start_session("etl-a")
        cost_session = await world.start_session("etl-cost")
        dpu_calculation = await world.start_calculation(dpu_session, "# sim: runtime=60s dpus=8")
        await world.start_calculation(cost_session, "# sim: runtime=60s dpus=4")
        started = world.now
        await world.vt.run_until(started + ms(8))
        assert times(world.calls("StopCalculationExecution", CalculationExecutionId=dpu_calculation)) == [
            started + ms(2.25) + MARGIN]
        assert times(world.calls("TerminateSession", SessionId=cost_session)) == [started + ms(7.2) + MARGIN]
        assert world.metric("athena_supervisor_violations_total", policy="cost", rule="max_cost_usd") == 1
        assert world.metric("athena_supervisor_violations_total", policy="dpu", rule="max_dpu_hours") == 1


async def test_dry_run_journals_and_counts_but_never_acts(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    async with world.daemon(discovery_interval=SWEEPS, mode="dry-run") as service:
        await world.vt.run_for(OFFSET)
        session_id = await world.start_session("etl-a")
        calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s")
        submitted = world.now
        await world.vt.run_until(submitted + ms(5))
        assert world.metric("athena_supervisor_actions_total", action="stop", policy="etl-limits",
                            outcome="dry_run") == 1
        events = service.storage.journal.recent_events(10, target_id=calculation_id)
        assert [(e.event, e.time) for e in events] == [("decision", submitted + ms(1.5) + MARGIN)]
        assert events[0].detail["mode"] == "dry-run"
        assert events[0].detail["rule"] == "max_runtime"
        assert events[0].detail["limit"] == 1.5
    assert not world.calls("StopCalculationExecution")
    assert not world.calls("TerminateSession")


async def test_exempt_and_out_of_scope_sessions_are_left_alone(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    await world.create_workgroup("etl-exempt", tags={EXEMPT_TAG: "true"})
    await world.create_workgroup("adhoc")
    policies = [{"name": "all", "workgroups": ["*"], "calculation": {"max_runtime": "1s"}}]
    async with world.daemon(discovery_interval=SWEEPS, policies=policies):
        await world.vt.run_for(OFFSET)
        watched = await world.start_session("etl-a")
        exempt_by_description = await world.start_session("etl-a", "# sim: start=0s\n[supervisor:exempt] nightly")
        exempt_by_tag = await world.start_session("etl-exempt")
        out_of_scope = await world.start_session("adhoc")
        calculations = {
            session_id: await world.start_calculation(session_id, "# sim: runtime=60s")
            for session_id in (watched, exempt_by_description, exempt_by_tag, out_of_scope)
        }
        submitted = world.now
        await world.vt.run_until(submitted + ms(10))  # forty sweeps after the one stop
    assert times(world.calls("StopCalculationExecution")) == [submitted + ms(1) + MARGIN]
    assert {call.request["CalculationExecutionId"] for call in world.calls("StopCalculationExecution")} == {
        calculations[watched]}
    assert not world.calls("TerminateSession")
    listed = {call.request.get("WorkGroup") for call in world.calls("ListSessions")}
    assert listed == {"etl-a"}, "only in-scope, non-exempt Spark workgroups are listed"


async def test_throttling_is_absorbed(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    async with world.daemon(discovery_interval=SWEEPS) as service:
        await world.vt.run_for(OFFSET)
        session_id = await world.start_session("etl-a")
        calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s")
        submitted = world.now
        world.set_faults(throttle_tps=8, burst=2)
        await world.vt.run_until_true(
            lambda: world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id), limit=10)
        # The Stop's first attempt is at the crossing check; each throttled attempt is retried after the
        # gateway's backoff on the virtual clock: 100 ms doubling, plus up to 200 ms of jitter.
        attempts = times(world.calls("StopCalculationExecution", status=None))
        assert attempts[0] == submitted + ms(1.5) + MARGIN
        for retry, (before, after) in enumerate(itertools.pairwise(attempts), start=1):
            backoff = ms(0.1) * 2 ** (retry - 1)
            assert backoff <= after - before <= backoff + ms(0.2), (retry, after - before)
        assert [call.status for call in world.calls("StopCalculationExecution", status=None)][-1] == 200
        throttled = sum(
            world.metric("athena_supervisor_aws_api_calls_total", operation=operation, outcome="throttled")
            for operation in ("ListSessions", "ListWorkGroups", "ListCalculationExecutions", "ListTagsForResource",
                              "GetCalculationExecutionStatus", "StopCalculationExecution")
        )
        assert throttled == len(world.calls(status=400, error="TooManyRequestsException")) > 0
        assert await readyz(service.http_url) == (200, '{"ready": true, "reason": "ok"}')


async def test_circuit_breaker_holds_actions_when_a_cycle_would_hit_an_abnormal_share(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    safety = {"max_actions_per_minute": 100, "circuit_breaker_fraction": 0.5, "circuit_breaker_min_targets": 2}
    sessions = [await world.start_session("etl-a") for _ in range(4)]
    for session_id in sessions:
        await world.start_calculation(session_id, "# sim: runtime=60s")
    submitted = world.now
    await world.vt.run_for(OFFSET)
    async with world.daemon(discovery_interval=FEW_SWEEPS, safety=safety):
        await world.vt.run_until(submitted + ms(5))
        # Two sessions out of four is the 0.5 share; the third Stop would exceed it and trips the breaker.
        assert times(world.calls("StopCalculationExecution")) == [submitted + ms(1.5) + MARGIN] * 2
        assert world.metric("athena_supervisor_circuit_breaker_open") == 1
        assert world.metric("athena_supervisor_held_actions_total", reason="circuit_breaker") >= 1


async def test_max_actions_per_minute_delays_but_never_drops(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    sessions = [await world.start_session("etl-a") for _ in range(3)]
    for session_id in sessions:
        await world.start_calculation(session_id, "# sim: runtime=600s")
    submitted = world.now
    # The workload is there at the first sweep, so sweeps may be rare: the virtual minute below costs a
    # twentieth of the requests it would at 250 ms.
    async with world.daemon(safety={"max_actions_per_minute": 2, "circuit_breaker_fraction": 1.0},
                            discovery_interval="5s") as service:
        crossing = submitted + ms(1.5) + MARGIN
        await world.vt.run_until(crossing + ms(0.03))
        assert times(world.calls("StopCalculationExecution")) == [crossing] * 2
        assert world.metric("athena_supervisor_held_actions_total", reason="rate_limit") >= 1
        pending = [e for e in service.storage.journal.open_escalations() if e.phase is machine.Phase.STOP_PENDING]
        assert len(pending) == 1, "the third stop waits in the journal for a slot"
        # The slot frees one minute after the first two actions.
        await world.vt.run_until(crossing + ms(61))
        assert times(world.calls("StopCalculationExecution")) == [crossing] * 2 + [crossing + ms(60)]


async def test_an_escalation_resumes_after_a_restart_at_the_instants_it_was_due(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    async with world.daemon(discovery_interval=SWEEPS):
        await world.vt.run_for(OFFSET)
        session_id = await world.start_session("etl-a")
        calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s dpus=2 on_stop=ignore")
        submitted = world.now
        stopped = submitted + ms(1.5) + MARGIN
        await world.vt.run_until(stopped + ms(0.3))  # the Stop is sent; its verification is due at stop + 1 s
    await world.vt.run_for(ms(0.4))  # down for 400 ms
    async with world.daemon(discovery_interval=SWEEPS) as service:
        await world.vt.run_until(stopped + GRACE + ms(0.5))
        # Resumed from the journal: verified when due, found still running, terminated; nothing sent twice.
        assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [stopped]
        assert times(world.calls("TerminateSession", SessionId=session_id)) == [stopped + GRACE]
        entries = service.storage.journal.recent_events(10, target_id=calculation_id)
        events = [entry.event for entry in reversed(entries)]
        assert events == ["decision", "stop.intent", "stop.sent", "verify.terminate_pending", "terminate.intent",
                          "terminate.sent"]


async def test_a_pending_escalation_whose_policy_was_removed_is_voided_on_restart(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    session_id = await world.start_session("etl-a")
    calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s")
    storage = SqliteStorage(world.journal_path)  # the file the daemon uses
    now = world.now
    held = Verdict(target=TargetRef(TargetKind.CALCULATION, calculation_id, session_id, "etl-a"),
                   policy="removed-policy", rule="max_runtime", observed=99.0, limit=1.0, unit="seconds",
                   crossed_at=now, decided_at=now, action="stop", mode="enforce")
    storage.journal.begin_escalation(machine.begin(held, "held-1", now), "decision")
    storage.close_now()
    await world.vt.run_for(5)
    restarted = world.now
    policies = [{"name": "other", "workgroups": ["etl-*"], "calculation": {"max_runtime": "1h"}}]
    async with world.daemon(discovery_interval=SWEEPS, policies=policies) as service:
        await world.vt.run_for(1)
        assert world.metric("athena_supervisor_escalations_total", outcome="voided") == 1
        entry = service.storage.journal.recent_events(1, target_id=calculation_id)[0]
        assert (entry.event, entry.time) == ("escalation.voided", restarted)
        assert entry.detail["reason"] == "policy 'removed-policy' is no longer configured"
    assert not world.calls("StopCalculationExecution")


@pytest.mark.usefixtures("no_aws_credentials")
async def test_without_credentials_the_daemon_stays_up_and_says_why_it_is_not_ready(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    async with world.daemon() as service:
        await world.vt.run_for(1)
        status, body = await readyz(service.http_url)
        assert status == 503 and "NoCredentialsError" in body
        async with aiohttp.ClientSession() as http, http.get(f"{service.http_url}/healthz") as response:
            assert response.status == 200
        assert world.metric("athena_supervisor_aws_api_calls_total", operation="ListWorkGroups",
                            outcome="client_error") == 5, "one attempt per sweep (0, 250, 500, 750, 1000 ms)"


async def test_rare_session_states_are_listed_every_fifth_sweep_and_their_sessions_kept_between(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    starting = await world.start_session("etl-a", "# sim: start=60s")  # stays CREATING for the whole test
    started = world.now
    policies = [{"name": "age", "workgroups": ["etl-*"], "session": {"max_age": "2s"}}]
    async with world.daemon(policies=policies) as service:  # about sweeps: every 250 ms
        await world.vt.run_until(started + ms(2.6))
        assert times(world.calls("TerminateSession", SessionId=starting)) == [started + ms(2) + MARGIN]
        assert service.discovery.sweeps == 11  # at 0, 250, …, 2500 ms
    by_state: dict[str, int] = {}
    for call in world.calls("ListSessions", WorkGroup="etl-a"):
        by_state[call.request["StateFilter"]] = by_state.get(call.request["StateFilter"], 0) + 1
    # Sweeps 0, 5 and 10 list the rare states too.
    assert by_state == {"IDLE": 11, "BUSY": 11, "CREATING": 3, "CREATED": 3, "DEGRADED": 3}


async def test_a_new_workgroup_is_watched_within_the_workgroup_refresh(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    started = world.now
    async with world.daemon(discovery_interval=SWEEPS, discovery={"workgroup_refresh": "5s"}):
        await world.vt.run_for(OFFSET)
        await world.create_workgroup("etl-new")
        await world.vt.run_until(started + ms(10.1))
        assert times(world.calls("ListWorkGroups")) == [started, started + ms(5), started + ms(10)]
        assert times(world.calls("ListSessions", WorkGroup="etl-new"))[0] == started + ms(5)
