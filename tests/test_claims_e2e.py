"""A claim whose answer is lost is never lost itself, in virtual time, on both storages.

The claim of a target is the one write before its escalation starts. If every attempt of that write goes
unanswered although the first one landed, the target is claimed in storage: a later claim is refused, and before
the fix nothing drove that escalation (in a fleet, until the shard changed hands). Now the target stays claimed
in memory, the same claim is sent again until the store answers, and the escalation goes on from what the store
holds; a claim refused for a target nobody here drives is read back and adopted.

- DynamoDB (moto in this event loop, the real protocol through the daemon's gateway): the frontend applies the
  claim's ``TransactWriteItems`` and drops its answer (:meth:`tests.moto_in_loop.MotoFrontend.lose_answers`),
  every attempt, or only the first (the gateway's retry is then refused by the write that landed: moto, unlike
  DynamoDB, ignores the transaction's ``ClientRequestToken``).
- SQLite: a local commit has no answer to lose on the wire, so the loss is injected where it would surface,
  after the real write (:class:`AnswerLost`, a subclass handed to the daemon through its ``storage`` seam, as
  ``tests/test_fleet_cluster_e2e.py`` slows renewals).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from supervisor.config import parse_settings
from supervisor.core import escalation as machine
from supervisor.core.escalation import Escalation
from supervisor.core.fleet import Fence, Shard
from supervisor.core.model import TargetKey, TargetKind, TargetRef, Verdict
from supervisor.core.scheduling import CROSSING_MARGIN
from supervisor.metrics import Metrics
from supervisor.service import running_service
from supervisor.storage import Storage
from supervisor.storage.dynamodb_setup import ensure_table
from supervisor.storage.factory import build_storage_gateway, journal_table
from supervisor.storage.sqlite import SqliteStorage
from tests.daemon_fixtures import daemon_config
from tests.moto_in_loop import Moto, MotoFrontend
from tests.virtual_fixtures import VirtualWorld, ms, times

ATTEMPTS = 3  # aws.max_attempts: the storage gateway's attempts too
RUNTIME = ms(1.5)  # the tests' max_runtime
# Sweeps every second, not every 250 ms: the targets start 100 ms after the daemon, are listed by the sweep at 1 s,
# before their crossings (at 1.6 s), and are acted on at the crossing (its timer, not a sweep): the instants
# asserted follow from the crossings and the claim's retries. A quarter of the emulator's requests (408 -> 118).
SWEEPS = "1s"


class AnswerLost(SqliteStorage):
    """The SQLite journal, except that the answer of the next ``lost`` claims (of any shard view) is lost after
    they were written."""

    def __init__(self, path: Any, lost: list[int], **view: Any) -> None:
        super().__init__(path, **view)
        self.lost = lost  # shared with the views: how many answers are still to lose

    def for_shard(self, shard: Shard, fence: Fence | None = None) -> SqliteStorage:
        return AnswerLost(self.path, self.lost, _database=self._database, _shard=shard.scope)

    async def claim(self, escalation: Escalation, event: str | None, detail: Mapping[str, Any]) -> bool:
        recorded = await super().claim(escalation, event, detail)
        if self.lost[0]:
            self.lost[0] -= 1
            raise TimeoutError("the answer of the claim was lost")
        return recorded


def is_claim(operation: str, body: bytes) -> bool:
    """A claim's transaction: the escalation item put only if absent (intents and answers put it unconditionally)."""
    return operation == "TransactWriteItems" and b'#ESC"' in body and b"attribute_not_exists" in body


@asynccontextmanager
async def daemon(world: VirtualWorld, backend: str, lost: int) -> AsyncIterator[Storage]:
    """The daemon on ``backend`` with the answers of its next ``lost`` claim writes dropped; yields its journal."""
    config = daemon_config(world.emulator.endpoint_url, world.journal_path, discovery_interval=SWEEPS)
    config["aws"]["max_attempts"] = ATTEMPTS
    async with AsyncExitStack() as stack:
        storage: Storage | None = None
        if backend == "sqlite":
            storage = AnswerLost(world.journal_path, [lost])
        else:
            frontend = await stack.enter_async_context(MotoFrontend(Moto()).serving())
            config["journal"] = {"backend": "dynamodb", "table": f"journal-{uuid.uuid4().hex[:8]}",
                                 "region": "us-east-1", "endpoint_url": frontend.endpoint_url}
            settings = parse_settings(config, environ={})
            gateway = await stack.enter_async_context(
                build_storage_gateway(settings, Metrics(CollectorRegistry()), clock=world.clock))
            await ensure_table(journal_table(settings, gateway), world.clock)
            frontend.lose_answers(is_claim, lost)
        service = await stack.enter_async_context(running_service(
            parse_settings(config, environ={}), clock=world.clock, registry=CollectorRegistry(), storage=storage))
        world.service = service
        try:
            yield service.storage
        finally:
            world.service = None


async def runaway(world: VirtualWorld) -> tuple[str, str]:
    session_id = await world.start_session("etl-a")
    return session_id, await world.start_calculation(session_id, "# sim: runtime=600s")


@pytest.mark.parametrize(("backend", "lost"), [("sqlite", 1), ("dynamodb", ATTEMPTS), ("dynamodb", 1)],
                         ids=["sqlite", "dynamodb-every-attempt", "dynamodb-first-attempt"])
async def test_a_claim_whose_answer_is_lost_is_acted_on_once(virtual_world: VirtualWorld, backend: str,
                                                             lost: int) -> None:
    world = virtual_world
    with capture_logs() as logs:
        async with daemon(world, backend, lost) as storage:
            await world.vt.run_for(ms(0.1))
            session_id, calculation_id = await runaway(world)
            crossing = world.now + RUNTIME
            await world.vt.run_until(crossing + ms(6))
            # Stopped once. Every attempt lost: 1 s after the claim failed (first_verify_after) the claim is sent
            # again, refused by the write that landed, read back as this claim, and driven. Only the first lost:
            # the gateway's own retry is refused by it and read back the same way, at once.
            [stop] = world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)
            checked = crossing + CROSSING_MARGIN
            if backend == "sqlite":
                assert stop.time == checked + ms(1)
            elif lost == ATTEMPTS:  # after the gateway's backoffs between attempts (0.1 s, 0.2 s, plus jitter)
                assert checked + ms(1.3) <= stop.time <= checked + ms(1.8), stop.time - checked
            else:
                assert checked + ms(0.1) <= stop.time <= checked + ms(0.4), stop.time - checked
            assert world.metric("athena_supervisor_actions_total", action="stop", outcome="sent") == 1
            assert world.metric("athena_supervisor_violations_total") == 1
            key = TargetKey.calculation(calculation_id)
            escalation = await storage.escalation_for(key)
            assert escalation is not None and escalation.stop_sent_at is not None
            events = [entry.event for entry in reversed(await storage.recent_events(20, target_id=calculation_id))]
            assert events[:3] == ["decision", "stop.intent", "stop.sent"], events
            assert events.count("decision") == 1
    names = [entry["event"] for entry in logs]
    assert "escalation.adopted" not in names
    assert names.count("enforcement.claim_unanswered") == (1 if backend == "sqlite" or lost == ATTEMPTS else 0)
    assert names.count("enforcement.claim_settled") == names.count("enforcement.claim_unanswered")
    assert session_id and not world.calls("TerminateSession")


async def test_a_claim_found_in_storage_that_nobody_drives_is_adopted(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    with capture_logs() as logs:
        async with world.daemon(discovery_interval=SWEEPS) as service:
            await world.vt.run_for(ms(0.1))
            session_id, calculation_id = await runaway(world)
            submitted = world.now
            # The target was claimed in this journal by a writer this daemon never heard back from (a claim whose
            # answer was lost, before this daemon loaded the claims): open, nothing sent, driven by nobody.
            orphan = machine.begin(Verdict(
                target=TargetRef(TargetKind.CALCULATION, calculation_id, session_id, "etl-a"), policy="etl-limits",
                rule="max_runtime", observed=1.5, limit=1.5, unit="seconds", crossed_at=submitted + RUNTIME,
                decided_at=submitted, action="stop", mode="enforce"), "orphan-1", submitted)
            other = SqliteStorage(world.journal_path)
            try:
                assert await other.claim(orphan, "decision", {})
            finally:
                await other.close()
            crossing = submitted + RUNTIME
            await world.vt.run_until(crossing + ms(3))
            # At the crossing the daemon claims the target, is refused, reads the claim back and drives it.
            assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [
                crossing + CROSSING_MARGIN]
            escalation = await service.storage.escalation_for(TargetKey.calculation(calculation_id))
            assert escalation is not None and escalation.escalation_id == "orphan-1"
            assert escalation.stop_sent_at == crossing + CROSSING_MARGIN
    assert [entry["escalation_id"] for entry in logs if entry["event"] == "escalation.adopted"] == ["orphan-1"]
