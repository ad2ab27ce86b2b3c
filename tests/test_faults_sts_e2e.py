"""STS in virtual time: the daemon learns its account from GetCallerIdentity (to read the workgroups'
exemption tags) when no ``aws.account_id`` is configured; while it cannot, it enforces nothing it cannot
explain, says why, and asks again with a backoff.

Instants as in ``tests/test_daemon_e2e.py``; the STS calls are in the emulator's audit log as operation
``GetCallerIdentity``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from supervisor.core.scheduling import CROSSING_MARGIN
from tests.virtual_fixtures import ACCOUNT_ID, REGION, START, VirtualWorld, VirtualWorldFactory, ms, times

# Sweeps every second rather than every 250 ms (tests/daemon_fixtures.py) wherever the instants asserted follow
# from crossings and timers, not from when a sweep lists something (targets start 100 ms after the daemon, so the
# sweep at 1 s lists them before their crossings): a quarter of the listing requests.
SWEEPS = "1s"

MARGIN = CROSSING_MARGIN
OFFSET = ms(0.1)
EMULATOR_DOC = Path(__file__).resolve().parent.parent / "docs" / "emulator.md"


async def readyz(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/readyz") as response:
        return response.status, await response.text()


def documented_config() -> dict[str, Any]:
    """The YAML of "Pointing the daemon at it" in docs/emulator.md, as a user would copy it."""
    section = EMULATOR_DOC.read_text().split("### Pointing the daemon at it", 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert match, "docs/emulator.md: no yaml block under 'Pointing the daemon at it'"
    config: dict[str, Any] = yaml.safe_load(match.group(1))
    return config


def aws_without_account_id(world: VirtualWorld) -> dict[str, Any]:
    return {"region": REGION, "endpoint_url": world.emulator.endpoint_url, "max_requests_per_second": 200,
            "max_attempts": 6}


async def test_the_documented_config_learns_the_account_from_sts_and_enforces(
    virtual_world_factory: VirtualWorldFactory,
) -> None:
    async with virtual_world_factory(workgroups=("etl",)) as world:
        config = documented_config()
        assert "account_id" not in config["aws"]
        config["aws"]["endpoint_url"] = world.emulator.endpoint_url
        config["journal"]["path"] = str(world.journal_path)
        assert "http" not in config
        # Only so that the test does not take the default port (9464) on a machine others share. Sweeps every 5 s:
        # the sweep at 5 s lists the calculation long before its crossing (30 s), whose Stop follows from its timer.
        async with world.daemon(config, http={"port": 0}, discovery_interval="5s"):
            await world.vt.run_for(OFFSET)
            session_id = await world.start_session("etl")
            calculation_id = await world.start_calculation(session_id, "# sim: runtime=5m")
            submitted = world.now
            await world.vt.run_until(submitted + ms(31))
            # calculation.max_runtime is 30 s in the documented config.
            assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [
                submitted + ms(30) + MARGIN]
            assert times(world.calls("GetCallerIdentity")) == [START], "the account is learned once, at start"
            arn = f"arn:aws:athena:{REGION}:{ACCOUNT_ID}:workgroup/etl"
            assert times(world.calls("ListTagsForResource", ResourceARN=arn)) == [START]


async def test_while_sts_fails_no_workgroup_is_enforced_and_once_it_answers_enforcement_starts(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    outage = world.emulator.backend.add_error("AccessDeniedException", operation="GetCallerIdentity")
    session_id = await world.start_session("etl-a")
    calculation_id = await world.start_calculation(session_id, "# sim: runtime=600s")  # crosses at T0 + 1.5 s
    async with world.daemon(discovery_interval=SWEEPS, aws=aws_without_account_id(world)) as service:
        await world.vt.run_for(5)
        status, body = await readyz(service.http_url)
        assert status == 503
        assert "account id unknown (sts:GetCallerIdentity: AccessDenied)" in body
        assert world.metric("athena_supervisor_skipped_workgroups", reason="tags_unknown") == 1
        await world.vt.run_until(START + ms(10))
        # Asked again after 1, 2, 4 s…; nothing listed (its exemption tag cannot be read), nothing acted on.
        assert times(world.calls("GetCallerIdentity", status=None)) == [START + ms(s) for s in (0, 1, 3, 7)]
        assert not world.calls("ListTagsForResource", status=None)
        assert not world.calls("ListSessions", status=None)
        assert not world.calls("StopCalculationExecution", status=None)
        world.emulator.backend.clear_errors(outage["id"])
        await world.vt.run_until(START + ms(16))
        recovered = START + ms(15)
        assert times(world.calls("GetCallerIdentity")) == [recovered]
        assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [recovered]
        assert world.metric("athena_supervisor_skipped_workgroups", reason="tags_unknown") == 0
        assert await readyz(service.http_url) == (200, '{"ready": true, "reason": "ok"}')


async def test_without_exemption_tags_enforcement_needs_no_sts(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    world.emulator.backend.add_error("AccessDeniedException", operation="GetCallerIdentity")
    safety = {"max_actions_per_minute": 100, "circuit_breaker_fraction": 1.0, "exempt_tag": None}
    async with world.daemon(aws=aws_without_account_id(world), safety=safety,
                            discovery_interval=SWEEPS) as service:
        await world.vt.run_for(OFFSET)
        session_id = await world.start_session("etl-a")
        calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s")
        submitted = world.now
        await world.vt.run_until(submitted + ms(3))
        assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [
            submitted + ms(1.5) + MARGIN]
        assert not world.calls("GetCallerIdentity", status=None)
        assert not world.calls("ListTagsForResource", status=None)
        assert await readyz(service.http_url) == (200, '{"ready": true, "reason": "ok"}')
