"""The one time source of the daemon: wall-clock ``now()`` plus an interruptible ``sleep``.

Everything that reads the time takes a :class:`Clock` so tests can use :class:`ManualClock` and run time
forward deterministically instead of sleeping.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

import anyio


class Clock(Protocol):
    def now(self) -> datetime:
        """Return the current time as an aware UTC datetime."""
        ...

    async def sleep_until(self, when: datetime, wakeup: anyio.Event | None = None) -> bool:
        """Sleep until ``when`` or until ``wakeup`` is set; return True if woken early."""
        ...


class SystemClock:
    """Real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

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


class ManualClock:
    """A clock that only moves when told to; sleepers wake when ``advance`` passes their deadline."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._moved = anyio.Event()

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | float) -> None:
        self._now += delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        moved, self._moved = self._moved, anyio.Event()
        moved.set()

    async def sleep_until(self, when: datetime, wakeup: anyio.Event | None = None) -> bool:
        while self._now < when:
            if wakeup is not None and wakeup.is_set():
                return True
            moved = self._moved
            if wakeup is None:
                await moved.wait()
                continue
            async with anyio.create_task_group() as tg:

                async def wait_and_cancel(event: anyio.Event) -> None:
                    await event.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(wait_and_cancel, moved)
                tg.start_soon(wait_and_cancel, wakeup)
        return wakeup is not None and wakeup.is_set()
