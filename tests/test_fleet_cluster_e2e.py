"""Replicas sharing account-regions through leases in DynamoDB, in virtual time.

Two or three daemons run in this event loop on one clock, against one emulator (every account-region) and
one moto (the DynamoDB table), each through its own frontend so that one replica can be cut off from
DynamoDB while the others are not. Judged from the emulator's audit log and each replica's own metrics.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Any

import aiohttp
import anyio
import anyio.abc
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from supervisor.config import parse_settings
from supervisor.core.fleet import Lease, preference
from supervisor.core.scheduling import CROSSING_MARGIN
from supervisor.metrics import Metrics, sum_samples
from supervisor.service import RunningService, running_service
from supervisor.storage import Storage
from supervisor.storage.dynamodb import DynamoDbStorage
from supervisor.storage.dynamodb_setup import ensure_table
from supervisor.storage.dynamodb_table import Table
from supervisor.storage.factory import build_storage_gateway, journal_table
from tests.daemon_fixtures import SPARK_ENGINE
from tests.moto_in_loop import Moto, MotoFrontend
from tests.virtual_fixtures import VirtualWorld, aws_client, ms, times

ACCOUNTS = ("111111111111", "222222222222")
REGIONS = ("us-east-1", "eu-west-1")
SHARDS = tuple((account, region) for account in ACCOUNTS for region in REGIONS)
LEASE = timedelta(seconds=6)
SKEW = timedelta(seconds=1)


def role(account: str) -> str:
    return f"arn:aws:iam::{account}:role/athena-supervisor"


def replica_config(world: VirtualWorld, dynamodb: str, replica: str, table: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "aws": {"region": "us-east-1", "endpoint_url": world.emulator.endpoint_url, "max_requests_per_second": 200,
                "max_attempts": 3, "connect_timeout": "1s", "read_timeout": "2s"},
        "accounts": [{"account_id": account, "role_arn": role(account), "regions": list(REGIONS)}
                     for account in ACCOUNTS],
        "workgroups": ["etl-*"],
        # Sweeps each second: the scenarios act at scheduled looks, found by the first sweep.
        "discovery_interval": "1s",
        "journal": {"backend": "dynamodb", "table": table, "region": "us-east-1", "endpoint_url": dynamodb},
        "cluster": {"lease_duration": "6s", "max_clock_skew": "1s", "replica_id": replica},
        "http": {"host": "127.0.0.1", "port": 0},
        "escalation": {"stop_grace": "20s", "terminate_grace": "5s"},
        "safety": {"max_actions_per_minute": 100, "circuit_breaker_fraction": 1.0},
        "policies": [{"name": "etl-limits", "workgroups": ["etl-*"], "calculation": {"max_runtime": "3s"}}],
    }
    config.update(overrides)
    return config


class Fleet:
    """The replicas of a test, by name, each with its own DynamoDB frontend."""

    def __init__(self, world: VirtualWorld, moto: Moto, stack: AsyncExitStack,
                 task_group: anyio.abc.TaskGroup, table: str) -> None:
        self.world = world
        self.table = table
        self._task_group = task_group
        self.moto = moto
        self.stack = stack
        self.services: dict[str, RunningService] = {}
        self.frontends: dict[str, MotoFrontend] = {}
        self._stops: dict[str, anyio.Event] = {}
        self._running = 0
        self.all_ended = anyio.Event()  # set once every replica started has stopped

    async def start(self, name: str, *, storage: Callable[[Table], Storage] | None = None,
                    **overrides: Any) -> RunningService:
        """Start replica ``name``; ``storage``: builds its storage on its table (default: DynamoDbStorage)."""
        frontend = await self.stack.enter_async_context(MotoFrontend(self.moto).serving())
        self.frontends[name] = frontend
        config = replica_config(self.world, frontend.endpoint_url, name, self.table, **overrides)
        settings = parse_settings(config, environ={})
        started: list[RunningService] = []
        ready, stop = anyio.Event(), anyio.Event()

        async def run() -> None:
            self._running += 1
            try:
                own = None
                if storage is not None:
                    gateway = await self.stack.enter_async_context(
                        build_storage_gateway(settings, Metrics(CollectorRegistry()), clock=self.world.clock))
                    own = storage(journal_table(settings, gateway))
                async with running_service(settings, clock=self.world.clock, registry=CollectorRegistry(),
                                           storage=own) as service:
                    started.append(service)
                    ready.set()
                    await stop.wait()
            finally:
                self._running -= 1
                if not self._running:
                    self.all_ended.set()

        self._task_group.start_soon(run, name=f"replica {name}")
        await self.world.vt.run_until_set(ready)
        self.services[name] = started[0]
        self._stops[name] = stop
        return started[0]

    async def stop(self, name: str) -> None:
        """Stop a replica as SIGTERM does: its shards stop, then their leases are released."""
        self._stops.pop(name).set()
        self.services.pop(name)

    async def _stop_all(self) -> None:
        for stop in self._stops.values():
            stop.set()

    def owners(self) -> dict[tuple[str, str], list[str]]:
        """Which replicas supervise each shard now (from their shard_owned gauges)."""
        found: dict[tuple[str, str], list[str]] = {shard: [] for shard in SHARDS}
        for name, service in self.services.items():
            for account, region in SHARDS:
                if sum_samples(service.metrics.registry, "athena_supervisor_shard_owned", account=account,
                               region=region) == 1:
                    found[(account, region)].append(name)
        return found

    def metric(self, name: str, metric: str, **labels: str) -> float:
        return sum_samples(self.services[name].metrics.registry, metric, **labels)


@asynccontextmanager
async def fleet(world: VirtualWorld) -> AsyncIterator[Fleet]:
    moto = Moto()
    async with AsyncExitStack() as stack, anyio.create_task_group() as task_group:
        setup = await stack.enter_async_context(MotoFrontend(moto).serving())
        # moto's backends are process-wide: a table of its own keeps this test's leases from the others'.
        table = f"athena-supervisor-{uuid.uuid4().hex[:8]}"
        settings = parse_settings(replica_config(world, setup.endpoint_url, "setup", table), environ={})
        made = anyio.Event()

        async def make_table() -> None:
            async with build_storage_gateway(settings, Metrics(CollectorRegistry()), clock=world.clock) as gateway:
                await ensure_table(journal_table(settings, gateway), world.clock)
            made.set()

        # With virtual time running: a call retried after a failed attempt waits on the clock.
        task_group.start_soon(make_table)
        await world.vt.run_until_set(made)
        result = Fleet(world, moto, stack, task_group, table)
        try:
            yield result
        finally:
            await result._stop_all()
            # Virtual time runs until every replica has stopped: a shutdown may wait on the clock (a release or
            # heartbeat retried after a failed attempt), and nothing else would move it.
            if result.services or result._running:
                await world.vt.run_until_set(result.all_ended)


async def members(world: VirtualWorld, stack: AsyncExitStack) -> dict[tuple[str, str], Any]:
    clients = {}
    for account, region in SHARDS:
        client = await stack.enter_async_context(
            aws_client("athena", world.emulator.endpoint_url, account=account, region=region))
        await client.create_work_group(Name="etl-a", Configuration={"EngineVersion": SPARK_ENGINE})
        clients[(account, region)] = client
    return clients


async def runaway(athena: Any, on_stop: str = "honour") -> tuple[str, str]:
    session = await athena.start_session(
        WorkGroup="etl-a", Description="# sim: start=0s",
        EngineConfiguration={"CoordinatorDpuSize": 1, "MaxConcurrentDpus": 20, "DefaultExecutorDpuSize": 1})
    pragma = "# sim: runtime=10m" + (" on_stop=ignore" if on_stop == "ignore" else "")
    response = await athena.start_calculation_execution(SessionId=session["SessionId"],
                                                        CodeBlock=f"{pragma}\nspark.range(10).count()")
    return str(session["SessionId"]), str(response["CalculationExecutionId"])


def calls_in(world: VirtualWorld, operation: str, shard: tuple[str, str], **request: str) -> list[Any]:
    return [call for call in world.calls(operation, **request) if (call.account, call.region) == shard]


async def test_two_replicas_split_the_shards_and_each_acts_only_on_its_own(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    async with AsyncExitStack() as stack, fleet(world) as replicas:
        athena = await members(world, stack)
        await replicas.start("a")
        await replicas.start("b")
        await world.vt.run_for(LEASE)
        owners = replicas.owners()
        assert all(len(names) == 1 for names in owners.values()), owners
        assert sorted(names[0] for names in owners.values()) == ["a", "a", "b", "b"]
        submitted = world.now
        calculations = {shard: (await runaway(client))[1] for shard, client in athena.items()}
        await world.vt.run_until(submitted + ms(4))
        for shard, calculation_id in calculations.items():
            stops = calls_in(world, "StopCalculationExecution", shard, CalculationExecutionId=calculation_id)
            # At the crossing: found by the look scheduled just after it, or by a sweep that fell on it.
            [stop] = stops
            assert submitted + ms(3) <= stop.time <= submitted + ms(3) + CROSSING_MARGIN, shard
            owner = owners[shard][0]
            assert replicas.metric(owner, "athena_supervisor_actions_total", account=shard[0], region=shard[1],
                                   action="stop", outcome="sent") == 1
        # Stable: nothing moves while both live (ten rounds each).
        changes = {name: replicas.metric(name, "athena_supervisor_lease_changes_total") for name in "ab"}
        await world.vt.run_for(20)
        assert {name: replicas.metric(name, "athena_supervisor_lease_changes_total") for name in "ab"} == changes
        assert replicas.owners() == owners


async def test_a_joining_replica_gets_half_and_a_leaving_one_hands_its_shards_over(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    async with AsyncExitStack() as stack, fleet(world) as replicas:
        await members(world, stack)
        await replicas.start("a")
        await world.vt.run_for(ms(1))
        assert all(names == ["a"] for names in replicas.owners().values()), replicas.owners()
        await replicas.start("b")
        await world.vt.run_for(LEASE)
        owners = replicas.owners()
        assert sorted(names[0] for names in owners.values() if names) == ["a", "a", "b", "b"], owners
        assert replicas.metric("a", "athena_supervisor_lease_changes_total", outcome="released") == 2
        # a leaves (SIGTERM): its shards are released at once, b takes them at its next round.
        left = world.now
        await replicas.stop("a")
        await world.vt.run_until_true(lambda: all(names == ["b"] for names in replicas.owners().values()),
                                      limit=LEASE)
        # At b's next round (every third of the lease), not once a's leases would have expired.
        assert world.now - left <= LEASE / 3, world.now - left


async def test_a_replica_cut_off_from_dynamodb_stops_acting_and_another_resumes_its_escalation_on_time(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    async with AsyncExitStack() as stack, fleet(world) as replicas:
        athena = await members(world, stack)
        await replicas.start("a")
        await replicas.start("b")
        await world.vt.run_for(LEASE)
        shard = next(shard for shard, names in replicas.owners().items() if names == ["a"])
        session_id, _ = await runaway(athena[shard], on_stop="ignore")
        submitted = world.now
        await world.vt.run_until(submitted + ms(3.5))
        [stop] = calls_in(world, "StopCalculationExecution", shard)
        stopped_at = stop.time
        assert submitted + ms(3) <= stopped_at <= submitted + ms(3) + CROSSING_MARGIN
        # a loses its way to DynamoDB: it cannot renew; it stops acting by its own clock before its lease can
        # expire, and b takes the shard once the lease has expired (plus the clock-skew allowance).
        cut_at = world.now
        replicas.frontends["a"].cut()
        await world.vt.run_until(cut_at + LEASE + SKEW + ms(2.5))
        assert replicas.owners()[shard] == ["b"]
        assert replicas.metric("a", "athena_supervisor_shard_owned", account=shard[0], region=shard[1]) == 0
        async with aiohttp.ClientSession() as http, http.get(f"{replicas.services['a'].http_url}/readyz") as answer:
            assert answer.status == 503
            assert "the lease store cannot be reached (NetworkError)" in await answer.text()
        # The calculation ignores the Stop: b terminates its session at the original Stop + stop_grace (20 s),
        # without a second Stop.
        await world.vt.run_until(stopped_at + ms(21))
        assert times(calls_in(world, "StopCalculationExecution", shard)) == [stopped_at]
        terminates = calls_in(world, "TerminateSession", shard, SessionId=session_id)
        assert len(terminates) == 1
        assert stopped_at + ms(20) <= terminates[0].time <= stopped_at + ms(20) + ms(1.1)
        assert replicas.metric("b", "athena_supervisor_actions_total", action="terminate", outcome="sent") == 1
        assert replicas.metric("a", "athena_supervisor_actions_total", action="terminate") == 0
        assert replicas.metric("a", "athena_supervisor_lease_changes_total", outcome="lost") >= 1


async def test_a_new_owner_resumes_the_watch_list_before_its_first_sweep_finds_anything(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    async with AsyncExitStack() as stack, fleet(world) as replicas:
        athena = await members(world, stack)
        await replicas.start("a", policies=[{"name": "etl-limits", "workgroups": ["etl-*"],
                                             "calculation": {"max_runtime": "40s"}}])
        await world.vt.run_for(ms(1))
        shard = SHARDS[0]
        _, calculation_id = await runaway(athena[shard])
        submitted = world.now
        await world.vt.run_for(ms(35))  # a's watch list is saved (every 30 s)
        # From now on, listing sessions fails in this account-region: a new owner's sweeps find nothing there.
        world.emulator.backend_for(*shard).add_error("InternalServerException", operation="ListSessions")
        await replicas.stop("a")
        await replicas.start("b", policies=[{"name": "etl-limits", "workgroups": ["etl-*"],
                                             "calculation": {"max_runtime": "40s"}}])
        await world.vt.run_until(submitted + ms(41))
        [stop] = calls_in(world, "StopCalculationExecution", shard, CalculationExecutionId=calculation_id)
        assert submitted + ms(40) <= stop.time <= submitted + ms(40) + CROSSING_MARGIN
        assert replicas.metric("b", "athena_supervisor_actions_total", action="stop", outcome="sent") == 1


async def test_a_replica_taking_many_shards_at_once_renews_them_while_their_hosts_start(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    async with AsyncExitStack() as stack, fleet(world) as replicas:
        athena = await members(world, stack)
        # Every shard's host first assumes its role: 3 s each. The four hosts start side by side, and the rounds
        # renew the leases meanwhile: a round that waited for each host in turn (12 s) would pass the first shard's
        # acting deadline (4 s after it was taken) and lose it.
        world.emulator.backend.set_faults("AssumeRole", latency=3.0)
        started = world.now
        await replicas.start("a")
        await world.vt.run_for(LEASE * 3)
        assert replicas.metric("a", "athena_supervisor_lease_changes_total", outcome="lost") == 0
        assert replicas.metric("a", "athena_supervisor_lease_changes_total", outcome="acquired") == len(SHARDS)
        assert all(names == ["a"] for names in replicas.owners().values()), replicas.owners()
        assert len(world.calls("AssumeRole")) == len(SHARDS)
        assert all(call.time < started + ms(0.5) for call in world.calls("AssumeRole"))
        _, calculation_id = await runaway(athena[SHARDS[0]])
        submitted = world.now
        await world.vt.run_until(submitted + ms(4))
        [stop] = calls_in(world, "StopCalculationExecution", SHARDS[0], CalculationExecutionId=calculation_id)
        assert submitted + ms(3) <= stop.time <= submitted + ms(3) + CROSSING_MARGIN


class SlowRenewal(DynamoDbStorage):
    """The table as it is, except that renewals take longer: the next one once ``armed`` takes ``delay``, every one
    takes ``each``."""

    def __init__(self, table: Table, clock: Any, delay: timedelta, each: timedelta = timedelta(0)) -> None:
        super().__init__(table, retention=timedelta(days=90))
        self.clock, self.delay, self.each = clock, delay, each
        self.armed = False

    async def renew(self, lease: Lease, *, expires_at: Any) -> Lease | None:
        delay = self.each
        if self.armed:
            self.armed = False
            delay = self.delay
        await self.clock.sleep(delay.total_seconds())
        return await super().renew(lease, expires_at=expires_at)


async def test_a_renewal_slower_than_the_acting_window_stops_the_shards_but_not_the_rounds(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    slow: list[SlowRenewal] = []

    def storage(table: Table) -> Storage:
        slow.append(SlowRenewal(table, world.clock, LEASE / 2))
        return slow[0]

    async with AsyncExitStack() as stack, fleet(world) as replicas:
        await members(world, stack)
        await replicas.start("a", storage=storage)
        await world.vt.run_for(LEASE)
        assert all(names == ["a"] for names in replicas.owners().values())
        # One renewal takes 3 s: its shard's acting deadline (4 s after the previous round's renewal, 2 s before)
        # passes meanwhile, so that shard stops. The round goes on: the late answer is not taken for a renewal of
        # the stopped shard, the others are renewed, and the replica takes the shard back once its lease expired.
        slow[0].armed = True
        with capture_logs() as logs:
            await world.vt.run_for(LEASE * 3)
        events = [entry["event"] for entry in logs]
        assert "cluster.store_failed" not in events, [e for e in logs if e["event"] == "cluster.store_failed"]
        assert events.count("cluster.acting_deadline_passed") == 1
        assert replicas.metric("a", "athena_supervisor_lease_changes_total", outcome="lost") == 1
        assert replicas.metric("a", "athena_supervisor_lease_changes_total", outcome="acquired") == len(SHARDS) + 1
        assert all(names == ["a"] for names in replicas.owners().values()), replicas.owners()


async def test_a_replica_renews_its_leases_side_by_side(virtual_world: VirtualWorld) -> None:
    world = virtual_world

    def storage(table: Table) -> Storage:
        # Every renewal takes 1.5 s (a busy replica, a slow store): one after the other, the second lease of a round
        # would be renewed 3 s after the round began, past its acting deadline (4 s after the previous round's).
        return SlowRenewal(table, world.clock, timedelta(0), each=timedelta(seconds=1.5))

    async with AsyncExitStack() as stack, fleet(world) as replicas:
        await members(world, stack)
        await replicas.start("a", storage=storage)
        await world.vt.run_for(LEASE * 4)
        assert replicas.metric("a", "athena_supervisor_lease_changes_total", outcome="lost") == 0
        assert replicas.metric("a", "athena_supervisor_lease_changes_total", outcome="acquired") == len(SHARDS)
        assert all(names == ["a"] for names in replicas.owners().values()), replicas.owners()


def racing_survivors(dead: str) -> tuple[str, str, tuple[str, str]]:
    """Two replica names that, after ``dead`` (holding its two preferred shards) is gone, both want the same one."""
    scopes = [f"{account}/{region}" for account, region in SHARDS]
    held = tuple(sorted(scopes, key=lambda scope: preference(dead, scope), reverse=True)[:2])
    names = [f"s{index}" for index in range(50)]
    for first in names:
        for second in names:
            if first < second and max(held, key=lambda scope: preference(first, scope)) == max(
                    held, key=lambda scope: preference(second, scope)):
                return first, second, (held[0], held[1])
    raise AssertionError("no racing pair")


async def test_survivors_racing_for_a_dead_replicas_shards_take_them_all_at_once(virtual_world: VirtualWorld) -> None:
    world = virtual_world
    first, second, held = racing_survivors("a0")
    async with AsyncExitStack() as stack, fleet(world) as replicas:
        await members(world, stack)
        await replicas.start("a0")
        await world.vt.run_for(ms(1))
        await replicas.start(first)
        await replicas.start(second)
        await world.vt.run_for(LEASE * 2)
        owners = replicas.owners()
        assert sorted(f"{account}/{region}" for (account, region), names in owners.items() if names == ["a0"]) == \
            sorted(held), owners
        # a0 dies (it can no longer reach the table). Both survivors want the same one of its shards as soon as its
        # leases expire: the one refused takes the other in the same round, not a round (2 s) later.
        replicas.frontends["a0"].cut()

        def moved() -> list[str]:
            return [f"{account}/{region}" for (account, region), names in replicas.owners().items()
                    if f"{account}/{region}" in held and names and names != ["a0"]]

        await world.vt.run_until_true(lambda: bool(moved()), limit=LEASE * 2)
        await world.vt.run_for(ms(0.1))
        assert sorted(moved()) == sorted(held), replicas.owners()
        assert replicas.metric(first, "athena_supervisor_lease_changes_total", outcome="refused") + replicas.metric(
            second, "athena_supervisor_lease_changes_total", outcome="refused") >= 1
