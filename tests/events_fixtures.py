"""Athena API-call events as EventBridge delivers them ("AWS API Call via CloudTrail"), for the event-fed
discovery tests: built by hand here where a test needs one the emulator would never publish (malformed, refused,
unknown), and read from an SQS queue on moto in the event loop."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tests.moto_in_loop import Moto, MotoFrontend
from tests.virtual_fixtures import ACCOUNT_ID, REGION, aws_client


def api_call_event(name: str, time: datetime, request: dict[str, Any], response: dict[str, Any] | None = None, *,
                   account: str = ACCOUNT_ID, region: str = REGION, event_id: str | None = None,
                   **detail: Any) -> dict[str, Any]:
    """One event; ``detail`` entries (``errorCode``, ``eventTime``) override the CloudTrail record's; ``event_id``
    is both CloudTrail's ``eventID`` and EventBridge's ``id`` (a redelivered copy repeats them)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ")
    record: dict[str, Any] = {
        "eventVersion": "1.09", "userIdentity": {"type": "IAMUser", "accountId": account},
        "eventTime": stamp, "eventSource": "athena.amazonaws.com", "eventName": name, "awsRegion": region,
        "sourceIPAddress": "127.0.0.1", "userAgent": "tests", "requestParameters": request,
        "responseElements": response, "requestID": str(uuid.uuid4()), "eventID": event_id or str(uuid.uuid4()),
        "readOnly": False, "eventType": "AwsApiCall", "managementEvent": True, "recipientAccountId": account,
        "eventCategory": "Management", **detail,
    }
    return {"version": "0", "id": event_id or str(uuid.uuid4()), "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.athena", "account": account, "time": stamp, "region": region, "resources": [],
            "detail": record}


@dataclass
class EventQueue:
    """An SQS queue on moto in this event loop: ``settings`` is the daemon's ``discovery.events``."""

    sqs: Any
    url: str
    frontend: MotoFrontend

    @property
    def settings(self) -> dict[str, Any]:
        return {"sqs_queue_url": self.url, "endpoint_url": self.frontend.endpoint_url, "region": REGION,
                "wait_time": "0s", "late_after": "1m"}

    async def send(self, event: dict[str, Any] | str) -> None:
        await self.sqs.send_message(QueueUrl=self.url, MessageBody=event if isinstance(event, str) else
                                    json.dumps(event))

    async def depth(self) -> tuple[int, int]:
        """(messages waiting, messages received and not yet deleted)."""
        attributes = (await self.sqs.get_queue_attributes(
            QueueUrl=self.url, AttributeNames=["ApproximateNumberOfMessages",
                                               "ApproximateNumberOfMessagesNotVisible"]))["Attributes"]
        return (int(attributes["ApproximateNumberOfMessages"]),
                int(attributes["ApproximateNumberOfMessagesNotVisible"]))


@asynccontextmanager
async def event_queue() -> AsyncIterator[EventQueue]:
    """A queue of its own: moto's backends are per process, so a name shared by two tests would share messages."""
    async with MotoFrontend(Moto()).serving() as frontend, aws_client("sqs", frontend.endpoint_url) as sqs:
        name = f"athena-events-{uuid.uuid4().hex[:12]}"
        url = (await sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "60"}))["QueueUrl"]
        yield EventQueue(sqs, url, frontend)
