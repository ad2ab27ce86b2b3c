from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from supervisor.cli import main
from supervisor.core import escalation as machine
from supervisor.core.escalation import Step, Timing
from supervisor.core.model import TargetKind, TargetRef, Verdict
from supervisor.storage.sqlite import SqliteStorage

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    path = tmp_path / "j.db"
    storage = SqliteStorage(path)
    journal = storage.journal
    verdict = Verdict(target=TargetRef(TargetKind.CALCULATION, "calc-1", "sess-1", "etl-a"), policy="etl-limits",
                      rule="max_runtime", observed=1800.25, limit=1800.0, unit="seconds", crossed_at=T0,
                      decided_at=T0, action="stop", mode="enforce")
    escalation = machine.begin(verdict, "e1", T0)
    journal.begin_escalation(escalation, "decision", {"observed": 1800.25, "limit": 1800.0, "unit": "seconds"})
    escalation = machine.intend(escalation, Step.SEND_STOP, T0)
    journal.save(escalation, "stop.intent", {"operation": "StopCalculationExecution"}, time=T0)
    sent = machine.sent(escalation, Step.SEND_STOP, T0 + timedelta(milliseconds=30),
                        Timing(timedelta(seconds=30), timedelta(seconds=60)))
    journal.save(sent, "stop.sent", {"operation": "StopCalculationExecution", "state": "CANCELING"},
                 time=T0 + timedelta(milliseconds=30))
    storage.close_now()
    return path


def test_table_shows_newest_first_with_the_explanation(journal_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["journal", "--path", str(journal_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TIME", "EVENT", "TARGET", "POLICY", "RULE", "DETAIL"]
    assert "stop.sent" in lines[1] and "state=CANCELING" in lines[1]
    assert "decision" in lines[3] and "1800.25 > 1800 seconds" in lines[3]
    assert "calculation:calc-1" in lines[3] and "etl-limits" in lines[3]


def test_json_and_limit(journal_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["journal", "--path", str(journal_path), "--json", "--limit", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["event"] for row in rows] == ["stop.sent", "stop.intent"]
    assert rows[0]["detail"]["state"] == "CANCELING" and rows[0]["time"].startswith("2026-11-25T12:00:00.030")


def test_missing_journal_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["journal", "--path", str(tmp_path / "none.db")]) == 2
    assert "no journal here yet" in capsys.readouterr().err


def test_journal_path_from_config(journal_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"journal: {{path: {journal_path}}}\n")
    assert main(["journal", "--config", str(config), "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_budget_events_show_spend_and_workgroup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "j.db"
    storage = SqliteStorage(path)
    journal = storage.journal
    journal.record("workgroup.disabled", policy="etl-daily", rule="disable_workgroup",
                   detail={"workgroup": "etl-a", "spent_usd": 241.5, "limit_usd": 200}, time=T0)
    storage.close_now()
    assert main(["journal", "--path", str(path)]) == 0
    row = capsys.readouterr().out.splitlines()[1]
    assert "spent 241.5 of 200 USD" in row and "workgroup=etl-a" in row and "etl-daily" in row
