"""The event feed: drain the SQS queue of Athena API-call events and hand each to its shard's discovery.

An EventBridge rule puts Athena's write calls ("AWS API Call via CloudTrail", docs/events.md) on one queue;
with several accounts, member accounts forward theirs to a central bus, so one queue serves every shard and
each event is routed by its account and region. The feed long-polls the queue, parses each message
(:mod:`supervisor.core.cloudtrail`) and hands it to :meth:`Discovery.on_event`, which looks at a new session
or calculation at once.

Delivery is best effort: late, duplicated, out of order, lost. So:
- a message is deleted only once what it caused is saved: its look done and the shard's watch list (which
  a restart resumes from) saved; a failed look leaves it to be delivered again;
- duplicates (an event id seen before), unknown event names, malformed bodies, refused calls and events for
  what is not supervised are counted (``events_received_total{outcome}``) and deleted without effect;
- an event for a shard another replica holds is handed back at once (its visibility reset);
- polling stays: discovery's backstop sweeps find what events missed, and count it.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import anyio
import anyio.abc
import structlog

from supervisor.clock import Clock
from supervisor.config.models import EventsSettings
from supervisor.core.cloudtrail import AthenaEvent, MalformedEvent, parse_event
from supervisor.gateway import AwsCallError, Gateway, Priority
from supervisor.metrics import Metrics

from .discovery import Discovery
from .event_path import EventPath

BATCH = 10  # SQS's most messages per ReceiveMessage and per DeleteMessageBatch
# Messages received and not yet deleted (being looked at, or waiting for the watch list to be saved): the feed
# stops receiving above this, so a burst never outgrows what the daemon can look at within the visibility timeout
# (SQS allows 120,000 in flight).
MAX_HELD = 5_000
# Handled messages are deleted in batches, after their shards' watch lists are saved, at most this often: a save
# builds the whole list (~2 µs per watched target), so saving once a second at 20,000 targets would cost 4% of
# a core; every 5 s it is under 1%. The queue's visibility timeout must be well above this (docs/events.md).
DELETE_EVERY = timedelta(seconds=5)
# Between ReceiveMessage calls when the queue was empty and wait_time is 0 (no long polling); jittered by half,
# so that replicas polling one queue do not keep the same phase.
IDLE_POLL = timedelta(seconds=1)
# After handing messages back, a replica waits about this long before it receives again, so that the replica
# holding their shard (waiting in its own long poll) gets them rather than this one again.
HAND_BACK_PAUSE = timedelta(milliseconds=500)
RETRY_INITIAL = timedelta(seconds=1)
RETRY_MAX = timedelta(minutes=1)
DEPTH_EVERY = timedelta(seconds=30)
SEEN_IDS = 100_000  # event ids remembered for duplicates (EventBridge redelivers within minutes)

Outcome = Literal["applied", "known", "duplicate", "unknown_event", "malformed", "unwatched", "failed_call",
                  "unknown_shard", "not_owned", "retried"]
OUTCOMES: tuple[Outcome, ...] = ("applied", "known", "duplicate", "unknown_event", "malformed", "unwatched",
                                 "failed_call", "unknown_shard", "not_owned", "retried")
Routed = Discovery | Literal["unknown_shard", "not_owned", "retried"]
Route = Callable[[str, str], Routed]
"""(account, region) -> the discovery of the shard this process supervises there, or why there is none:
``unknown_shard`` (not configured), ``not_owned`` (another replica holds it), ``retried`` (not running yet)."""


@dataclass(slots=True)
class _Handled:
    receipt: str
    discovery: Discovery | None  # whose watch list must be saved before the message is deleted


@dataclass(slots=True)
class _Held:
    """Messages received and not yet deleted."""

    count: int = 0
    done: list[_Handled] = field(default_factory=list)


class EventFeed:
    def __init__(
        self,
        *,
        settings: EventsSettings,
        region: str,
        gateway: Gateway,
        clock: Clock,
        metrics: Metrics,
        path: EventPath,
        route: Route,
        rng: random.Random | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.settings = settings
        self._rng = rng or random.Random()
        self._handed_back = False
        self.region = region
        self.gateway = gateway
        self.clock = clock
        self.metrics = metrics
        self.path = path
        self.route = route
        self._log = logger or structlog.get_logger("supervisor.events")
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._held = _Held()
        self._room = anyio.Event()  # set when held messages were deleted or released
        self._handled = anyio.Event()  # set when a handled message waits for deletion
        self.received: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        for outcome in OUTCOMES:
            self.metrics.events_received.labels(outcome)

    def readiness(self) -> str | None:
        return f"degraded: {self.path.problem}" if self.path.problem else None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(self._delete_handled)
            task_group.start_soon(self._watch_depth)
            task_status.started()
            await self._receive(task_group)

    # -- receiving ------------------------------------------------------------------------------------------

    async def _sqs(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return await self.gateway.call(operation, {"QueueUrl": self.settings.sqs_queue_url, **params},
                                       priority=Priority.DISCOVER, service="sqs", region=self.region,
                                       endpoint_url=self.settings.endpoint_url)

    async def _receive(self, task_group: anyio.abc.TaskGroup) -> None:
        backoff = RETRY_INITIAL
        wait = int(self.settings.wait_time.total_seconds())
        while True:
            while self._held.count > MAX_HELD - BATCH:
                self._room = anyio.Event()
                await self._room.wait()
            if self._handed_back:
                self._handed_back = False
                await self.clock.sleep(self._jittered(HAND_BACK_PAUSE))
            try:
                answer = await self._sqs("ReceiveMessage", {"MaxNumberOfMessages": BATCH, "WaitTimeSeconds": wait})
            except AwsCallError as error:
                self.path.problem = f"the event queue cannot be read (ReceiveMessage: {error.code})"
                self._log.error("events.receive_failed", error=error.code, message=error.message,
                                retry_in=backoff.total_seconds())
                await self.clock.sleep(backoff.total_seconds())
                backoff = min(backoff * 2, RETRY_MAX)
                continue
            if self.path.problem is not None:
                self._log.info("events.receive_restored")
            backoff, self.path.problem = RETRY_INITIAL, None
            if self.path.up_since is None:
                self.path.up_since = self.clock.now()
                self._log.info("events.started", queue=self.settings.sqs_queue_url, region=self.region)
            messages = answer.get("Messages") or []
            for message in messages:
                self._held.count += 1
                task_group.start_soon(self._handle, message)
            if not messages and wait == 0:
                await self.clock.sleep(self._jittered(IDLE_POLL))

    async def _handle(self, message: Mapping[str, Any]) -> None:
        receipt = str(message.get("ReceiptHandle", ""))
        try:
            outcome, discovery = await self._outcome(str(message.get("Body", "")))
        except Exception as error:  # one odd message never stops the feed: it comes back, and is counted
            self._log.exception("events.handle_failed", error=repr(error))
            outcome, discovery = "retried", None
        self.received[outcome] += 1
        self.metrics.events_received.labels(outcome).inc()
        if outcome == "retried":  # left in the queue: delivered again after its visibility timeout
            self._release(1)
        elif outcome == "not_owned":
            self._handed_back = True
            await self._hand_back(receipt)
            self._release(1)
        else:
            self._held.done.append(_Handled(receipt, discovery))
            self._handled.set()

    async def _outcome(self, body: str) -> tuple[Outcome, Discovery | None]:
        try:
            event = parse_event(body)
        except MalformedEvent as error:
            # The body is not logged: it is someone else's request parameters.
            self._log.warning("events.malformed", reason=str(error), size=len(body))
            return "malformed", None
        self._note_delivery(event)
        if event.event_id in self._seen:
            return "duplicate", None
        if event.failed:
            return "failed_call", None
        if event.kind is None:
            return "unknown_event", None
        routed = self.route(event.account, event.region)
        if isinstance(routed, str):
            return routed, None
        # Seen from now on: a copy that comes while this one is being looked at is a duplicate (if this look
        # fails, this message is not deleted and comes back).
        self._remember(event.event_id)
        try:
            outcome = await routed.on_event(event)
        except AwsCallError as error:
            self._seen.pop(event.event_id, None)
            self._log.warning("events.look_failed", event_name=event.name, event_id=event.event_id,
                              operation=error.operation, error=error.code)
            return "retried", None
        self._log.debug("events.received", event_name=event.name, event_id=event.event_id, outcome=outcome,
                        session_id=event.session_id or None, calculation_id=event.calculation_id or None,
                        workgroup=event.workgroup or None)
        return outcome, routed

    def _remember(self, event_id: str) -> None:
        self._seen[event_id] = None
        while len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)

    def _note_delivery(self, event: AthenaEvent) -> None:
        now = self.clock.now()
        delay = max(0.0, (now - event.time).total_seconds())
        self.metrics.event_delivery.observe(delay)
        self.metrics.events_last_received.set(now.timestamp())
        self.path.last_received_at = now
        self.path.last_delivery_seconds = delay

    async def _hand_back(self, receipt: str) -> None:
        """Make a message another replica's shard needs visible again at once, for that replica to receive."""
        try:
            await self._sqs("ChangeMessageVisibility", {"ReceiptHandle": receipt, "VisibilityTimeout": 0})
        except AwsCallError as error:  # it comes back after its visibility timeout anyway
            self._log.warning("events.hand_back_failed", error=error.code)

    def _jittered(self, pause: timedelta) -> float:
        return pause.total_seconds() * self._rng.uniform(0.5, 1.5)

    def _release(self, count: int) -> None:
        self._held.count -= count
        self._room.set()

    # -- deleting -------------------------------------------------------------------------------------------

    async def _delete_handled(self) -> None:
        """Delete handled messages once their shards' watch lists are saved (the effect a restart resumes)."""
        while True:
            await self._handled.wait()
            self._handled = anyio.Event()
            done, self._held.done = self._held.done, []
            saved: dict[int, bool] = {}
            for handled in done:
                discovery = handled.discovery
                if discovery is not None and id(discovery) not in saved:
                    saved[id(discovery)] = await discovery.checks.save_watch()
            deletable = [h.receipt for h in done if h.discovery is None or saved[id(h.discovery)]]
            for start in range(0, len(deletable), BATCH):
                await self._delete(deletable[start:start + BATCH])
            self._release(len(done))  # those not deleted come back after their visibility timeout
            await self.clock.sleep(DELETE_EVERY.total_seconds())

    async def _delete(self, receipts: list[str]) -> None:
        entries = [{"Id": str(index), "ReceiptHandle": receipt} for index, receipt in enumerate(receipts)]
        try:
            answer = await self._sqs("DeleteMessageBatch", {"Entries": entries})
        except AwsCallError as error:  # delivered again: a duplicate, counted and dropped
            self._log.warning("events.delete_failed", error=error.code, messages=len(receipts))
            return
        failed = answer.get("Failed") or []
        if failed:
            self._log.warning("events.delete_failed", error=str(failed[0].get("Code")), messages=len(failed))

    # -- the queue's depth -------------------------------------------------------------------------------------

    async def _watch_depth(self) -> None:
        while True:
            try:
                answer = await self._sqs("GetQueueAttributes", {"AttributeNames": ["ApproximateNumberOfMessages"]})
                depth = int(answer.get("Attributes", {}).get("ApproximateNumberOfMessages", 0))
            except (AwsCallError, ValueError) as error:
                self._log.warning("events.depth_unknown", error=getattr(error, "code", repr(error)))
            else:
                self.path.queue_depth, self.path.queue_depth_at = depth, self.clock.now()
                self.metrics.events_queue_depth.set(depth)
            await self.clock.sleep(DEPTH_EVERY.total_seconds())
