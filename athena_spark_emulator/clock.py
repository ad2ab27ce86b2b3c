"""Time sources for the emulator: every state is derived from ``clock.now()`` (epoch seconds).

A clock may also have ``async def sleep(seconds)``; injected latency then waits on it, so a test that
drives the daemon and the emulator on one virtual clock sees latency in virtual time. Without it
latency waits in real time (:func:`asyncio.sleep`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Protocol


class Clock(Protocol):
    """Anything with ``now()`` returning the current time as POSIX epoch seconds."""

    def now(self) -> float: ...


class SleepingClock(Clock, Protocol):
    """A clock that can also wait ``seconds`` of its own time (optional; see :func:`sleeper`)."""

    async def sleep(self, seconds: float) -> None: ...


def sleeper(clock: Clock) -> Callable[[float], Awaitable[None]]:
    """How to wait on ``clock``: its own ``sleep`` when it has one, else :func:`asyncio.sleep` (real time)."""
    sleep = getattr(clock, "sleep", None)
    if callable(sleep):
        return sleep  # type: ignore[no-any-return]
    return asyncio.sleep


class SystemClock:
    """Wall-clock time (``time.time()``)."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to; thread-safe, so a test can drive an emulator thread.

    Args:
        start: the initial epoch seconds.
    """

    __slots__ = ("_lock", "_now")

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` and return the new time."""
        if seconds < 0:
            raise ValueError("a ManualClock only moves forward")
        with self._lock:
            self._now += seconds
            return self._now
