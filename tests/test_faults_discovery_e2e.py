"""Fault scenarios of discovery and checks in virtual time: listings that fail (5xx beyond the gateway's
retries, a throttling storm, a deleted workgroup), answers with members missing, states this version does not
know, and sessions that become CREATED, DEGRADED or FAILED.

Each scenario injects its fault through the emulator's Python API and judges the daemon from the emulator's
audit log (exact virtual instants), its metrics, its logs and /readyz. Instants follow from
``tests/daemon_fixtures.py`` as in ``tests/test_daemon_e2e.py``: sweeps every 250 ms from T0 (every second, or
every 5 s, where a scenario says so), a crossing check ``CROSSING_MARGIN`` (10 ms) after the crossing, workloads
from T = T0 + 100 ms (or 100 ms before the daemon starts, listed by its first sweep, where a scenario says so).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import aiohttp
from structlog.testing import capture_logs

from supervisor.core.scheduling import CROSSING_MARGIN
from tests.virtual_fixtures import START, Call, VirtualWorld, ms, times

MARGIN = CROSSING_MARGIN
OFFSET = ms(0.1)  # T - T0
# The scenarios whose asserted instants follow from crossings, timers or "the next sweep" sweep every second instead
# of every 250 ms (tests/daemon_fixtures.py): targets start 100 ms after the daemon and are listed by the sweep at 1 s,
# before their crossings (1.6 s at the earliest); what is counted once is still listed by four sweeps or more after.
SWEEPS = "1s"
SWEEP = ms(1)  # discovery_interval, where it is SWEEPS
ATTEMPTS = 6  # aws.max_attempts in daemon_config


async def readyz(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/readyz") as response:
        return response.status, await response.text()


def since(calls: list[Call], instant: datetime) -> list[Call]:
    return [call for call in calls if call.time >= instant]


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


@contextmanager
def no_crash() -> Iterator[list[dict[str, Any]]]:
    """Capture the logs of the block, and check that no root task of the daemon crashed in it."""
    with capture_logs() as logs:
        yield logs
    assert not events(logs, "supervisor.task_crashed")
    assert not events(logs, "discovery.sweep_failed")


# -- 1. listing failures --------------------------------------------------------------------------------------


async def test_a_workgroup_whose_listing_keeps_failing_is_reported_while_the_others_are_enforced_on_time(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    await world.create_workgroup("etl-b")
    with no_crash():
        async with world.daemon() as service:
            await world.vt.run_for(OFFSET)
            # Every ListSessions of etl-a answers 500, longer than the gateway's six attempts last.
            rule = world.emulator.backend.add_error("InternalServerException", operation="ListSessions",
                                                    workgroup="etl-a")
            session_id = await world.start_session("etl-b")
            calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s")
            submitted = world.now
            await world.vt.run_until(submitted + ms(2))
            # A violator in another workgroup, started during the outage, is stopped at its crossing.
            assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [
                submitted + ms(1.5) + MARGIN]
            # Degraded all along once the first listing has failed, also while the next sweeps retry it.
            for tenths in range(50, 150, 5):
                await world.vt.run_until(submitted + ms(tenths / 10))
                status, body = await readyz(service.http_url)
                assert status == 503, (tenths, body)
                assert "workgroup etl-a: ListSessions InternalServerException" in body
            failures = world.metric("athena_supervisor_listing_failures_total", operation="ListSessions")
            answered_500 = len(world.calls("ListSessions", status=500, WorkGroup="etl-a"))
            assert failures >= 3
            assert ATTEMPTS * failures <= answered_500 < ATTEMPTS * (failures + 1), "one failure per listing"
            world.emulator.backend.clear_errors(rule["id"])
            healed = world.now
            await world.vt.run_until_true(lambda: readyz_ok(service.http_url), limit=ms(10))
            assert since(world.calls("ListSessions", WorkGroup="etl-a"), healed)
            assert world.metric("athena_supervisor_listing_failures_total", operation="ListSessions") <= failures + 1


async def readyz_ok(url: str) -> bool:
    return await readyz(url) == (200, '{"ready": true, "reason": "ok"}')


async def test_a_known_violator_is_stopped_on_time_while_every_listing_is_throttled(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    with no_crash():
        async with world.daemon() as service:
            await world.vt.run_for(OFFSET)
            session_id = await world.start_session("etl-a")
            calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s")
            submitted = world.now
            await world.vt.run_for(ms(0.2))  # listed once, at T0 + 250 ms: its crossing is a known deadline
            storm = world.emulator.backend.add_error("TooManyRequestsException", operation="ListSessions")
            await world.vt.run_until(submitted + ms(2))
            assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [
                submitted + ms(1.5) + MARGIN]
            for tenths in range(60, 105, 5):
                await world.vt.run_until(submitted + ms(tenths / 10))
                status, body = await readyz(service.http_url)
                assert status == 503 and "ListSessions TooManyRequestsException" in body, (tenths, body)
            throttled = world.calls("ListSessions", status=400, error="TooManyRequestsException")
            assert world.metric("athena_supervisor_aws_api_calls_total", operation="ListSessions",
                                outcome="throttled") == len(throttled)
            failures = world.metric("athena_supervisor_listing_failures_total", operation="ListSessions")
            assert failures >= 2
            assert ATTEMPTS * failures <= len(throttled) < ATTEMPTS * (failures + 1)
            world.emulator.backend.clear_errors(storm["id"])
            await world.vt.run_until_true(lambda: readyz_ok(service.http_url), limit=ms(10))


async def test_a_deleted_workgroup_is_dropped_and_another_workgroup_is_still_enforced_on_time(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    await world.create_workgroup("etl-b")
    with no_crash() as logs:
        async with world.daemon(discovery_interval=SWEEPS) as service:
            await world.vt.run_for(OFFSET)
            await world.athena.delete_work_group(WorkGroup="etl-b", RecursiveDeleteOption=True)
            deleted = world.now
            session_id = await world.start_session("etl-a")
            calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s")
            submitted = world.now
            await world.vt.run_until(submitted + ms(5))
            assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [
                submitted + ms(1.5) + MARGIN]
            # Asked once after the deletion (the next sweep), then no more.
            assert [(call.time, call.error) for call in since(world.calls("ListSessions", status=None,
                                                                           WorkGroup="etl-b"), deleted)] == [
                (deleted - OFFSET + SWEEP, "ResourceNotFoundException")]
            dropped = events(logs, "discovery.workgroup_dropped")
            assert [(entry["workgroup"], entry["reason"]) for entry in dropped] == [("etl-b", "deleted")]
            assert service.discovery.watched() == ["etl-a"]
            assert world.metric("athena_supervisor_listing_failures_total", operation="ListSessions") == 0
            assert await readyz_ok(service.http_url)


async def test_a_workgroup_deleted_and_created_again_is_watched_again_at_the_next_sweep(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    await world.create_workgroup("etl-b")
    with no_crash():
        async with world.daemon(discovery_interval=SWEEPS) as service:
            await world.vt.run_for(OFFSET)
            await world.athena.delete_work_group(WorkGroup="etl-b", RecursiveDeleteOption=True)
            await world.vt.run_for(SWEEP)  # dropped at the next sweep (T0 + 1 s)
            assert service.discovery.watched() == ["etl-a"]
            # A deploy puts it back, before the regular re-read (at most once a minute).
            await world.create_workgroup("etl-b")
            session_id = await world.start_session("etl-b")
            calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s")
            submitted = world.now
            await world.vt.run_until(submitted + ms(3))
            assert service.discovery.watched() == ["etl-a", "etl-b"]
            assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [
                submitted + ms(1.5) + MARGIN]


async def test_a_session_listed_without_its_id_is_skipped_and_counted_and_the_others_are_enforced(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    with no_crash() as logs:
        async with world.daemon(discovery_interval=SWEEPS) as service:
            await world.vt.run_for(OFFSET)
            nameless = await world.start_session("etl-a")  # IDLE: in every IDLE listing
            world.emulator.backend.remove_fields("ListSessions", ["SessionId"], session_id=nameless)
            removed = world.now
            session_id = await world.start_session("etl-a")
            calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s")
            submitted = world.now
            await world.vt.run_until(submitted + ms(3))
            assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [
                submitted + ms(1.5) + MARGIN]
            idle_listings = since(world.calls("ListSessions", WorkGroup="etl-a", StateFilter="IDLE"), removed)
            assert len(idle_listings) == 3  # T0 + 1 s … T0 + 3 s
            assert world.metric("athena_supervisor_malformed_items_total", operation="ListSessions") == 3
            assert len(events(logs, "discovery.malformed_item")) == 3
            assert world.metric("athena_supervisor_listing_failures_total", operation="ListSessions") == 0
            assert await readyz_ok(service.http_url)
    assert not world.calls("TerminateSession")


async def test_a_listing_answer_without_its_list_keeps_what_was_known_and_is_counted(
    virtual_world: VirtualWorld,
) -> None:
    """A page that lacks its Sessions list says nothing; it must not read as "no session is there"."""
    world = virtual_world
    policies = [{"name": "age", "workgroups": ["etl-*"], "session": {"max_age": "3s"}}]
    with no_crash():
        async with world.daemon(policies=policies) as service:
            await world.vt.run_for(OFFSET)
            session_id = await world.start_session("etl-a")
            started = world.now
            await world.vt.run_for(ms(0.5))  # listed: its max_age crossing is a known deadline
            world.emulator.backend.remove_fields("ListSessions", ["Sessions"], workgroup="etl-a")
            await world.vt.run_until(started + ms(2))
            status, body = await readyz(service.http_url)
            assert status == 503 and "ListSessions MalformedAnswer" in body, body
            assert world.metric("athena_supervisor_malformed_items_total", operation="ListSessions") >= 4
            await world.vt.run_until(started + ms(4))
            # Still known, so still enforced at the exact instant although every listing says nothing.
            assert times(world.calls("TerminateSession", SessionId=session_id)) == [started + ms(3) + MARGIN]


async def test_a_fresh_look_that_keeps_failing_backs_off(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    session_id = await world.start_session("etl-a")
    calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s")
    submitted = world.now
    world.emulator.backend.add_error("AccessDeniedException", operation="GetCalculationExecutionStatus",
                                     calculation_id=calculation_id)
    await world.vt.run_for(OFFSET)
    with no_crash() as logs:
        # Started 100 ms before the daemon, so listed by its first sweep, before its crossing: its looks follow the
        # crossing's timer and the backoff, not the sweeps, which run every 5 s (20 s of sweeps: 302 -> 24 requests).
        async with world.daemon(discovery_interval="5s"):
            await world.vt.run_until(submitted + ms(20))
            looks = times(world.calls("GetCalculationExecutionStatus", status=400,
                                      CalculationExecutionId=calculation_id))
            first = submitted + ms(1.5) + MARGIN
            assert looks == [first + ms(seconds) for seconds in (0, 1, 3, 7, 15)], "1, 2, 4, 8 s apart"
            assert len(events(logs, "check.failed")) == 5
    assert not world.calls("StopCalculationExecution"), "never acted on without a fresh look"


# -- 3. answers without the fields a limit needs --------------------------------------------------------------


async def test_a_calculation_without_submission_time_is_reported_once_and_its_session_limits_still_apply(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    policies = [{"name": "both", "workgroups": ["etl-*"], "calculation": {"max_runtime": "1500ms"},
                 "session": {"max_age": "3s"}}]
    with no_crash() as logs:
        async with world.daemon(policies=policies, discovery_interval=SWEEPS):
            await world.vt.run_for(OFFSET)
            session_id = await world.start_session("etl-a")
            started = world.now
            calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s")
            for operation in ("ListCalculationExecutions", "GetCalculationExecutionStatus", "GetCalculationExecution"):
                world.emulator.backend.remove_fields(operation, ["Status.SubmissionDateTime"],
                                                     calculation_id=calculation_id)
            await world.vt.run_until(started + ms(5))  # five sweeps
            assert times(world.calls("TerminateSession", SessionId=session_id)) == [started + ms(3) + MARGIN]
            assert not world.calls("StopCalculationExecution")
            assert world.metric("athena_supervisor_unjudgeable_targets_total", kind="calculation",
                                field="SubmissionDateTime") == 1
            unjudgeable = events(logs, "target.unjudgeable")
            assert [(entry["target_id"], entry["missing"]) for entry in unjudgeable] == [
                (calculation_id, "SubmissionDateTime")]


async def test_a_calculation_listed_without_its_id_is_skipped_and_counted_without_failing_checks(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    with no_crash() as logs:
        async with world.daemon(discovery_interval=SWEEPS):
            await world.vt.run_for(OFFSET)
            nameless_session = await world.start_session("etl-a")
            nameless = await world.start_calculation(nameless_session, "# sim: runtime=60s")
            world.emulator.backend.remove_fields("ListCalculationExecutions", ["CalculationExecutionId"],
                                                 calculation_id=nameless)
            removed = world.now
            session_id = await world.start_session("etl-a")
            calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s")
            submitted = world.now
            await world.vt.run_until(submitted + ms(5))
            assert times(world.calls("StopCalculationExecution")) == [submitted + ms(1.5) + MARGIN]
            assert world.calls("StopCalculationExecution")[0].request["CalculationExecutionId"] == calculation_id
            listings = since(world.calls("ListCalculationExecutions", SessionId=nameless_session), removed)
            assert len(listings) == 5  # T0 + 1 s … T0 + 5 s
            assert world.metric("athena_supervisor_malformed_items_total",
                                operation="ListCalculationExecutions") == len(listings)
            assert not events(logs, "check.failed")
            assert not events(logs, "check.crashed")
            assert not world.calls("GetCalculationExecutionStatus", CalculationExecutionId=nameless)


# -- 5. states this version does not know ---------------------------------------------------------------------


async def test_a_calculation_listed_in_an_unknown_state_is_counted_once_and_never_acted_on(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    with no_crash() as logs:
        async with world.daemon(discovery_interval=SWEEPS):
            await world.vt.run_for(OFFSET)
            session_id = await world.start_session("etl-a")
            calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s")
            submitted = world.now
            override = world.emulator.backend.override_state("HIBERNATING", calculation_id=calculation_id)
            await world.vt.run_until(submitted + ms(5))  # five sweeps, its max_runtime long crossed
            assert world.metric("athena_supervisor_unknown_states_total", kind="calculation") == 1
            assert len(events(logs, "calculation.unknown_state")) == 1
            assert not world.calls("StopCalculationExecution")
            assert not world.calls("GetCalculationExecutionStatus", CalculationExecutionId=calculation_id)
            # Once it reports a state this version knows, the next sweep finds the crossing and acts at once.
            world.emulator.backend.clear_state_overrides(override["id"])
            await world.vt.run_for(1)
            assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [
                START + 6 * SWEEP]  # the first sweep after T + 5 s
            assert world.metric("athena_supervisor_unknown_states_total", kind="calculation") == 1


async def test_a_target_whose_unknown_state_clears_is_judged_at_the_next_sweep_not_after_the_pause(
    virtual_world: VirtualWorld,
) -> None:
    """The fresh look at its crossing shows a state this version does not know (a pause of a minute); once
    the listing shows a known state again the target moved on, and the pause no longer holds."""
    world = virtual_world
    with no_crash():
        async with world.daemon(discovery_interval=SWEEPS):
            await world.vt.run_for(OFFSET)
            session_id = await world.start_session("etl-a")
            calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s")
            submitted = world.now
            await world.vt.run_for(SWEEP)  # listed RUNNING at T0 + 1 s: its crossing is a known deadline
            override = world.emulator.backend.override_state("HIBERNATING", calculation_id=calculation_id)
            await world.vt.run_until(submitted + ms(4))
            looks = world.calls("GetCalculationExecutionStatus", CalculationExecutionId=calculation_id)
            assert times(looks) == [submitted + ms(1.5) + MARGIN], "looked at once, at its crossing"
            assert not world.calls("StopCalculationExecution")
            world.emulator.backend.clear_state_overrides(override["id"])
            cleared = world.now
            await world.vt.run_for(1)
            next_sweep = START + SWEEP * (int((cleared - START) / SWEEP) + 1)
            assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [
                next_sweep]


async def test_a_calculation_whose_fresh_look_shows_no_known_state_is_counted_once_and_not_refetched_each_sweep(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    session_id = await world.start_session("etl-a")
    calculation_id = await world.start_calculation(session_id, "# sim: runtime=600s")
    submitted = world.now
    # Listed RUNNING (a crossing to act on), but its fresh look answers without a state it could judge.
    world.emulator.backend.remove_fields("GetCalculationExecutionStatus", ["Status.State"],
                                         calculation_id=calculation_id)
    await world.vt.run_for(OFFSET)
    with no_crash() as logs:
        # Started 100 ms before the daemon, so listed by its first sweep, before its crossing: sweeps every 5 s (not
        # every second) over the 91 s, each of which must not look at it again (235 -> 56 requests).
        async with world.daemon(discovery_interval="5s"):
            checked = submitted + ms(1.5) + MARGIN
            await world.vt.run_until(submitted + ms(30))
            assert times(world.calls("GetCalculationExecutionStatus", CalculationExecutionId=calculation_id)) == [
                checked]
            assert world.metric("athena_supervisor_unknown_states_total", kind="calculation") == 1
            # Looked at again only after a pause (a minute), still without acting or counting it again.
            await world.vt.run_until(checked + ms(61))
            assert times(world.calls("GetCalculationExecutionStatus", CalculationExecutionId=calculation_id)) == [
                checked, checked + ms(60)]
            assert world.metric("athena_supervisor_unknown_states_total", kind="calculation") == 1
            assert len(events(logs, "calculation.unknown_state")) == 1
            assert not world.calls("StopCalculationExecution")


# -- sessions that become CREATED, DEGRADED, FAILED -----------------------------------------------------------


async def test_created_degraded_and_failed_sessions_meet_their_limits_sensibly(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    policies = [{"name": "all", "workgroups": ["etl-*"], "calculation": {"max_runtime": "1500ms"},
                 "session": {"max_idle": "1s", "max_age": "3s"}}]
    with no_crash():
        async with world.daemon(policies=policies):
            await world.vt.run_for(OFFSET)
            started = world.now
            # CREATED for ever: never idle (no IdleSinceDateTime), so only its age ends it.
            created = await world.start_session("etl-a", "# sim: start=0s created_for=forever")
            # BUSY, then DEGRADED 1.3 s later (after a sweep that lists the rare states, before the next one):
            # its calculation runs on, and both the calculation's and the session's limits still apply.
            degraded = await world.start_session("etl-a", "# sim: start=0s degraded_after=1300ms")
            runaway = await world.start_calculation(degraded, "# sim: runtime=60s")
            # IDLE, then FAILED before its idle limit: nothing to terminate.
            failed = await world.start_session("etl-a", "# sim: start=0s fail_after=800ms")
            await world.vt.run_until(started + ms(6))
            assert times(world.calls("StopCalculationExecution", CalculationExecutionId=runaway)) == [
                started + ms(1.5) + MARGIN]
            assert times(world.calls("TerminateSession", SessionId=created)) == [started + ms(3) + MARGIN]
            assert times(world.calls("TerminateSession", SessionId=degraded)) == [started + ms(3) + MARGIN]
            assert not world.calls("TerminateSession", SessionId=failed)
            assert world.metric("athena_supervisor_violations_total", policy="all", rule="max_idle") == 0
            assert world.metric("athena_supervisor_violations_total", policy="all", rule="max_age") == 2
            assert world.metric("athena_supervisor_active_sessions", workgroup="etl-a") == 0
            assert [await world.session_state(s) for s in (created, degraded, failed)] == [
                "TERMINATED", "TERMINATED", "FAILED"]


async def test_a_calculation_queued_on_a_session_that_stays_created_meets_its_max_queued(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    policies = [{"name": "queue", "workgroups": ["etl-*"], "calculation": {"max_queued": "2s"}}]
    # CREATED for ever: StartCalculationExecution is accepted, the calculation waits QUEUED.
    session_id = await world.start_session("etl-a", "# sim: start=0s created_for=forever")
    calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s")
    submitted = world.now
    await world.vt.run_for(OFFSET)
    with no_crash():
        # The daemon starts 100 ms later: its first sweep lists the rare states too, so sweeps may be rare (every
        # 5 s; the fifth, which lists the rare states again, is 25 s away).
        async with world.daemon(policies=policies, discovery_interval="5s"):
            await world.vt.run_until(submitted + ms(4))
            assert await world.session_state(session_id) == "CREATED"
            # Listed with the rare states by the first sweep, at T0 + 100 ms, it is then judged on its deadline.
            assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [
                submitted + ms(2) + MARGIN]
            assert await world.calculation_state(calculation_id) == "CANCELED"
