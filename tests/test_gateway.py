"""The gateway against the emulator over real HTTP: metrics, retries and their backoff, timeouts, pagination,
endpoints, refusals.

The emulator runs in this event loop on the gateway's ManualClock (``gateway`` fixture); a call that waits
(backoff, throttling) runs while the virtual-time driver moves the clock (:func:`drive`).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anyio
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from athena_spark_emulator import Emulator, Faults, FaultSpec
from athena_spark_emulator.populate import populate
from athena_spark_emulator.testing import EmulatorHandle
from supervisor.clock import ManualClock
from supervisor.gateway import IAM_ACTIONS, WAIT_INITIAL, WAIT_JITTER, AwsCallError, Gateway, Priority
from supervisor.metrics import Metrics, sum_samples
from supervisor.ratelimit import PriorityRateLimiter
from tests.virtual_time import EmulatorClockView, VirtualTime, virtual_time

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T = TypeVar("T")


@dataclass
class World:
    gateway: Gateway
    emulator: Emulator
    clock: ManualClock
    vt: VirtualTime

    def set_faults(self, operation: str, **spec: Any) -> None:
        self.emulator.backend.faults.set(operation, FaultSpec(**spec), self.emulator.backend.clock.now())

    def attempts(self, operation: str) -> list[datetime]:
        """The virtual instants the emulator received ``operation`` (milliseconds)."""
        return [datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
                for entry in self.emulator.backend.audit.entries(operation=operation)]

    async def drive(self, call: Awaitable[T], limit: float = 60) -> T:
        """Await ``call`` while virtual time runs (at most ``limit`` virtual seconds)."""
        task = asyncio.ensure_future(call)
        await self.vt.run_until_true(task.done, limit=limit)
        return task.result()


@asynccontextmanager
async def virtual_gateway(*, max_attempts: int = 4, **options: Any) -> AsyncIterator[World]:
    """A gateway and an emulator in this event loop on one ManualClock at T0, jitter from ``Random(0)``."""
    clock = ManualClock(T0)
    metrics = Metrics(CollectorRegistry())
    async with Emulator(clock=EmulatorClockView(clock), faults=Faults(random.Random(0))) as emulator, Gateway(
        region="us-east-1", endpoint_url=emulator.endpoint_url, metrics=metrics,
        limiter=PriorityRateLimiter(500, clock=clock), clock=clock, rng=random.Random(0),
        max_attempts=max_attempts, **options,
    ) as gateway, virtual_time(clock) as vt:
        yield World(gateway, emulator, clock, vt)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with virtual_gateway() as world:
        yield world


def calls(gateway: Gateway, operation: str, outcome: str) -> float:
    return sum_samples(gateway.metrics.registry, "athena_supervisor_aws_api_calls_total", operation=operation,
                       outcome=outcome)


def assert_backoffs(attempts: list[datetime]) -> None:
    """Attempt n+1 follows attempt n by WAIT_INITIAL × 2^(n−1) plus at most WAIT_JITTER (a throttled
    attempt may also wait for a token, which at 500/s is never)."""
    for retry, (before, after) in enumerate(itertools.pairwise(attempts), start=1):
        backoff = timedelta(seconds=WAIT_INITIAL * 2 ** (retry - 1))
        assert backoff <= after - before <= backoff + timedelta(seconds=WAIT_JITTER), (retry, after - before)


async def test_every_attempt_is_counted_by_operation_and_outcome(world: World) -> None:
    gateway = world.gateway
    response = await gateway.call("ListWorkGroups", {}, priority=Priority.DISCOVER)
    assert [wg["Name"] for wg in response["WorkGroups"]] == ["primary"]
    with pytest.raises(AwsCallError) as error:
        await gateway.call("GetSession", {"SessionId": "nope"}, priority=Priority.VERIFY)
    assert error.value.is_not_found
    assert calls(gateway, "ListWorkGroups", "success") == 1
    assert calls(gateway, "GetSession", "client_error") == 1


async def test_throttling_is_retried_until_it_succeeds(world: World) -> None:
    gateway = world.gateway
    world.set_faults("ListWorkGroups", throttle_tps=2, burst=1)
    for _ in range(3):
        await world.drive(gateway.call("ListWorkGroups", {}, priority=Priority.DISCOVER))
    assert calls(gateway, "ListWorkGroups", "success") == 3
    assert calls(gateway, "ListWorkGroups", "throttled") >= 1
    # The emulator's bucket refills 2 tokens a second (virtual): the three calls succeed 500 ms apart at least.
    succeeded = [entry["time"] for entry in world.emulator.backend.audit.entries(operation="ListWorkGroups")
                 if entry["status"] == 200]
    assert len(succeeded) == 3 and succeeded[0] == "2026-01-01T00:00:00.000Z"


async def test_server_errors_give_up_after_max_attempts(world: World) -> None:
    gateway = world.gateway
    world.set_faults("ListWorkGroups", error_rate=1.0)
    with pytest.raises(AwsCallError) as error:
        await world.drive(gateway.call("ListWorkGroups", {}, priority=Priority.DISCOVER))
    assert error.value.code == "InternalServerException"
    assert calls(gateway, "ListWorkGroups", "server_error") == 4
    attempts = world.attempts("ListWorkGroups")
    assert len(attempts) == 4 and attempts[0] == T0
    assert_backoffs(attempts)


async def test_pagination_follows_next_token(world: World) -> None:
    gateway = world.gateway
    populate(world.emulator.backend.store, {"workgroups": [{"name": "etl-a"}],
                       "sessions": [{"workgroup": "etl-a", "count": 230, "description": "# sim: start=0s"}]},
             world.emulator.backend.clock.now())
    pages = [page async for page in gateway.paginate(
        "ListSessions", {"WorkGroup": "etl-a", "MaxResults": 100}, result_key="Sessions", priority=Priority.DISCOVER)]
    assert [len(page) for page in pages] == [100, 100, 30]
    assert len({s["SessionId"] for page in pages for s in page}) == 230


async def test_operations_outside_the_iam_policy_are_refused(world: World) -> None:
    gateway = world.gateway
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


class SteppingClock(ManualClock):
    """Sleeps return at once, moving time forward by the sleep; records what was slept."""

    def __init__(self) -> None:
        super().__init__(T0)
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)


class MaxJitter:
    def uniform(self, a: float, b: float) -> float:
        return b


async def test_backoff_sleeps_on_the_injected_clock_and_every_retry_names_its_operation(
    emulator: EmulatorHandle,
) -> None:
    emulator.set_faults("ListWorkGroups", error_rate=1.0)
    clock = SteppingClock()
    metrics = Metrics(CollectorRegistry())
    async with Gateway(region="us-east-1", endpoint_url=emulator.endpoint_url, metrics=metrics,
                       limiter=PriorityRateLimiter(500), max_attempts=8, clock=clock, rng=MaxJitter()) as gateway:
        with capture_logs() as logs, pytest.raises(AwsCallError):
            await gateway.call("ListWorkGroups", {}, priority=Priority.DISCOVER)
    # 0.1 s doubling, plus the jitter (here its maximum, 0.2 s), capped at 5 s.
    assert clock.slept == pytest.approx([0.3, 0.4, 0.6, 1.0, 1.8, 3.4, 5.0])
    assert clock.now() == T0 + timedelta(seconds=12.5)
    retries = [entry for entry in logs if entry["event"] == "aws.retrying"]
    assert [(r["operation"], r["attempt"], r["error"], r["outcome"]) for r in retries] == [
        ("ListWorkGroups", attempt, "InternalServerException", "server_error") for attempt in range(1, 8)]
    assert [r["wait"] for r in retries] == pytest.approx(clock.slept)
    assert calls(gateway, "ListWorkGroups", "server_error") == 8


async def test_a_caller_may_ask_for_a_single_attempt(world: World) -> None:
    gateway = world.gateway
    world.set_faults("ListWorkGroups", error_rate=1.0)
    with pytest.raises(AwsCallError) as error:
        await gateway.call("ListWorkGroups", {}, priority=Priority.ENFORCE, attempts=1)
    assert error.value.code == "InternalServerException"
    assert calls(gateway, "ListWorkGroups", "server_error") == 1
    with pytest.raises(ValueError, match="attempts"):
        await gateway.call("ListWorkGroups", {}, priority=Priority.ENFORCE, attempts=0)


async def test_read_timeout_cuts_an_attempt_off() -> None:
    async with virtual_gateway(connect_timeout=timedelta(seconds=1), read_timeout=0.2) as world:
        gateway = world.gateway
        assert gateway.attempt_timeout == timedelta(seconds=1.2)
        assert gateway.in_flight_window == timedelta(seconds=2.4)
        world.set_faults("ListWorkGroups", latency=1.0)
        # Nothing moves the clock: the emulator would answer only after its 1 s (virtual) latency. The attempt
        # is cut off by the read timeout, which is real time (network I/O); the guard only stops a hang.
        with anyio.fail_after(30), pytest.raises(AwsCallError) as error:
            await gateway.call("ListWorkGroups", {}, priority=Priority.DISCOVER, attempts=1)
        assert error.value.code == "NetworkError" and error.value.may_have_taken_effect
        assert calls(gateway, "ListWorkGroups", "network_error") == 1
        assert world.clock.now() == T0
        await world.vt.run_for(1)  # the emulator finishes the request its client gave up on
    with pytest.raises(ValueError, match="timeout"):
        Gateway(region="us-east-1", metrics=Metrics(CollectorRegistry()), limiter=PriorityRateLimiter(1),
                read_timeout=0)


STS_IDENTITY = """<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult><Arn>arn:aws:iam::{account}:user/test</Arn><UserId>AIDATEST</UserId>
  <Account>{account}</Account></GetCallerIdentityResult>
  <ResponseMetadata><RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>"""


@asynccontextmanager
async def sts_stub(account: str) -> AsyncIterator[str]:
    """A minimal STS endpoint answering GetCallerIdentity with ``account``."""

    async def answer(request: web.Request) -> web.Response:
        form = await request.post()
        assert form["Action"] == "GetCallerIdentity"
        return web.Response(text=STS_IDENTITY.format(account=account), content_type="text/xml")

    app = web.Application()
    app.add_routes([web.post("/", answer)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_sts_goes_to_its_own_endpoint_else_to_endpoint_url() -> None:
    metrics = Metrics(CollectorRegistry())
    async with sts_stub("111111111111") as athena_url, sts_stub("222222222222") as sts_url:
        async with Gateway(region="us-east-1", endpoint_url=athena_url, sts_endpoint_url=sts_url, metrics=metrics,
                           limiter=PriorityRateLimiter(500)) as gateway:
            identity = await gateway.call("GetCallerIdentity", {}, priority=Priority.DISCOVER, service="sts")
            assert identity["Account"] == "222222222222"
        async with Gateway(region="us-east-1", endpoint_url=athena_url, metrics=metrics,
                           limiter=PriorityRateLimiter(500)) as gateway:
            identity = await gateway.call("GetCallerIdentity", {}, priority=Priority.DISCOVER, service="sts")
            assert identity["Account"] == "111111111111"


async def test_a_call_that_must_not_repeat_retries_only_what_aws_refused(world: World) -> None:
    """Stop/Terminate take no client token: a throttled attempt was not processed and is retried; after a 5xx
    AWS may have processed it, so the error goes back to the caller (which looks before sending again)."""
    gateway = world.gateway
    world.emulator.backend.add_error("TooManyRequestsException", operation="TerminateSession", count=2)
    with pytest.raises(AwsCallError) as refused:  # throttled twice, then the real answer: no such session
        await world.drive(gateway.call("TerminateSession", {"SessionId": "nope"}, priority=Priority.ENFORCE,
                                       repeatable=False))
    assert refused.value.is_not_found
    assert calls(gateway, "TerminateSession", "throttled") == 2
    world.set_faults("StopCalculationExecution", error_rate=1.0)
    with pytest.raises(AwsCallError) as ambiguous:
        await world.drive(gateway.call("StopCalculationExecution", {"CalculationExecutionId": "c"},
                                       priority=Priority.ENFORCE, repeatable=False))
    assert ambiguous.value.may_have_taken_effect and ambiguous.value.outcome == "server_error"
    assert calls(gateway, "StopCalculationExecution", "server_error") == 1, "never repeated after a 5xx"
