from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from supervisor import machine
from supervisor.journal import SCHEMA_VERSION, Journal
from supervisor.machine import Step, Timing
from supervisor.model import TargetRef, Verdict

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TIMING = Timing(stop_grace=timedelta(seconds=30), terminate_grace=timedelta(seconds=60))


def verdict(target_id: str = "c1") -> Verdict:
    return Verdict(target=TargetRef("calculation", target_id, "s1", "etl-a"), policy="p", rule="max_runtime",
                   observed=1801.5, limit=1800.0, unit="seconds", crossed_at=T0, decided_at=T0 + timedelta(seconds=1),
                   action="stop", mode="enforce")


def test_an_escalation_survives_reopening_exactly(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = Journal(path)
    escalation = machine.begin(verdict(), "e1", T0)
    assert journal.begin_escalation(escalation, "decision", {"why": "test"})
    escalation = machine.intend(escalation, Step.SEND_STOP, T0)
    journal.save(escalation, "stop.intent", time=T0)
    escalation = machine.sent(escalation, Step.SEND_STOP, T0 + timedelta(milliseconds=20), TIMING)
    journal.save(escalation, "stop.sent", {"state": "CANCELING"}, time=T0 + timedelta(milliseconds=20))
    journal.close()

    reopened = Journal(path)
    assert reopened.open_escalations() == [escalation]
    events = reopened.recent_events(10)
    assert [e.event for e in events] == ["stop.sent", "stop.intent", "decision"]
    assert events[0].detail == {"state": "CANCELING"}
    assert events[2].policy == "p" and events[2].rule == "max_runtime" and events[2].target_id == "c1"
    reopened.close()


def test_a_target_is_escalated_once(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    assert journal.begin_escalation(machine.begin(verdict(), "e1", T0), "decision")
    assert not journal.begin_escalation(machine.begin(verdict(), "e2", T0), "decision")
    assert journal.known_targets() == {"calculation:c1"}
    assert journal.has_escalation("calculation:c1")
    assert journal.escalation_for("calculation:c1").escalation_id == "e1"  # type: ignore[union-attr]
    journal.close()


def test_settled_escalations_are_not_reopened(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    escalation = machine.begin(verdict(), "e1", T0)
    journal.begin_escalation(escalation, "decision")
    done = machine.calculation_observed(machine.sent(escalation, Step.SEND_STOP, T0, TIMING),
                                        None, T0, TIMING, found=False)
    journal.save(done, "verify.done", time=T0)
    assert journal.open_escalations() == []
    journal.close()


def test_mark_once_and_filtered_events(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    assert journal.mark_once("warning:calculation:c1:max_runtime", T0)
    assert not journal.mark_once("warning:calculation:c1:max_runtime", T0)
    journal.record("warning", target=verdict("c2").target, policy="p", rule="max_runtime", detail={"x": 1}, time=T0)
    journal.begin_escalation(machine.begin(verdict("c3"), "e3", T0), "decision")
    assert [e.target_id for e in journal.recent_events(10, target_id="c2")] == ["c2"]
    assert {e.target_id for e in journal.recent_events(10, target_id="s1")} == {"c2", "c3"}
    journal.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    Journal(path).close()
    import sqlite3

    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(RuntimeError, match="upgrade athena-supervisor"):
        Journal(path)
