"""Virtual time for in-process scenario tests: the daemon and the emulator share one ManualClock, and the
driver jumps it to the next sleeper's deadline whenever the whole system is quiescent.

Quiescent means, for ``settle_iterations`` consecutive event-loop iterations:

- no callback is ready to run in the asyncio loop (``loop._ready``, a private deque: asserted to exist);
- no thread work is outstanding: nothing borrowed from anyio's default thread limiter (the daemon's
  blocking work goes through ``anyio.to_thread.run_sync`` without a custom limiter) and no job in the
  loop's default executor (``asyncio.to_thread``, ``getaddrinfo``: counted by wrapping
  ``loop.run_in_executor`` on this loop instance while the driver runs).

Loopback TCP between the daemon's aiobotocore client and the in-process emulator needs nothing special: on
Linux the kernel delivers a loopback write to the peer socket (in practice) before ``send`` returns, so
the next ``select(0)`` of the loop (one per iteration) turns a request in transit into a ready callback.
``tests/test_virtual_time.py`` checks that no request is ever received at a later virtual instant than it
was sent; measured on 2 cores with both kept busy by other processes, 1 quiet iteration already gave no
mismatch in 1,800 requests from 3 concurrent clients, so the default of 3 is margin. ``settle_seconds``
(default 0) adds a real wait that quiescence must survive (the loop blocks in ``select``, so late I/O wakes
it), for a kernel that defers loopback delivery; under CPU load even 0.5 ms costs a scheduler round trip
per step.

What the driver cannot see: real-time waits (``anyio.sleep``, ``move_on_after``, ``time.monotonic``) and
work in private thread limiters. Code under test must wait on the injected clock. A test that deliberately
makes the daemon wait in real time (a webhook receiver that never answers, so the client's real-time timeout
fires) declares it with ``vt.busy(...)``: time stands still while it lasts.

Usage::

    async with virtual_time(clock) as vt:
        await vt.run_for(5)                      # run 5 virtual seconds, stopping at every deadline
        stops = await vt.run_until_true(lambda: world.calls("StopCalculationExecution"), limit=10)
        await vt.run_until_set(stopped)          # while another task awaits something on the clock
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar, overload

import anyio
import anyio.to_thread

from supervisor.clock import ManualClock

T = TypeVar("T")

SETTLE_ITERATIONS = 3
SETTLE_SECONDS = 0.0
QUIESCENCE_TIMEOUT = 30.0


class NotQuiescent(AssertionError):
    """The system kept working (in real time) without ever becoming quiescent."""


class EmulatorClockView:
    """The emulator's clock protocol over the test's :class:`ManualClock`: ``now()`` in epoch seconds, and an
    ``async sleep`` (for injected latency) on the same virtual time."""

    def __init__(self, clock: ManualClock) -> None:
        self._clock = clock

    def now(self) -> float:
        return self._clock.now().timestamp()

    async def sleep(self, seconds: float) -> None:
        await self._clock.sleep(seconds)


def _ready_queue(loop: asyncio.AbstractEventLoop) -> collections.deque[Any]:
    ready = getattr(loop, "_ready", None)
    assert isinstance(ready, collections.deque), (
        f"{type(loop).__name__} has no _ready deque: virtual time needs asyncio's BaseEventLoop"
    )
    return ready


class VirtualTime:
    """Drives a :class:`ManualClock`; build it with :func:`virtual_time`.

    Args:
        clock: the clock the daemon and the emulator read.
        settle_iterations: consecutive quiet loop iterations that count as quiescent.
        settle_seconds: real seconds quiescence must also survive (late loopback delivery).
        quiescence_timeout: real seconds after which a never-quiet system fails the test.
    """

    def __init__(self, clock: ManualClock, *, settle_iterations: int = SETTLE_ITERATIONS,
                 settle_seconds: float = SETTLE_SECONDS, quiescence_timeout: float = QUIESCENCE_TIMEOUT) -> None:
        self.clock = clock
        self.settle_iterations = settle_iterations
        self.settle_seconds = settle_seconds
        self.quiescence_timeout = quiescence_timeout
        self.steps = 0  # deadlines jumped to
        self._loop = asyncio.get_running_loop()
        self._ready = _ready_queue(self._loop)
        self._threads = anyio.to_thread.current_default_thread_limiter()  # this loop's, for as long as it runs
        self._executor_jobs = 0
        self._busy: list[str] = []

    # -- quiescence -------------------------------------------------------------------------------

    def _install(self) -> None:
        original = self._loop.run_in_executor

        def counting(executor: Any, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
            future = original(executor, func, *args)
            self._executor_jobs += 1
            future.add_done_callback(self._executor_job_done)
            return future

        self._loop.run_in_executor = counting  # type: ignore[method-assign, assignment]

    def _uninstall(self) -> None:
        del self._loop.run_in_executor  # the instance attribute; the class method shows through again

    def _executor_job_done(self, _: object) -> None:
        self._executor_jobs -= 1

    def _is_busy(self) -> bool:
        """:meth:`activity` is not None, without describing it (this runs at every loop iteration)."""
        return bool(self._ready or self._threads.borrowed_tokens or self._executor_jobs or self._busy)

    def activity(self) -> str | None:
        """What keeps the system busy right now, or None when nothing does."""
        if self._ready:
            return f"{len(self._ready)} ready callbacks, e.g. {self._ready[0]!r}"
        threads = self._threads.borrowed_tokens
        if threads:
            return f"{threads} anyio worker threads busy"
        if self._executor_jobs:
            return f"{self._executor_jobs} default-executor jobs outstanding"
        if self._busy:
            return f"busy: {self._busy[0]}"
        return None

    @contextmanager
    def busy(self, what: str) -> Iterator[None]:
        """Declare work the driver cannot see (e.g. a server handler holding a request until the client's
        real-time timeout gives up): the clock stands still until the block ends."""
        self._busy.append(what)
        try:
            yield
        finally:
            self._busy.remove(what)

    async def _quiet_iterations(self, started: float) -> None:
        quiet = 0
        while quiet < self.settle_iterations:
            await asyncio.sleep(0)
            if not self._is_busy():
                quiet += 1
                continue
            quiet = 0
            if time.monotonic() - started > self.quiescence_timeout:
                raise NotQuiescent(f"not quiescent after {self.quiescence_timeout}s of real time: {self.activity()}")
            if not self._ready:  # only threads (or declared work) are busy: let them have the CPU
                await asyncio.sleep(0.0002)

    async def settle(self) -> None:
        """Return once nothing in the process can make progress without the clock moving."""
        started = time.monotonic()
        await self._quiet_iterations(started)
        if self.settle_seconds > 0:
            await asyncio.sleep(self.settle_seconds)
            await self._quiet_iterations(started)

    # -- running time forward -----------------------------------------------------------------------

    def _instant(self, limit: datetime | timedelta | float) -> datetime:
        if isinstance(limit, datetime):
            return limit
        return self.clock.now() + (limit if isinstance(limit, timedelta) else timedelta(seconds=limit))

    async def run_until(self, instant: datetime) -> None:
        """Run every deadline up to ``instant``, then leave the clock at ``instant`` with the system settled."""
        if instant < self.clock.now():
            raise ValueError(f"{instant.isoformat()} is in the (virtual) past: now is {self.clock.now().isoformat()}")
        while True:
            await self.settle()
            deadline = self.clock.next_deadline()
            if deadline is None or deadline > instant:
                break
            self.clock.advance_to(deadline)
            self.steps += 1
        if self.clock.now() < instant:
            self.clock.advance_to(instant)
            await self.settle()

    async def run_for(self, duration: timedelta | float) -> None:
        """Run ``duration`` (seconds or a timedelta) of virtual time."""
        await self.run_until(self._instant(duration))

    @overload
    async def run_until_true(
        self, predicate: Callable[[], Awaitable[T]], *, limit: datetime | timedelta | float
    ) -> T: ...

    @overload
    async def run_until_true(self, predicate: Callable[[], T], *, limit: datetime | timedelta | float) -> T: ...

    async def run_until_true(self, predicate: Callable[[], Any], *, limit: datetime | timedelta | float) -> Any:
        """Jump from deadline to deadline until ``predicate()`` (sync or async) is truthy; return its value.

        The predicate is checked with the system settled, at the start and after every jump; the clock stops
        at the first instant it holds. Fails if it still does not hold at ``limit`` (an instant, or a
        duration from now), or if nothing is scheduled any more.
        """
        until = self._instant(limit)
        while True:
            await self.settle()
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            deadline = self.clock.next_deadline()
            if deadline is None or deadline > until:
                why = "nothing is scheduled any more" if deadline is None else (
                    f"the next deadline is {deadline.isoformat()}")
                raise AssertionError(
                    f"condition still false at {self.clock.now().isoformat()} (virtual), limit "
                    f"{until.isoformat()}: {why}; last value {value!r}"
                )
            self.clock.advance_to(deadline)
            self.steps += 1

    async def run_until_set(self, event: anyio.Event, *, poll: float = 0.01) -> None:
        """Jump from deadline to deadline until ``event`` is set by work going on in other tasks (e.g. a daemon
        shutting down, whose notifier flush waits on the clock); while nothing is scheduled on the clock, wait
        for it ``poll`` real seconds at a time (work the driver cannot see may still be under way)."""
        while True:
            await self.settle()
            if event.is_set():
                return
            deadline = self.clock.next_deadline()
            if deadline is None:
                with anyio.move_on_after(poll):
                    await event.wait()
                continue
            self.clock.advance_to(deadline)
            self.steps += 1


@asynccontextmanager
async def virtual_time(clock: ManualClock, **options: Any) -> AsyncIterator[VirtualTime]:
    """``async with virtual_time(clock) as vt:`` — a driver for ``clock`` in the running asyncio loop."""
    driver = VirtualTime(clock, **options)
    driver._install()
    try:
        yield driver
    finally:
        driver._uninstall()
