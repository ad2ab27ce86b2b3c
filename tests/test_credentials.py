"""Member-account credentials: a role assumed through the emulator's STS (real HTTP, real botocore)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from athena_spark_emulator.testing import EmulatorHandle
from supervisor.clock import ManualClock, SystemClock
from supervisor.config import parse_settings
from supervisor.credentials import AssumedRole, RoleSessions
from supervisor.metrics import Metrics
from supervisor.service import build_gateway

MEMBER = "111111111111"


async def test_every_role_session_signs_as_its_account_and_reuses_the_daemons_loaded_service_models(
    emulator: EmulatorHandle,
) -> None:
    settings = parse_settings({"aws": {"region": "us-east-1", "endpoint_url": emulator.endpoint_url}}, environ={})
    async with build_gateway(settings, Metrics(CollectorRegistry())) as gateway:
        role = AssumedRole(gateway=gateway, clock=SystemClock(), role_arn=f"arn:aws:iam::{MEMBER}:role/guard")
        sessions = [await role.session(), await role.session()]
        # One loader for the process: a shard's session parses no service model again (a fresh one costs ~0.2 s of
        # CPU per client, on the event loop that also renews a replica's leases).
        loader = gateway.session.get_component("data_loader")
        assert all(session.get_component("data_loader") is loader for session in sessions)
        for session, region in zip(sessions, ("us-east-1", "eu-west-1"), strict=True):
            async with session.create_client("sts", region_name=region, endpoint_url=emulator.endpoint_url) as sts:
                assert (await sts.get_caller_identity())["Account"] == MEMBER
    assert [call["request"]["RoleArn"] for call in emulator.calls(operation="AssumeRole")] == [
        f"arn:aws:iam::{MEMBER}:role/guard"] * 2


async def test_the_regions_of_an_account_share_one_role_session_while_it_is_fresh(emulator: EmulatorHandle) -> None:
    settings = parse_settings({"aws": {"region": "us-east-1", "endpoint_url": emulator.endpoint_url}}, environ={})
    clock = ManualClock(datetime.now(UTC))
    async with build_gateway(settings, Metrics(CollectorRegistry()), clock=clock) as gateway:
        roles = RoleSessions(gateway=gateway, clock=clock)
        role = f"arn:aws:iam::{MEMBER}:role/guard"
        first = await roles.session(role)
        # Asked at once by the two regions of the account, and again by a later holder of one of its shards.
        assert {id(session) for session in await asyncio.gather(roles.session(role), roles.session(role))} == {
            id(first)}
        assert await roles.session(role, external_id="night") is not first  # another external id: another session
        assert len(emulator.calls(operation="AssumeRole")) == 2
        # Within REUSE_MARGIN of its expiry (an hour), an unused session is not handed out again: assumed anew.
        clock.advance(timedelta(hours=1) - RoleSessions.REUSE_MARGIN + timedelta(seconds=1))
        assert await roles.session(role) is not first
        assert len(emulator.calls(operation="AssumeRole")) == 3
