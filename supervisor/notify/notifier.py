"""The notifier: an :class:`~supervisor.events.EventSink` that never blocks, and one delivery task per channel.

``emit`` builds the message once and puts it, without waiting, into the queue of every channel that wants
it (``events`` filter, ``min_severity``). A full queue drops the message for that channel: counted as
``notifications_total{outcome="dropped"}`` and logged as an error. Each channel delivers its queue in
order; a failed attempt is counted ``retried`` and retried with exponential backoff and jitter (tenacity,
sleeping on the injected :class:`~supervisor.clock.Clock`, so under a manual clock retries happen at exact
virtual instants); a message out of attempts (or refused for good, e.g. HTTP 4xx) is counted ``failed``,
logged and journaled (``notification.failed`` with the whole message), never lost silently. ``flush`` waits,
bounded on the same clock, for the queues to drain at shutdown; what is still queued then is counted
``dropped``.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import anyio
import anyio.abc
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from supervisor.clock import Clock
from supervisor.config import NotificationChannel, Settings
from supervisor.events import EventName
from supervisor.gateway import Gateway, Uniform
from supervisor.metrics import Metrics
from supervisor.notify.channels import (
    Delivery,
    DeliveryError,
    EventBridgeDelivery,
    SnsDelivery,
    WebhookDelivery,
)
from supervisor.notify.messages import Message
from supervisor.redaction import redact_text
from supervisor.storage import Storage

BUFFER = 10_000
FLUSH_TIMEOUT = timedelta(seconds=5)


def channel_name(channel: NotificationChannel, index: int) -> str:
    """The ``channel`` label: type and position in the ``notifications`` list, e.g. ``webhook-0``."""
    return f"{channel.type}-{index}"


def build_delivery(channel: NotificationChannel, index: int, gateway: Gateway) -> Delivery:
    name = channel_name(channel, index)
    if channel.type == "webhook":
        return WebhookDelivery(name, channel)
    if channel.type == "sns":
        return SnsDelivery(name, channel, gateway)
    return EventBridgeDelivery(name, channel, gateway)


class _Queue:
    def __init__(self, channel: NotificationChannel, delivery: Delivery, buffer: int) -> None:
        self.channel = channel
        self.delivery = delivery
        self.send: MemoryObjectSendStream[Message]
        self.receive: MemoryObjectReceiveStream[Message]
        self.send, self.receive = anyio.create_memory_object_stream[Message](buffer)
        self.pending = 0


def _retryable(error: BaseException) -> bool:
    return isinstance(error, DeliveryError) and error.retryable


class Notifier:
    """Delivers events to the configured channels. ``run`` must be running for deliveries to happen.

    Args:
        channels: each channel with its delivery.
        metrics: where deliveries are counted.
        journal: where failed messages are journaled (None: not journaled).
        clock: retry backoff and the shutdown flush wait on it.
        buffer: messages queued per channel before new ones are dropped.
        wait_initial / wait_max: backoff before retry *n* is ``wait_initial × 2^(n−1)`` plus up to
            ``wait_initial`` of jitter, at most ``wait_max`` (seconds).
        rng: the jitter source (default the :mod:`random` module, so ``random.seed`` makes it repeatable).
    """

    def __init__(
        self,
        channels: Sequence[tuple[NotificationChannel, Delivery]],
        *,
        metrics: Metrics,
        journal: Storage | None,
        clock: Clock,
        buffer: int = BUFFER,
        wait_initial: float = 0.2,
        wait_max: float = 30.0,
        rng: Uniform | None = None,
        logger: Any = None,
    ) -> None:
        self.metrics = metrics
        self.journal = journal
        self.clock = clock
        self.wait_initial = wait_initial
        self.wait_max = wait_max
        self._rng: Uniform = rng if rng is not None else random
        self.log = logger or structlog.get_logger("supervisor.notify")
        self._buffer = buffer
        self._queues = [_Queue(channel, delivery, buffer) for channel, delivery in channels]
        self._draining: list[_Queue] = []  # replaced by a reload, still delivering what they hold
        self._changed = anyio.Event()
        self._task_group: anyio.abc.TaskGroup | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, gateway: Gateway, metrics: Metrics, journal: Storage | None,
                      clock: Clock, **kwargs: Any) -> Notifier:
        channels = [(channel, build_delivery(channel, index, gateway))
                    for index, channel in enumerate(settings.notifications)]
        return cls(channels, metrics=metrics, journal=journal, clock=clock, **kwargs)

    @property
    def pending(self) -> int:
        return sum(queue.pending for queue in (*self._queues, *self._draining))

    def reconfigure(self, channels: Sequence[tuple[NotificationChannel, Delivery]]) -> None:
        """Deliver to ``channels`` from now on (a reload). What the old channels hold is still delivered, then
        they close. ``run`` must be running."""
        if self._task_group is None:
            raise RuntimeError("Notifier.run is not running")
        old, self._queues = self._queues, [_Queue(channel, delivery, self._buffer) for channel, delivery in channels]
        for queue in self._queues:
            self._task_group.start_soon(self._deliver_all, queue, name=f"notify {queue.delivery.name}")
        for queue in old:
            self._draining.append(queue)
            queue.send.close()  # its delivery task ends once the queue is empty

    def emit(self, event: EventName, payload: Mapping[str, Any]) -> None:
        message = Message.build(event, payload, self.clock.now())
        for queue in self._queues:
            if not queue.channel.wants(event, message.severity):
                continue
            try:
                queue.send.send_nowait(message)
            except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                self.metrics.notifications.labels(queue.delivery.name, "dropped").inc()
                self.log.error("notification.dropped", channel=queue.delivery.name, notification=event,
                               reason="queue full or closed")
                continue
            queue.pending += 1

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            async with anyio.create_task_group() as task_group:
                self._task_group = task_group
                for queue in self._queues:
                    task_group.start_soon(self._deliver_all, queue, name=f"notify {queue.delivery.name}")
                task_status.started()
                await anyio.sleep_forever()  # channels may come with a reload
        finally:
            self._task_group = None
            with anyio.CancelScope(shield=True):
                for queue in (*self._queues, *self._draining):
                    await queue.delivery.close()

    async def flush(self, within: timedelta = FLUSH_TIMEOUT) -> int:
        """Wait up to ``within`` (on the clock) for the queues to drain; count what is left as dropped; return
        that."""
        deadline = self.clock.now() + within
        while self.pending:
            if not await self.clock.sleep_until(deadline, self._changed):
                break  # out of time
        left = 0
        for queue in (*self._queues, *self._draining):
            if queue.pending:
                left += queue.pending
                self.metrics.notifications.labels(queue.delivery.name, "dropped").inc(queue.pending)
                self.log.error("notification.unsent_at_shutdown", channel=queue.delivery.name, count=queue.pending)
        return left

    async def _deliver_all(self, queue: _Queue) -> None:
        async for message in queue.receive:
            try:
                await self._deliver(queue, message)
            finally:
                queue.pending -= 1
                changed, self._changed = self._changed, anyio.Event()
                changed.set()
        if queue in self._draining:  # replaced by a reload, and now empty
            self._draining.remove(queue)
            with anyio.CancelScope(shield=True):
                await queue.delivery.close()

    async def _deliver(self, queue: _Queue, message: Message) -> None:
        name = queue.delivery.name
        counter = self.metrics.notifications
        attempts = queue.delivery.retries + 1
        retrying = AsyncRetrying(
            sleep=self.clock.sleep, stop=stop_after_attempt(attempts), wait=self._backoff,
            retry=retry_if_exception(_retryable), reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        await queue.delivery.deliver(message)
                    except DeliveryError as error:
                        number = attempt.retry_state.attempt_number
                        if error.retryable and number < attempts:
                            counter.labels(name, "retried").inc()
                            self.log.warning("notification.retrying", channel=name, notification=message.event,
                                             attempt=number, error=str(error))
                        raise
        except DeliveryError as error:
            counter.labels(name, "failed").inc()
            self.log.error("notification.failed", channel=name, notification=message.event, error=str(error))
            await self._journal_failure(name, message, str(error))
            return
        except Exception as error:  # a bug in a channel must not kill its delivery task
            counter.labels(name, "failed").inc()
            self.log.exception("notification.crashed", channel=name, notification=message.event)
            await self._journal_failure(name, message, redact_text(f"{type(error).__name__}: {error}"))
            return
        counter.labels(name, "delivered").inc()
        self.log.debug("notification.delivered", channel=name, notification=message.event)

    def _backoff(self, state: RetryCallState) -> float:
        """Seconds to wait before the next attempt (tenacity ``wait``)."""
        exponential = self.wait_initial * 2.0 ** min(state.attempt_number - 1, 64)
        return min(self.wait_max, exponential + self._rng.uniform(0, self.wait_initial))

    async def _journal_failure(self, channel: str, message: Message, error: str) -> None:
        if self.journal is None:
            return
        detail = {"channel": channel, "notification": message.event, "error": error, "message": message.body()}
        await self.journal.record("notification.failed", policy=message.payload.get("policy")
                                  or message.payload.get("budget"), detail=detail, time=self.clock.now())


@asynccontextmanager
async def notifying(notifier: Notifier | None, within: timedelta = FLUSH_TIMEOUT) -> AsyncIterator[None]:
    """Run ``notifier`` (if any) for the duration of the block; on exit flush it (bounded), then stop it."""
    if notifier is None:
        yield
        return
    async with anyio.create_task_group() as task_group:
        await task_group.start(notifier.run)
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await notifier.flush(within)
            task_group.cancel_scope.cancel()
