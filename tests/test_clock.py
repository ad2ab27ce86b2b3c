from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import anyio.lowlevel
import pytest

from supervisor.clock import ManualClock, SystemClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_sleepers_wake_exactly_when_the_clock_reaches_their_deadline() -> None:
    clock = ManualClock(T0)
    woke: list[tuple[str, datetime]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep_until(T0 + timedelta(seconds=seconds))
        woke.append((name, clock.now()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper, "late", 2)
        tg.start_soon(sleeper, "early", 1)
        await anyio.wait_all_tasks_blocked()
        assert clock.next_deadline() == T0 + timedelta(seconds=1)
        clock.advance(timedelta(milliseconds=999))
        await anyio.wait_all_tasks_blocked()
        assert woke == []
        clock.advance(0.001)
        await anyio.wait_all_tasks_blocked()
        assert woke == [("early", T0 + timedelta(seconds=1))]
        assert clock.next_deadline() == T0 + timedelta(seconds=2)
        clock.advance_to(T0 + timedelta(seconds=5))
    assert woke[1] == ("late", T0 + timedelta(seconds=5))
    assert clock.next_deadline() is None


async def test_a_wakeup_ends_the_sleep_early_and_withdraws_its_deadline() -> None:
    clock = ManualClock(T0)
    wakeup = anyio.Event()
    results: list[bool] = []

    async def sleeper() -> None:
        results.append(await clock.sleep_until(T0 + timedelta(seconds=10), wakeup))

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await anyio.wait_all_tasks_blocked()
        assert clock.next_deadline() == T0 + timedelta(seconds=10)
        wakeup.set()
    assert results == [True]
    assert clock.next_deadline() is None
    assert clock.now() == T0
    assert await clock.sleep_until(T0 + timedelta(seconds=1), wakeup) is True  # already set: no sleep


async def test_a_cancelled_sleeper_withdraws_its_deadline() -> None:
    clock = ManualClock(T0)
    with anyio.move_on_after(0.01):
        await clock.sleep(60)
    assert clock.next_deadline() is None


async def test_sleep_is_relative_and_a_past_deadline_returns_at_once() -> None:
    clock = ManualClock(T0)
    assert await clock.sleep_until(T0) is False
    async with anyio.create_task_group() as tg:
        tg.start_soon(clock.sleep, 1.5)
        await anyio.wait_all_tasks_blocked()
        assert clock.next_deadline() == T0 + timedelta(seconds=1.5)
        clock.advance(1.5)


def test_time_only_moves_forward_and_is_aware() -> None:
    clock = ManualClock(T0)
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance_to(T0 - timedelta(seconds=1))
    with pytest.raises(ValueError, match="aware"):
        ManualClock(datetime(2026, 1, 1))


async def test_system_clock_sleeps_in_real_time_and_wakes_early_on_the_event() -> None:
    clock = SystemClock()
    assert clock.now().tzinfo is UTC
    wakeup = anyio.Event()
    wakeup.set()
    with anyio.fail_after(1):
        assert await clock.sleep_until(clock.now() + timedelta(hours=1), wakeup) is True
        assert await clock.sleep_until(clock.now() + timedelta(milliseconds=5)) is False
        assert await clock.sleep_until(clock.now() - timedelta(seconds=1), anyio.Event()) is False
        await clock.sleep(0.001)
