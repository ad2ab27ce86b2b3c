"""The gateway against the emulator over real HTTP: metrics, retries, pagination, refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from athena_spark_emulator.testing import EmulatorHandle
from supervisor.gateway import IAM_ACTIONS, AwsCallError, Gateway, Priority
from supervisor.metrics import Metrics
from supervisor.ratelimit import PriorityRateLimiter


@pytest.fixture
async def gateway(emulator: EmulatorHandle) -> AsyncIterator[Gateway]:
    metrics = Metrics(CollectorRegistry())
    async with Gateway(region="us-east-1", endpoint_url=emulator.endpoint_url, metrics=metrics,
                       limiter=PriorityRateLimiter(500), max_attempts=4) as gw:
        yield gw


def calls(gateway: Gateway, operation: str, outcome: str) -> float:
    value = gateway.metrics.registry.get_sample_value(
        "athena_supervisor_aws_api_calls_total", {"operation": operation, "outcome": outcome})
    return value or 0.0


async def test_every_attempt_is_counted_by_operation_and_outcome(gateway: Gateway) -> None:
    response = await gateway.call("ListWorkGroups", {}, priority=Priority.DISCOVER)
    assert [wg["Name"] for wg in response["WorkGroups"]] == ["primary"]
    with pytest.raises(AwsCallError) as error:
        await gateway.call("GetSession", {"SessionId": "nope"}, priority=Priority.VERIFY)
    assert error.value.is_not_found
    assert calls(gateway, "ListWorkGroups", "success") == 1
    assert calls(gateway, "GetSession", "client_error") == 1


async def test_throttling_is_retried_until_it_succeeds(emulator: EmulatorHandle, gateway: Gateway) -> None:
    emulator.set_faults("ListWorkGroups", throttle_tps=2, burst=1)
    for _ in range(3):
        await gateway.call("ListWorkGroups", {}, priority=Priority.DISCOVER)
    assert calls(gateway, "ListWorkGroups", "success") == 3
    assert calls(gateway, "ListWorkGroups", "throttled") >= 1


async def test_server_errors_give_up_after_max_attempts(emulator: EmulatorHandle, gateway: Gateway) -> None:
    emulator.set_faults("ListWorkGroups", error_rate=1.0)
    with pytest.raises(AwsCallError) as error:
        await gateway.call("ListWorkGroups", {}, priority=Priority.DISCOVER)
    assert error.value.code == "InternalServerException"
    assert calls(gateway, "ListWorkGroups", "server_error") == 4


async def test_pagination_follows_next_token(emulator: EmulatorHandle, gateway: Gateway) -> None:
    emulator.populate({"workgroups": [{"name": "etl-a"}],
                       "sessions": [{"workgroup": "etl-a", "count": 230, "description": "# sim: start=0s"}]})
    pages = [page async for page in gateway.paginate(
        "ListSessions", {"WorkGroup": "etl-a", "MaxResults": 100}, result_key="Sessions", priority=Priority.DISCOVER)]
    assert [len(page) for page in pages] == [100, 100, 30]
    assert len({s["SessionId"] for page in pages for s in page}) == 230


async def test_operations_outside_the_iam_policy_are_refused(gateway: Gateway) -> None:
    assert "athena:DeleteWorkGroup" not in IAM_ACTIONS
    with pytest.raises(ValueError, match="athena:DeleteWorkGroup"):
        await gateway.call("DeleteWorkGroup", {"WorkGroup": "primary"}, priority=Priority.ENFORCE)


@pytest.mark.usefixtures("no_aws_credentials")
async def test_missing_credentials_are_a_reported_error_not_a_crash(emulator: EmulatorHandle) -> None:
    metrics = Metrics(CollectorRegistry())
    async with Gateway(region="us-east-1", endpoint_url=emulator.endpoint_url, metrics=metrics,
                       limiter=PriorityRateLimiter(500), max_attempts=3) as gateway:
        with pytest.raises(AwsCallError) as error:
            await gateway.call("ListWorkGroups", {}, priority=Priority.DISCOVER)
    assert error.value.code == "NoCredentialsError"
    assert calls(gateway, "ListWorkGroups", "client_error") == 1, "not retried: retrying cannot help"
