"""``explain`` and ``budgets`` run in-process through ``supervisor.cli.main`` against the emulator, after the
daemon has acted and journaled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from athena_spark_emulator.testing import EmulatorHandle
from supervisor.cli import main
from supervisor.config import parse_settings
from supervisor.service import running_service
from tests.daemon_fixtures import SPARK_ENGINE, base_config, eventually, write_config
from tests.realtime import calls_of, start_calculation, start_session, wait_idle


@pytest.fixture
def athena(emulator: EmulatorHandle) -> Any:
    client = emulator.boto3_client()
    for name in ("etl-a", "etl-b"):
        client.create_work_group(Name=name, Configuration={"EngineVersion": SPARK_ENGINE})
    return client


def usd_spent(athena: Any, *session_ids: str) -> float:
    """What the sessions have cost so far, by their own statistics (0.35 USD per DPU-hour)."""
    millis = sum(athena.get_session(SessionId=s)["Statistics"]["DpuExecutionInMillis"] for s in session_ids)
    return millis / 3.6e6 * 0.35


BUDGETS = [{"name": "etl-budget", "workgroups": ["etl-*"], "period": "daily", "limit_usd": 10,
            "thresholds": [{"at_percent": 80, "action": "notify"}, {"at_percent": 100, "action": "stop_calculations"}]}]


@pytest.mark.slow
def test_explain_and_budgets_after_the_daemon_acted(
    emulator: EmulatorHandle, athena: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The calculation explained as running is in etl-b, whose limit is far away: explain must not race it.
    policies = [{"name": "etl-limits", "workgroups": ["etl-a"], "calculation": {"max_runtime": "300ms"}},
                {"name": "etl-b-limits", "workgroups": ["etl-b"], "calculation": {"max_runtime": "1h"}}]
    config = base_config(emulator, tmp_path / "journal.db", budgets=BUDGETS, policies=policies)
    stopped_session = start_session(athena, "etl-a")
    other_session = start_session(athena, "etl-b")
    wait_idle(athena, stopped_session)
    wait_idle(athena, other_session)
    stopped = start_calculation(athena, stopped_session, "# sim: runtime=60s dpus=2")

    async def run_daemon() -> None:
        async with running_service(parse_settings(config, environ={})) as service:
            # Real time (the commands below build their own gateway on the system clock): generous bounds, since
            # nothing here asserts how long it takes.
            await eventually(lambda: calls_of(emulator, "StopCalculationExecution", CalculationExecutionId=stopped),
                             within=60)
            await eventually(lambda: service.accounting is not None and service.accounting.passes >= 2, within=60)

    anyio.run(run_daemon)
    capsys.readouterr()  # the daemon's logs
    running = start_calculation(athena, other_session, "# sim: runtime=60s dpus=4")
    path = write_config(tmp_path / "config.yaml", config)

    assert main(["explain", "--config", str(path), "--calculation", stopped, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["target"]["kind"] == "calculation" and report["target"]["session_id"] == stopped_session
    assert report["policy"] == "etl-limits"
    assert report["escalation"]["rule"] == "max_runtime"
    assert report["decision"].startswith("acted: stop (enforce) for max_runtime of etl-limits")
    assert [entry["event"] for entry in report["journal"]][-1] == "decision"
    assert [b["budget"] for b in report["budgets"]] == ["etl-budget"]

    assert main(["explain", "--config", str(path), "--calculation", running]) == 0
    text = capsys.readouterr().out
    assert f"calculation {running} in workgroup etl-b: RUNNING" in text
    assert "max_runtime" in text and "s left" in text
    assert "decision: nothing yet; next limit crossing at" in text
    assert "budget etl-budget:" in text

    assert main(["explain", "--config", str(path), "--session", other_session, "--json"]) == 0
    session_report = json.loads(capsys.readouterr().out)
    assert session_report["target"]["state"] == "BUSY" and session_report["limits"] == []
    assert session_report["target"]["cost_usd"] > 0

    # The command counts the spend up to its own instant: between the sessions' statistics just before and just
    # after it, however long it takes on a loaded machine.
    before = usd_spent(athena, stopped_session, other_session)
    assert main(["budgets", "--config", str(path), "--json"]) == 0
    after = usd_spent(athena, stopped_session, other_session)
    (budget,) = json.loads(capsys.readouterr().out)
    assert budget["budget"] == "etl-budget" and budget["limit_usd"] == 10
    assert round(before, 6) <= budget["spent_usd"] <= round(after, 6) and budget["rate_usd_per_hour"] > 0
    assert [t["at_percent"] for t in budget["thresholds"]] == [80, 100]
    assert main(["budgets", "--config", str(path)]) == 0
    assert "budget etl-budget:" in capsys.readouterr().out

    assert main(["explain", "--config", str(path), "--session", "nope"]) == 2


def test_budgets_json_names_the_configured_period(
    emulator: EmulatorHandle, athena: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weekly = {**BUDGETS[0], "name": "etl-weekly", "period": "weekly"}
    rolling = {**BUDGETS[0], "name": "etl-rolling", "period": "rolling:24h"}
    config = base_config(emulator, tmp_path / "journal.db", budgets=[BUDGETS[0], weekly, rolling])
    path = write_config(tmp_path / "config.yaml", config)
    assert main(["budgets", "--config", str(path), "--json"]) == 0
    statuses = json.loads(capsys.readouterr().out)
    assert [(s["budget"], s["period"], s["rolling"]) for s in statuses] == [
        ("etl-budget", "daily", False), ("etl-weekly", "weekly", False), ("etl-rolling", "rolling:24h", True)]
