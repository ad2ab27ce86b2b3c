"""The SQLite storage through the Storage seam: claims, intents and answers, events, notices, the ledger,
schema migrations."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from supervisor.core import escalation as machine
from supervisor.core.budgets import Counted
from supervisor.core.escalation import Step, Timing
from supervisor.core.fleet import Shard
from supervisor.core.model import Origin, TargetKey, TargetKind, TargetRef, Verdict
from supervisor.storage.sqlite import SqliteStorage
from supervisor.storage.sqlite_db import SCHEMA_VERSION, SchemaTooNew

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

# The journal schema of version 3 (athena-supervisor before shards), as it was released.
SCHEMA_3 = """
CREATE TABLE IF NOT EXISTS escalations (
    escalation_id TEXT PRIMARY KEY,
    target_key TEXT NOT NULL UNIQUE,
    target_kind TEXT NOT NULL,
    target_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    workgroup TEXT NOT NULL,
    policy TEXT NOT NULL,
    rule TEXT NOT NULL,
    observed REAL NOT NULL,
    limit_value REAL NOT NULL,
    unit TEXT NOT NULL,
    crossed_at TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    action TEXT NOT NULL,
    mode TEXT NOT NULL,
    phase TEXT NOT NULL,
    created_at TEXT NOT NULL,
    next_step_at TEXT NOT NULL,
    stop_intent_at TEXT,
    stop_sent_at TEXT,
    terminate_intent_at TEXT,
    terminate_sent_at TEXT,
    terminate_attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    outcome TEXT,
    updated_at TEXT NOT NULL,
    origin TEXT NOT NULL DEFAULT 'policy',
    intent_at TEXT
);
CREATE INDEX IF NOT EXISTS escalations_open ON escalations (phase) WHERE phase != 'done';
CREATE INDEX IF NOT EXISTS escalations_session ON escalations (session_id);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    event TEXT NOT NULL,
    escalation_id TEXT,
    target_kind TEXT,
    target_id TEXT,
    session_id TEXT,
    workgroup TEXT,
    policy TEXT,
    rule TEXT,
    phase TEXT,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_target ON events (target_id);
CREATE INDEX IF NOT EXISTS events_session ON events (session_id);
CREATE TABLE IF NOT EXISTS notices (
    notice_key TEXT PRIMARY KEY,
    time TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS session_spend (
    session_id TEXT PRIMARY KEY,
    workgroup TEXT NOT NULL,
    counted_millis INTEGER NOT NULL,
    observed_at TEXT NOT NULL,
    ended INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS session_spend_open ON session_spend (ended) WHERE ended = 0;
CREATE TABLE IF NOT EXISTS budget_spend (
    budget TEXT NOT NULL,
    bucket_start TEXT NOT NULL,
    usd REAL NOT NULL,
    PRIMARY KEY (budget, bucket_start)
);
CREATE TABLE IF NOT EXISTS budget_episodes (
    episode_id INTEGER PRIMARY KEY AUTOINCREMENT,
    budget TEXT NOT NULL,
    at_percent REAL NOT NULL,
    action TEXT NOT NULL,
    period_key TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    spent_usd REAL NOT NULL,
    closed_at TEXT,
    UNIQUE (budget, at_percent, period_key)
);
CREATE TABLE IF NOT EXISTS disabled_workgroups (
    workgroup TEXT NOT NULL,
    episode_id INTEGER NOT NULL,
    budget TEXT NOT NULL,
    disabled_at TEXT NOT NULL,
    enabled_at TEXT,
    PRIMARY KEY (workgroup, episode_id)
);
CREATE TABLE IF NOT EXISTS settings_kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

TIMING = Timing(stop_grace=timedelta(seconds=30), terminate_grace=timedelta(seconds=60))


def verdict(target_id: str = "c1", *, origin: Origin = Origin.POLICY) -> Verdict:
    return Verdict(target=TargetRef(TargetKind.CALCULATION, target_id, "s1", "etl-a"), policy="p", rule="max_runtime",
                   observed=1801.5, limit=1800.0, unit="seconds", crossed_at=T0, decided_at=T0 + timedelta(seconds=1),
                   action="stop", mode="enforce", origin=origin)


async def test_an_escalation_survives_reopening_exactly(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    storage = SqliteStorage(path)
    escalation = machine.begin(verdict(origin=Origin.BUDGET), "e1", T0)
    assert await storage.claim(escalation, "decision", {"why": "test"})
    escalation = machine.intend(escalation, Step.SEND_STOP, T0)
    await storage.save(escalation, "stop.intent", {}, time=T0)
    escalation = machine.sent(escalation, Step.SEND_STOP, T0 + timedelta(milliseconds=20), TIMING)
    await storage.save(escalation, "stop.sent", {"state": "CANCELING"}, time=T0 + timedelta(milliseconds=20))
    await storage.close()

    reopened = SqliteStorage(path)
    assert await reopened.open_escalations() == [escalation]
    events = await reopened.recent_events(10)
    assert [e.event for e in events] == ["stop.sent", "stop.intent", "decision"]
    assert events[0].detail == {"state": "CANCELING"}
    assert events[2].policy == "p" and events[2].rule == "max_runtime" and events[2].target_id == "c1"
    await reopened.close()


async def test_a_target_is_claimed_once_and_workgroup_scopes_are_distinct(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "j.db")
    assert await storage.claim(machine.begin(verdict(), "e1", T0), "decision", {})
    assert not await storage.claim(machine.begin(verdict(), "e2", T0), "decision", {})
    disable = Verdict(target=TargetRef.of_workgroup("etl-a", "disable:1"), policy="b", rule="disable_workgroup",
                      observed=5.0, limit=4.0, unit="usd", crossed_at=T0, decided_at=T0,
                      action="disable_workgroup", mode="enforce", origin=Origin.BUDGET)
    assert await storage.claim(machine.begin(disable, "e3", T0), None, {})
    again = replace(disable, target=TargetRef.of_workgroup("etl-a", "disable:2"))
    assert await storage.claim(machine.begin(again, "e4", T0), None, {})
    assert await storage.claimed_targets() == {
        TargetKey.calculation("c1"), TargetKey(TargetKind.WORKGROUP, "etl-a", "disable:1"),
        TargetKey(TargetKind.WORKGROUP, "etl-a", "disable:2")}
    found = await storage.escalation_for(TargetKey(TargetKind.WORKGROUP, "etl-a", "disable:1"))
    assert found is not None and found.escalation_id == "e3" and found.verdict.target.scope == "disable:1"
    assert [e.event for e in await storage.recent_events(10)] == ["decision"], "a None event journals nothing"
    await storage.close()


async def test_settled_escalations_are_not_reopened(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "j.db")
    escalation = machine.begin(verdict(), "e1", T0)
    await storage.claim(escalation, "decision", {})
    done = machine.calculation_observed(machine.sent(escalation, Step.SEND_STOP, T0, TIMING),
                                        None, T0, TIMING, found=False)
    await storage.save(done, "verify.done", {}, time=T0)
    assert await storage.open_escalations() == []
    await storage.close()


async def test_mark_once_and_filtered_events(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "j.db")
    assert await storage.mark_once("warning:calculation:c1:max_runtime", T0)
    assert not await storage.mark_once("warning:calculation:c1:max_runtime", T0)
    await storage.record("warning", target=verdict("c2").target, policy="p", rule="max_runtime", detail={"x": 1},
                         time=T0)
    await storage.claim(machine.begin(verdict("c3"), "e3", T0), "decision", {})
    assert [e.target_id for e in await storage.recent_events(10, target_id="c2")] == ["c2"]
    assert {e.target_id for e in await storage.recent_events(10, target_id="s1")} == {"c2", "c3"}
    await storage.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    SqliteStorage(path).close_now()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(SchemaTooNew, match="upgrade athena-supervisor"):
        SqliteStorage(path)


async def test_a_schema_1_journal_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE notices (notice_key TEXT PRIMARY KEY, time TEXT NOT NULL);"
                     "INSERT INTO notices VALUES ('kept', '2026-01-01');PRAGMA user_version=1;")
    db.close()
    storage = SqliteStorage(path)
    assert await storage.mark_once("kept", T0) is False
    assert await storage.checkpoint() is None
    await storage.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4


async def test_a_schema_2_budget_escalation_keeps_its_origin(tmp_path: Path) -> None:
    """Schema 3 adds escalations.origin; rows of budgets written by schema 2 (rule "budget:...") become budget."""
    path = tmp_path / "v2.db"
    storage = SqliteStorage(path)
    await storage.claim(machine.begin(verdict(), "e1", T0), "decision", {})
    await storage.close()
    db = sqlite3.connect(path)  # make it look like schema 2: no origin, a budget rule
    db.executescript("ALTER TABLE escalations DROP COLUMN origin; ALTER TABLE escalations DROP COLUMN intent_at;"
                     "UPDATE escalations SET rule='budget:monthly'; PRAGMA user_version=2;")
    db.close()
    reopened = SqliteStorage(path)
    (escalation,) = await reopened.open_escalations()
    assert escalation.verdict.origin is Origin.BUDGET
    await reopened.close()


async def test_only_the_difference_is_counted_and_allocated() -> None:
    storage = SqliteStorage(":memory:")
    seen: list[tuple[int, Counted | None]] = []

    def allocate(delta: int, previous: Counted | None) -> list[tuple[str, datetime, float]]:
        seen.append((delta, previous))
        return [("b", T0, delta / 1000)]

    assert (await storage.count("s", "wg", 5000, T0, allocate))[0] == 5000
    assert (await storage.count("s", "wg", 5000, T0 + timedelta(seconds=1), allocate))[0] == 0
    assert (await storage.count("s", "wg", 4000, T0 + timedelta(seconds=2), allocate))[0] == 0  # never backwards
    delta, previous = await storage.count("s", "wg", 7500, T0 + timedelta(seconds=3), allocate, ended=True)
    assert (delta, previous and previous.millis) == (2500, 5000)
    assert [d for d, _ in seen] == [5000, 2500]
    assert await storage.spent("b", T0, T0 + timedelta(days=1)) == 7.5
    assert await storage.open_sessions() == {}


async def test_a_threshold_opens_once_per_period_and_reopens_after_a_reset() -> None:
    storage = SqliteStorage(":memory:")
    first = await storage.open_episode("b", 100, "disable_workgroup", "2026-03-04", 10.0, T0)
    assert first is not None
    assert await storage.open_episode("b", 100, "disable_workgroup", "2026-03-04", 11.0, T0) is None
    await storage.record_disabled("etl", first, T0)
    assert await storage.releasable() == {}
    await storage.close_episode(first.episode_id, T0 + timedelta(hours=1))
    assert await storage.open_episode("b", 100, "disable_workgroup", "2026-03-04", 12.0, T0) is None  # same period
    assert await storage.releasable() == {"etl": [(first.episode_id, "b")]}
    await storage.mark_enabled("etl", T0 + timedelta(hours=1))
    assert await storage.releasable() == {}
    assert await storage.open_episode("b", 100, "disable_workgroup", "2026-03-05", 1.0, T0 + timedelta(days=1))


async def test_a_scratch_copy_is_independent(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "j.db")
    await storage.set_checkpoint(T0)
    scratch = storage.scratch_copy()
    assert await scratch.checkpoint() == T0
    await scratch.set_checkpoint(T0 + timedelta(hours=1))
    assert await storage.checkpoint() == T0
    scratch.close_now()
    await storage.close()


def write_schema_3_journal(path: Path) -> None:
    """A journal as version 3 left it: an open escalation, a settled one, events, a notice, counted spend, an
    open episode with a disabled workgroup, and the accounting checkpoint."""
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_3)
    iso = "2026-11-25T12:00:00.000000+00:00"
    for escalation_id, key, target, phase in (("e1", "calculation:c1", "c1", "stop_requested"),
                                              ("e2", "calculation:c2", "c2", "done")):
        db.execute(
            "INSERT INTO escalations VALUES (?, ?, 'calculation', ?, 's1', 'etl-a', 'p', 'max_runtime', 1801.5, "
            "1800.0, 'seconds', ?, ?, 'stop', 'enforce', ?, ?, ?, ?, ?, NULL, NULL, 0, 0, NULL, ?, 'policy', NULL)",
            (escalation_id, key, target, iso, iso, phase, iso, iso, iso, iso, iso))
    db.execute("INSERT INTO events (time, event, escalation_id, target_kind, target_id, session_id, workgroup, "
               "policy, rule, phase, detail) VALUES (?, 'stop.sent', 'e1', 'calculation', 'c1', 's1', 'etl-a', 'p', "
               "'max_runtime', 'stop_requested', '{\"state\": \"CANCELING\"}')", (iso,))
    db.execute("INSERT INTO notices VALUES ('warning:calculation:c1:max_runtime', ?)", (iso,))
    db.execute("INSERT INTO session_spend VALUES ('s1', 'etl-a', 5000, ?, 0)", (iso,))
    db.execute("INSERT INTO budget_spend VALUES ('b', ?, 1.25)", (iso,))
    db.execute("INSERT INTO budget_episodes (budget, at_percent, action, period_key, opened_at, spent_usd) "
               "VALUES ('b', 100, 'disable_workgroup', '2026-11-25', ?, 10.0)", (iso,))
    db.execute("INSERT INTO disabled_workgroups VALUES ('etl-a', 1, 'b', ?, NULL)", (iso,))
    db.execute("INSERT INTO settings_kv VALUES ('spend_checkpoint', ?)", (iso,))
    db.execute("PRAGMA user_version=3")
    db.commit()
    db.close()


async def test_a_schema_3_journal_keeps_everything_in_the_implicit_shard(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    write_schema_3_journal(path)
    storage = SqliteStorage(path)
    for view in (storage, storage.for_shard(Shard("", "us-east-1", implicit=True))):
        (escalation,) = await view.open_escalations()
        assert (escalation.escalation_id, escalation.phase.value, escalation.verdict.observed) == (
            "e1", "stop_requested", 1801.5)
        assert await view.claimed_targets() == {TargetKey.calculation("c1"), TargetKey.calculation("c2")}
        (event,) = await view.recent_events(10)
        assert (event.event, event.detail) == ("stop.sent", {"state": "CANCELING"})
        assert set(await view.open_sessions()) == {"s1"}
        assert await view.checkpoint() == T0
        assert await view.disabled_in(1) == {"etl-a"}
    assert not await storage.mark_once("warning:calculation:c1:max_runtime", T0)
    assert await storage.spent("b", T0, T0 + timedelta(days=1)) == 1.25
    (episode,) = await storage.open_episodes("b")
    assert (episode.episode_id, episode.period_key) == (1, "2026-11-25")
    # The old records are the implicit shard's: a named shard starts empty and claims its own targets.
    named = storage.for_shard(Shard("111111111111", "us-east-1"))
    assert await named.claimed_targets() == set() and await named.checkpoint() is None
    assert await named.claim(machine.begin(verdict("c1"), "e9", T0), "decision", {})
    assert not await storage.claim(machine.begin(verdict("c1"), "e10", T0), "decision", {})
    await storage.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 4
    assert db.execute("SELECT DISTINCT shard FROM session_spend").fetchall() == [("",)]
    assert {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")} >= {"watch"}
    db.close()


async def test_a_failed_migration_leaves_the_journal_as_it_was(tmp_path: Path) -> None:
    """The migration is one transaction: a journal it cannot migrate stays at its version, rows intact."""
    path = tmp_path / "v3.db"
    write_schema_3_journal(path)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE escalations_before_v4 (x)")  # in the way of the rebuild of escalations
    db.commit()
    db.close()
    with pytest.raises(sqlite3.OperationalError, match="escalations_before_v4"):
        SqliteStorage(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    assert db.execute("SELECT COUNT(*) FROM escalations").fetchone()[0] == 2
    assert "shard" not in {row[1] for row in db.execute("PRAGMA table_info(events)")}
    db.close()
