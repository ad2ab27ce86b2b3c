"""End-to-end budgets in virtual time: the real daemon and the emulator in this event loop on one ManualClock;
evidence from the emulator's audit log (exact virtual instants), the metrics, the journal and the events the
daemon emitted.

Instants follow from the accounting cadence (``supervisor/activities/accounting.py``): a pass at the daemon's
start T0 and every ``discovery_interval`` (``SWEEPS``, 1 s) after it, each reading GetSession of every active
session of the budgeted workgroups; the budgets activity judges each pass at once and enforcement acts at the
same instant. A session bills ``CoordinatorDpuSize`` (1 DPU) while it lives, plus the DPUs of its running
calculation, so its spend at a pass is a product the tests compute. Workloads change between passes (at
T0 + 100 ms and the like), so no crossing is decided by the order of two things at one instant.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

import pytest

from supervisor.core.scheduling import CROSSING_MARGIN
from supervisor.events import EventName
from tests.virtual_fixtures import VirtualWorld, VirtualWorldFactory, ms, times

PRICE = 0.35
# Passes every second rather than every 250 ms (tests/daemon_fixtures.py): a pass costs ~10 requests (discovery's
# listings, accounting's GetSession and listings of ended sessions), and the waits these scenarios are about (a
# stop's latency, a rolling window, an escalation's verification) are fixed in virtual time, so 250 ms passes
# mostly repeat what the pass before saw. Workloads are sized so that each crossing still falls between two
# passes, and the tails that check nothing fires twice keep their number of passes.
SWEEPS = "1s"
PASS = ms(1)  # discovery_interval: the accounting cadence


def usd(dpu_millis: float) -> float:
    return dpu_millis / 3.6e6 * PRICE


class Recorder:
    """An EventSink that keeps what it is given, with the (virtual) instant it was given."""

    def __init__(self, world: VirtualWorld) -> None:
        self.world = world
        self.events: list[tuple[str, dict[str, Any], datetime]] = []

    def emit(self, event: EventName, payload: Mapping[str, Any]) -> None:
        self.events.append((event, dict(payload), self.world.now))

    def names(self, owner: str | None = None) -> list[str]:
        """Event names in order; with ``owner``, only those of that policy or budget."""
        return [event for event, payload, _ in self.events
                if owner is None or owner in (payload.get("budget"), payload.get("policy"))]

    def named(self, name: str) -> list[dict[str, Any]]:
        return [payload for event, payload, _ in self.events if event == name]

    def when(self, name: str, owner: str) -> list[datetime]:
        """The instants of the ``name`` events of a policy or budget called ``owner``."""
        return [at for event, payload, at in self.events
                if event == name and owner in (payload.get("budget"), payload.get("policy"))]


@pytest.fixture
async def world(virtual_world_factory: VirtualWorldFactory) -> AsyncIterator[VirtualWorld]:
    """Spark workgroups etl-a and etl-b at T0 = 2026-01-01T00:00:00Z."""
    async with virtual_world_factory(workgroups=("etl-a", "etl-b")) as world:
        yield world


async def test_thresholds_fire_once_in_order_and_stop_calculations(virtual_world: VirtualWorld) -> None:
    world = virtual_world  # etl-a alone: every pass lists one workgroup, not two
    t0 = world.now
    session_id = await world.start_session("etl-a")  # IDLE at once
    calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s dpus=8")
    # 1 + 8 DPUs: 9 DPU-ms per ms from T0. 50 % of 0.001 USD (5,143 DPU-ms) is first seen by the pass at 1 s
    # (9,000), 100 % (10,286 DPU-ms) by the pass at 2 s (18,000).
    budgets = [{"name": "etl-daily", "workgroups": ["etl-*"], "period": "rolling:1h", "limit_usd": 0.001,
                "thresholds": [{"at_percent": 50, "action": "notify"},
                               {"at_percent": 100, "action": "stop_calculations"}]}]
    recorder = Recorder(world)
    async with world.daemon(discovery_interval=SWEEPS, events=recorder, budgets=budgets, policies=[]):
        crossed = t0 + 2 * PASS
        await world.vt.run_until(crossed)
        assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [crossed]
        assert world.metric("athena_supervisor_budget_limit_usd", budget="etl-daily") == 0.001
        assert world.metric("athena_supervisor_budget_spent_usd", budget="etl-daily") == pytest.approx(usd(18_000))
        assert world.metric("athena_supervisor_actions_total", action="stop", policy="etl-daily", outcome="sent") == 1
        await world.vt.run_until(crossed + ms(1))  # CANCELED after the emulator's stop latency (1 s)
        assert await world.calculation_state(calculation_id) == "CANCELED"
        await world.vt.run_for(4 * PASS)  # four more passes: nothing fires twice
    assert [(p["at_percent"], p["action"]) for p in recorder.named("budget_threshold")] == [
        (50, "notify"), (100, "stop_calculations")]
    assert recorder.when("budget_threshold", "etl-daily") == [t0 + PASS, crossed]
    violations = recorder.named("violation")
    assert [(v["target_id"], v["rule"], v["unit"]) for v in violations] == [
        (calculation_id, "budget:etl-daily", "usd")]
    assert recorder.when("violation", "etl-daily") == [crossed]
    assert len(world.calls("StopCalculationExecution")) == 1


async def test_disable_workgroup_then_enable_when_the_rolling_window_resets(world: VirtualWorld) -> None:
    t0 = world.now
    session_id = await world.start_session("etl-a")  # IDLE at once: 1 DPU
    # A rolling 2 s window (20 ms buckets) with a limit of 5,000 DPU-ms. A 1.5 s calculation on 8 more DPUs from
    # 1 s to 2.5 s: the pass at 2 s counts 2,000 + 8 × 1,000 = 10,000 (1,000 at 1 s): disabled. From 3 s the
    # window holds 2,000 + 8 × max(0, 2,500 − (t − 2,000)) DPU-ms: 14,000 at 3 s, 6,000 at 4 s, 2,000 at 5 s:
    # below the limit, the episode resets and etl-a is enabled.
    budgets = [{"name": "etl-burst", "workgroups": ["etl-a"], "period": "rolling:2s",
                "limit_usd": usd(5_000), "thresholds": [{"at_percent": 100, "action": "disable_workgroup"}]}]
    recorder = Recorder(world)
    async with world.daemon(discovery_interval=SWEEPS, events=recorder, budgets=budgets, policies=[]) as service:
        await world.vt.run_until(t0 + PASS)  # after the pass at 1 s
        await world.start_calculation(session_id, "# sim: runtime=1.5s dpus=8")
        disabled, enabled = t0 + 2 * PASS, t0 + 5 * PASS
        await world.vt.run_until(enabled - ms(0.001))
        assert times(world.calls("UpdateWorkGroup", WorkGroup="etl-a", State="DISABLED")) == [disabled]
        assert (await world.athena.get_work_group(WorkGroup="etl-a"))["WorkGroup"]["State"] == "DISABLED"
        assert not world.calls("UpdateWorkGroup", State="ENABLED")
        await world.vt.run_until(enabled)
        assert times(world.calls("UpdateWorkGroup", WorkGroup="etl-a", State="ENABLED")) == [enabled]
        assert (await world.athena.get_work_group(WorkGroup="etl-a"))["WorkGroup"]["State"] == "ENABLED"
        for action in ("disable_workgroup", "enable_workgroup"):
            assert world.metric("athena_supervisor_actions_total", action=action, policy="etl-burst",
                                outcome="sent") == 1
        events = [(e.event, e.time) for e in reversed(service.storage.journal.recent_events(100))
                  if e.policy == "etl-burst"]
        await world.vt.run_for(4 * PASS)  # four more passes: nothing fires twice
    assert events == [("budget_threshold", disabled), ("workgroup.disable_intent", disabled),
                      ("workgroup.disabled", disabled), ("budget.reset", enabled),
                      ("workgroup.enable_intent", enabled), ("workgroup.enabled", enabled)]
    assert [(name, at) for name, _, at in recorder.events] == [
        ("budget_threshold", disabled), ("workgroup_disabled", disabled), ("workgroup_enabled", enabled)]
    assert len(world.calls("UpdateWorkGroup")) == 2, "etl-b is not in the budget"


async def test_spend_is_exact_across_a_restart_and_sessions_that_ended_unseen(world: VirtualWorld) -> None:
    t0 = world.now
    budgets = [{"name": "etl", "workgroups": ["etl-*"], "period": "rolling:1h", "limit_usd": 100,
                "thresholds": [{"at_percent": 100, "action": "notify"}]}]
    seen = await world.start_session("etl-a")
    await world.start_calculation(seen, "# sim: runtime=60s dpus=4")
    async with world.daemon(discovery_interval=SWEEPS, budgets=budgets, policies=[]):
        await world.vt.run_until(t0 + PASS)
        assert world.metric("athena_supervisor_budget_spent_usd", budget="etl") == pytest.approx(usd(5 * 1000))
    # While the daemon is down: the seen session ends, another one starts and ends unseen.
    await world.vt.run_until(t0 + ms(1.4))
    await world.athena.terminate_session(SessionId=seen)
    await world.vt.run_until(t0 + ms(1.5))
    unseen = await world.start_session("etl-b")
    await world.start_calculation(unseen, "# sim: runtime=0.3s dpus=3")
    await world.vt.run_until(t0 + ms(2))
    assert await world.session_state(unseen) == "IDLE"
    await world.athena.terminate_session(SessionId=unseen)
    await world.vt.run_until(t0 + ms(3.5))
    for session_id in (seen, unseen):
        assert await world.session_state(session_id) == "TERMINATED"
    restarted = world.now
    async with world.daemon(discovery_interval=SWEEPS, budgets=budgets, policies=[]) as service:
        # Started and ended between two passes of the running daemon.
        await world.vt.run_until(restarted + ms(0.1))
        flash = await world.start_session("etl-a", "# sim: start=0.05s terminate_latency=0.05s")
        await world.athena.terminate_session(SessionId=flash)
        await world.vt.run_until(restarted + ms(0.2))
        assert await world.session_state(flash) == "TERMINATED"
        finals = {s: (await world.session(s))["Statistics"]["DpuExecutionInMillis"] for s in (seen, unseen, flash)}
        assert 0 < finals[flash] <= 50  # 50 ms on the coordinator (the emulator truncates float milliseconds)
        expected = usd(sum(finals.values()))
        assert world.metric("athena_supervisor_budget_spent_usd", budget="etl") < expected
        # The pass at 1 s lists the ended sessions of the watched workgroups: the flash one is counted (and
        # the unseen one, unless the first pass at the restart already knew etl-b from discovery).
        await world.vt.run_until(restarted + PASS)
        assert world.metric("athena_supervisor_budget_spent_usd", budget="etl") == pytest.approx(
            expected, rel=1e-12, abs=0)
        passes = service.accounting.passes if service.accounting else 0
        await world.vt.run_for(3 * PASS)
        assert service.accounting is not None and service.accounting.passes == passes + 3
        assert world.metric("athena_supervisor_budget_spent_usd", budget="etl") == pytest.approx(
            expected, rel=1e-12, abs=0)
    finals_after = {s: (await world.session(s))["Statistics"]["DpuExecutionInMillis"] for s in finals}
    assert finals_after == finals, "sessions ended: their statistics are final"




async def ended_unseen(world: VirtualWorld, workgroup: str) -> str:
    """A session that lives one second and ends (TERMINATED) one second later, never running a calculation."""
    session_id = await world.start_session(workgroup)
    await world.vt.run_for(1)
    await world.athena.terminate_session(SessionId=session_id)
    await world.vt.run_for(1)
    assert await world.session_state(session_id) == "TERMINATED"
    return session_id


async def test_sessions_that_ended_unseen_count_at_a_first_start_and_after_an_outage(world: VirtualWorld) -> None:
    # One world for both (a daemon start and five passes fewer than two): the first start counts what ended earlier
    # in the period (no checkpoint yet: from the period's start), the restart what ended while the daemon was down
    # (from the checkpoint the first run kept), and what the first run counted is neither lost nor counted again.
    budgets = [{"name": "etl", "workgroups": ["etl-*"], "period": "daily", "limit_usd": 100,
                "thresholds": [{"at_percent": 100, "action": "notify"}]}]
    earlier = await ended_unseen(world, "etl-a")  # today (the period starts at T0, midnight UTC)
    await world.vt.run_for(600)
    async with world.daemon(discovery_interval=SWEEPS, budgets=budgets, policies=[]):
        await world.vt.run_for(4 * PASS)  # five passes; running: the checkpoint is kept
        first = (await world.session(earlier))["Statistics"]["DpuExecutionInMillis"]
        assert first > 0
        assert world.metric("athena_supervisor_budget_spent_usd", budget="etl") == pytest.approx(usd(first))
    unseen = await ended_unseen(world, "etl-b")  # while the daemon is down for ten minutes
    await world.vt.run_for(600)
    async with world.daemon(discovery_interval=SWEEPS, budgets=budgets, policies=[]):
        await world.vt.run_for(4 * PASS)  # five passes
        second = (await world.session(unseen))["Statistics"]["DpuExecutionInMillis"]
        assert second > 0
        assert world.metric("athena_supervisor_budget_spent_usd", budget="etl") == pytest.approx(usd(first + second))


async def test_warnings_arrive_before_the_action(world: VirtualWorld) -> None:
    t0 = world.now
    budget_session = await world.start_session("etl-a")
    policy_session = await world.start_session("etl-b")
    # From 100 ms, 1 + 9 DPUs: 10 t − 900 DPU-ms at t ms, 30,000 DPU-ms (the limit) at 3,090 ms. The pass at 1 s
    # sees 9,100 at a burn rate of 9.1 DPUs (since 0 s), the crossing 2.3 s away: beyond notify_before (1.5 s);
    # the pass at 2 s sees 19,100 at 10 DPUs, the crossing 1.09 s away: the warning. The pass at 3 s counts
    # 29,100, below the limit; the pass at 4 s finds it crossed.
    budgets = [{"name": "etl-a-budget", "workgroups": ["etl-a"], "period": "rolling:1h", "notify_before": "1500ms",
                "limit_usd": usd(30_000), "thresholds": [{"at_percent": 100, "action": "stop_calculations"}]}]
    policies = [{"name": "etl-b-runtime", "workgroups": ["etl-b"], "notify_before": "1s",
                 "calculation": {"max_runtime": "2s"}}]
    recorder = Recorder(world)
    async with world.daemon(discovery_interval=SWEEPS, events=recorder, budgets=budgets, policies=policies):
        await world.vt.run_until(t0 + ms(0.1))
        budget_calculation = await world.start_calculation(budget_session, "# sim: runtime=60s dpus=9")
        policy_calculation = await world.start_calculation(policy_session, "# sim: runtime=60s dpus=1")
        submitted = world.now
        budget_warned, budget_crossed = t0 + 2 * PASS, t0 + 4 * PASS
        await world.vt.run_until(budget_crossed + PASS)  # a pass after the crossing: it does not act again
    assert times(world.calls("StopCalculationExecution", CalculationExecutionId=budget_calculation)) == [
        budget_crossed]
    policy_stopped = submitted + ms(2) + CROSSING_MARGIN
    assert times(world.calls("StopCalculationExecution", CalculationExecutionId=policy_calculation)) == [
        policy_stopped]
    assert recorder.names("etl-a-budget")[:3] == ["warning", "budget_threshold", "violation"]
    assert recorder.names("etl-b-runtime")[:2] == ["warning", "violation"]
    assert recorder.when("warning", "etl-a-budget") == [budget_warned]
    assert recorder.when("violation", "etl-a-budget") == [budget_crossed]
    budget_warning = next(p for p in recorder.named("warning") if p.get("budget") == "etl-a-budget")
    assert budget_warning["rule"] == "threshold:100"
    assert datetime.fromisoformat(budget_warning["predicted_at"]) == t0 + ms(3.09)
    # The policy warning is a deadline of its own: notify_before ahead of the crossing (known exactly), checked
    # CROSSING_MARGIN after it like every deadline.
    assert recorder.when("warning", "etl-b-runtime") == [submitted + ms(1) + CROSSING_MARGIN]
    assert recorder.when("violation", "etl-b-runtime") == [policy_stopped]
    policy_warning = next(p for p in recorder.named("warning") if p.get("policy") == "etl-b-runtime")
    assert policy_warning["rule"] == "max_runtime" and policy_warning["target_id"] == policy_calculation


async def test_terminate_sessions_threshold_terminates_every_session_of_the_budget(world: VirtualWorld) -> None:
    t0 = world.now
    busy = await world.start_session("etl-a")
    idle = await world.start_session("etl-a")
    other = await world.start_session("etl-b")
    await world.start_calculation(busy, "# sim: runtime=60s dpus=8")
    # etl-a accrues 1 + 8 + 1 DPUs from T0: 0.001 USD (10,286 DPU-ms) is first seen by the pass at 2 s (20,000;
    # 10,000 at 1 s).
    budgets = [{"name": "etl-a-cap", "workgroups": ["etl-a"], "period": "rolling:1h", "limit_usd": 0.001,
                "thresholds": [{"at_percent": 100, "action": "terminate_sessions"}]}]
    recorder = Recorder(world)
    async with world.daemon(discovery_interval=SWEEPS, events=recorder, budgets=budgets, policies=[]):
        crossed = t0 + 2 * PASS
        await world.vt.run_until(crossed)
        assert times(world.calls("TerminateSession", SessionId=busy)) == [crossed]
        assert times(world.calls("TerminateSession", SessionId=idle)) == [crossed]
        assert world.metric("athena_supervisor_actions_total", action="terminate", policy="etl-a-cap",
                            outcome="sent") == 2
        await world.vt.run_for(2)  # the escalations' verification (1 s after the calls), and the passes after it
    assert not world.calls("TerminateSession", SessionId=other), "etl-b is outside the budget"
    assert not world.calls("StopCalculationExecution")
    violations = {(v["target_id"], v["action"]) for v in recorder.named("violation")}
    assert violations == {(busy, "terminate"), (idle, "terminate")}
