"""Engine-aware configuration and reporting: the ``engines`` policy selector, what ``check-config`` says about
limits an engine makes inapplicable, and ``explain`` naming a session's engine."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from athena_spark_emulator.testing import EmulatorHandle
from supervisor.cli import main
from supervisor.commands.check_config import check_config
from supervisor.config import ConfigError, parse_settings
from supervisor.core.model import PYSPARK_ENGINE, SPARK_CONNECT_ENGINE
from supervisor.core.policy import compile_policies, match_policy
from tests.daemon_fixtures import base_config, write_config

CALCULATION = {"max_runtime": "30m"}
BUDGET = {"name": "b", "period": "daily", "limit_usd": 10,
          "thresholds": [{"at_percent": 100, "action": "stop_calculations"}]}


def settings(**config: Any) -> Any:
    return parse_settings(config, environ={})


def check(tmp_path: Path, config: dict[str, Any]) -> tuple[int, str, str]:
    path = write_config(tmp_path / "config.yaml", config)
    out, err = io.StringIO(), io.StringIO()
    code = check_config(str(path), out=out, err=err, environ={})
    return code, out.getvalue(), err.getvalue()


def test_engines_select_the_first_matching_policy() -> None:
    policies = compile_policies(settings(policies=[
        {"name": "connect", "workgroups": ["etl-*"], "engines": [SPARK_CONNECT_ENGINE], "session": {"max_busy": "1h"}},
        {"name": "pyspark", "workgroups": ["etl-*"], "engines": [PYSPARK_ENGINE], "calculation": CALCULATION},
    ]))
    assert match_policy(policies, "etl-a", SPARK_CONNECT_ENGINE).name == "connect"  # type: ignore[union-attr]
    assert match_policy(policies, "etl-a", PYSPARK_ENGINE).name == "pyspark"  # type: ignore[union-attr]
    assert match_policy(policies, "etl-a").name == "pyspark"  # type: ignore[union-attr]  # "": PySpark 3
    assert match_policy(policies, "etl-a", "Apache Spark version 4.0") is None


def test_an_engine_selector_is_checked() -> None:
    with pytest.raises(ConfigError) as unknown:
        settings(policies=[{"name": "p", "engines": ["Spark 3.5"], "session": {"max_idle": "1h"}}])
    assert "policies[0].engines[0]" in str(unknown.value) and SPARK_CONNECT_ENGINE in str(unknown.value)
    with pytest.raises(ConfigError) as never:
        settings(policies=[{"name": "p", "engines": [SPARK_CONNECT_ENGINE], "calculation": CALCULATION}])
    message = str(never.value)
    assert "policies[0].calculation: calculation limits never apply" in message and "session.max_busy" in message


def test_check_config_warns_about_limits_an_engine_known_at_run_time_may_make_inapplicable(tmp_path: Path) -> None:
    config: dict[str, Any] = {
        "policies": [
            {"name": "calc-only", "workgroups": ["etl-*"], "calculation": CALCULATION},
            {"name": "guarded", "workgroups": ["ml-*"], "calculation": CALCULATION, "session": {"max_busy": "2h"}},
            {"name": "pyspark-only", "workgroups": ["bi-*"], "engines": [PYSPARK_ENGINE], "calculation": CALCULATION},
        ],
        "budgets": [BUDGET, {**BUDGET, "name": "b2", "thresholds": [
            {"at_percent": 90, "action": "stop_calculations"}, {"at_percent": 100, "action": "terminate_sessions"}]}],
    }
    code, out, err = check(tmp_path, config)
    assert (code, err) == (0, "")
    warnings = [line.strip() for line in out.splitlines() if line.strip().startswith("warning:")]
    assert len(warnings) == 2
    assert warnings[0].startswith(f"warning: policy 1. calc-only: its calculation limits never apply to "
                                  f"{SPARK_CONNECT_ENGINE} workgroups")
    assert warnings[1].startswith(f"warning: budget b: stop_calculations stops nothing in {SPARK_CONNECT_ENGINE}")
    assert f"engines: {PYSPARK_ENGINE}" in out


def test_check_config_refuses_calculation_limits_no_selected_engine_can_have(tmp_path: Path) -> None:
    code, out, err = check(tmp_path, {"policies": [
        {"name": "p", "engines": [SPARK_CONNECT_ENGINE], "calculation": CALCULATION}]})
    assert code == 2 and out == ""
    assert "policies[0].calculation: calculation limits never apply" in err


def test_an_engine_restricted_policy_is_not_shadowed_by_an_earlier_one_of_another_engine(tmp_path: Path) -> None:
    code, out, _ = check(tmp_path, {"policies": [
        {"name": "connect", "engines": [SPARK_CONNECT_ENGINE], "session": {"max_busy": "1h"}},
        {"name": "rest", "session": {"max_idle": "1h"}},
        {"name": "never", "engines": [PYSPARK_ENGINE], "session": {"max_idle": "2h"}},
    ]})
    assert code == 0
    assert "policy 2. rest can never match" not in out
    assert "warning: policy 3. never can never match" in out


def test_explain_names_the_engine_and_the_calculation_limits_that_do_not_apply(
    emulator: EmulatorHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    athena = emulator.boto3_client()
    athena.create_work_group(Name="etl-connect", Configuration={
        "EngineVersion": {"SelectedEngineVersion": SPARK_CONNECT_ENGINE}})
    session_id = athena.start_session(WorkGroup="etl-connect", EngineConfiguration={},
                                      Description="# sim: start=0s busy=forever")["SessionId"]
    policies = [{"name": "etl-limits", "workgroups": ["etl-*"], "calculation": CALCULATION,
                 "session": {"max_busy": "1h"}}]
    path = write_config(tmp_path / "config.yaml", base_config(emulator, tmp_path / "journal.db", policies=policies))
    assert main(["explain", "--config", str(path), "--session", session_id, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["target"]["engine"] == SPARK_CONNECT_ENGINE and report["target"]["busy_seconds"] >= 0
    assert [limit["rule"] for limit in report["limits"]] == ["max_busy"]
    assert report["notes"] == [f"the calculation limits of etl-limits never apply here: {SPARK_CONNECT_ENGINE} "
                               "sessions have no calculations (session limits such as max_busy do)"]
    assert main(["explain", "--config", str(path), "--session", session_id]) == 0
    text = capsys.readouterr().out
    assert f"engine           {SPARK_CONNECT_ENGINE}" in text and "note: the calculation limits" in text
