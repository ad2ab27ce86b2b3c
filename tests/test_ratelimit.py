from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest

from supervisor.clock import ManualClock
from supervisor.ratelimit import PriorityRateLimiter
from tests.virtual_time import virtual_time

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_waiters_are_served_by_priority_then_arrival() -> None:
    clock = ManualClock(T0)
    limiter = PriorityRateLimiter(rate=50, burst=1, clock=clock)
    await limiter.acquire(3)  # the bank is empty now
    order: list[tuple[str, timedelta]] = []

    async def take(name: str, priority: int) -> None:
        await limiter.acquire(priority)
        order.append((name, clock.now() - T0))

    async with virtual_time(clock) as vt, anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(take, f"discover{i}", 3)
            await vt.settle()
        tg.start_soon(take, "enforce", 0)
        await vt.settle()
        tg.start_soon(take, "verify", 1)
        await vt.run_for(1)
    assert order == [(name, timedelta(milliseconds=20 * n)) for n, name in enumerate(
        ["enforce", "verify", "discover0", "discover1", "discover2"], start=1)]


async def test_the_rate_is_respected_to_the_microsecond_on_the_injected_clock() -> None:
    clock = ManualClock(T0)
    limiter = PriorityRateLimiter(rate=3, burst=2, clock=clock)
    granted: list[timedelta] = []

    async def take_all() -> None:
        for _ in range(6):
            await limiter.acquire()
            granted.append(clock.now() - T0)

    async with virtual_time(clock) as vt, anyio.create_task_group() as tg:
        tg.start_soon(take_all)
        await vt.run_until_true(lambda: len(granted) == 6, limit=10)
    # Two banked, then one every 1/3 s: each at the ideal instant rounded up to the microsecond (no drift).
    assert granted == [timedelta(0)] * 2 + [timedelta(microseconds=-(-n * 1_000_000 // 3)) for n in range(1, 5)]


async def test_a_priority_with_a_share_gets_it_however_busy_the_more_urgent_ones_are() -> None:
    clock = ManualClock(T0)
    limiter = PriorityRateLimiter(rate=10, burst=1, clock=clock, shares={4: 0.2}, protected=2)
    granted: list[int] = []

    async def keep_taking(priority: int) -> None:
        while len(granted) < 100:
            await limiter.acquire(priority)
            granted.append(priority)

    async with virtual_time(clock) as vt, anyio.create_task_group() as tg:
        for _ in range(8):  # discovery saturates the bucket
            tg.start_soon(keep_taking, 3)
        for _ in range(4):  # accounting waits behind it
            tg.start_soon(keep_taking, 4)
        await vt.run_until_true(lambda: len(granted) >= 100, limit=60)
        tg.cancel_scope.cancel()
    share = granted[:100].count(4) / 100
    assert 0.18 <= share <= 0.22, f"accounting got {share:.0%} of the tokens"
    assert clock.now() - T0 <= timedelta(seconds=10), "the rate is unchanged"


async def test_a_share_is_never_taken_from_enforcement() -> None:
    clock = ManualClock(T0)
    limiter = PriorityRateLimiter(rate=10, burst=1, clock=clock, shares={4: 0.5}, protected=2)
    granted: list[int] = []

    async def keep_taking(priority: int) -> None:
        while len(granted) < 40:
            await limiter.acquire(priority)
            granted.append(priority)

    async with virtual_time(clock) as vt, anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(keep_taking, 0)  # enforcement keeps the bucket busy
        tg.start_soon(keep_taking, 4)
        await vt.run_until_true(lambda: len(granted) >= 40, limit=60)
        tg.cancel_scope.cancel()
    assert 4 not in granted[:40], "enforcement is never delayed for a share"


async def test_without_a_share_the_least_urgent_waits_for_the_others() -> None:
    limiter = PriorityRateLimiter(rate=50, burst=1)
    await limiter.acquire(3)
    order: list[int] = []

    async def take(priority: int) -> None:
        await limiter.acquire(priority)
        order.append(priority)

    async with anyio.create_task_group() as tg:
        tg.start_soon(take, 4)
        await anyio.lowlevel.checkpoint()
        for _ in range(3):
            tg.start_soon(take, 3)
            await anyio.lowlevel.checkpoint()
    assert order == [3, 3, 3, 4]


async def test_an_urgent_newcomer_preempts_the_head_sleeping_on_the_refill() -> None:
    clock = ManualClock(T0)
    limiter = PriorityRateLimiter(rate=1, burst=1, clock=clock)
    await limiter.acquire()
    order: list[tuple[str, timedelta]] = []

    async def take(name: str, priority: int) -> None:
        await limiter.acquire(priority)
        order.append((name, clock.now() - T0))

    async with virtual_time(clock) as vt, anyio.create_task_group() as tg:
        tg.start_soon(take, "discover", 3)
        await vt.run_for(0.5)
        tg.start_soon(take, "enforce", 0)
        await vt.run_for(5)
    assert order == [("enforce", timedelta(seconds=1)), ("discover", timedelta(seconds=2))]


async def test_a_cancelled_head_waiter_hands_over() -> None:
    clock = ManualClock(T0)
    limiter = PriorityRateLimiter(rate=20, burst=1, clock=clock)
    await limiter.acquire()
    granted: list[timedelta] = []
    async with virtual_time(clock) as vt, anyio.create_task_group() as tg:
        head = anyio.CancelScope()

        async def cancelled_head() -> None:
            with head:
                await limiter.acquire(0)

        async def take() -> None:
            await limiter.acquire(1)
            granted.append(clock.now() - T0)

        tg.start_soon(cancelled_head)
        await vt.settle()
        assert limiter.waiting == 1
        head.cancel()
        await vt.settle()
        assert limiter.waiting == 0
        tg.start_soon(take)
        await vt.run_until_true(lambda: granted, limit=1)
    assert granted == [timedelta(milliseconds=50)]


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rate"):
        PriorityRateLimiter(0)
