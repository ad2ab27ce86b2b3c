"""Many accounts and regions in one process, in virtual time, against one emulator serving them all.

The daemon runs with its own credentials (the emulator's default account) and assumes each member account's
role through the emulator's STS; the emulator routes every call to the account of the credentials and the
region of the signature, so the audit log says where each call landed. Each account-region is a shard with
its own gateway and discovery; one whose role cannot be assumed is reported and retried while the others
go on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import pytest

from supervisor.core.scheduling import CROSSING_MARGIN
from tests.daemon_fixtures import SPARK_ENGINE
from tests.virtual_fixtures import START, VirtualWorld, aws_client, ms, times

FIRST, SECOND = "111111111111", "222222222222"
SHARDS = ((FIRST, "us-east-1"), (FIRST, "eu-west-1"), (SECOND, "us-east-1"))
OFFSET = ms(0.1)


def role(account: str) -> str:
    return f"arn:aws:iam::{account}:role/athena-supervisor"


def accounts_config(world: VirtualWorld, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "aws": {"region": "us-east-1", "endpoint_url": world.emulator.endpoint_url, "max_requests_per_second": 200,
                "max_attempts": 6},
        "accounts": [
            {"account_id": FIRST, "role_arn": role(FIRST), "regions": ["us-east-1", "eu-west-1"]},
            {"account_id": SECOND, "role_arn": role(SECOND), "external_id": "s3cr3t-external-id"},
        ],
        "workgroups": ["etl-*"],
        # Every second: the targets start 100 ms after the daemon and are listed by the sweep at 1 s, before their
        # crossings (1 s and 1.5 s later); the instants asserted follow from the crossings.
        "discovery_interval": "1s",
        "journal": {"path": str(world.journal_path)},
        "http": {"host": "127.0.0.1", "port": 0},
        "escalation": {"stop_grace": "1s", "terminate_grace": "1s"},
        "safety": {"max_actions_per_minute": 100, "circuit_breaker_fraction": 1.0},
        "policies": [
            # The second account's own, stricter limit comes first; everything else gets the general one.
            {"name": "second-strict", "accounts": [SECOND], "workgroups": ["etl-*"],
             "calculation": {"max_runtime": "1s"}},
            {"name": "etl-limits", "workgroups": ["etl-*"], "calculation": {"max_runtime": "1500ms"}},
        ],
    }
    config.update(overrides)
    return config


class Member:
    """A member account-region as the test sees it: an Athena client signing as that account there."""

    def __init__(self, account: str, region: str, athena: Any) -> None:
        self.account, self.region, self.athena = account, region, athena

    async def workgroup(self, name: str) -> None:
        await self.athena.create_work_group(Name=name, Configuration={"EngineVersion": SPARK_ENGINE})

    async def runaway(self, workgroup: str) -> str:
        """A calculation that runs for 10 minutes, submitted now."""
        session = await self.athena.start_session(
            WorkGroup=workgroup, Description="# sim: start=0s",
            EngineConfiguration={"CoordinatorDpuSize": 1, "MaxConcurrentDpus": 20, "DefaultExecutorDpuSize": 1})
        response = await self.athena.start_calculation_execution(
            SessionId=session["SessionId"], CodeBlock="# sim: runtime=10m\nspark.range(10).count()")
        return str(response["CalculationExecutionId"])


@asynccontextmanager
async def members(world: VirtualWorld) -> AsyncIterator[dict[tuple[str, str], Member]]:
    async with AsyncExitStack() as stack:
        found = {}
        for account, region in SHARDS:
            athena = await stack.enter_async_context(
                aws_client("athena", world.emulator.endpoint_url, account=account, region=region))
            found[(account, region)] = Member(account, region, athena)
        yield found


def stops(world: VirtualWorld, account: str, region: str) -> list[Any]:
    return [call for call in world.calls("StopCalculationExecution")
            if call.account == account and call.region == region]


async def readyz(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/readyz") as response:
        return response.status, await response.text()


async def test_each_account_region_is_supervised_with_its_own_role_and_policies(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    world.set_role(role(SECOND), external_id="s3cr3t-external-id")
    async with members(world) as member:
        for shard in SHARDS:
            await member[shard].workgroup("etl-a")
        async with world.daemon(accounts_config(world)) as service:
            await world.vt.run_for(OFFSET)
            submitted = world.now
            runaways = {shard: await member[shard].runaway("etl-a") for shard in SHARDS}
            await world.vt.run_until(submitted + ms(3))
            for (account, region), calculation_id in runaways.items():
                limit = ms(1) if account == SECOND else ms(1.5)
                stopped = [call for call in stops(world, account, region)
                           if call.request.get("CalculationExecutionId") == calculation_id]
                assert times(stopped) == [submitted + limit + CROSSING_MARGIN], (account, region)
            # One role session per account (its regions share it), assumed at start with the daemon's own
            # (default-account) credentials.
            assumed = world.calls("AssumeRole")
            assert sorted(call.request["RoleArn"] for call in assumed) == sorted([role(FIRST), role(SECOND)])
            assert {call.account for call in assumed} == {world.emulator.account_id}
            # Nothing landed in the daemon's own account but STS.
            assert {call.operation for call in world.calls() if call.account == world.emulator.account_id} == {
                "AssumeRole"}
            for account, region in SHARDS:
                policy = "second-strict" if account == SECOND else "etl-limits"
                assert world.metric("athena_supervisor_actions_total", account=account, region=region,
                                    action="stop", policy=policy, outcome="sent") == 1
                assert world.metric("athena_supervisor_shard_owned", account=account, region=region) == 1
            assert sorted(str(shard) for shard in service.hosts) == sorted(f"{a}/{r}" for a, r in SHARDS)


async def test_a_role_that_cannot_be_assumed_is_reported_and_retried_while_the_others_enforce(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    world.set_role(role(SECOND), deny=True)
    async with members(world) as member:
        for shard in SHARDS:
            await member[shard].workgroup("etl-a")
        config = accounts_config(world)
        config["accounts"][1].pop("external_id")
        async with world.daemon(config) as service:
            await world.vt.run_for(OFFSET)
            submitted = world.now
            first = await member[(FIRST, "us-east-1")].runaway("etl-a")
            second = await member[(SECOND, "us-east-1")].runaway("etl-a")
            await world.vt.run_until(START + ms(5))
            assert times([c for c in stops(world, FIRST, "us-east-1")
                          if c.request["CalculationExecutionId"] == first]) == [submitted + ms(1.5) + CROSSING_MARGIN]
            assert stops(world, SECOND, "us-east-1") == []
            status, body = await readyz(service.http_url)
            assert status == 503
            assert f"{SECOND}/us-east-1: cannot assume {role(SECOND)} (AccessDenied)" in body
            assert "s3cr3t" not in body
            assert world.metric("athena_supervisor_shard_credentials_failing", account=SECOND,
                                region="us-east-1") == 1
            denied = [call for call in world.calls("AssumeRole", status=None)
                      if call.request.get("RoleArn") == role(SECOND)]
            # Retried with backoff: 1 s, 2 s (then 4 s, ...).
            assert times(denied) == [START, START + ms(1), START + ms(3)]
            # The role is granted: the next attempt (at +7 s) succeeds and the shard enforces at once.
            world.clear_roles(role(SECOND))
            await world.vt.run_until(START + ms(7.5))
            assert world.metric("athena_supervisor_shard_credentials_failing", account=SECOND,
                                region="us-east-1") == 0
            stopped = [c for c in stops(world, SECOND, "us-east-1") if c.request["CalculationExecutionId"] == second]
            assert len(stopped) == 1 and START + ms(7) <= stopped[0].time <= START + ms(7.5)
            await world.vt.run_for(ms(1))
            status, _ = await readyz(service.http_url)
            assert status == 200


async def test_assumed_credentials_are_refreshed_before_they_expire(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    async with members(world) as member:
        await member[(FIRST, "us-east-1")].workgroup("etl-a")
        config = accounts_config(world, discovery_interval="1m",
                                 accounts=[{"account_id": FIRST, "role_arn": role(FIRST)}])
        config["policies"] = config["policies"][1:]
        async with world.daemon(config):
            await world.vt.run_until(START + ms(3600 + 90))
            first_calculation = await member[(FIRST, "us-east-1")].runaway("etl-a")
            await world.vt.run_for(ms(61))
            # Role sessions last an hour; botocore refreshes 15 minutes before the expiry, on the first signed
            # request after that (a sweep each minute), so the credentials never expire.
            assumed = times(world.calls("AssumeRole"))
            assert len(assumed) == 2
            assert assumed[0] == START
            assert START + ms(45 * 60) <= assumed[1] <= START + ms(46 * 60)
            assert world.calls(status=None, error="ExpiredTokenException") == []
            # The next sweep (at most a minute later) finds the calculation, and it is stopped at once.
            stopped = [c for c in stops(world, FIRST, "us-east-1")
                       if c.request["CalculationExecutionId"] == first_calculation and c.status == 200]
            assert len(stopped) == 1


async def test_a_budget_over_two_accounts_sums_their_spend_and_acts_in_both(virtual_world: VirtualWorld) -> None:
    """Each account's calculation accrues 9 DPU-ms per ms (1 + 8 DPUs); the budget (0.002 USD = 20,571 DPU-ms)
    is crossed by the two together after 1,143 ms, first seen by the accounting passes at 1,250 ms (22,500),
    while either alone would cross only after 2,286 ms. The episode opens once; each account-region stops its
    calculation at the first pass that sees the episode open: its own pass at 1,250 ms, or the next one."""
    world = virtual_world
    shards = ((FIRST, "us-east-1"), (SECOND, "us-east-1"))
    async with members(world) as member:
        t0 = world.now
        calculations = {}
        for shard in shards:
            await member[shard].workgroup("etl-a")
            session = await member[shard].athena.start_session(
                WorkGroup="etl-a", Description="# sim: start=0s",
                EngineConfiguration={"CoordinatorDpuSize": 1, "MaxConcurrentDpus": 20, "DefaultExecutorDpuSize": 1})
            response = await member[shard].athena.start_calculation_execution(
                SessionId=session["SessionId"], CodeBlock="# sim: runtime=60s dpus=8\nspark.range(10).count()")
            calculations[shard] = response["CalculationExecutionId"]
        budgets = [{"name": "org-daily", "workgroups": ["etl-*"], "period": "rolling:1h", "limit_usd": 0.002,
                    "thresholds": [{"at_percent": 100, "action": "stop_calculations"}]}]
        # Spend is counted every discovery_interval: every 250 ms here, which the instants below follow from.
        config = accounts_config(world, budgets=budgets, policies=[], discovery_interval="250ms",
                                 accounts=[{"account_id": FIRST, "role_arn": role(FIRST)},
                                           {"account_id": SECOND, "role_arn": role(SECOND)}])
        async with world.daemon(config) as service:
            await world.vt.run_until(t0 + ms(2))
            for shard, calculation_id in calculations.items():
                [stop] = [call for call in stops(world, *shard)
                          if call.request["CalculationExecutionId"] == calculation_id]
                assert t0 + ms(1.25) <= stop.time <= t0 + ms(1.5), shard
            assert len(world.calls("StopCalculationExecution")) == 2
            episodes = await service.storage.open_episodes("org-daily")
            assert len(episodes) == 1
            # Counted once each, up to the passes at 2 s (both calculations still run: a Stop takes the emulator
            # 1 s): 2 x 2,000 ms x 9 DPUs, never a millisecond twice.
            spent = world.metric("athena_supervisor_budget_spent_usd", budget="org-daily")
            assert spent == pytest.approx(2 * 2000 * 9 / 3.6e6 * 0.35)
