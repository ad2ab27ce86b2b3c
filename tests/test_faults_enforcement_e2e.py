"""Fault scenarios of enforcement in virtual time: a restart with a Stop or Terminate in flight (acted once), a
destructive call refused for a while (backoff from 1 s, not terminate_grace) and a 5xx that may have taken
effect (looked at before it is sent again).

Instants follow from ``tests/daemon_fixtures.py`` as in ``tests/test_daemon_e2e.py``: a crossing check lands
``CROSSING_MARGIN`` after the crossing, and an escalation looks again ``first_verify_after`` (1 s) after a call.
The scenarios about calls in flight set ``aws.connect_timeout`` 1 s and ``aws.read_timeout`` 5 s: a call that
cannot be repeated is in flight for at most ``Gateway.in_flight_window``, twice those, 12 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from supervisor.core import escalation as machine
from supervisor.core.model import TargetKind, TargetRef, Verdict
from supervisor.core.scheduling import CROSSING_MARGIN
from supervisor.service import RunningService
from supervisor.storage.sqlite import SqliteStorage
from tests.virtual_fixtures import ACCOUNT_ID, REGION, VirtualWorld, ms, times

MARGIN = CROSSING_MARGIN
OFFSET = ms(0.1)
WINDOW = ms(12)  # 2 × (connect_timeout 1 s + read_timeout 5 s)
# Scenarios whose target is known at the daemon's start (resumed from the journal, or started 100 ms before the
# daemon and listed by its first sweep, before its crossing) sweep every 5 s: what is asserted (the looks, the calls,
# the journal) follows from the intent's or the crossing's instant and the escalation's timers, not from a listing,
# and the sweeps that still list the target (the restart scenarios': at the restart, twice more within the in-flight
# window, five times after it) must not act on it. A fifth of the sweeps' requests.
FEW_SWEEPS = "5s"


def aws_with_short_timeouts(world: VirtualWorld) -> dict[str, Any]:
    return {"region": REGION, "endpoint_url": world.emulator.endpoint_url, "max_requests_per_second": 200,
            "account_id": ACCOUNT_ID, "max_attempts": 6, "connect_timeout": "1s", "read_timeout": "5s"}


async def readyz(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/readyz") as response:
        return response.status, await response.text()


def journaled(service: RunningService, target_id: str) -> list[tuple[str, datetime]]:
    """The journal's events about a target, oldest first, with their instants."""
    return [(entry.event, entry.time) for entry in reversed(service.storage.journal.recent_events(50,
                                                                                              target_id=target_id))]


# -- 2. a restart with a destructive call in flight -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InFlight:
    """How one kind of destructive call is set up, sent by the test, and looked at by the daemon."""

    kind: TargetKind
    operation: str  # the destructive call
    look: str  # the daemon's look at the target
    intent_event: str
    sent_event: str
    requested_phase: str

    async def target(self, world: VirtualWorld, *, slow: bool) -> tuple[TargetRef, Callable[[], Awaitable[Any]]]:
        """A live target (taking 15 s to end after the call when ``slow``) and the call that ends it."""
        if self.kind is TargetKind.CALCULATION:
            session_id = await world.start_session("etl-a")
            latency = " stop_latency=15s" if slow else ""
            calculation_id = await world.start_calculation(session_id, f"# sim: runtime=600s{latency}")
            return (TargetRef(TargetKind.CALCULATION, calculation_id, session_id, "etl-a"),
                    lambda: world.athena.stop_calculation_execution(CalculationExecutionId=calculation_id))
        latency = " terminate_latency=15s" if slow else ""
        session_id = await world.start_session("etl-a", f"# sim: start=0s{latency}")
        return (TargetRef(TargetKind.SESSION, session_id, session_id, "etl-a"),
                lambda: world.athena.terminate_session(SessionId=session_id))

    def journal_intent(self, world: VirtualWorld, target: TargetRef, intent_at: datetime) -> None:
        """What a daemon that died right after journaling the intent left behind."""
        stop = self.kind is TargetKind.CALCULATION
        verdict = Verdict(target=target, policy="etl-limits" if stop else "idle",
                          rule="max_runtime" if stop else "max_idle", observed=2.0, limit=1.5, unit="seconds",
                          crossed_at=intent_at, decided_at=intent_at, action="stop" if stop else "terminate",
                          mode="enforce")
        storage = SqliteStorage(world.journal_path)  # the file the daemon uses
        begun = machine.begin(verdict, "in-flight-1", intent_at)
        storage.journal.begin_escalation(begun, "decision")
        step = machine.Step.SEND_STOP if stop else machine.Step.SEND_TERMINATE
        storage.journal.save(machine.intend(begun, step, intent_at), self.intent_event,
                             {"operation": self.operation}, time=intent_at)
        storage.close_now()


STOP = InFlight(TargetKind.CALCULATION, "StopCalculationExecution", "GetCalculationExecutionStatus", "stop.intent",
                "stop.sent", "verify.stop_requested")
TERMINATE = InFlight(TargetKind.SESSION, "TerminateSession", "GetSessionStatus", "terminate.intent",
                     "terminate.sent", "verify.terminate_requested")
# The session's policy never acts by itself here: the journaled escalation is all there is.
POLICIES = [{"name": "etl-limits", "workgroups": ["etl-*"], "calculation": {"max_runtime": "1500ms"}},
            {"name": "idle", "workgroups": ["etl-*"], "session": {"max_idle": "1h"}}]


def request_of(call: InFlight, target: TargetRef) -> dict[str, str]:
    if call.kind is TargetKind.CALCULATION:
        return {"CalculationExecutionId": target.target_id}
    return {"SessionId": target.session_id}


@pytest.mark.parametrize("call", [STOP, TERMINATE], ids=["stop", "terminate"])
async def test_a_restart_waits_out_a_call_still_in_flight_and_never_sends_it_twice(
    virtual_world: VirtualWorld, call: InFlight,
) -> None:
    world = virtual_world
    target, send = await call.target(world, slow=True)
    intent_at = world.now
    call.journal_intent(world, target, intent_at)
    # The call reached AWS at the intent, but AWS processes it only 4 s later.
    world.emulator.backend.set_faults(call.operation, latency="4s")
    in_flight = asyncio.ensure_future(send())
    await world.vt.run_for(1)  # the daemon restarts 1 s after it died
    restarted = world.now
    async with world.daemon(aws=aws_with_short_timeouts(world), policies=POLICIES, discovery_interval=FEW_SWEEPS,
                            escalation={"stop_grace": "30s", "terminate_grace": "30s"}) as service:
        await world.vt.run_until(intent_at + ms(40))
        request = request_of(call, target)
        assert times(world.calls(call.operation, **request)) == [intent_at], "sent once: by the daemon that died"
        # Still live at the restart: looked at again once the call cannot be in flight any more (intent + 12 s),
        # found ending (the call took effect at intent + 4 s): the call counts as sent from then (a grace never
        # starts before the call is known to have landed), verified 1, 2, 4, 8 s later until it ended
        # (intent + 19 s).
        adopted = intent_at + WINDOW
        assert times(world.calls(call.look, **request)) == [restarted, adopted] + [
            adopted + ms(seconds) for seconds in (1, 2, 4, 8)]
        assert journaled(service, target.target_id) == [
            ("decision", intent_at), (call.intent_event, intent_at), (call.requested_phase, adopted),
            ("verify.done", adopted + ms(8))]
        outcome = "stopped" if call is STOP else "terminated"
        assert world.metric("athena_supervisor_escalations_total", outcome=outcome) == 1
    await in_flight


@pytest.mark.parametrize("call", [STOP, TERMINATE], ids=["stop", "terminate"])
async def test_a_restart_resends_a_call_that_never_reached_aws_once_after_the_in_flight_window(
    virtual_world: VirtualWorld, call: InFlight,
) -> None:
    world = virtual_world
    target, _ = await call.target(world, slow=False)
    intent_at = world.now
    call.journal_intent(world, target, intent_at)  # … and the daemon died before the call left
    await world.vt.run_for(1)
    restarted = world.now
    async with world.daemon(aws=aws_with_short_timeouts(world), policies=POLICIES, discovery_interval=FEW_SWEEPS,
                            escalation={"stop_grace": "30s", "terminate_grace": "30s"}) as service:
        await world.vt.run_until(intent_at + ms(40))
        request = request_of(call, target)
        resent = intent_at + WINDOW
        assert times(world.calls(call.operation, **request)) == [resent]
        assert times(world.calls(call.look, **request)) == [restarted, resent, resent + ms(1)]
        assert journaled(service, target.target_id) == [
            ("decision", intent_at), (call.intent_event, intent_at), ("intent.unanswered", resent),
            (call.intent_event, resent), (call.sent_event, resent), ("verify.done", resent + ms(1))]


async def runaway_before_the_daemon(world: VirtualWorld, sim: str) -> tuple[str, str, datetime, datetime]:
    """A calculation in etl-a (limit 1.5 s) started OFFSET before the daemon, so that its first sweep lists it
    before its crossing: ``(session_id, calculation_id, submitted, crossing)``."""
    session_id = await world.start_session("etl-a")
    calculation_id = await world.start_calculation(session_id, sim)
    submitted = world.now
    await world.vt.run_for(OFFSET)
    return session_id, calculation_id, submitted, submitted + ms(1.5) + MARGIN


# -- 4. a destructive call that fails --------------------------------------------------------------------------


async def test_a_refused_stop_is_retried_from_one_second_doubling_independently_of_terminate_grace(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    escalation = {"stop_grace": "1s", "terminate_grace": "2m", "retry_backoff_max": "8s"}
    outage = world.emulator.backend.add_error("AccessDeniedException", operation="StopCalculationExecution")
    _, calculation_id, submitted, crossing = await runaway_before_the_daemon(world, "# sim: runtime=600s")
    with capture_logs() as logs:
        async with world.daemon(escalation=escalation, discovery_interval=FEW_SWEEPS) as service:
            await world.vt.run_until(crossing + ms(0.5))
            status, body = await readyz(service.http_url)
            assert status == 503 and f"StopCalculationExecution failing since {crossing.isoformat()}" in body
            assert world.metric("athena_supervisor_enforcement_failing", operation="StopCalculationExecution") == 1
            await world.vt.run_until(submitted + ms(20))  # a 20 s outage
            world.emulator.backend.clear_errors(outage["id"])
            status, body = await readyz(service.http_url)
            assert status == 503 and "(5 consecutive errors)" in body
            await world.vt.run_until(crossing + ms(25))
            # 1, 2, 4, 8 s, then at most retry_backoff_max (8 s): the first retry after the outage lands.
            stops = world.calls("StopCalculationExecution", status=None, CalculationExecutionId=calculation_id)
            assert times(stops) == [crossing + ms(s) for s in (0, 1, 3, 7, 15, 23)]
            assert [call.error for call in stops] == ["AccessDeniedException"] * 5 + [None]
            assert await readyz(service.http_url) == (200, '{"ready": true, "reason": "ok"}')
            assert world.metric("athena_supervisor_enforcement_failing", operation="StopCalculationExecution") == 0
            assert world.metric("athena_supervisor_actions_total", action="stop", policy="etl-limits",
                                outcome="error") == 5
            assert world.metric("athena_supervisor_escalations_total", outcome="stopped") == 1
    assert not world.calls("TerminateSession")
    assert not [entry for entry in logs if entry["event"] == "supervisor.task_crashed"]


async def test_a_stop_answered_500_is_looked_at_before_it_is_sent_again(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    world.emulator.backend.add_error("InternalServerException", operation="StopCalculationExecution", count=1)
    _, calculation_id, _, crossing = await runaway_before_the_daemon(world, "# sim: runtime=600s")
    async with world.daemon(aws=aws_with_short_timeouts(world), discovery_interval=FEW_SWEEPS) as service:
        await world.vt.run_until(crossing + ms(5))
        status, body = await readyz(service.http_url)
        assert status == 503 and "StopCalculationExecution failing" in body
        await world.vt.run_until(crossing + WINDOW + ms(2))
        # A 500 may have taken effect: looked at 1 s later (still running), then again once the first call
        # cannot be in flight any more; only then sent again.
        stops = world.calls("StopCalculationExecution", status=None, CalculationExecutionId=calculation_id)
        assert [(call.time, call.status) for call in stops] == [(crossing, 500), (crossing + WINDOW, 200)]
        assert times(world.calls("GetCalculationExecutionStatus", CalculationExecutionId=calculation_id)) == [
            crossing, crossing + ms(1), crossing + WINDOW, crossing + WINDOW + ms(1)]
        assert journaled(service, calculation_id) == [
            ("decision", crossing), ("stop.intent", crossing), ("stop.error", crossing),
            ("intent.unanswered", crossing + WINDOW), ("stop.intent", crossing + WINDOW),
            ("stop.sent", crossing + WINDOW), ("verify.done", crossing + WINDOW + ms(1))]
        assert await readyz(service.http_url) == (200, '{"ready": true, "reason": "ok"}')


async def test_a_refused_terminate_backs_off_from_one_second_after_the_stop_was_refused_before(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    world.emulator.backend.add_error("AccessDeniedException", operation="StopCalculationExecution", count=3)
    world.emulator.backend.add_error("AccessDeniedException", operation="TerminateSession", count=1)
    session_id, calculation_id, _, crossing = await runaway_before_the_daemon(
        world, "# sim: runtime=600s on_stop=ignore")
    async with world.daemon(discovery_interval=FEW_SWEEPS):
        await world.vt.run_until(crossing + ms(12))
        stopped = crossing + ms(7)  # refused at +0, +1, +3 s
        assert times(world.calls("StopCalculationExecution", status=None, CalculationExecutionId=calculation_id)) == [
            crossing, crossing + ms(1), crossing + ms(3), stopped]
        # Ignored: after stop_grace (1 s) the session is terminated; that call is refused once and retried after
        # 1 s, as any call refused for the first time.
        escalated = stopped + ms(1)
        terminates = world.calls("TerminateSession", status=None, SessionId=session_id)
        assert [(call.time, call.error) for call in terminates] == [
            (escalated, "AccessDeniedException"), (escalated + ms(1), None)]


# -- 5. a state this version does not know, while an escalation verifies ------------------------------------------


async def test_an_unknown_state_seen_while_verifying_a_stop_is_counted_once_and_looked_at_less_and_less_often(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    escalation = {"stop_grace": "1s", "terminate_grace": "1s", "retry_backoff_max": "8s"}
    _, calculation_id, _, crossing = await runaway_before_the_daemon(
        world, "# sim: runtime=600s on_stop=ignore")
    # Started 100 ms before the daemon, so listed by its first sweep, before its crossing: sweeps every 5 s over the
    # 40 s of verifying (each lists the unknown state and must not act on it or look at it again), not every second.
    async with world.daemon(escalation=escalation, discovery_interval=FEW_SWEEPS):
        await world.vt.run_until(crossing + ms(0.5))
        assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [crossing]
        world.emulator.backend.override_state("HIBERNATING", calculation_id=calculation_id)
        await world.vt.run_until(crossing + ms(40))
        assert world.metric("athena_supervisor_unknown_states_total", kind="calculation") == 1
        assert not world.calls("TerminateSession"), "an unknown state is never acted on"
        # Looked at 1, 2, 4, 8 s after the Stop, then every retry_backoff_max (8 s), not every second.
        assert times(world.calls("GetCalculationExecutionStatus", CalculationExecutionId=calculation_id)) == [
            crossing + ms(s) for s in (0, 1, 2, 4, 8, 16, 24, 32, 40)]


# -- 6. the answer of a destructive call that cannot be journaled ------------------------------------------------


class AnswerNotJournaled(SqliteStorage):
    """The journal as it is, except that the store fails when the answer of the first Stop is written."""

    def __init__(self, path: Any, failed: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.failed = [] if failed is None else failed  # shared with the shard views

    def for_shard(self, shard: Any, fence: Any = None) -> SqliteStorage:
        return AnswerNotJournaled(self.path, self.failed, _database=self._database, _shard=shard.scope)

    async def save(self, escalation: Any, event: str, detail: Any, *, time: datetime) -> None:
        if event == "stop.sent" and not self.failed:
            self.failed.append(event)
            raise OSError("disk I/O error")
        await super().save(escalation, event, detail, time=time)


async def test_a_stop_whose_answer_cannot_be_journaled_is_not_sent_again(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    storage = AnswerNotJournaled(world.journal_path)
    with capture_logs() as logs:
        # Started 100 ms before the daemon, so listed by its first sweep, before its crossing: sweeps every 5 s over
        # the 40 s (each lists the stopped calculation and must not act on it again), not every second.
        session_id = await world.start_session("etl-a")
        calculation_id = await world.start_calculation(session_id, "# sim: runtime=600s")
        crossing = world.now + ms(1.5) + MARGIN
        await world.vt.run_for(OFFSET)
        async with world.daemon(discovery_interval=FEW_SWEEPS, storage=storage,
                                escalation={"stop_grace": "30s", "terminate_grace": "30s"}) as service:
            await world.vt.run_until(crossing + ms(40))
            # Answered, so sent: the escalation goes on from the answer (verified 1 s later: stopped), whatever the
            # store said about writing it down; the journal has the escalation whole from that next step.
            assert storage.failed == ["stop.sent"]
            assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [crossing]
            assert times(world.calls("GetCalculationExecutionStatus", CalculationExecutionId=calculation_id)) == [
                crossing, crossing + ms(1)]
            assert journaled(service, calculation_id) == [
                ("decision", crossing), ("stop.intent", crossing), ("verify.done", crossing + ms(1))]
            assert world.metric("athena_supervisor_escalations_total", outcome="stopped") == 1
    assert [entry["operation"] for entry in logs if entry["event"] == "enforcement.answer_not_journaled"] == [
        "StopCalculationExecution"]
