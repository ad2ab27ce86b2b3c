"""``explain`` tells the truth about targets that ended and sessions that are busy: through the real CLI
against the emulator (real time: the command builds its own gateway on the system clock)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from athena_spark_emulator.testing import EmulatorHandle
from supervisor.cli import main
from tests.daemon_fixtures import SPARK_ENGINE, base_config, write_config
from tests.realtime import start_calculation, start_session, wait_idle

POLICIES = [{"name": "etl-limits", "workgroups": ["etl-*"], "calculation": {"max_runtime": "8s", "max_queued": "1m"},
             "session": {"max_idle": "10m", "max_age": "1h"}}]


def wait_state(client: Any, calculation_id: str, state: str) -> None:
    deadline = time.monotonic() + 10
    while client.get_calculation_execution_status(CalculationExecutionId=calculation_id)["Status"]["State"] != state:
        assert time.monotonic() < deadline, f"calculation never became {state}"
        time.sleep(0.02)


@pytest.fixture
def config(emulator: EmulatorHandle, tmp_path: Path) -> str:
    return str(write_config(tmp_path / "c.yaml", base_config(emulator, tmp_path / "j.db", policies=POLICIES)))


@pytest.fixture
def athena(emulator: EmulatorHandle) -> Any:
    client = emulator.boto3_client()
    client.create_work_group(Name="etl-a", Configuration={"EngineVersion": SPARK_ENGINE})
    return client


def explain(config: str, capsys: pytest.CaptureFixture[str], *target: str) -> tuple[dict[str, Any], str]:
    assert main(["explain", "--config", config, *target, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert main(["explain", "--config", config, *target]) == 0
    return report, capsys.readouterr().out


@pytest.mark.parametrize(("pragma", "state"), [("outcome=failed", "FAILED"), ("outcome=completed", "COMPLETED")])
def test_a_finished_calculation_is_said_to_have_ended_with_no_time_left(
    config: str, athena: Any, pragma: str, state: str, capsys: pytest.CaptureFixture[str]
) -> None:
    session_id = start_session(athena, "etl-a")
    wait_idle(athena, session_id)
    calculation_id = start_calculation(athena, session_id, f"# sim: runtime=200ms {pragma}")
    wait_state(athena, calculation_id, state)
    report, text = explain(config, capsys, "--calculation", calculation_id)
    assert report["target"]["ended"].startswith(f"{state} at ") and report["target"]["ended"].endswith(", after 0.2 s")
    by_rule = {limit["rule"]: limit for limit in report["limits"]}
    assert by_rule["max_runtime"] == {"rule": "max_runtime", "unit": "seconds", "limit": 8.0, "observed": 0.2,
                                      "left_seconds": None, "status": "ended",
                                      "note": f"does not apply: the calculation ended ({state})"}
    assert by_rule["max_queued"]["status"] == "ended" and by_rule["max_queued"]["observed"] is None
    assert report["decision"] == (f"nothing: the calculation ended ({report['target']['ended']}); no limit applies "
                                  "to it any more")
    assert "left" not in text and "None" not in text
    assert f"  max_runtime    0.2 / 8 seconds  does not apply: the calculation ended ({state})" in text.splitlines()


def test_a_busy_session_is_told_its_idle_limit_applies_once_its_calculation_ends(
    config: str, athena: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    session_id = start_session(athena, "etl-a")
    wait_idle(athena, session_id)
    start_calculation(athena, session_id, "# sim: runtime=60s")
    report, text = explain(config, capsys, "--session", session_id)
    assert report["target"]["state"] == "BUSY" and report["target"]["ended"] is None
    by_rule = {limit["rule"]: limit for limit in report["limits"]}
    assert by_rule["max_age"]["status"] == "counting" and 3500 < by_rule["max_age"]["left_seconds"] <= 3600
    assert by_rule["max_idle"] == {
        "rule": "max_idle", "unit": "seconds", "limit": 600.0, "observed": None, "left_seconds": None,
        "status": "not_idle",
        "note": "applies once the session is idle: idle time starts when its calculations end (BUSY)"}
    assert report["decision"].startswith("nothing yet; next limit crossing at ")
    assert report["decision"].endswith("; max_idle applies once its calculations end (now BUSY)")
    assert "can be crossed any more" not in text
    assert "  max_idle       - / 600 seconds  applies once the session is idle" in text


def test_a_running_calculation_no_longer_counts_its_queue_limit(
    config: str, athena: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    session_id = start_session(athena, "etl-a")
    wait_idle(athena, session_id)
    calculation_id = start_calculation(athena, session_id, "# sim: runtime=60s")
    wait_state(athena, calculation_id, "RUNNING")
    report, _ = explain(config, capsys, "--calculation", calculation_id)
    by_rule = {limit["rule"]: limit for limit in report["limits"]}
    assert by_rule["max_runtime"]["status"] == "counting" and 0 < by_rule["max_runtime"]["left_seconds"] <= 8
    assert by_rule["max_queued"]["status"] == "not_waiting"
    assert report["decision"].startswith("nothing yet; next limit crossing at ")
