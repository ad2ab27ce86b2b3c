"""A token bucket whose waiters are served by priority (lowest number first), then FIFO.

Enforcement calls must never wait behind discovery calls: when a token frees up it goes to the most
urgent waiter. A priority may be guaranteed a share of the tokens (budget accounting, the least urgent,
gets its own share of the API budget): while it has waiters and got less than its share of the recent
grants, a token that would go to a less urgent waiter (discovery; never enforcement or verification) goes to
its oldest waiter instead, one token at a time. Only the head of the queue sleeps on the refill; the
others sleep until woken, so the cost per token is O(log n) whatever the number of waiters. Refill and
sleep run on the injected :class:`Clock`, so under a manual clock the bucket fills in virtual time and
tests see exact instants.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import anyio

from supervisor.clock import Clock, SystemClock

# Float slack when comparing token counts: a refill sleep rounded up to the microsecond may still leave
# 0.9999999999 tokens, which must count as one rather than cost another sleep.
_EPSILON = 1e-9
# Shares are measured over this many recent grants.
SHARE_WINDOW = 100


@dataclass(order=True, slots=True)
class _Waiter:
    priority: int
    seq: int
    event: anyio.Event = field(compare=False, default_factory=anyio.Event)
    granted: bool = field(compare=False, default=False)

    def wake(self) -> None:
        self.event.set()


class PriorityRateLimiter:
    """``rate`` tokens per second, at most ``burst`` banked.

    Args:
        rate: tokens added per second.
        burst: the most tokens banked (default ``rate``, at least 1).
        clock: the time source for refills and sleeps (default real time).
        shares: priority → the share of tokens (0-1) it gets while it waits, taken from waiters less urgent
            than ``protected``.
        protected: the least urgent priority a share is never taken from (default: none is protected).
    """

    def __init__(self, rate: float, burst: float | None = None, *, clock: Clock | None = None,
                 shares: Mapping[int, float] | None = None, protected: int = -1) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.shares = dict(shares or {})
        self.protected = protected
        if any(not 0 < share < 1 for share in self.shares.values()):
            raise ValueError(f"shares must be between 0 and 1, got {self.shares}")
        self._granted: deque[int] = deque(maxlen=SHARE_WINDOW)
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._clock: Clock = clock or SystemClock()
        self._tokens = self.burst
        self._updated = self._clock.now()
        self._queue: list[_Waiter] = []
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def _refill(self) -> None:
        now = self._clock.now()
        # max(0, ...): a wall clock stepped back must not drain the bucket.
        elapsed = max(0.0, (now - self._updated).total_seconds())
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._updated = now

    def _refill_delay(self) -> timedelta:
        """How long until the bucket holds one token, rounded up to the clock's microsecond."""
        return timedelta(microseconds=math.ceil((1 - self._tokens) / self.rate * 1e6))

    async def acquire(self, priority: int = 0) -> None:
        """Wait for a token; a lower ``priority`` number is served first."""
        self._refill()
        if not self._queue and self._tokens >= 1 - _EPSILON:
            self._tokens -= 1
            self._granted.append(priority)
            return
        waiter = _Waiter(priority, next(self._seq))
        previous_head = self._queue[0] if self._queue else None
        heapq.heappush(self._queue, waiter)
        if previous_head is not None and self._queue[0] is waiter:
            previous_head.wake()  # it must stop sleeping on the refill: the newcomer goes first
        try:
            while True:
                waiter.event = anyio.Event()
                if waiter.granted:
                    return  # a share token handed over by the head
                if self._queue[0] is waiter:
                    self._refill()
                    if self._tokens >= 1 - _EPSILON:
                        self._tokens -= 1
                        owed = self._owed_a_share()
                        if owed is not None:
                            self._hand_over(owed)
                            continue
                        heapq.heappop(self._queue)
                        self._granted.append(priority)
                        if self._queue:
                            self._queue[0].wake()
                        return
                    await self._clock.sleep_until(self._clock.now() + self._refill_delay(), wakeup=waiter.event)
                else:
                    await waiter.event.wait()
        except BaseException:
            if waiter.granted:  # cancelled after the hand-over: the token goes back
                self._tokens += 1
            was_head = bool(self._queue) and self._queue[0] is waiter
            if waiter in self._queue:
                self._queue.remove(waiter)
                heapq.heapify(self._queue)
            if was_head and self._queue:
                self._queue[0].wake()
            raise

    def _owed_a_share(self) -> _Waiter | None:
        """The oldest waiter of a priority that got less than its share of the recent grants, if any. A share
        is only ever taken from the least urgent of the rest (never from a waiter at ``protected`` priority or
        more urgent: enforcement and verification are never delayed), and one token at a time."""
        head = self._queue[0]
        if head.priority <= self.protected or (self._granted and self._granted[-1] in self.shares):
            return None
        for priority, share in self.shares.items():
            if head.priority == priority:
                continue
            if sum(1 for p in self._granted if p == priority) >= share * len(self._granted):
                continue
            waiters = [w for w in self._queue if w.priority == priority]
            if waiters:
                return min(waiters, key=lambda w: w.seq)
        return None

    def _hand_over(self, waiter: _Waiter) -> None:
        self._queue.remove(waiter)
        heapq.heapify(self._queue)
        self._granted.append(waiter.priority)
        waiter.granted = True
        waiter.wake()
