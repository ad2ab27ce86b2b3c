"""The virtual-time driver: exact instants, thread work waited for, loopback requests never overtaken."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from aiobotocore.config import AioConfig

from athena_spark_emulator import Emulator
from supervisor.clock import ManualClock
from tests.virtual_fixtures import _test_client_session  # one session (and model loader) for the tests' clients
from tests.virtual_time import EmulatorClockView, NotQuiescent, virtual_time

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_run_until_stops_at_every_deadline_and_leaves_the_clock_at_the_instant() -> None:
    clock = ManualClock(T0)
    ticks: list[datetime] = []

    async def ticker() -> None:
        while True:
            await clock.sleep(0.25)
            ticks.append(clock.now())

    async with virtual_time(clock) as vt, anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await vt.run_until(T0 + timedelta(seconds=1.1))
        assert ticks == [T0 + timedelta(milliseconds=250 * n) for n in range(1, 5)]
        assert clock.now() == T0 + timedelta(seconds=1.1)
        await vt.run_for(timedelta(milliseconds=150))
        assert ticks[-1] == T0 + timedelta(seconds=1.25)
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("offload", ["anyio", "asyncio"])
async def test_time_stands_still_while_threads_work(offload: str) -> None:
    clock = ManualClock(T0)
    seen: list[datetime] = []

    async def worker() -> None:
        for _ in range(3):
            before = clock.now()
            if offload == "anyio":
                await anyio.to_thread.run_sync(time.sleep, 0.05)
            else:
                await asyncio.to_thread(time.sleep, 0.05)
            assert clock.now() == before, "the clock moved while a thread worked"
            seen.append(before)
            await clock.sleep(1)

    async with virtual_time(clock) as vt, anyio.create_task_group() as tg:
        tg.start_soon(worker)
        await vt.run_for(10)
    assert seen == [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]


async def test_run_until_true_returns_at_the_first_instant_the_predicate_holds() -> None:
    clock = ManualClock(T0)
    done = anyio.Event()

    async def later() -> None:
        await clock.sleep(3)
        await clock.sleep(4)
        done.set()

    async def is_done() -> bool:
        return done.is_set()

    async with virtual_time(clock) as vt, anyio.create_task_group() as tg:
        tg.start_soon(later)
        assert await vt.run_until_true(is_done, limit=60) is True
        assert clock.now() == T0 + timedelta(seconds=7)
        assert vt.steps == 2


async def test_run_until_true_fails_clearly_at_its_limit_or_when_nothing_is_scheduled() -> None:
    clock = ManualClock(T0)
    async with virtual_time(clock) as vt, anyio.create_task_group() as tg:
        with pytest.raises(AssertionError, match="nothing is scheduled any more"):
            await vt.run_until_true(lambda: False, limit=5)
        tg.start_soon(clock.sleep, 30)
        with pytest.raises(AssertionError, match=r"limit 2026-01-01T00:00:05\+00:00: the next deadline is "
                                                 r"2026-01-01T00:00:30"):
            await vt.run_until_true(lambda: False, limit=T0 + timedelta(seconds=5))
        tg.cancel_scope.cancel()


async def test_a_system_that_never_settles_is_reported() -> None:
    clock = ManualClock(T0)

    async def spin() -> None:
        while True:  # noqa: ASYNC110 - a task that never lets the system settle is the point
            await asyncio.sleep(0)

    async with virtual_time(clock, quiescence_timeout=0.2) as vt, anyio.create_task_group() as tg:
        tg.start_soon(spin)
        with pytest.raises(NotQuiescent, match="ready callbacks"):
            await vt.run_for(1)
        tg.cancel_scope.cancel()


async def test_the_emulator_reads_and_sleeps_on_the_same_virtual_time() -> None:
    clock = ManualClock(T0)
    view = EmulatorClockView(clock)
    assert view.now() == T0.timestamp()
    async with virtual_time(clock) as vt, anyio.create_task_group() as tg:
        tg.start_soon(view.sleep, 2.5)
        await vt.run_until_true(lambda: clock.next_deadline() is None, limit=10)
        assert view.now() == T0.timestamp() + 2.5


async def test_no_loopback_request_is_overtaken_by_a_clock_jump() -> None:
    """Requests to the in-process emulator are received at the virtual instant they were sent: the driver
    never mistakes a request in transit for quiescence (several clients, sleeps of varied lengths)."""
    clock = ManualClock(T0)
    sent: list[float] = []
    async with Emulator(clock=EmulatorClockView(clock), workgroups=["w"]) as emulator, \
            _test_client_session().create_client(
                "athena", endpoint_url=emulator.endpoint_url, region_name="us-east-1", aws_access_key_id="x",
                aws_secret_access_key="y", config=AioConfig(retries={"mode": "standard", "total_max_attempts": 1}),
            ) as athena:

        async def client(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(40):
                await clock.sleep(rng.choice([0.001, 0.01, 0.25, 1.0]))
                sent.append(clock.now().timestamp())
                await athena.list_work_groups()

        async with virtual_time(clock) as vt, anyio.create_task_group() as tg:
            for seed in range(4):
                tg.start_soon(client, seed)
            await vt.run_until_true(lambda: len(sent) == 160 and clock.next_deadline() is None, limit=3600)
        received = [entry["time"] for entry in emulator.backend.audit.entries()]
    assert len(received) == 160
    expected = [datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" for stamp in sent]
    assert sorted(received) == sorted(expected)
