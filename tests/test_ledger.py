from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from supervisor.journal import SCHEMA_VERSION, Journal
from supervisor.ledger import Counted, Ledger

T0 = datetime(2026, 3, 4, 12, tzinfo=UTC)


def test_a_schema_1_journal_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE notices (notice_key TEXT PRIMARY KEY, time TEXT NOT NULL);"
                     "INSERT INTO notices VALUES ('kept', '2026-01-01');PRAGMA user_version=1;")
    db.close()
    journal = Journal(path)
    assert journal.mark_once("kept", T0) is False
    assert Ledger(journal).checkpoint() is None
    journal.close()
    assert SCHEMA_VERSION == 2
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2


def test_only_the_difference_is_counted_and_allocated() -> None:
    ledger = Ledger(Journal(":memory:"))
    seen: list[tuple[int, Counted | None]] = []

    def allocate(delta: int, previous: Counted | None) -> list[tuple[str, datetime, float]]:
        seen.append((delta, previous))
        return [("b", T0, delta / 1000)]

    assert ledger.count("s", "wg", 5000, T0, allocate)[0] == 5000
    assert ledger.count("s", "wg", 5000, T0 + timedelta(seconds=1), allocate)[0] == 0
    assert ledger.count("s", "wg", 4000, T0 + timedelta(seconds=2), allocate)[0] == 0  # never backwards
    delta, previous = ledger.count("s", "wg", 7500, T0 + timedelta(seconds=3), allocate, ended=True)
    assert (delta, previous and previous.millis) == (2500, 5000)
    assert [d for d, _ in seen] == [5000, 2500]
    assert ledger.spent("b", T0, T0 + timedelta(days=1)) == 7.5
    assert ledger.open_sessions() == {}


def test_a_threshold_opens_once_per_period_and_reopens_after_a_reset() -> None:
    ledger = Ledger(Journal(":memory:"))
    first = ledger.open_episode("b", 100, "disable_workgroup", "2026-03-04", 10.0, T0)
    assert first is not None
    assert ledger.open_episode("b", 100, "disable_workgroup", "2026-03-04", 11.0, T0) is None
    ledger.record_disabled("etl", first, T0)
    assert ledger.releasable() == {}
    ledger.close_episode(first.episode_id, T0 + timedelta(hours=1))
    assert ledger.open_episode("b", 100, "disable_workgroup", "2026-03-04", 12.0, T0) is None  # same period
    assert ledger.releasable() == {"etl": [(first.episode_id, "b")]}
    ledger.mark_enabled("etl", T0 + timedelta(hours=1))
    assert ledger.releasable() == {}
    assert ledger.open_episode("b", 100, "disable_workgroup", "2026-03-05", 1.0, T0 + timedelta(days=1))
