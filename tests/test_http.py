"""The daemon's HTTP endpoint, through real HTTP requests to a daemon running in virtual time."""

from __future__ import annotations

import platform
from datetime import timedelta
from typing import Any

import aiohttp
import anyio
import pytest

from supervisor import __version__
from supervisor.cli import main
from supervisor.core.scheduling import CROSSING_MARGIN
from tests.virtual_fixtures import ACCOUNT_ID, REGION, VirtualWorld, ms, times


async def get_text(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.text()


async def get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json()


async def test_metrics_say_which_version_runs_on_which_python(virtual_world: VirtualWorld) -> None:
    async with virtual_world.daemon() as service:
        status, body = await get_text(f"{service.http_url}/metrics")
    assert status == 200
    assert (f'athena_supervisor_build_info{{python="{platform.python_version()}",version="{__version__}"}} 1.0'
            in body.splitlines())


BUDGETS = [{"name": "etl-daily", "workgroups": ["etl-*"], "period": "daily", "limit_usd": 100,
            "thresholds": [{"at_percent": 80, "action": "notify"}, {"at_percent": 100, "action": "stop_calculations"}]}]
POLICIES = [{"name": "etl-limits", "workgroups": ["etl-*"], "calculation": {"max_runtime": "1500ms"},
             "session": {"max_idle": "1h"}}]


async def test_status_shows_what_the_daemon_is_doing_now(virtual_world: VirtualWorld,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    world = virtual_world
    await world.create_workgroup("adhoc")
    async with world.daemon(policies=POLICIES, budgets=BUDGETS) as service:
        await world.vt.run_for(ms(0.1))
        idle_session = await world.start_session("etl-a")
        idle_since = world.now
        busy_session = await world.start_session("etl-a")
        calculation_id = await world.start_calculation(busy_session, "# sim: runtime=60s on_stop=ignore")
        stopped = world.now + ms(1.5) + CROSSING_MARGIN
        await world.vt.run_until(stopped + ms(0.5))
        assert times(world.calls("StopCalculationExecution")) == [stopped]
        status_code, status = await get_json(f"{service.http_url}/status")
        capsys.readouterr()
        assert await anyio.to_thread.run_sync(main, ["status", "--url", service.http_url]) == 0
        text = capsys.readouterr().out
    assert status_code == 200
    assert (status["version"], status["mode"], status["now"]) == (__version__, "enforce", "2026-01-01T00:00:02.110Z")
    assert status["config"]["loaded_at"] == "2026-01-01T00:00:00.000Z" and len(status["config"]["digest"]) == 12
    (shard,) = status["shards"]
    assert (shard["account"], shard["region"], shard["owned"], shard["ready"]) == (ACCOUNT_ID, REGION, True, "ok")
    assert shard["workgroups"] == {"watched": ["etl-a"], "skipped": {"adhoc": "out_of_scope",
                                                                      "primary": "out_of_scope"}}
    assert (shard["sessions"], shard["calculations"]) == (2, 1)
    assert shard["last_sweep"]["at"] == "2026-01-01T00:00:02.000Z"
    (escalation,) = shard["escalations"]
    assert escalation == {"target": f"calculation:{calculation_id}", "workgroup": "etl-a", "policy": "etl-limits",
                          "rule": "max_runtime", "phase": "stop_requested", "step": "verify_calculation",
                          "next_step_at": "2026-01-01T00:00:02.610Z", "since": "2026-01-01T00:00:01.610Z"}
    assert shard["next_deadlines"][0] == {
        "target": f"session:{idle_session}", "workgroup": "etl-a", "why": "crossing", "rule": "max_idle",
        "at": (idle_since + timedelta(hours=1) + CROSSING_MARGIN).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z")}
    assert shard["safety"] == {"actions_last_minute": 1, "max_actions_per_minute": 100, "breaker_open": False}
    (budget,) = shard["budgets"]
    assert (budget["budget"], budget["period"], budget["limit_usd"]) == ("etl-daily", "daily", 100)
    assert budget["next_threshold"]["at_percent"] == 80 and budget["next_threshold"]["action"] == "notify"
    lines = text.splitlines()
    assert lines[0] == "athena-supervisor 0.1.0 at 2026-01-01T00:00:02.110Z: mode enforce"
    assert f"shard {ACCOUNT_ID}/{REGION}: owned; ready" in lines
    assert "  workgroups: watched etl-a; skipped adhoc (out_of_scope), primary (out_of_scope)" in lines
    assert any(line.split()[:2] == [f"calculation:{calculation_id}", "etl-limits"] for line in lines)
    assert ("  safety: 1 destructive calls in the last minute (limit 100); circuit breaker closed" in lines)


async def test_status_command_without_a_daemon_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--url", "http://127.0.0.1:9"]) == 2
    assert capsys.readouterr().err.startswith("--url http://127.0.0.1:9: no daemon answers there (")
