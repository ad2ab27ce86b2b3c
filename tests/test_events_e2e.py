"""Event-fed discovery in virtual time: the daemon drains Athena's API-call events from an SQS queue (moto in
this event loop), looks at what each announces at once, and sweeps only as the backstop.

Events are sent by the test as EventBridge delivers them (``tests/events_fixtures.py``), right after the call
they describe, or later, or never (a lost event); evidence comes from the emulator's audit log and the
daemon's metrics. The feed polls the queue about once a virtual second (``wait_time: 0s``; 0.5-1.5 s,
jittered), so an event is known at most 1.5 s after it is sent.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import aiohttp
import anyio
import pytest

from athena_spark_emulator.event_settings import EventSettings
from supervisor.cli import main
from supervisor.core.cloudtrail import EventKind, parse_event
from tests.events_fixtures import EventQueue, api_call_event, event_queue
from tests.virtual_fixtures import VirtualWorld, ms, times

MARGIN = ms(0.01)  # CROSSING_MARGIN
OFFSET = ms(0.1)
BACKSTOP = "10m"
# The scenarios that restart the daemon run on a 15 s runtime limit: long enough for a first run that saves the
# watch list and deletes the messages (7 s: the first poll by 1.5 s, then a delete round every 5 s), a pause (3 s)
# and a restart before it (at 10 s), and no longer, since the feed polls the queue every virtual second (a
# ReceiveMessage of moto's SQS a poll).
LIMIT = timedelta(seconds=15)
FIFTEEN_SECONDS = [{"name": "etl-limits", "workgroups": ["etl-*"], "calculation": {"max_runtime": "15s"}}]
# A crossing after the event is known (within the feed's 1.5 s) and its target looked at, and no later.
FIVE_SECONDS = [{"name": "etl-limits", "workgroups": ["etl-*"], "calculation": {"max_runtime": "5s"}}]


def events_config(queue: EventQueue, *, late_after: str | None = None, **discovery: Any) -> dict[str, Any]:
    events = queue.settings if late_after is None else {**queue.settings, "late_after": late_after}
    return {"discovery": {"events": events, "backstop_interval": BACKSTOP, **discovery}}


async def announce_session(world: VirtualWorld, queue: EventQueue, workgroup: str, **changes: Any) -> str:
    session_id = await world.start_session(workgroup)
    await queue.send(api_call_event("StartSession", world.now, {"workGroup": workgroup},
                                    {"sessionId": session_id, "state": "CREATING"}, **changes))
    return session_id


async def announce_calculation(world: VirtualWorld, queue: EventQueue, session_id: str, pragma: str,
                               *, send: bool = True) -> str:
    calculation_id = await world.start_calculation(session_id, pragma)
    if send:
        await queue.send(api_call_event("StartCalculationExecution", world.now, {"sessionId": session_id},
                                        {"calculationExecutionId": calculation_id, "state": "CREATING"}))
    return calculation_id


async def retried_and_kept(world: VirtualWorld) -> None:
    """Run until the feed has given a message back (outcome ``retried``, within 30 s), then 6 s more: a round of
    deletions (every 5 s) and six polls, which must neither delete it nor count it again. Not the whole 30 s: the
    feed polls every virtual second, ~10 ms of CPU a poll."""
    await world.vt.run_until_true(
        lambda: world.metric("athena_supervisor_events_received_total", outcome="retried"), limit=30)
    await world.vt.run_for(6)


async def readyz(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/readyz") as response:
        return response.status, await response.text()


async def test_an_announced_calculation_is_looked_at_at_once_and_stopped_at_its_crossing_without_a_sweep(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    async with event_queue() as queue, world.daemon(policies=FIVE_SECONDS, **events_config(queue)) as service:
        await world.vt.run_for(OFFSET)
        swept = len(world.calls("ListSessions"))
        assert swept and service.discovery.interval == timedelta(minutes=10)
        session_id = await announce_session(world, queue, "etl-a")
        calculation_id = await announce_calculation(world, queue, session_id, "# sim: runtime=60s dpus=2")
        submitted = world.now
        await world.vt.run_until_true(lambda: world.calls("StopCalculationExecution"), limit=10)
        assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [
            submitted + ms(5) + MARGIN]
        # Known from its event within the feed's poll (1.5 s): one look at discovery priority, no listing.
        looks = times(world.calls("GetCalculationExecutionStatus", CalculationExecutionId=calculation_id))
        assert submitted < looks[0] <= submitted + ms(1.5)
        assert len(world.calls("ListSessions")) == swept
        assert not world.calls("ListCalculationExecutions", SessionId=session_id)
        assert world.metric("athena_supervisor_events_received_total", outcome="applied") == 2
        # The handled messages are deleted once the watch list is saved: by the delete round that their handling
        # starts (received by submitted + 1.5 s) or the next (every 5 s), so by submitted + 6.5 s; now + 2 s is 7 s.
        await world.vt.run_for(2)
        assert await queue.depth() == (0, 0)
        assert world.metric("athena_supervisor_events_queue_depth") == 0
        status = await readyz(service.http_url)
        assert status[0] == 200


async def test_odd_messages_are_counted_and_dropped_without_effect(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    await world.create_workgroup("other-a")  # not in the daemon's scope (etl-*)
    async with event_queue() as queue, world.daemon(**events_config(queue)):
        await world.vt.run_for(OFFSET)
        session_id = await announce_session(world, queue, "etl-a", event_id="same-id")
        await queue.send(api_call_event("StartSession", world.now, {"workGroup": "etl-a"},
                                        {"sessionId": session_id}, event_id="same-id"))  # EventBridge redelivered
        await queue.send("{not json")
        await queue.send(api_call_event("GetSession", world.now, {"sessionId": session_id}))
        await queue.send(api_call_event("StartCalculationExecution", world.now, {"sessionId": session_id}, None,
                                        errorCode="InvalidRequestException"))
        await announce_session(world, queue, "other-a")
        await queue.send(api_call_event("TerminateSession", world.now, {"sessionId": "s-9"}, account="999999999999"))
        await world.vt.run_for(12)
        received = {outcome: world.metric("athena_supervisor_events_received_total", outcome=outcome)
                    for outcome in ("applied", "duplicate", "malformed", "unknown_event", "failed_call", "unwatched",
                                    "unknown_shard")}
        # The implicit shard (no accounts:) is aws.account_id's: another account's event is no shard's.
        assert received == {"applied": 1, "duplicate": 1, "malformed": 1, "unknown_event": 1, "failed_call": 1,
                            "unwatched": 1, "unknown_shard": 1}
        assert len(world.calls("GetSession", SessionId=session_id)) == 1  # the duplicate made no second look
        assert await queue.depth() == (0, 0)


async def test_a_lost_event_is_found_by_the_backstop_counted_and_enforced(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    # A sweep's find counts as a missed event when it comes more than late_after after the call: a backstop of
    # 3 s against a late_after of 2 s (not minutes, nor 30 s: the feed polls the queue every virtual second
    # meanwhile). The call is at T0 + 100 ms, the backstop sweeps at T0 and T0 + 3 s: found 2.9 s after it, past
    # late_after and past the 1.5 s max_runtime.
    late, backstop = timedelta(seconds=2), timedelta(seconds=3)
    async with event_queue() as queue, world.daemon(**events_config(queue, late_after="2s", backstop_interval="3s")):
        await world.vt.run_for(OFFSET)
        session_id = await announce_session(world, queue, "etl-a")
        calculation_id = await announce_calculation(world, queue, session_id, "# sim: runtime=10m dpus=2", send=False)
        submitted = world.now
        await world.vt.run_until_true(lambda: world.calls("StopCalculationExecution"), limit=backstop)
        (stop,) = world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)
        # Found by the next backstop sweep (3 s after the first), acted on at once: its limit had passed.
        listed = times(world.calls("ListCalculationExecutions", SessionId=session_id))
        assert listed and submitted + late < listed[0] <= submitted + backstop
        assert listed[0] <= stop.time <= listed[0] + ms(0.1)
        assert world.metric("athena_supervisor_discovery_missed_events_total", kind="calculation") == 1
        assert world.metric("athena_supervisor_discovery_missed_events_total", kind="session") == 0


async def test_a_new_workgroup_is_watched_as_soon_as_its_event_arrives(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    async with event_queue() as queue, world.daemon(**events_config(queue)) as service:
        await world.vt.run_for(OFFSET)
        await world.create_workgroup("etl-new")
        session_id = await world.start_session("etl-new")  # its StartSession event is lost
        await queue.send(api_call_event("CreateWorkGroup", world.now, {"name": "etl-new"}))
        await world.vt.run_for(1.5)
        assert "etl-new" in service.discovery.watched()
        # Newly watched: its sessions are listed at once, not at the next backstop sweep ten minutes away.
        assert world.calls("ListSessions", WorkGroup="etl-new")
        assert session_id in service.runtime.inventory.sessions
        await world.athena.delete_work_group(WorkGroup="etl-new", RecursiveDeleteOption=True)
        await queue.send(api_call_event("DeleteWorkGroup", world.now, {"workGroup": "etl-new"}))
        await world.vt.run_for(1.5)
        assert "etl-new" not in service.discovery.watched()
        assert world.metric("athena_supervisor_events_received_total", outcome="applied") == 2


async def test_a_restarted_daemon_acts_on_time_from_its_watch_list_while_its_sweep_cannot_list(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    async with event_queue() as queue:
        async with world.daemon(policies=FIFTEEN_SECONDS, **events_config(queue)):
            await world.vt.run_for(OFFSET)
            session_id = await announce_session(world, queue, "etl-a")
            calculation_id = await announce_calculation(world, queue, session_id, "# sim: runtime=10m dpus=2")
            submitted = world.now
            # Looked at, saved, and the messages deleted: received by 1.5 s, deleted by the round that starts then
            # or the next (every 5 s), so by 6.5 s.
            await world.vt.run_for(7)
            assert await queue.depth() == (0, 0)
        await world.vt.run_for(3)
        # Down for 3 s; back with every listing failing: only the saved watch list knows the calculation.
        world.emulator.backend.add_error("InternalServerException", operation="ListSessions")
        async with world.daemon(policies=FIFTEEN_SECONDS, **events_config(queue)) as service:
            await world.vt.run_until_true(lambda: world.calls("StopCalculationExecution"), limit=LIMIT)
            (stop,) = world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)
            assert stop.time == submitted + LIMIT + MARGIN
            assert "workgroup etl-a" in service.discovery.problems  # the sweep could not list it
            assert not world.calls("ListCalculationExecutions")


async def test_a_calculation_announced_in_a_workgroup_not_read_yet_is_watched_and_stopped_at_its_crossing(
    virtual_world: VirtualWorld,
) -> None:
    # A workgroup the daemon has not read (created after its last read, its own events and its session's lost; or
    # every workgroup of a shard just taken over, whose first sweep waits for its slot): the calculation's event
    # makes the daemon read the workgroups again, not drop the event as unwatched (found by bench/fleet.py --events:
    # the new owner of a killed replica's shards dropped their announced calculations).
    world = virtual_world
    async with event_queue() as queue, world.daemon(policies=FIVE_SECONDS, **events_config(queue)):
        await world.vt.run_for(OFFSET)
        await world.create_workgroup("etl-new")
        session_id = await world.start_session("etl-new")
        calculation_id = await announce_calculation(world, queue, session_id, "# sim: runtime=10m dpus=2")
        submitted = world.now
        await world.vt.run_until(submitted + ms(5) + ms(1))
        (stop,) = world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)
        assert stop.time == submitted + ms(5) + MARGIN
        assert world.metric("athena_supervisor_events_received_total", outcome="applied") == 1
        assert world.metric("athena_supervisor_events_received_total", outcome="unwatched") == 0
        assert all(call.time < submitted for call in world.calls("ListSessions"))  # the event did it, no sweep


async def test_an_announced_calculation_whose_workgroups_cannot_be_read_stays_in_the_queue(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    async with event_queue() as queue, world.daemon(**events_config(queue)):
        await world.vt.run_for(OFFSET)
        await world.create_workgroup("etl-new")
        session_id = await world.start_session("etl-new")
        world.emulator.backend.add_error("InternalServerException", operation="ListWorkGroups")
        await announce_calculation(world, queue, session_id, "# sim: runtime=10m dpus=2")
        await retried_and_kept(world)
        # Not dropped as unwatched: left for SQS to deliver again, when the workgroups may be readable.
        assert world.metric("athena_supervisor_events_received_total", outcome="retried") == 1
        assert world.metric("athena_supervisor_events_received_total", outcome="unwatched") == 0
        assert await queue.depth() == (0, 1)


async def test_an_unreadable_queue_is_reported_and_enforcement_goes_on(
    virtual_world: VirtualWorld, capsys: pytest.CaptureFixture[str],
) -> None:
    world = virtual_world
    async with event_queue() as queue, world.daemon(**events_config(queue)) as service:
        await world.vt.run_for(OFFSET)
        session_id = await announce_session(world, queue, "etl-a")
        await world.vt.run_for(1.5)
        queue.frontend.cut()
        calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s dpus=2")
        await world.vt.run_for(15)
        code, text = await readyz(service.http_url)
        assert code == 503 and "the event queue cannot be read (ReceiveMessage: NetworkError)" in text
        assert '"last_message_at": "2026-01-01T00:00:0' in text and '"queue_depth": 0' in text
        async with aiohttp.ClientSession() as http, http.get(f"{service.http_url}/status") as response:
            events = (await response.json())["events"]
        assert events["problem"] == "the event queue cannot be read (ReceiveMessage: NetworkError)"
        assert events["received"] == {"applied": 1}
        capsys.readouterr()
        assert await anyio.to_thread.run_sync(main, ["status", "--url", service.http_url]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert f"events: {queue.url}: NOT READABLE: {events['problem']}" in lines
        assert any(line.startswith("  last message ") and line.endswith("received: applied 1") for line in lines)
        # Enforcement of what is known goes on; the calculation its lost event announced waits for the backstop.
        assert not world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)
        queue.frontend.restore()
        # Ready again at the first receive after the restore (the backoff doubles up to a minute), not run on for
        # the whole minute: the feed polls every virtual second once it reads the queue again.
        async def ready() -> bool:
            return (await readyz(service.http_url))[0] == 200
        await world.vt.run_until_true(ready, limit=70)


async def test_an_event_whose_look_fails_stays_in_the_queue_and_a_later_copy_applies(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    async with event_queue() as queue, world.daemon(**events_config(queue)) as service:
        await world.vt.run_for(OFFSET)
        world.emulator.backend.add_error("InternalServerException", operation="GetSession")
        session_id = await world.start_session("etl-a")
        event = api_call_event("StartSession", world.now, {"workGroup": "etl-a"}, {"sessionId": session_id})
        await queue.send(event)
        await retried_and_kept(world)
        assert world.metric("athena_supervisor_events_received_total", outcome="retried") == 1
        assert await queue.depth() == (0, 1)  # not deleted: SQS delivers it again after its visibility timeout
        world.emulator.backend.clear_errors()
        await queue.send(event)  # as the redelivery would
        await world.vt.run_for(3)
        assert world.metric("athena_supervisor_events_received_total", outcome="applied") == 1
        assert session_id in service.runtime.inventory.sessions


async def test_the_emulators_own_events_drive_the_daemon_late_and_twice(virtual_world: VirtualWorld) -> None:
    """The whole path as in production: Athena's calls (the emulator) publish CloudTrail-shaped events to SQS,
    2 s late and each twice; the daemon knows the calculation from them and stops it once, at its crossing."""
    world = virtual_world
    # A 5 s limit: crossed after the events are known (2 s late, then the feed's poll: by 3.5 s).
    async with event_queue() as queue, world.daemon(policies=FIVE_SECONDS, **events_config(queue)):
        await world.emulator.fleet.events.configure(EventSettings.from_json({
            "sqs_queue_url": queue.url, "endpoint_url": queue.frontend.endpoint_url, "region": "us-east-1",
            "delay": "2s", "duplicate_rate": 1.0}))
        await world.vt.run_for(OFFSET)
        session_id = await world.start_session("etl-a")
        calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s dpus=2")
        submitted = world.now
        await world.vt.run_until(submitted + ms(7))
        assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [
            submitted + ms(5) + MARGIN]
        looks = times(world.calls("GetCalculationExecutionStatus", CalculationExecutionId=calculation_id))
        assert submitted + ms(2) <= looks[0] <= submitted + ms(3.5)  # the delay, then the feed's next poll
        await world.vt.run_for(12)
        assert world.metric("athena_supervisor_events_received_total", outcome="duplicate") >= 2
        assert len(world.calls("StopCalculationExecution")) == 1


async def test_every_event_the_emulator_publishes_parses_with_the_ids_discovery_needs(
    virtual_world: VirtualWorld,
) -> None:
    """The contract between the emulator's publisher and the daemon's parser, call by call."""
    world = virtual_world
    async with event_queue() as queue:
        await world.emulator.fleet.events.configure(EventSettings.from_json({
            "sqs_queue_url": queue.url, "endpoint_url": queue.frontend.endpoint_url, "region": "us-east-1"}))
        await world.create_workgroup("etl-b", tags={"team": "b"})
        arn = "arn:aws:athena:us-east-1:123456789012:workgroup/etl-b"
        await world.athena.untag_resource(ResourceARN=arn, TagKeys=["team"])
        await world.athena.update_work_group(WorkGroup="etl-b",
                                             ConfigurationUpdates={"EnforceWorkGroupConfiguration": True})
        session_id = await world.start_session("etl-b")
        calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s")
        await world.athena.stop_calculation_execution(CalculationExecutionId=calculation_id)
        await world.athena.terminate_session(SessionId=session_id)
        await world.athena.delete_work_group(WorkGroup="etl-b", RecursiveDeleteOption=True)
        await world.vt.run_for(1)
        bodies = []
        while answer := (await queue.sqs.receive_message(QueueUrl=queue.url, MaxNumberOfMessages=10)).get("Messages"):
            bodies += [message["Body"] for message in answer]
        parsed = {(event.name, event.kind, event.workgroup, event.session_id, event.calculation_id)
                  for event in map(parse_event, bodies)}
        assert parsed == {
            ("CreateWorkGroup", EventKind.WORKGROUP_CHANGED, "etl-b", "", ""),
            ("TagResource", EventKind.WORKGROUP_CHANGED, "etl-b", "", ""),
            ("UntagResource", EventKind.WORKGROUP_CHANGED, "etl-b", "", ""),
            ("UpdateWorkGroup", EventKind.WORKGROUP_CHANGED, "etl-b", "", ""),
            ("StartSession", EventKind.SESSION_STARTED, "etl-b", session_id, ""),
            ("StartCalculationExecution", EventKind.CALCULATION_STARTED, "", session_id, calculation_id),
            ("StopCalculationExecution", EventKind.CALCULATION_STOPPED, "", "", calculation_id),
            ("TerminateSession", EventKind.SESSION_TERMINATED, "", session_id, ""),
            ("DeleteWorkGroup", EventKind.WORKGROUP_DELETED, "etl-b", "", ""),
        }


async def test_a_resumed_target_listed_by_the_first_sweep_is_still_looked_at_afresh_at_its_deadline(
    virtual_world: VirtualWorld,
) -> None:
    """Found by the bench (wrongful Stops after a restart): the restarted daemon's first sweep listed a resumed
    calculation RUNNING; it completed before its deadline; at the deadline the daemon must look afresh, not act on
    the listing."""
    world = virtual_world
    async with event_queue() as queue:
        async with world.daemon(policies=FIFTEEN_SECONDS, **events_config(queue)):
            await world.vt.run_for(OFFSET)
            session_id = await announce_session(world, queue, "etl-a")
            # Runs 12 s: past the restart at 10 s (listed RUNNING by its first sweep), done before the 15 s deadline.
            calculation_id = await announce_calculation(world, queue, session_id, "# sim: runtime=12s dpus=2")
            submitted = world.now
            # Looked at (received by 1.5 s) and saved in the watch list by a delete round (every 5 s): by 6.5 s.
            await world.vt.run_for(7)
        await world.vt.run_for(3)
        async with world.daemon(policies=FIFTEEN_SECONDS, **events_config(queue)):
            await world.vt.run_until(submitted + LIMIT + ms(30))
            listed = times(world.calls("ListCalculationExecutions", SessionId=session_id))
            assert listed and listed[0] < submitted + ms(12)  # the restart's sweep saw it RUNNING
            assert not world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)
            looks = times(world.calls("GetCalculationExecutionStatus", CalculationExecutionId=calculation_id))
            assert looks[-1] == submitted + LIMIT + MARGIN  # afresh, at the deadline: COMPLETED
