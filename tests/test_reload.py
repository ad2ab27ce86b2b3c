"""Reload without a restart, and the circuit breaker's reset: through the daemon's HTTP endpoint (``POST
/-/reload``, ``athena-supervisor breaker reset``), in virtual time, evidence from the emulator's audit log, the
metrics and the journal. (SIGHUP, the signal's own path, is in ``test_daemon_process.py``.)"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from supervisor.cli import main
from supervisor.commands.check_config import check_config
from supervisor.config import parse_settings
from supervisor.core.scheduling import CROSSING_MARGIN
from supervisor.reload import plan_reload
from supervisor.storage.sqlite import SqliteStorage
from tests import test_fleet_accounts_e2e as fleet
from tests.daemon_fixtures import daemon_config, write_config
from tests.virtual_fixtures import VirtualWorld, ms, times

MARGIN = CROSSING_MARGIN
OFFSET = ms(0.1)
LIFECYCLE = {"host": "127.0.0.1", "port": 0, "enable_lifecycle": True}
# Sweeps every second, not every 250 ms: the calculations start 100 ms after the daemon and are listed by the sweep
# at 1 s, before any crossing (1.6 s at the earliest); what is asserted happens at a crossing, at the reload or at
# a recheck, on their own timers. The emulator serves 127 requests instead of 359 over the six scenarios.
SWEEPS = "1s"


def policy(max_runtime: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": "etl-limits", "workgroups": ["etl-*"], "calculation": {"max_runtime": max_runtime}, **extra}]


def config_file(world: VirtualWorld, tmp_path: Path, *, journal_path: Path | None = None, **overrides: Any) -> Path:
    overrides.setdefault("http", LIFECYCLE)
    overrides.setdefault("discovery_interval", SWEEPS)
    config = daemon_config(world.emulator.endpoint_url, journal_path or world.journal_path, **overrides)
    return write_config(tmp_path / "config.yaml", config)


async def post(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(url) as response:
        return response.status, await response.json()


def journal(world: VirtualWorld, prefix: str) -> list[dict[str, Any]]:
    storage = SqliteStorage(world.journal_path)
    try:
        return [{"event": e.event, **e.detail} for e in reversed(storage.journal.recent_events(200))
                if e.event.startswith(prefix)]
    finally:
        storage.close_now()


async def test_a_tightened_limit_stops_a_running_calculation_at_the_reload(virtual_world: VirtualWorld,
                                                                            tmp_path: Path) -> None:
    world = virtual_world
    path = config_file(world, tmp_path, policies=policy("1h"))
    async with world.daemon(config_path=path) as service:
        await world.vt.run_for(OFFSET)
        session_id = await world.start_session("etl-a")
        calculation_id = await world.start_calculation(session_id, "# sim: runtime=600s")
        await world.vt.run_for(5)
        assert not world.calls("StopCalculationExecution")
        config_file(world, tmp_path, policies=policy("2s"))
        reloaded_at = world.now
        status, body = await post(f"{service.http_url}/-/reload")
        await world.vt.run_for(ms(1))
        assert (status, body["outcome"], body["changed"], body["needs_restart"]) == (200, "success", ["policies"], [])
        # Looked at afresh and stopped at the reload's instant: well within a second of it.
        assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [reloaded_at]
        assert world.metric("athena_supervisor_config_reloads_total", outcome="success") == 1
        assert world.metric("athena_supervisor_config_last_reload_success_timestamp_seconds") == (
            reloaded_at.timestamp())
        assert service.live is not None and service.live.settings.policies[0].calculation is not None
        assert service.live.last_reload is not None and service.live.last_reload["digest"] == service.live.digest
    (reloaded,) = journal(world, "config.")
    assert (reloaded["event"], reloaded["trigger"], reloaded["changed"]) == (
        "config.reloaded", "POST /-/reload", ["policies"])


async def test_an_invalid_reload_is_refused_with_check_config_messages_and_enforcement_goes_on(
    virtual_world: VirtualWorld, tmp_path: Path
) -> None:
    world = virtual_world
    path = config_file(world, tmp_path, policies=policy("1500ms"))
    async with world.daemon(config_path=path) as service:
        await world.vt.run_for(OFFSET)
        path.write_text(path.read_text().replace("max_runtime: 1500ms", "max_runtime: 2 seconds")
                        + "moed: dry-run\n")
        session_id = await world.start_session("etl-a")
        calculation_id = await world.start_calculation(session_id, "# sim: runtime=600s")
        submitted = world.now
        status, body = await post(f"{service.http_url}/-/reload")
        err = io.StringIO()
        assert check_config(str(path), out=io.StringIO(), err=err) == 2
        assert (status, body["outcome"]) == (400, "failure")
        assert body["problems"] == err.getvalue().splitlines() and len(body["problems"]) == 2
        await world.vt.run_until(submitted + ms(3))
        # The running configuration stays: the stop comes at the original limit's crossing, to the millisecond.
        assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [
            submitted + ms(1.5) + MARGIN]
        assert world.metric("athena_supervisor_config_reloads_total", outcome="failure") == 1
        assert world.metric("athena_supervisor_config_reloads_total", outcome="success") == 0
    (failed,) = journal(world, "config.")
    assert failed["event"] == "config.reload_failed" and failed["problems"] == body["problems"]


async def test_lifecycle_endpoints_are_off_unless_enabled(virtual_world: VirtualWorld, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    world = virtual_world
    path = config_file(world, tmp_path, http={"host": "127.0.0.1", "port": 0})
    async with world.daemon(config_path=path) as service:
        assert (await post(f"{service.http_url}/-/reload"))[0] == 403
        code = await anyio.to_thread.run_sync(main, ["breaker", "reset", "--url", service.http_url])
    assert code == 2
    assert capsys.readouterr().err.endswith("lifecycle endpoints are off; set http.enable_lifecycle: true, or send "
                                            "the daemon SIGHUP\n")


async def test_settings_that_need_a_restart_are_reported_and_kept(virtual_world: VirtualWorld,
                                                                  tmp_path: Path) -> None:
    world = virtual_world
    path = config_file(world, tmp_path)
    async with world.daemon(config_path=path) as service:
        assert service.live is not None
        running = service.live.settings
        config_file(world, tmp_path, http={**LIFECYCLE, "port": 9999}, mode="dry-run",
                    journal_path=tmp_path / "elsewhere.db")
        status, body = await post(f"{service.http_url}/-/reload")
        assert (status, body["changed"], body["needs_restart"]) == (200, ["mode"], ["journal", "http"])
        assert service.live.settings.mode == "dry-run"
        assert (service.live.settings.journal, service.live.settings.http) == (running.journal, running.http)


async def test_a_reload_to_dry_run_journals_new_crossings_without_acting(virtual_world: VirtualWorld,
                                                                         tmp_path: Path) -> None:
    world = virtual_world
    path = config_file(world, tmp_path, policies=policy("1500ms"))
    async with world.daemon(config_path=path) as service:
        await world.vt.run_for(OFFSET)
        config_file(world, tmp_path, policies=policy("1500ms"), mode="dry-run")
        assert (await post(f"{service.http_url}/-/reload"))[0] == 200
        session_id = await world.start_session("etl-a")
        await world.start_calculation(session_id, "# sim: runtime=600s")
        await world.vt.run_for(3)
        assert not world.calls("StopCalculationExecution")
        assert world.metric("athena_supervisor_actions_total", outcome="dry_run") == 1


async def test_an_open_breaker_is_reset_by_the_operator_and_the_held_call_goes(
    virtual_world: VirtualWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = virtual_world
    # Two sessions hit within a minute open the breaker (at least 2, more than half of the 2 watched).
    path = config_file(world, tmp_path, policies=policy("1500ms"),
                       safety={"max_actions_per_minute": 100, "circuit_breaker_fraction": 0.5,
                               "circuit_breaker_min_targets": 2})
    async with world.daemon(config_path=path) as service:
        await world.vt.run_for(OFFSET)
        first, second = await world.start_session("etl-a"), await world.start_session("etl-a")
        calculations = {await world.start_calculation(session, "# sim: runtime=600s") for session in (first, second)}
        await world.vt.run_for(3)
        (stopped,) = world.calls("StopCalculationExecution")
        (held,) = calculations - {stopped.request["CalculationExecutionId"]}
        assert world.metric("athena_supervisor_circuit_breaker_open") == 1
        capsys.readouterr()
        reset_at = world.now
        assert await anyio.to_thread.run_sync(main, ["breaker", "reset", "--url", service.http_url]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == "circuit breaker reset in 123456789012/us-east-1"
        assert world.metric("athena_supervisor_circuit_breaker_open") == 0
        await world.vt.run_for(6)
        (stop,) = world.calls("StopCalculationExecution", CalculationExecutionId=held)
        assert reset_at < stop.time <= reset_at + ms(5), "at the held call's next recheck"
        assert await anyio.to_thread.run_sync(main, ["breaker", "reset", "--url", service.http_url]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == "no circuit breaker was open"
    (reset,) = journal(world, "breaker.")
    assert reset["reason"] == "operator reset (POST /-/breaker/reset)"


def test_a_reload_plan_keeps_what_needs_a_restart() -> None:
    running = parse_settings({"aws": {"region": "eu-west-1"}, "mode": "enforce"}, environ={})
    loaded = parse_settings({"aws": {"region": "us-east-1"}, "mode": "dry-run", "log_level": "debug"}, environ={})
    plan = plan_reload(running, loaded)
    assert (plan.changed, plan.needs_restart) == (("mode", "log_level"), ("aws",))
    assert (plan.settings.aws.region, plan.settings.mode, plan.settings.log_level) == ("eu-west-1", "dry-run", "debug")


async def test_every_shard_takes_its_view_of_the_reloaded_file(virtual_world: VirtualWorld, tmp_path: Path) -> None:
    world = virtual_world
    world.set_role(fleet.role(fleet.SECOND), external_id="s3cr3t-external-id")
    lenient = [{"name": "etl-limits", "workgroups": ["etl-*"], "calculation": {"max_runtime": "1h"}}]
    strict = [{"name": "second-strict", "accounts": [fleet.SECOND], "workgroups": ["etl-*"],
               "calculation": {"max_runtime": "2s"}}, *lenient]
    path = tmp_path / "fleet.yaml"
    write_config(path, fleet.accounts_config(world, policies=lenient, http=LIFECYCLE))
    async with fleet.members(world) as member:
        for shard in fleet.SHARDS:
            await member[shard].workgroup("etl-a")
        async with world.daemon(config_path=path) as service:
            await world.vt.run_for(OFFSET)
            runaways = {shard: await member[shard].runaway("etl-a") for shard in fleet.SHARDS}
            await world.vt.run_for(3)  # listed at 1 s; 3 s old at the reload, past the strict file's 2 s
            write_config(path, fleet.accounts_config(world, policies=strict, http=LIFECYCLE))
            reloaded_at = world.now
            assert (await post(f"{service.http_url}/-/reload"))[0] == 200
            await world.vt.run_for(ms(1))
            for account, region in fleet.SHARDS:
                stopped = times([call for call in fleet.stops(world, account, region)
                                 if call.request["CalculationExecutionId"] == runaways[(account, region)]])
                assert stopped == ([reloaded_at] if account == fleet.SECOND else []), (account, region)
