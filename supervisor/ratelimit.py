"""A token bucket whose waiters are served strictly by priority (lowest number first), then FIFO.

Enforcement calls must never wait behind discovery calls: when a token frees up it goes to the most
urgent waiter. Only the head of the queue sleeps on the refill; the others sleep until woken, so the cost
per token is O(log n) whatever the number of waiters.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio


@dataclass(order=True, slots=True)
class _Waiter:
    priority: int
    seq: int
    event: anyio.Event = field(compare=False, default_factory=anyio.Event)

    def wake(self) -> None:
        self.event.set()


class PriorityRateLimiter:
    """``rate`` tokens per second, at most ``burst`` banked."""

    def __init__(self, rate: float, burst: float | None = None, *, monotonic: Callable[[], float] = time.monotonic):
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._monotonic = monotonic
        self._tokens = self.burst
        self._updated = monotonic()
        self._queue: list[_Waiter] = []
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def _refill(self) -> None:
        now = self._monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self, priority: int = 0) -> None:
        """Wait for a token; a lower ``priority`` number is served first."""
        self._refill()
        if not self._queue and self._tokens >= 1:
            self._tokens -= 1
            return
        waiter = _Waiter(priority, next(self._seq))
        previous_head = self._queue[0] if self._queue else None
        heapq.heappush(self._queue, waiter)
        if previous_head is not None and self._queue[0] is waiter:
            previous_head.wake()  # it must stop sleeping on the refill: the newcomer goes first
        try:
            while True:
                waiter.event = anyio.Event()
                if self._queue[0] is waiter:
                    self._refill()
                    if self._tokens >= 1:
                        self._tokens -= 1
                        heapq.heappop(self._queue)
                        if self._queue:
                            self._queue[0].wake()
                        return
                    with anyio.move_on_after((1 - self._tokens) / self.rate):
                        await waiter.event.wait()
                else:
                    await waiter.event.wait()
        except BaseException:
            was_head = bool(self._queue) and self._queue[0] is waiter
            if waiter in self._queue:
                self._queue.remove(waiter)
                heapq.heapify(self._queue)
            if was_head and self._queue:
                self._queue[0].wake()
            raise
