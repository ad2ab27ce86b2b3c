"""``explain`` and ``budgets`` after the daemon has acted and journaled: the commands' own code
(:func:`~supervisor.commands.explain.explain_target`, :func:`~supervisor.commands.budgets.look_at_budgets` and their
rendering, as ``athena-supervisor explain`` and ``budgets`` run them) on the daemon's journal, against the emulator
on the virtual clock, so the spend they count is asserted exactly; and the command line itself (``main``) on a
threaded emulator, for what it adds: the configured periods in ``--json`` and a target that does not exist."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from athena_spark_emulator.testing import EmulatorHandle
from supervisor.cli import main
from supervisor.commands.budgets import look_at_budgets, open_storage, render
from supervisor.commands.explain import explain_target
from supervisor.commands.explain import render as render_report
from supervisor.config import parse_settings
from tests.daemon_fixtures import SPARK_ENGINE, base_config, daemon_config, write_config
from tests.virtual_fixtures import VirtualWorld, VirtualWorldFactory

USD_PER_DPU_HOUR = 0.35

BUDGETS = [{"name": "etl-budget", "workgroups": ["etl-*"], "period": "daily", "limit_usd": 10,
            "thresholds": [{"at_percent": 80, "action": "notify"}, {"at_percent": 100, "action": "stop_calculations"}]}]


async def usd_spent(world: VirtualWorld, *session_ids: str) -> float:
    """What the sessions have cost so far, by their own statistics."""
    millis = sum([(await world.session(s))["Statistics"]["DpuExecutionInMillis"] for s in session_ids])
    return millis / 3.6e6 * USD_PER_DPU_HOUR


async def test_explain_and_budgets_after_the_daemon_acted(virtual_world_factory: VirtualWorldFactory) -> None:
    async with virtual_world_factory(workgroups=("etl-a", "etl-b")) as world:
        policies = [{"name": "etl-limits", "workgroups": ["etl-a"], "calculation": {"max_runtime": "300ms"}},
                    {"name": "etl-b-limits", "workgroups": ["etl-b"], "calculation": {"max_runtime": "1h"}}]
        settings = parse_settings(daemon_config(world.emulator.endpoint_url, world.journal_path, budgets=BUDGETS,
                                                policies=policies), environ={})
        stopped_session = await world.start_session("etl-a")
        other_session = await world.start_session("etl-b")
        stopped = await world.start_calculation(stopped_session, "# sim: runtime=60s dpus=2")
        async with world.daemon(budgets=BUDGETS, policies=policies) as service:
            await world.vt.run_until_true(
                lambda: world.calls("StopCalculationExecution", CalculationExecutionId=stopped), limit=5)
            await world.vt.run_until_true(lambda: service.accounting is not None and service.accounting.passes >= 2,
                                          limit=600)
        running = await world.start_calculation(other_session, "# sim: runtime=60s dpus=4")
        await world.vt.run_for(10)

        storage = open_storage(settings)
        try:
            report = await explain_target(settings, storage, clock=world.clock, calculation_id=stopped)
            assert report["target"]["kind"] == "calculation" and report["target"]["session_id"] == stopped_session
            assert report["policy"] == "etl-limits"
            assert report["escalation"]["rule"] == "max_runtime"
            assert report["decision"].startswith("acted: stop (enforce) for max_runtime of etl-limits")
            assert [entry["event"] for entry in report["journal"]][-1] == "decision"
            assert [b["budget"] for b in report["budgets"]] == ["etl-budget"]

            report = await explain_target(settings, storage, clock=world.clock, calculation_id=running)
            text = "\n".join(render_report(report))
            assert f"calculation {running} in workgroup etl-b: RUNNING" in text
            assert "  max_runtime    10.0 / 3600 seconds  3590.0s left" in text.splitlines()
            crossing = world.now - timedelta(seconds=10) + timedelta(hours=1)  # submitted 10 s ago, 1 h allowed
            assert text.splitlines()[-1] == f"decision: nothing yet; next limit crossing at {crossing.isoformat()}"
            assert "budget etl-budget:" in text

            session_report = await explain_target(settings, storage, clock=world.clock, session_id=other_session)
            assert session_report["target"]["state"] == "BUSY" and session_report["limits"] == []
            assert session_report["target"]["cost_usd"] == round(await usd_spent(world, other_session), 6)

            # The command counts the spend up to its own instant, which virtual time holds still.
            (status,) = await look_at_budgets(settings, storage, clock=world.clock)
            (budget,) = json.loads(render([status], storage, as_json=True))
            assert budget["budget"] == "etl-budget" and budget["limit_usd"] == 10
            assert budget["spent_usd"] == round(await usd_spent(world, stopped_session, other_session), 6)
            assert budget["rate_usd_per_hour"] > 0
            assert [t["at_percent"] for t in budget["thresholds"]] == [80, 100]
            assert render([status], storage, as_json=False).startswith("budget etl-budget:")
        finally:
            storage.close_now()


@pytest.fixture
def athena(emulator: EmulatorHandle) -> Any:
    client = emulator.boto3_client()
    for name in ("etl-a", "etl-b"):
        client.create_work_group(Name=name, Configuration={"EngineVersion": SPARK_ENGINE})
    return client


def test_budgets_json_names_the_configured_period_and_explain_refuses_an_unknown_target(
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

    assert main(["explain", "--config", str(path), "--session", "nope"]) == 2
    assert capsys.readouterr().err.startswith("nope: not found (")
