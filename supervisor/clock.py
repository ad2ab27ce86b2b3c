"""The one time source of the daemon: wall-clock ``now()`` plus an interruptible sleep.

Everything that reads the time or waits for it takes a :class:`Clock`, so tests can drive the daemon with
:class:`ManualClock` and run time forward deterministically instead of sleeping. A module that calls
``anyio.sleep``, ``move_on_after`` or ``time.monotonic`` for a daemon delay escapes that control.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import anyio


class Clock(Protocol):
    def now(self) -> datetime:
        """Return the current time as an aware UTC datetime."""
        ...

    async def sleep_until(self, when: datetime, wakeup: anyio.Event | None = None) -> bool:
        """Sleep until ``when`` or until ``wakeup`` is set; return True if woken early by ``wakeup``."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` (a convenience over :meth:`sleep_until`, e.g. for retry backoff)."""
        ...


async def _wait_either(first: anyio.Event, second: anyio.Event) -> None:
    """Return as soon as one of two events is set."""
    async with anyio.create_task_group() as task_group:

        async def watch(event: anyio.Event) -> None:
            await event.wait()
            task_group.cancel_scope.cancel()

        task_group.start_soon(watch, second)
        await first.wait()
        task_group.cancel_scope.cancel()


class SystemClock:
    """Real time: ``now()`` is the wall clock; sleeps run on the event loop's monotonic timer."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime, wakeup: anyio.Event | None = None) -> bool:
        delay = (when - self.now()).total_seconds()
        if delay <= 0:
            return wakeup is not None and wakeup.is_set()
        if wakeup is None:
            await anyio.sleep(delay)
            return False
        with anyio.move_on_after(delay):
            await wakeup.wait()
            return True
        return False

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))


@dataclass(order=True, slots=True)
class _Sleeper:
    when: datetime
    seq: int
    event: anyio.Event = field(compare=False, default_factory=anyio.Event)
    done: bool = field(compare=False, default=False)


class ManualClock:
    """A clock that only moves when told to; a sleeper wakes once ``advance`` reaches its deadline.

    :meth:`next_deadline` tells a driver (the tests' virtual-time loop) the earliest instant anyone waits
    for, so it can jump straight there when nothing else is happening.

    Args:
        start: the initial instant (aware UTC).
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._sleepers: list[_Sleeper] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self._now

    def next_deadline(self) -> datetime | None:
        """The earliest deadline of a pending sleeper, or None when nobody sleeps on this clock."""
        while self._sleepers and self._sleepers[0].done:
            heapq.heappop(self._sleepers)
        return self._sleepers[0].when if self._sleepers else None

    def advance(self, delta: timedelta | float) -> None:
        """Move time forward by ``delta`` (seconds or a timedelta) and wake the sleepers now due."""
        self.advance_to(self._now + (delta if isinstance(delta, timedelta) else timedelta(seconds=delta)))

    def advance_to(self, when: datetime) -> None:
        """Move time forward to ``when`` and wake the sleepers now due (time never moves back)."""
        if when < self._now:
            raise ValueError(f"a ManualClock only moves forward: {when.isoformat()} < {self._now.isoformat()}")
        self._now = when
        while self._sleepers and (self._sleepers[0].done or self._sleepers[0].when <= when):
            sleeper = heapq.heappop(self._sleepers)
            if not sleeper.done:
                sleeper.done = True
                sleeper.event.set()

    async def sleep_until(self, when: datetime, wakeup: anyio.Event | None = None) -> bool:
        if wakeup is not None and wakeup.is_set():
            return True
        if when <= self._now:
            return False
        sleeper = _Sleeper(when, next(self._seq))
        heapq.heappush(self._sleepers, sleeper)
        try:
            if wakeup is None:
                await sleeper.event.wait()
            else:
                await _wait_either(sleeper.event, wakeup)
        finally:
            sleeper.done = True  # lazily dropped from the heap; next_deadline() no longer reports it
        return not sleeper.event.is_set() and wakeup is not None and wakeup.is_set()

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._now + timedelta(seconds=max(0.0, seconds)))
