"""The ``virtual_world`` fixture: the daemon and the emulator in this event loop on one ManualClock.

A test sets up sessions and calculations through a real aiobotocore client (real HTTP, real botocore
parsing, every response checked against its output shape), starts the daemon with ``world.daemon(...)``,
runs virtual time with ``world.vt`` and asserts exact instants read from the emulator's audit log
(millisecond resolution, the log's own) and exact metric values from the daemon's registry.
"""

from __future__ import annotations

import functools
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from prometheus_client import CollectorRegistry

from athena_spark_emulator import Emulator, Faults, FaultSpec
from athena_spark_emulator.roles import RoleRule
from athena_spark_emulator.testing import check_after_call
from supervisor.clock import ManualClock
from supervisor.config import load_settings, parse_settings
from supervisor.events import EventSink
from supervisor.gateway import new_session
from supervisor.metrics import sum_samples
from supervisor.service import RunningService, running_service
from supervisor.storage import Storage
from tests.daemon_fixtures import SPARK_ENGINE, daemon_config
from tests.virtual_time import EmulatorClockView, VirtualTime, virtual_time

START = datetime(2026, 1, 1, tzinfo=UTC)
EXEMPT_TAG = "athena-supervisor/exempt"
ACCOUNT_ID = "123456789012"
REGION = "us-east-1"


@dataclass(frozen=True, slots=True)
class Call:
    """One audit-log entry: ``time`` is the virtual instant the emulator received it (milliseconds)."""

    time: datetime
    operation: str | None
    request: dict[str, Any]
    status: int
    error: str | None
    account: str = ACCOUNT_ID
    region: str = REGION


def times(calls: list[Call]) -> list[datetime]:
    """The instants of ``calls``, to compare with expected instants in one assertion."""
    return [call.time for call in calls]


def ms(seconds: float) -> timedelta:
    """A duration in whole milliseconds (exact, unlike ``timedelta(seconds=0.1)`` sums of floats)."""
    return timedelta(milliseconds=round(seconds * 1000))


class VirtualWorld:
    """What a virtual-time scenario test works with; see :func:`virtual_world`."""

    def __init__(self, *, clock: ManualClock, emulator: Emulator, athena: Any, vt: VirtualTime,
                 journal_path: Path) -> None:
        self.clock = clock
        self.emulator = emulator
        self.athena = athena  # an aiobotocore Athena client on the emulator, for the test's own calls
        self.vt = vt
        self.journal_path = journal_path
        self.service: RunningService | None = None

    @property
    def now(self) -> datetime:
        return self.clock.now()

    # -- the daemon -------------------------------------------------------------------------------------

    def daemon(self, config: dict[str, Any] | None = None, *, events: EventSink | None = None,
               config_path: Path | None = None, storage: Storage | None = None,
               **overrides: Any) -> AbstractAsyncContextManager[RunningService]:
        """``async with world.daemon(**config overrides) as service:`` runs the daemon on the virtual clock;
        ``config`` replaces the tests' configuration (``daemon_config``) as a whole; with ``events``, the
        daemon's events go to that sink instead of the configured notification channels; with ``config_path``,
        the configuration is that file's (and a reload reads it again); with ``storage``, the daemon keeps its
        journal there instead of the configured one.

        Leaving the block stops the daemon as SIGTERM does, with virtual time running meanwhile: its shutdown
        waits on the clock (the notifier's bounded flush), so what is still being retried then is retried at
        its virtual instants, within the flush bound.
        """

        @asynccontextmanager
        async def run() -> AsyncIterator[RunningService]:
            if config_path is not None:
                settings = load_settings(config_path, environ={})
            elif config is None:
                settings = parse_settings(daemon_config(self.emulator.endpoint_url, self.journal_path, **overrides),
                                          environ={})
            else:
                settings = parse_settings({**config, **overrides}, environ={})
            stopped = anyio.Event()
            try:
                async with anyio.create_task_group() as shutdown:
                    try:
                        async with running_service(settings, clock=self.clock, registry=CollectorRegistry(),
                                                   events=events, config_path=str(config_path) if config_path else None,
                                                   storage=storage) as service:
                            self.service = service
                            try:
                                yield service
                            finally:
                                self.service = None
                                shutdown.start_soon(self.vt.run_until_set, stopped, name="virtual time at shutdown")
                    finally:
                        stopped.set()
            except BaseExceptionGroup as group:  # the task groups wrap a failed assertion: unwrap it
                raise _single(group) from None

        return run()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the running daemon's samples ``name`` whose labels include ``labels`` (0 when absent):
        a test names the labels it is about (account and region are on most metrics)."""
        assert self.service is not None, "the daemon is not running"
        return sum_samples(self.service.metrics.registry, name, **labels)

    # -- the emulator -----------------------------------------------------------------------------------

    def calls(self, operation: str | None = None, *, status: int | None = 200, error: str | None = None,
              **request: str) -> list[Call]:
        """Audit-log entries, oldest first: of ``operation``, with ``status`` (None: any) and ``error`` (if
        given), whose request has the given fields."""
        return [
            call for call in (
                Call(datetime.fromisoformat(entry["time"].replace("Z", "+00:00")), entry["operation"],
                     entry["request"] if isinstance(entry["request"], dict) else {}, entry["status"], entry["error"],
                     entry["account"], entry["region"])
                for entry in self.emulator.backend.audit.entries(operation=operation)
            )
            if (status is None or call.status == status) and (error is None or call.error == error)
            and all(call.request.get(k) == v for k, v in request.items())
        ]

    def set_role(self, role_arn: str, *, deny: bool = False, external_id: str | None = None) -> None:
        """A role rule of the emulator's STS: refuse ``role_arn``, or require ``external_id``."""
        self.emulator.fleet.roles.put(RoleRule(role_arn, deny=deny, external_id=external_id))

    def clear_roles(self, role_arn: str | None = None) -> None:
        self.emulator.fleet.roles.remove(role_arn)

    def set_faults(self, operation: str | None = None, **spec: Any) -> None:
        """Install a fault rule (``throttle_tps``, ``burst``, ``error_rate``, ``latency``) at the current instant."""
        self.emulator.backend.faults.set(operation, FaultSpec(**spec), self.emulator.backend.clock.now())

    async def create_workgroup(self, name: str, tags: dict[str, str] | None = None) -> None:
        await self.athena.create_work_group(Name=name, Configuration={"EngineVersion": SPARK_ENGINE})
        if tags:
            await self.athena.tag_resource(
                ResourceARN=f"arn:aws:athena:{REGION}:{ACCOUNT_ID}:workgroup/{name}",
                Tags=[{"Key": key, "Value": value} for key, value in tags.items()],
            )

    async def start_session(self, workgroup: str, description: str = "# sim: start=0s", *,
                            max_dpus: int = 20) -> str:
        """A session; with the default ``start=0s`` it is IDLE at once."""
        response = await self.athena.start_session(
            WorkGroup=workgroup, Description=description,
            EngineConfiguration={"CoordinatorDpuSize": 1, "MaxConcurrentDpus": max_dpus, "DefaultExecutorDpuSize": 1},
        )
        return str(response["SessionId"])

    async def start_calculation(self, session_id: str, pragma: str) -> str:
        response = await self.athena.start_calculation_execution(
            SessionId=session_id, CodeBlock=f"{pragma}\nspark.range(10).count()"
        )
        return str(response["CalculationExecutionId"])

    async def session(self, session_id: str) -> dict[str, Any]:
        response: dict[str, Any] = await self.athena.get_session(SessionId=session_id)
        return response

    async def session_state(self, session_id: str) -> str:
        return str((await self.athena.get_session_status(SessionId=session_id))["Status"]["State"])

    async def calculation(self, calculation_id: str) -> dict[str, Any]:
        response: dict[str, Any] = await self.athena.get_calculation_execution(CalculationExecutionId=calculation_id)
        return response

    async def calculation_state(self, calculation_id: str) -> str:
        return str((await self.calculation(calculation_id))["Status"]["State"])


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception inside nested single-member groups, else the group itself."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


VirtualWorldFactory = Callable[..., AbstractAsyncContextManager[VirtualWorld]]


@functools.cache
def _test_client_session() -> AioSession:
    """One botocore session for the tests' own clients (its data loader shared with the daemon's gateways)."""
    return new_session()


def aws_client(service: str, endpoint_url: str, *, account: str | None = None,
               region: str = REGION) -> AbstractAsyncContextManager[Any]:
    """``async with aws_client("sqs", url) as sqs:`` — an aiobotocore client for the test's own calls (one
    attempt, responses checked by botocore's parser), in this event loop like the servers it talks to. With
    ``account``, it signs with that 12-digit access key: the emulator's rule for "a caller in that account"."""
    client: AbstractAsyncContextManager[Any] = _test_client_session().create_client(
        service, endpoint_url=endpoint_url, region_name=region, aws_access_key_id=account or "testing",
        aws_secret_access_key="testing", config=AioConfig(retries={"mode": "standard", "total_max_attempts": 1}),
    )
    return client


@pytest.fixture
def virtual_world_factory(tmp_path: Path) -> VirtualWorldFactory:
    """``async with virtual_world_factory(workgroups=[...], start=...) as world:`` — more than one world, or
    a world with its own start instant or workgroups. Everything started is closed when the block ends."""

    @asynccontextmanager
    async def build(*, workgroups: tuple[str, ...] = ("etl-a",), start: datetime = START,
                    **driver_options: Any) -> AsyncIterator[VirtualWorld]:
        clock = ManualClock(start)
        state = random.getstate()
        random.seed(0)  # the gateway's backoff jitter: repeatable retry instants
        async with AsyncExitStack() as stack:
            emulator = await stack.enter_async_context(Emulator(
                clock=EmulatorClockView(clock), workgroups=workgroups, account_id=ACCOUNT_ID, region=REGION,
                faults=Faults(random.Random(0)),  # repeatable error rates
            ))
            athena = await stack.enter_async_context(_test_client_session().create_client(
                "athena", endpoint_url=emulator.endpoint_url, region_name=REGION,
                aws_access_key_id="testing", aws_secret_access_key="testing",
                config=AioConfig(retries={"mode": "standard", "total_max_attempts": 1}),
            ))
            athena.meta.events.register("after-call.athena", check_after_call)
            vt = await stack.enter_async_context(virtual_time(clock, **driver_options))
            try:
                yield VirtualWorld(clock=clock, emulator=emulator, athena=athena, vt=vt,
                                   journal_path=tmp_path / "journal.db")
            finally:
                random.setstate(state)

    return build


@pytest.fixture
async def virtual_world(virtual_world_factory: VirtualWorldFactory) -> AsyncIterator[VirtualWorld]:
    """A world with the Spark workgroup ``etl-a``, at 2026-01-01T00:00:00Z; start the daemon with
    ``async with world.daemon(**config overrides) as service:`` inside the test."""
    async with virtual_world_factory() as world:
        yield world
