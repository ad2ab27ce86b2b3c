"""The emulator's CloudTrail events: every successful Athena write call, delivered in the background.

:class:`EventPublisher` (one per emulator, shared by every account-region) turns a served call into its
event (:mod:`~athena_spark_emulator.cloudtrail`) and hands it to the current :class:`Delivery`, if publishing
is configured (``POST /_emulator/events``). A delivery schedules each event per its settings (delay, drop,
duplicate: :mod:`~athena_spark_emulator.event_settings`) on the emulator's clock and one background task
sends whatever is due, up to 10 events per call and up to ``max_in_flight`` calls at once: events that fall
due while the calls are busy wait and go in fuller batches, so delivery keeps up with bursts while the
Athena API only pays for building the event. A failed delivery is logged and counted, never answered to the
Athena caller. Reconfiguring or clearing discards what is pending.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import uuid
from contextlib import AsyncExitStack, suppress
from typing import Any

import structlog

from athena_spark_emulator.clock import Clock, sleeper
from athena_spark_emulator.cloudtrail import PUBLISHED_OPERATIONS, ApiCall, cloudtrail_event
from athena_spark_emulator.event_settings import EventSettings
from athena_spark_emulator.event_targets import BATCH_SIZE, Target, open_target
from athena_spark_emulator.model import load_athena_model

# Calls at once. A batch of 10 costs the emulator about what one event alone costs (~2 ms of CPU in botocore),
# and events that fall due while every slot is busy go together: few slots make batches form sooner.
MAX_IN_FLIGHT = 4
# How early an event may go: a clock's sleep may wake a hair before the instant it was asked for (float
# epoch seconds, microsecond timedeltas), and sleeping again for less than that would spin.
DUE_TOLERANCE = 0.001
COUNTERS = ("events", "published", "dropped", "duplicated", "failed", "pending", "discarded")


class Delivery:
    """One configuration's schedule, sender task, target client and counters.

    Counters: ``events`` (calls that made an event), ``published`` (deliveries the target accepted; a
    duplicate counts again), ``dropped`` (events never delivered, by ``drop_rate``), ``duplicated`` (events
    scheduled twice), ``failed`` (deliveries the target refused or that could not be sent), ``pending``
    (deliveries scheduled or being sent), ``discarded`` (pending when publishing stopped).
    """

    def __init__(self, settings: EventSettings, clock: Clock, *, max_in_flight: int,
                 logger: structlog.typing.FilteringBoundLogger) -> None:
        self.settings = settings
        self._clock = clock
        self._sleep = sleeper(clock)
        self._rng = random.Random(settings.seed)
        self._log = logger
        self._max_in_flight = max_in_flight
        self._slots = asyncio.Semaphore(max_in_flight)
        self._due: list[tuple[float, int, dict[str, Any]]] = []
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._stack = AsyncExitStack()
        self._target: Target | None = None
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self.counts = dict.fromkeys(COUNTERS, 0)

    async def start(self) -> None:
        self._target = await open_target(self.settings, self._stack, max_in_flight=self._max_in_flight)
        self._task = asyncio.create_task(self._run(), name="emulator events delivery")

    def schedule(self, event: dict[str, Any], now: float) -> None:
        """Plan ``event``'s deliveries (dropped, once, or twice) from ``now``."""
        counts = self.counts
        counts["events"] += 1
        delays = self.settings.plan(self._rng)
        if not delays:
            counts["dropped"] += 1
            return
        if len(delays) > 1:
            counts["duplicated"] += 1
        for delay in delays:
            due = now + delay
            if not self._due or due < self._due[0][0]:
                self._wakeup.set()  # the sender sleeps until a later instant, or not at all
            heapq.heappush(self._due, (due, next(self._seq), event))

    def status(self) -> dict[str, int]:
        return {**self.counts, "pending": len(self._due) + self._in_flight}

    async def _run(self) -> None:
        while True:
            if not self._due:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            wait = self._due[0][0] - self._clock.now()
            if wait > DUE_TOLERANCE:
                await self._sleep_or_wake(wait)
                continue
            await self._slots.acquire()  # while every slot is busy, more events fall due: fuller batches
            horizon = self._clock.now() + DUE_TOLERANCE
            batch: list[dict[str, Any]] = []
            while self._due and self._due[0][0] <= horizon and len(batch) < BATCH_SIZE:
                batch.append(heapq.heappop(self._due)[2])
            if not batch:  # cannot happen while the only consumer is this task; keep the slot balanced
                self._slots.release()
                continue
            self._in_flight += len(batch)
            task = asyncio.create_task(self._send(batch), name="emulator events send")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _sleep_or_wake(self, seconds: float) -> None:
        """Sleep ``seconds`` on the clock, or less when an earlier event is scheduled meanwhile."""
        self._wakeup.clear()
        sleeping = asyncio.ensure_future(self._sleep(seconds))
        woken = asyncio.ensure_future(self._wakeup.wait())
        try:
            await asyncio.wait((sleeping, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            woken.cancel()

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        assert self._target is not None
        try:
            refused = await self._target.send(batch)
            if refused:
                self._log.warning("emulator.events_refused", target=self._target.description, events=len(batch),
                                  refused=refused)
        except Exception as error:  # a delivery failure must never reach the Athena API
            refused = len(batch)
            self._log.warning("emulator.events_delivery_failed", target=self._target.description,
                              events=len(batch), error=repr(error))
        finally:
            self._in_flight -= len(batch)
            self._slots.release()
        self.counts["published"] += len(batch) - refused
        self.counts["failed"] += refused

    async def stop(self) -> None:
        """Stop sending; what is pending (scheduled or being sent) is discarded."""
        self.counts["discarded"] += len(self._due) + self._in_flight
        self._due.clear()
        tasks = [task for task in (self._task, *self._sending) if task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
        self._in_flight = 0
        await self._stack.aclose()


class EventPublisher:
    """The emulator's event publishing: off until :meth:`configure`, off again after :meth:`clear`.

    Args:
        clock: the emulator's clock (delays wait on its ``sleep`` when it has one: virtual time).
        max_in_flight: delivery calls at once.
    """

    def __init__(self, clock: Clock, *, max_in_flight: int = MAX_IN_FLIGHT,
                 logger: structlog.typing.FilteringBoundLogger | None = None) -> None:
        self._clock = clock
        self._max_in_flight = max_in_flight
        self._log = logger or structlog.get_logger("athena_spark_emulator")
        self._model = load_athena_model()
        self._delivery: Delivery | None = None
        self._last: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._lock = asyncio.Lock()

    @property
    def settings(self) -> EventSettings | None:
        return self._delivery.settings if self._delivery is not None else None

    def wants(self, operation: str) -> bool:
        """Whether a successful call of ``operation`` makes an event now (cheap: asked on every call)."""
        return self._delivery is not None and operation in PUBLISHED_OPERATIONS

    def publish(self, call: ApiCall) -> None:
        """Schedule the event of one successful call (nothing when publishing is off)."""
        delivery = self._delivery
        if delivery is None or call.operation not in PUBLISHED_OPERATIONS:
            return
        event = cloudtrail_event(call, self._model.operation_model(call.operation),
                                 envelope_id=str(uuid.uuid4()), event_id=str(uuid.uuid4()))
        delivery.schedule(event, self._clock.now())

    def status(self) -> dict[str, Any]:
        """``GET /_emulator/events``: the configuration (None when off) and the counters (of the current
        configuration, else of the last one)."""
        delivery = self._delivery
        if delivery is None:
            return {"configuration": None, "counters": dict(self._last)}
        return {"configuration": delivery.settings.to_json(), "counters": delivery.status()}

    async def configure(self, settings: EventSettings) -> dict[str, Any]:
        """Publish from now on per ``settings`` (replacing, and discarding what was pending); counters restart."""
        async with self._lock:
            await self._stop()
            delivery = Delivery(settings, self._clock, max_in_flight=self._max_in_flight, logger=self._log)
            await delivery.start()
            self._delivery = delivery
            self._log.info("emulator.events_configured", **settings.to_json())
        return self.status()

    async def clear(self) -> dict[str, Any]:
        """Stop publishing; pending deliveries are discarded."""
        async with self._lock:
            if self._delivery is not None:
                await self._stop()
                self._log.info("emulator.events_cleared", **self._last)
        return self.status()

    async def _stop(self) -> None:
        delivery, self._delivery = self._delivery, None
        if delivery is not None:
            await delivery.stop()
            self._last = delivery.status()

    async def close(self) -> None:
        await self.clear()
