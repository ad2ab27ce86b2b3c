from __future__ import annotations

import time

import anyio
import anyio.lowlevel
import pytest

from supervisor.ratelimit import PriorityRateLimiter


async def test_waiters_are_served_by_priority_then_arrival() -> None:
    limiter = PriorityRateLimiter(rate=50, burst=1)
    await limiter.acquire(3)  # the bank is empty now
    order: list[str] = []

    async def take(name: str, priority: int) -> None:
        await limiter.acquire(priority)
        order.append(name)

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(take, f"discover{i}", 3)
            await anyio.lowlevel.checkpoint()
        tg.start_soon(take, "enforce", 0)
        await anyio.lowlevel.checkpoint()
        tg.start_soon(take, "verify", 1)
    assert order == ["enforce", "verify", "discover0", "discover1", "discover2"]


async def test_the_rate_is_respected() -> None:
    limiter = PriorityRateLimiter(rate=100, burst=1)
    started = time.monotonic()
    for _ in range(21):
        await limiter.acquire()
    assert time.monotonic() - started >= 0.19


async def test_a_cancelled_head_waiter_hands_over() -> None:
    limiter = PriorityRateLimiter(rate=20, burst=1)
    await limiter.acquire()
    with anyio.move_on_after(0.01):
        await limiter.acquire(0)
    assert limiter.waiting == 0
    with anyio.fail_after(1):
        await limiter.acquire(1)


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rate"):
        PriorityRateLimiter(0)
