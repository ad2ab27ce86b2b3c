"""Where events are delivered: an SQS queue or an EventBridge bus, through aiobotocore.

The only module of the emulator that calls other AWS services. Clients sign with dummy static credentials
(the targets are moto, LocalStack or the like, at ``endpoint_url``), try each call once (a failed delivery is
a lost event, counted by the caller, as the daemon's polling backstop expects) and have explicit timeouts.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from athena_spark_emulator.event_settings import EventSettings
from athena_spark_emulator.model import shared_loader

if TYPE_CHECKING:
    from aiobotocore.session import AioSession

BATCH_SIZE = 10  # SendMessageBatch and PutEvents take at most 10 entries
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
DUMMY_KEY = "emulator"


class Target(Protocol):
    """Delivers events; ``send`` answers how many of them the target refused (raises when the call failed)."""

    description: str

    async def send(self, events: Sequence[dict[str, Any]]) -> int: ...


_sessions = threading.local()


def _session() -> AioSession:
    """The aiobotocore session of this thread's delivery clients: building one registers botocore's hundreds of
    handlers (~15 ms of CPU, more than the client), so each (re)configuration reuses it. One per thread, as
    botocore sessions are not thread-safe and each emulator thread runs its own event loop; nothing in it is
    bound to a loop (every client is given its credentials)."""
    session: AioSession | None = getattr(_sessions, "session", None)
    if session is None:
        # Imported when publishing is configured: every emulator process would pay for aiobotocore otherwise.
        from aiobotocore.session import AioSession

        # Credentials are given: the user's AWS_PROFILE (perhaps of another machine) must not be read, or a
        # missing profile would refuse the configuration.
        session = AioSession(session_vars={"profile": (None, None, None, None)})
        session.register_component("data_loader", shared_loader())
        _sessions.session = session
    return session


class SqsTarget:
    """``SendMessage`` for one event, ``SendMessageBatch`` for several; the body is the event JSON, as an
    EventBridge rule's SQS target delivers it."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url
        self.description = f"sqs:{queue_url}"

    async def send(self, events: Sequence[dict[str, Any]]) -> int:
        if len(events) == 1:
            await self._client.send_message(QueueUrl=self._queue_url, MessageBody=json.dumps(events[0]))
            return 0
        response = await self._client.send_message_batch(QueueUrl=self._queue_url, Entries=[
            {"Id": str(index), "MessageBody": json.dumps(event)} for index, event in enumerate(events)])
        return len(response.get("Failed", []))


class EventBusTarget:
    """``PutEvents`` on a bus: Source ``aws.athena``, the detail-type, the detail JSON and its time; the
    bus wraps them in an envelope of its own (its id, account and region)."""

    def __init__(self, client: Any, bus_name: str) -> None:
        self._client = client
        self._bus_name = bus_name
        self.description = f"events:{bus_name}"

    async def send(self, events: Sequence[dict[str, Any]]) -> int:
        entries = [{"Source": event["source"], "DetailType": event["detail-type"],
                    "Detail": json.dumps(event["detail"]), "Resources": event["resources"],
                    "Time": datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC),
                    "EventBusName": self._bus_name} for event in events]
        response = await self._client.put_events(Entries=entries)
        return int(response.get("FailedEntryCount", 0))


async def open_target(settings: EventSettings, stack: AsyncExitStack, *, max_in_flight: int) -> Target:
    """A target for ``settings`` whose client ``stack`` closes."""
    from aiobotocore.config import AioConfig

    config = AioConfig(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=CONNECT_TIMEOUT,
                       read_timeout=READ_TIMEOUT, max_pool_connections=max_in_flight,
                       parameter_validation=False)  # built here, valid by construction: save the CPU
    service = "sqs" if settings.sqs_queue_url is not None else "events"
    client = await stack.enter_async_context(_session().create_client(
        service, endpoint_url=settings.endpoint_url, region_name=settings.region, aws_access_key_id=DUMMY_KEY,
        aws_secret_access_key=DUMMY_KEY, config=config))
    if settings.sqs_queue_url is not None:
        return SqsTarget(client, settings.sqs_queue_url)
    assert settings.event_bus_name is not None
    return EventBusTarget(client, settings.event_bus_name)
