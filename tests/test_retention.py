"""The retention activity: events older than ``journal.retention`` go at start and then every hour, on the
injected clock; claims stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
from structlog.testing import capture_logs

from supervisor.activities.retention import PRUNE_INTERVAL, Retention
from supervisor.clock import ManualClock
from supervisor.core import escalation as machine
from supervisor.core.model import Origin, TargetKey, TargetKind, TargetRef, Verdict
from supervisor.metrics import Metrics
from supervisor.storage.sqlite import SqliteStorage
from tests.virtual_time import virtual_time

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
RETENTION = timedelta(days=90)


async def test_old_events_go_at_start_and_every_hour(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "j.db")
    clock = ManualClock(T0)
    verdict = Verdict(target=TargetRef(TargetKind.CALCULATION, "c1", "s1", "etl-a"), policy="p", rule="max_runtime",
                      observed=2.0, limit=1.0, unit="seconds", crossed_at=T0, decided_at=T0, action="stop",
                      mode="enforce", origin=Origin.POLICY)
    await storage.claim(machine.begin(verdict, "e1", T0 - RETENTION - timedelta(days=1)), "decision", {})
    await storage.record("warning", policy="p", time=T0 - RETENTION + timedelta(minutes=30))
    await storage.record("warning", policy="p", time=T0)
    metrics = Metrics()
    retention = Retention(storage=storage, clock=clock, retention=RETENTION, metrics=metrics)

    with capture_logs() as logs:
        # Virtual time: the driver waits for the prune's worker thread before it moves the clock.
        async with virtual_time(clock) as vt, anyio.create_task_group() as group:
            await group.start(retention.run)
            await vt.settle()
            assert clock.next_deadline() == T0 + PRUNE_INTERVAL, "pruned at start, then asleep until the next prune"
            assert len(await storage.recent_events(10)) == 2, "the decision event went at start"
            await vt.run_until(T0 + PRUNE_INTERVAL)
            assert clock.next_deadline() == T0 + 2 * PRUNE_INTERVAL
            assert [e.time for e in await storage.recent_events(10)] == [T0]
            group.cancel_scope.cancel()
    assert [entry["count"] for entry in logs if entry["event"] == "journal.events_pruned"] == [1, 1]
    assert metrics.registry.get_sample_value("athena_supervisor_journal_events_pruned_total") == 2
    assert await storage.claimed_targets() == {TargetKey.calculation("c1")}, "claims stay"
    await storage.close()
