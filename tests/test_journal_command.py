from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
import yaml

from supervisor.cli import main
from supervisor.core import escalation as machine
from supervisor.core.escalation import Step, Timing
from supervisor.core.model import TargetKind, TargetRef, Verdict
from supervisor.storage.sqlite import SqliteStorage
from tests.dynamodb_fixtures import create_table, dynamodb_settings, dynamodb_storage, new_table_name

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
    assert lines[0].split() == ["TIME", "EVENT", "MODE", "ACTION", "TARGET", "POLICY", "RULE", "DETAIL"]
    assert lines[1].split()[:4] == ["2026-11-25T12:00:00.030Z", "stop.sent", "enforce", "stop"]
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


@pytest.fixture
def rollout_journal(tmp_path: Path) -> Path:
    """A dry-run week then an enforced day: decisions of two policies in two workgroups, a warning, a budget."""
    path = tmp_path / "rollout.db"
    storage = SqliteStorage(path)
    journal = storage.journal

    def decide(target: str, session: str, workgroup: str, policy: str, mode: str, at: datetime) -> None:
        verdict = Verdict(target=TargetRef(TargetKind.CALCULATION, target, session, workgroup), policy=policy,
                          rule="max_runtime", observed=61.0, limit=60.0, unit="seconds", crossed_at=at,
                          decided_at=at, action="stop", mode=mode)  # type: ignore[arg-type]
        escalation = machine.begin(verdict, f"e-{target}", at)
        journal.begin_escalation(escalation, "decision", verdict.describe())
        if mode == "enforce":
            journal.save(machine.intend(escalation, Step.SEND_STOP, at), "stop.intent",
                         {"operation": "StopCalculationExecution"}, time=at)

    decide("c3727b86-0001-aaaa", "5e551011-0001", "etl-a", "etl-limits", "dry-run", T0 - timedelta(days=6))
    decide("c3727b86-0002-bbbb", "5e551011-0002", "ml-a", "ml-limits", "dry-run", T0 - timedelta(days=5))
    journal.record("budget_threshold", policy="etl-daily", rule="threshold:80",
                   detail={"workgroup": "etl-a", "spent_usd": 160.0, "limit_usd": 200, "mode": "dry-run",
                           "action": "notify"}, time=T0 - timedelta(days=2))
    journal.record("warning", target=TargetRef(TargetKind.CALCULATION, "e0e0e0e0-0004", "5e551011-0004", "etl-a"),
                   policy="etl-limits", rule="max_runtime", detail={"predicted_at": T0.isoformat()},
                   time=T0 - timedelta(days=1))
    decide("d1e2f3a4-0003-cccc", "5e551011-0003", "etl-a", "etl-limits", "enforce", T0)
    storage.close_now()
    return path


def journal_rows(capsys: pytest.CaptureFixture[str], *argv: str) -> list[list[str]]:
    assert main(["journal", *argv]) == 0
    return [line.split()[:5] for line in capsys.readouterr().out.splitlines()[1:]]


def test_a_unique_id_prefix_stands_for_its_target(rollout_journal: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = journal_rows(capsys, "--path", str(rollout_journal), "--target", "d1e2f3a4")
    assert [row[:2] for row in rows] == [["2026-11-25T12:00:00.000Z", "stop.intent"],
                                         ["2026-11-25T12:00:00.000Z", "decision"]]
    assert rows[0][4] == "calculation:d1e2f3a4-0003-cccc"
    by_session = journal_rows(capsys, "--path", str(rollout_journal), "--target", "5e551011-0004")
    assert [row[1] for row in by_session] == ["warning"]


def test_an_ambiguous_prefix_names_the_candidates(rollout_journal: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["journal", "--path", str(rollout_journal), "--target", "c3727b86"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("--target c3727b86: ambiguous, 2 ids start with it: c3727b86-0001-aaaa, "
                            "c3727b86-0002-bbbb; give more characters\n")
    assert main(["journal", "--path", str(rollout_journal), "--target", "ffff"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["(no event matches)"]


def test_dry_run_decisions_are_told_apart_and_filtered(rollout_journal: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    rows = journal_rows(capsys, "--path", str(rollout_journal))
    assert [(row[1], row[2], row[3]) for row in rows] == [
        ("stop.intent", "enforce", "stop"), ("decision", "enforce", "stop"), ("warning", "-", "-"),
        ("budget_threshold", "dry-run", "notify"), ("decision", "dry-run", "stop"), ("decision", "dry-run", "stop")]
    dry = journal_rows(capsys, "--path", str(rollout_journal), "--mode", "dry-run", "--event", "decision")
    assert [row[4] for row in dry] == ["calculation:c3727b86-0002-bbbb", "calculation:c3727b86-0001-aaaa"]
    assert [row[1] for row in journal_rows(capsys, "--path", str(rollout_journal), "--mode", "enforce")] == [
        "stop.intent", "decision"]


def test_filters_by_time_policy_workgroup_and_event(rollout_journal: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = str(rollout_journal)
    rows = journal_rows(capsys, "--path", path, "--since", "2026-11-20", "--until", "2026-11-24T12:00:00+00:00")
    assert [row[1] for row in rows] == ["budget_threshold", "decision"]
    assert [row[1] for row in journal_rows(capsys, "--path", path, "--policy", "ml-limits")] == ["decision"]
    assert [row[1] for row in journal_rows(capsys, "--path", path, "--workgroup", "etl-a")] == [
        "stop.intent", "decision", "warning", "budget_threshold", "decision"]
    assert [row[1] for row in journal_rows(capsys, "--path", path, "--event", "stop.*", "--event", "warning")] == [
        "stop.intent", "warning"]
    assert [row[1] for row in journal_rows(capsys, "--path", path, "--since", "100000d", "--limit", "1")] == [
        "stop.intent"]
    assert main(["journal", "--path", path, "--json", "--mode", "dry-run", "--policy", "etl-daily"]) == 0
    (threshold,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (threshold["event"], threshold["mode"], threshold["action"]) == ("budget_threshold", "dry-run", "notify")


def test_a_bad_time_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["journal", "--since", "last tuesday"])
    assert capsys.readouterr().err.splitlines() == [
        "athena-supervisor journal: argument --since: not a duration or a time: 'last tuesday'; a duration ago (7d, "
        "12h, 30m) or a time (2026-11-25, 2026-11-25T12:00:00Z; without a zone: UTC); see 'athena-supervisor "
        "journal --help'"]


def test_the_dynamodb_journal_is_queried_the_same_way(tmp_path: Path, moto_dynamodb: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    settings = dynamodb_settings(moto_dynamodb, new_table_name())

    async def write() -> None:
        await create_table(settings)
        async with dynamodb_storage(settings) as storage:
            for index, mode in enumerate(("dry-run", "enforce")):
                verdict = Verdict(target=TargetRef(TargetKind.CALCULATION, f"abcd{index}-ffff", "s-1", "etl-a"),
                                  policy="etl-limits", rule="max_runtime", observed=61.0, limit=60.0,
                                  unit="seconds", crossed_at=T0 + timedelta(hours=index),
                                  decided_at=T0 + timedelta(hours=index), action="stop", mode=mode)  # type: ignore[arg-type]
                await storage.claim(machine.begin(verdict, f"e{index}", verdict.decided_at), "decision",
                                    verdict.describe())

    anyio.run(write)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"aws": {"region": "us-east-1", "max_attempts": 2},
                                      "journal": settings.journal.model_dump(mode="json", exclude={"path"})}))
    rows = journal_rows(capsys, "--config", str(config), "--mode", "dry-run")
    assert rows == [["2026-11-25T12:00:00.000Z", "decision", "dry-run", "stop", "calculation:abcd0-ffff"]]
    assert [row[4] for row in journal_rows(capsys, "--config", str(config), "--target", "abcd1")] == [
        "calculation:abcd1-ffff"]
    assert main(["journal", "--config", str(config), "--target", "abcd"]) == 2
    assert "ambiguous, 2 ids start with it: abcd0-ffff, abcd1-ffff" in capsys.readouterr().err
