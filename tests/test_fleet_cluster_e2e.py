"""Replicas sharing account-regions through leases in DynamoDB, in virtual time.

Two or three daemons run in this event loop on one clock, against one emulator (every account-region) and
one moto (the DynamoDB table), each through its own frontend so that one replica can be cut off from
DynamoDB while the others are not. Judged from the emulator's audit log and each replica's own metrics.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import anyio
import anyio.abc
from aiobotocore.session import AioSession
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from supervisor.activities.checks import WATCH_SAVE_INTERVAL
from supervisor.config import parse_settings
from supervisor.core.fleet import Lease, Shard, next_slot, preference
from supervisor.core.scheduling import CROSSING_MARGIN
from supervisor.gateway import new_session
from supervisor.metrics import Metrics, sum_samples
from supervisor.service import RunningService, running_service
from supervisor.storage import Storage
from supervisor.storage.dynamodb import DynamoDbStorage
from supervisor.storage.dynamodb_setup import ensure_table
from supervisor.storage.dynamodb_table import Table
from supervisor.storage.factory import build_storage_gateway, journal_table
from tests.daemon_fixtures import SPARK_ENGINE
from tests.events_fixtures import api_call_event
from tests.moto_in_loop import Moto, MotoFrontend
from tests.virtual_fixtures import VirtualWorld, aws_client, ms, times

ACCOUNTS = ("111111111111", "222222222222")
REGIONS = ("us-east-1", "eu-west-1")
SHARDS = tuple((account, region) for account in ACCOUNTS for region in REGIONS)
LEASE = timedelta(seconds=6)
# For the scenarios about leases alone (nothing to find): a sweep at each shard's start, none after.
NO_SWEEPS = {"discovery_interval": "1h"}
RUNAWAY_LIMIT = ms(6)  # the max_runtime of replica_config's policy


def role(account: str) -> str:
    return f"arn:aws:iam::{account}:role/athena-supervisor"


@functools.cache
def storage_session() -> AioSession:
    """One aiobotocore session for the DynamoDB gateways the tests build themselves (the table's, a replica's own
    storage): each new session registers botocore's handlers again (~16 ms of CPU)."""
    return new_session()


def replica_config(world: VirtualWorld, dynamodb: str, replica: str, table: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "aws": {"region": "us-east-1", "endpoint_url": world.emulator.endpoint_url, "max_requests_per_second": 200,
                "max_attempts": 3, "connect_timeout": "1s", "read_timeout": "2s"},
        "accounts": [{"account_id": account, "role_arn": role(account), "regions": list(REGIONS)}
                     for account in ACCOUNTS],
        "workgroups": ["etl-*"],
        # Sweeps every 5 s: a runaway here runs 6 s or more (RUNAWAY_LIMIT), so the first sweep after it started lists
        # it before its crossing and the scenarios act at the look scheduled there. Each sweep of a shard is five
        # listings: sweeps are most of the emulator's requests, and the limit need not be shorter.
        "discovery_interval": "5s",
        "journal": {"backend": "dynamodb", "table": table, "region": "us-east-1", "endpoint_url": dynamodb},
        "cluster": {"lease_duration": "6s", "max_clock_skew": "1s", "replica_id": replica},
        "http": {"host": "127.0.0.1", "port": 0},
        "escalation": {"stop_grace": "20s", "terminate_grace": "5s"},
        "safety": {"max_actions_per_minute": 100, "circuit_breaker_fraction": 1.0},
        "policies": [{"name": "etl-limits", "workgroups": ["etl-*"],
                      "calculation": {"max_runtime": f"{RUNAWAY_LIMIT.total_seconds():g}s"}}],
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
                    gateway = await self.stack.enter_async_context(build_storage_gateway(
                        settings, Metrics(CollectorRegistry()), clock=self.world.clock, session=storage_session()))
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
            # One collection of the gauge, not of the whole registry (scenarios ask after every step of virtual
            # time, ~700 times per test).
            owned = {(sample.labels.get("account"), sample.labels.get("region")): sample.value
                     for family in service.metrics.shard_owned.family.collect() for sample in family.samples}
            for shard in SHARDS:
                if owned.get(shard) == 1:
                    found[shard].append(name)
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
            async with build_storage_gateway(settings, Metrics(CollectorRegistry()), clock=world.clock,
                                             session=storage_session()) as gateway:
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


async def members(world: VirtualWorld, stack: AsyncExitStack,
                  shards: tuple[tuple[str, str], ...] = SHARDS) -> dict[tuple[str, str], Any]:
    """A workgroup ``etl-a`` in each of ``shards`` (the others have none to sweep), and a client of each."""
    clients = {}
    for account, region in shards:
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


def split_between_a_and_b(replicas: Fleet) -> bool:
    """Each shard has one owner, two shards are a's and two b's."""
    owners = replicas.owners()
    return all(len(names) == 1 for names in owners.values()) and sorted(
        names[0] for names in owners.values()) == ["a", "a", "b", "b"]


def calls_in(world: VirtualWorld, operation: str, shard: tuple[str, str], **request: str) -> list[Any]:
    return [call for call in world.calls(operation, **request) if (call.account, call.region) == shard]


async def test_two_replicas_split_the_shards_each_acts_on_its_own_and_one_cut_off_from_dynamodb_hands_over(
    virtual_world: VirtualWorld,
) -> None:
    """Two replicas split the shards and each acts only on its own; then one is cut off from DynamoDB: it stops
    acting, and the other takes its shards and resumes its escalation on time. One world for both parts: the second
    starts where the first ends (a runaway stopped on each shard)."""
    world = virtual_world
    # A Stop grace that outlasts the takeover (at most 9 s after the Stop: the cut, a lease, a round, a host's start).
    escalation = {"stop_grace": "10s", "terminate_grace": "5s"}
    async with AsyncExitStack() as stack, fleet(world) as replicas:
        athena = await members(world, stack)
        await replicas.start("a", escalation=escalation)
        await replicas.start("b", escalation=escalation)
        await world.vt.run_until_true(lambda: split_between_a_and_b(replicas), limit=LEASE)
        owners = replicas.owners()
        # Stable from now on: nothing moves while both live, runaways acted on meanwhile. Checked past a whole lease
        # (three rounds each): the plan is the same each round while the live replicas are, and a lease or heartbeat
        # not renewed would have expired by then.
        changes = {name: replicas.metric(name, "athena_supervisor_lease_changes_total") for name in "ab"}
        submitted = world.now
        assert RUNAWAY_LIMIT + ms(0.5) > LEASE
        # The runaway on one of a's shards ignores its Stop (for the second part); the others honour theirs.
        shard = next(shard for shard, names in owners.items() if names == ["a"])
        runaways = {member: await runaway(client, on_stop="ignore" if member == shard else "honour")
                    for member, client in athena.items()}
        await world.vt.run_until(submitted + RUNAWAY_LIMIT + ms(0.5))
        for member, (_, calculation_id) in runaways.items():
            stops = calls_in(world, "StopCalculationExecution", member, CalculationExecutionId=calculation_id)
            # At the crossing: found by the look scheduled just after it, or by a sweep that fell on it.
            [stop] = stops
            assert submitted + RUNAWAY_LIMIT <= stop.time <= submitted + RUNAWAY_LIMIT + CROSSING_MARGIN, member
            owner = owners[member][0]
            assert replicas.metric(owner, "athena_supervisor_actions_total", account=member[0], region=member[1],
                                   action="stop", outcome="sent") == 1
        assert {name: replicas.metric(name, "athena_supervisor_lease_changes_total") for name in "ab"} == changes
        assert replicas.owners() == owners
        session_id = runaways[shard][0]
        [stop] = calls_in(world, "StopCalculationExecution", shard)
        stopped_at = stop.time
        # a loses its way to DynamoDB: it cannot renew; it stops acting by its own clock before its lease can
        # expire, and b takes the shard once the lease has expired.
        cut_at = world.now
        replicas.frontends["a"].cut()
        await world.vt.run_until(cut_at + LEASE + ms(2.5))
        assert replicas.owners()[shard] == ["b"]
        assert replicas.metric("a", "athena_supervisor_shard_owned", account=shard[0], region=shard[1]) == 0
        async with aiohttp.ClientSession() as http, http.get(f"{replicas.services['a'].http_url}/readyz") as answer:
            assert answer.status == 503
            assert "the lease store cannot be reached (NetworkError)" in await answer.text()
        # The calculation ignores the Stop: b terminates its session at the original Stop + stop_grace (10 s),
        # without a second Stop.
        await world.vt.run_until(stopped_at + ms(10) + ms(1.1))
        assert times(calls_in(world, "StopCalculationExecution", shard)) == [stopped_at]
        terminates = calls_in(world, "TerminateSession", shard, SessionId=session_id)
        assert len(terminates) == 1
        assert stopped_at + ms(10) <= terminates[0].time <= stopped_at + ms(10) + ms(1.1)
        assert replicas.metric("b", "athena_supervisor_actions_total", action="terminate", outcome="sent") == 1
        assert replicas.metric("a", "athena_supervisor_actions_total", action="terminate") == 0
        assert replicas.metric("a", "athena_supervisor_lease_changes_total", outcome="lost") >= 1


async def test_a_joining_replica_gets_half_and_a_leaving_one_hands_its_shards_over(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    async with fleet(world) as replicas:  # about leases alone: no workgroups to supervise, short host sweeps
        await replicas.start("a")
        await world.vt.run_for(ms(1))
        assert all(names == ["a"] for names in replicas.owners().values()), replicas.owners()
        await replicas.start("b")
        # Half move within a round or two; a host that takes its shard starts (role, reads) before it counts as
        # owned, which a loaded machine can stretch past one lease of virtual time (the worker threads' moto).
        await world.vt.run_until_true(lambda: sorted(
            names[0] for names in replicas.owners().values() if names) == ["a", "a", "b", "b"], limit=LEASE * 2)
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


async def test_a_new_owner_resumes_the_watch_list_before_its_first_sweep_finds_anything(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    # The shard whose watch list is saved first (in its slot of every 30 s: 1.6 s in). The runaway is there before a
    # starts: a's sweep at the shard's start lists it, a's periodic save keeps it, and the limit (6 s) only has to
    # outlast that save and b's start. No sweeps after the first ones: nothing else would find the runaway.
    shard = min(SHARDS, key=lambda shard: next_slot(world.now, WATCH_SAVE_INTERVAL, f"watch {Shard(*shard)}"))
    async with AsyncExitStack() as stack, fleet(world) as replicas:
        athena = await members(world, stack, (shard,))
        _, calculation_id = await runaway(athena[shard])
        submitted = world.now
        await replicas.start("a", **NO_SWEEPS)
        saved_at = next_slot(world.now, WATCH_SAVE_INTERVAL, f"watch {Shard(*shard)}")
        assert saved_at < submitted + ms(2)
        await world.vt.run_until(saved_at + ms(0.1))  # a's watch list is saved (its periodic save, not a test's)
        saved = await replicas.services["a"].storage.for_shard(Shard(*shard)).watch()
        assert [entry.target.target_id for entry in saved] == [calculation_id]
        # From now on, listing sessions fails in this account-region: a new owner's sweeps find nothing there.
        world.emulator.backend_for(*shard).add_error("InternalServerException", operation="ListSessions")
        await replicas.stop("a")
        await replicas.start("b", **NO_SWEEPS)
        await world.vt.run_until(submitted + RUNAWAY_LIMIT + ms(1))
        [stop] = calls_in(world, "StopCalculationExecution", shard, CalculationExecutionId=calculation_id)
        assert submitted + RUNAWAY_LIMIT <= stop.time <= submitted + RUNAWAY_LIMIT + CROSSING_MARGIN
        assert replicas.metric("b", "athena_supervisor_actions_total", action="stop", outcome="sent") == 1


def to_ms(instant: datetime) -> datetime:
    """An instant as the audit log writes it (truncated to the millisecond)."""
    return instant.replace(microsecond=instant.microsecond // 1000 * 1000)


def sweeps_of(world: VirtualWorld, shard: tuple[str, str], since: datetime) -> list[datetime]:
    """The instants the shard's sessions were listed (one sweep lists each state at one instant) since ``since``."""
    return sorted({call.time for call in calls_in(world, "ListSessions", shard) if call.time >= since})


async def test_shards_sweep_in_their_own_slots_and_a_resumed_shard_waits_for_its_slot(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    interval = timedelta(seconds=5)
    # The runaway's limit outlasts b's takeover (an interval after it started) by more than an interval: b's first
    # sweep of its shard, in the shard's slot, comes before the crossing.
    limit = ms(12)
    slow = {"discovery_interval": "5s",
            "policies": [{"name": "etl-limits", "workgroups": ["etl-*"], "calculation": {"max_runtime": "12s"}}]}
    async with AsyncExitStack() as stack, fleet(world) as replicas:
        athena = await members(world, stack)
        started = world.now
        await replicas.start("a", **slow)
        # The runaway (of the second part) comes an interval before a stops: a sweep of its shard lists it meanwhile.
        await world.vt.run_until(started + ms(12) - interval)
        session_id, calculation_id = await runaway(athena[SHARDS[0]])
        submitted = world.now
        await world.vt.run_for(interval)
        # The first sweep at once; then each shard in its own slot of the interval, not all at the same moments.
        for shard in SHARDS:
            slot = next_slot(started, interval, "/".join(shard))
            slots = [slot + interval * k for k in range(3) if slot + interval * k <= started + ms(12)]
            assert sweeps_of(world, shard, started) == [to_ms(instant) for instant in (started, *slots)], shard
        assert len({next_slot(started, interval, "/".join(shard)) for shard in SHARDS}) == len(SHARDS)
        # a stops; b takes every shard and resumes the saved watch lists: it knows the runaway's deadline, so the
        # first sweep of its shard waits for its slot, and the runaway is stopped at its crossing all the same.
        await replicas.services["a"].hosts[Shard(*SHARDS[0])].runtime.checks.save_watch()  # as its slot would
        await replicas.stop("a")
        await replicas.start("b", **slow)
        taken = world.now
        await world.vt.run_until_true(lambda: all(names == ["b"] for names in replicas.owners().values()),
                                      limit=LEASE)
        await world.vt.run_until(max(taken + interval, submitted + limit + ms(1)))
        # The shard that resumed a target waits for its slot (before the crossing); the others, which know nothing,
        # sweep at once.
        assert next_slot(taken, interval, "/".join(SHARDS[0])) < submitted + limit
        assert sweeps_of(world, SHARDS[0], taken)[0] == to_ms(next_slot(taken, interval, "/".join(SHARDS[0])))
        assert all(sweeps_of(world, shard, taken)[0] < taken + LEASE for shard in SHARDS[1:])
        [stop] = calls_in(world, "StopCalculationExecution", SHARDS[0], CalculationExecutionId=calculation_id)
        assert submitted + limit <= stop.time <= submitted + limit + CROSSING_MARGIN
        assert session_id


async def test_a_new_owner_saving_before_it_read_the_whole_saved_list_keeps_every_saved_target(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    # Sweeps each second: the runaways, started after a's first sweep, are listed by its next one.
    later = {"discovery_interval": "1s",
             "policies": [{"name": "etl-limits", "workgroups": ["etl-*"], "calculation": {"max_runtime": "5m"}}]}
    async with AsyncExitStack() as stack, fleet(world) as replicas:
        athena = await members(world, stack, SHARDS[:1])
        await replicas.start("a", **later)
        runaways = [(await runaway(athena[SHARDS[0]]))[1] for _ in range(3)]
        await world.vt.run_for(ms(1.5))  # swept; saved (as its slot would): due in 5 minutes, past b's first read
        a = replicas.services["a"].hosts[Shard(*SHARDS[0])].runtime
        assert a is not None
        await a.checks.save_watch()
        # From now on, listing sessions fails in this account-region: b knows the runaways only from the saved list.
        world.emulator.backend_for(*SHARDS[0]).add_error("InternalServerException", operation="ListSessions")
        await replicas.stop("a")
        await replicas.start("b", **later)
        shard = Shard(*SHARDS[0])
        await world.vt.run_until_true(lambda: shard in replicas.services["b"].hosts
                                      and replicas.services["b"].hosts[shard].runtime is not None, limit=LEASE)
        runtime = replicas.services["b"].hosts[shard].runtime
        assert runtime is not None
        # b read only the targets due within a minute (none); it saves at once, as an event consumer may: the saved
        # targets it had not read yet are read first, scheduled, and kept, not deleted.
        await runtime.checks.save_watch()
        kept = await replicas.services["b"].storage.for_shard(shard).watch()
        assert sorted(entry.target.target_id for entry in kept) == sorted(runaways)
        assert {str(key.target_id) for key, _when, _kind in runtime.checks.deadlines.entries()} >= set(runaways)


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


async def test_renewals_run_side_by_side_and_one_slower_than_the_acting_window_stops_its_shard_not_the_rounds(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    slow: list[SlowRenewal] = []

    def storage(table: Table) -> Storage:
        # Every renewal takes 1.5 s (a busy replica, a slow store): one after the other, the second lease of a round
        # would be renewed 3 s after the round began, past its acting deadline (4 s after the previous round's).
        slow.append(SlowRenewal(table, world.clock, LEASE / 2, each=timedelta(seconds=1.5)))
        return slow[0]

    async with fleet(world) as replicas:  # about leases alone: no workgroups to supervise, short host sweeps
        await replicas.start("a", storage=storage, **NO_SWEEPS)
        # Six rounds: one renewal after the other, the first round after the leases were taken would lose one.
        await world.vt.run_for(LEASE * 2)
        assert replicas.metric("a", "athena_supervisor_lease_changes_total", outcome="lost") == 0
        assert replicas.metric("a", "athena_supervisor_lease_changes_total", outcome="acquired") == len(SHARDS)
        assert all(names == ["a"] for names in replicas.owners().values()), replicas.owners()
        # One renewal takes 3 s: its shard's acting deadline (4 s after the previous round's renewal, 2 s before)
        # passes meanwhile, so that shard stops. The round goes on: the late answer is not taken for a renewal of
        # the stopped shard, the others are renewed, and the replica takes the shard back once its lease expired:
        # the slow renewal is sent within a third of a lease (2 s), stamps its lease to expire a lease (6 s) later,
        # and the round after that expiry (2 s at most) takes it back: within 10 s, a round to spare in 12.
        slow[0].armed = True
        with capture_logs() as logs:
            await world.vt.run_for(LEASE * 2)
        events = [entry["event"] for entry in logs]
        assert "cluster.store_failed" not in events, [e for e in logs if e["event"] == "cluster.store_failed"]
        assert events.count("cluster.acting_deadline_passed") == 1
        assert replicas.metric("a", "athena_supervisor_lease_changes_total", outcome="lost") == 1
        assert replicas.metric("a", "athena_supervisor_lease_changes_total", outcome="acquired") == len(SHARDS) + 1
        assert all(names == ["a"] for names in replicas.owners().values()), replicas.owners()


class SlowLeaseReads(DynamoDbStorage):
    """The table as it is, except that the next read of every lease, once ``armed``, takes ``delay``."""

    def __init__(self, table: Table, clock: Any, delay: timedelta) -> None:
        super().__init__(table, retention=timedelta(days=90))
        self.clock, self.delay = clock, delay
        self.armed = False

    async def leases(self) -> list[Lease]:
        if self.armed:
            self.armed = False
            await self.clock.sleep(self.delay.total_seconds())
        return await super().leases()


async def test_a_replica_taking_many_shards_renews_them_while_their_hosts_start_and_a_slow_round_holds_up_none(
    virtual_world: VirtualWorld,
) -> None:
    world = virtual_world
    slow: list[SlowLeaseReads] = []

    def storage(table: Table) -> Storage:
        slow.append(SlowLeaseReads(table, world.clock, LEASE * 2))
        return slow[0]

    async with AsyncExitStack() as stack, fleet(world) as replicas:
        athena = await members(world, stack, SHARDS[:1])
        # Every shard's host first assumes its account's role: 3 s each. The four hosts start side by side, and the
        # leases are renewed meanwhile: a round that waited for each host in turn would pass the first shard's acting
        # deadline (4 s after it was taken) and lose it.
        world.emulator.backend.set_faults("AssumeRole", latency=3.0)
        started = world.now
        await replicas.start("a", storage=storage)
        # Submitted while the hosts start: the first sweep of its shard, once the role is assumed, lists it, and the
        # shard acts at its crossing while the leases are watched. Two leases of virtual time: a round that waited
        # for the hosts in turn would end 6 s after the take and lose the first shard at its deadline (4 s).
        _, calculation_id = await runaway(athena[SHARDS[0]])
        submitted = world.now
        await world.vt.run_for(LEASE * 2)
        assert replicas.metric("a", "athena_supervisor_lease_changes_total", outcome="lost") == 0
        assert replicas.metric("a", "athena_supervisor_lease_changes_total", outcome="acquired") == len(SHARDS)
        assert all(names == ["a"] for names in replicas.owners().values()), replicas.owners()
        assert len(world.calls("AssumeRole")) == len(ACCOUNTS)  # the regions of an account share its role session
        assert all(call.time < started + ms(0.5) for call in world.calls("AssumeRole"))
        [stop] = calls_in(world, "StopCalculationExecution", SHARDS[0], CalculationExecutionId=calculation_id)
        assert submitted + RUNAWAY_LIMIT <= stop.time <= submitted + RUNAWAY_LIMIT + CROSSING_MARGIN
        # One round's read of the leases takes two lease durations (a store answering slowly, a replica busy
        # taking over shards): the leases are renewed meanwhile, each on its own, and no shard stops acting (a
        # runaway submitted now is stopped at its crossing, 6 s on, while the read that began within 2 s is slow).
        slow[0].armed = True
        _, calculation_id = await runaway(athena[SHARDS[0]])
        submitted = world.now
        with capture_logs() as logs:
            await world.vt.run_for(LEASE * 2 + ms(1))
        assert [entry for entry in logs if entry["event"] in ("cluster.acting_deadline_passed", "cluster.lease_lost")
                ] == []
        assert replicas.metric("a", "athena_supervisor_lease_changes_total", outcome="lost") == 0
        assert all(names == ["a"] for names in replicas.owners().values()), replicas.owners()
        [stop] = calls_in(world, "StopCalculationExecution", SHARDS[0], CalculationExecutionId=calculation_id)
        assert submitted + RUNAWAY_LIMIT <= stop.time <= submitted + RUNAWAY_LIMIT + CROSSING_MARGIN


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
    async with fleet(world) as replicas:  # about leases alone: no workgroups to supervise, short host sweeps
        await replicas.start("a0", **NO_SWEEPS)
        await world.vt.run_for(ms(1))
        await replicas.start(first, **NO_SWEEPS)
        await replicas.start(second, **NO_SWEEPS)

        def settled() -> bool:  # a0 holds its two shards, the survivors one each
            owners = replicas.owners()
            return all(len(names) == 1 for names in owners.values()) and sorted(
                f"{account}/{region}" for (account, region), names in owners.items() if names == ["a0"]) == sorted(held)

        await world.vt.run_until_true(settled, limit=LEASE * 2)
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


async def test_events_on_one_queue_reach_the_replica_that_holds_their_shard(virtual_world: VirtualWorld) -> None:
    """Event-fed discovery in a fleet: both replicas drain one queue; an event for a shard the other replica
    holds is handed back at once (visibility 0) and acted on by its owner. No sweep runs after the first ones."""
    world = virtual_world
    async with AsyncExitStack() as stack, fleet(world) as replicas:
        athena = await members(world, stack)
        frontend = await stack.enter_async_context(MotoFrontend(replicas.moto).serving())
        sqs = await stack.enter_async_context(aws_client("sqs", frontend.endpoint_url))
        queue = (await sqs.create_queue(QueueName=f"athena-events-{uuid.uuid4().hex[:8]}"))["QueueUrl"]
        discovery = {"backstop_interval": "10m", "events": {
            "sqs_queue_url": queue, "endpoint_url": frontend.endpoint_url, "region": "us-east-1", "wait_time": "0s"}}
        # The limit (6 s) is longer than a few hand-backs: each takes up to a poll (a second, jittered) of the other
        # replica (all eight events are applied within the first second here).
        await replicas.start("a", discovery=discovery)
        await replicas.start("b", discovery=discovery)
        await world.vt.run_until_true(lambda: split_between_a_and_b(replicas), limit=LEASE)
        owners = replicas.owners()
        assert sorted(names[0] for names in owners.values()) == ["a", "a", "b", "b"], owners
        submitted = world.now
        calculations = {}
        for (account, region), client in athena.items():
            session_id, calculation_id = await runaway(client)
            calculations[(account, region)] = calculation_id
            for event in (
                api_call_event("StartSession", world.now, {"workGroup": "etl-a"}, {"sessionId": session_id},
                               account=account, region=region),
                api_call_event("StartCalculationExecution", world.now, {"sessionId": session_id},
                               {"calculationExecutionId": calculation_id}, account=account, region=region),
            ):
                await sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(event))
        await world.vt.run_until(submitted + RUNAWAY_LIMIT + ms(1))
        for shard, calculation_id in calculations.items():
            [stop] = calls_in(world, "StopCalculationExecution", shard, CalculationExecutionId=calculation_id)
            assert stop.time == submitted + RUNAWAY_LIMIT + CROSSING_MARGIN, shard
            assert replicas.metric(owners[shard][0], "athena_supervisor_actions_total", account=shard[0],
                                   region=shard[1], action="stop", outcome="sent") == 1
        applied = sum(replicas.metric(name, "athena_supervisor_events_received_total", outcome="applied")
                      for name in "ab")
        assert applied == 8  # each session and calculation once, by its shard's owner
        handed_back = sum(replicas.metric(name, "athena_supervisor_events_received_total", outcome="not_owned")
                          for name in "ab")
        assert handed_back >= 1  # one replica's receive takes messages of the other's shards too
        assert not [call for call in world.calls("ListCalculationExecutions") if call.time > submitted]
