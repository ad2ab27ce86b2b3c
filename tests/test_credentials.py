"""Member-account credentials: a role assumed through the emulator's STS (real HTTP, real botocore)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from athena_spark_emulator.testing import EmulatorHandle
from supervisor.clock import SystemClock
from supervisor.config import parse_settings
from supervisor.credentials import AssumedRole
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
