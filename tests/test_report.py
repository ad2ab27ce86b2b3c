"""``athena-supervisor report`` through the real CLI, on a journal the daemon wrote in virtual time, looking at the
same emulator (the command runs in a worker thread on its own event loop; virtual time stands still meanwhile)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from supervisor.cli import main
from supervisor.core.scheduling import CROSSING_MARGIN
from supervisor.storage.sqlite import SqliteStorage
from tests.daemon_fixtures import daemon_config, write_config
from tests.virtual_fixtures import VirtualWorld, ms

# Sweeps every second rather than every 250 ms (tests/daemon_fixtures.py) wherever the instants asserted follow
# from crossings and timers, not from when a sweep lists something (targets start 100 ms after the daemon, so the
# sweep at 1 s lists them before their crossings): a quarter of the listing requests.
SWEEPS = "1s"

WINDOW = ["--since", "2025-12-31", "--until", "2026-01-02"]
PRICE = 0.35


def policy(mode: str, max_runtime: str = "1500ms") -> list[dict[str, Any]]:
    return [{"name": "etl-limits", "workgroups": ["etl-*"], "calculation": {"max_runtime": max_runtime},
             "mode": mode}]


async def report(world: VirtualWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str], config: dict[str, Any],
                 *extra: str) -> dict[str, Any]:
    path = write_config(tmp_path / "config.yaml", config)
    capsys.readouterr()
    assert await anyio.to_thread.run_sync(main, ["report", "--config", str(path), *WINDOW, "--json", *extra]) == 0
    out = capsys.readouterr().out
    document: dict[str, Any] = json.loads(out[out.index("{\n"):])
    return document


def decision_millis(world: VirtualWorld, calculation_id: str) -> int:
    storage = SqliteStorage(world.journal_path)
    try:
        (decision,) = [e for e in storage.journal.recent_events(50, target_id=calculation_id) if e.event == "decision"]
        return int(decision.detail["dpu_millis"])
    finally:
        storage.close_now()


async def test_a_dry_run_says_what_enforcing_would_have_saved_as_observed(
    virtual_world: VirtualWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = virtual_world
    config = daemon_config(world.emulator.endpoint_url, world.journal_path, policies=policy("dry-run"))
    async with world.daemon(config, discovery_interval=SWEEPS):
        await world.vt.run_for(ms(0.1))
        session_id = await world.start_session("etl-a")
        running = await world.start_calculation(session_id, "# sim: runtime=60s dpus=4")
        ended = await world.start_calculation(await world.start_session("etl-a"), "# sim: runtime=3s dpus=2")
        await world.vt.run_for(3.5)  # both decided at 1.6 s; one ended at 3.1 s, the other runs on
        assert not world.calls("StopCalculationExecution")
        document = await report(world, tmp_path, capsys, config)
        after = {calculation_id: (await world.calculation(calculation_id))["Statistics"]["DpuExecutionInMillis"]
                 - decision_millis(world, calculation_id) for calculation_id in (running, ended)}
    (owner,) = document["owners"]
    assert (owner["name"], owner["kind"], owner["decisions"]) == (
        "etl-limits", "policy", {"enforce": {}, "dry-run": {"stop": 2}})
    assert after[ended] > 0 and after[running] > after[ended]
    expected = sum(after.values()) / 3_600_000
    assert owner["would_have_saved"] == {
        "targets": 2, "dpu_hours": round(expected, 9), "usd": round(expected * PRICE, 9), "measured": 2,
        "estimated": 0, "ended": 1, "running": 1, "not_found": 0}
    assert document["api_calls"] == {"destructive_sent": {}, "report_lookups": 2}


async def test_enforcing_reports_the_overshoot_and_the_spend_rate_stopped(
    virtual_world: VirtualWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = virtual_world
    config = daemon_config(world.emulator.endpoint_url, world.journal_path, policies=policy("enforce"))
    async with world.daemon(config, discovery_interval=SWEEPS):
        await world.vt.run_for(ms(0.1))
        session_id = await world.start_session("etl-a")
        await world.start_calculation(session_id, "# sim: runtime=60s dpus=4")
        ignores = await world.start_session("etl-a")
        await world.start_calculation(ignores, "# sim: runtime=60s dpus=2 on_stop=ignore")
        await world.vt.run_for(5)
        document = await report(world, tmp_path, capsys, config)
        text_path = write_config(tmp_path / "config.yaml", config)
        capsys.readouterr()
        assert await anyio.to_thread.run_sync(main, ["report", "--config", str(text_path), *WINDOW]) == 0
        text = capsys.readouterr().out
    (owner,) = document["owners"]
    assert owner["decisions"] == {"enforce": {"stop": 2}, "dry-run": {}}
    assert owner["calls_sent"] == {"stop": 2, "terminate": 1}
    enforced = owner["enforced"]
    margin = CROSSING_MARGIN.total_seconds()
    assert enforced["overshoot_seconds"] == {"median": margin, "max": margin}
    # The DPUs accruing at the decision (4 and 2, the emulator's pragmas) at 0.35 USD per DPU-hour.
    assert enforced["spend_rate_stopped_usd_per_hour"] == pytest.approx((4 + 2) * PRICE, rel=1e-3)
    assert enforced["overshoot_dpu_hours"] == pytest.approx((4 + 2) * margin / 3600, rel=1e-3)
    assert document["api_calls"]["destructive_sent"] == {"StopCalculationExecution": 2, "TerminateSession": 1}
    assert document["api_calls"]["report_lookups"] == 0, "nothing to look at: every target was enforced"
    assert "policy etl-limits:" in text and "  enforced: 2 stop; calls sent: 2 stop, 1 terminate" in text
    (rate_line,) = [line for line in text.splitlines() if line.startswith("  spend rate stopped: ")]
    assert float(rate_line.split()[3]) == pytest.approx(2.1, rel=1e-3)
    assert rate_line.endswith(" USD/hour (2 of 2 actions with a measured rate)"), rate_line


async def test_held_calls_budgets_and_no_lookups(virtual_world: VirtualWorld, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    world = virtual_world
    budgets = [{"name": "etl-cap", "workgroups": ["etl-*"], "period": "rolling:1h", "limit_usd": 0.0001,
                "thresholds": [{"at_percent": 50, "action": "notify"}]}]
    config = daemon_config(world.emulator.endpoint_url, world.journal_path, budgets=budgets,
                           policies=[*policy("dry-run"), {"name": "ml", "workgroups": ["ml-*"],
                                                          "calculation": {"max_runtime": "1s"}}],
                           workgroups=["etl-*", "ml-*"],
                           safety={"max_actions_per_minute": 1, "circuit_breaker_fraction": 1.0})
    await world.create_workgroup("ml-a")
    async with world.daemon(config, discovery_interval=SWEEPS):
        await world.vt.run_for(ms(0.1))
        for _ in range(2):
            session_id = await world.start_session("ml-a")
            await world.start_calculation(session_id, "# sim: runtime=600s dpus=4")
        await world.start_calculation(await world.start_session("etl-a"), "# sim: runtime=600s dpus=4")
        # Listed by the sweep at 1 s: ml's crossings (1.1 s: one stop sent, the other held by the rate limit), the
        # budget's threshold (the pass at 1 s) and etl's dry-run decision (1.6 s) all come before 2.1 s.
        await world.vt.run_for(2)
        document = await report(world, tmp_path, capsys, config, "--no-lookups")
    owners = {owner["name"]: owner for owner in document["owners"]}
    assert owners["ml"]["held"] == {"rate_limit": 1} and owners["ml"]["calls_sent"] == {"stop": 1}
    assert owners["etl-cap"]["kind"] == "budget" and owners["etl-cap"]["thresholds_crossed"] == {"50% notify": 1}
    assert "would_have_saved" not in owners["etl-limits"], "--no-lookups: the journal only"
    assert document["lookups"] == "skipped (--no-lookups)" and document["api_calls"]["report_lookups"] == 0
