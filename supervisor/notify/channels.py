"""Delivery to one channel: webhook (aiohttp POST), SNS Publish and EventBridge PutEvents (through the
gateway, the only module that calls AWS). A failed attempt raises :class:`DeliveryError`; ``retryable``
says whether another attempt may succeed."""

from __future__ import annotations

import json
from typing import Protocol

import aiohttp

from supervisor.config import EventBridgeChannel, SnsChannel, WebhookChannel
from supervisor.gateway import THROTTLING_CODES, AwsCallError, Gateway, Priority
from supervisor.notify.messages import SOURCE, Message
from supervisor.redaction import redact_text

DEFAULT_AWS_RETRIES = 5
RETRYABLE_AWS_CODES = THROTTLING_CODES | {
    "NetworkError", "InternalError", "InternalFailure", "InternalException", "ServiceUnavailable",
    "InternalErrorException", "KMSThrottlingException",
}


class DeliveryError(Exception):
    """A failed attempt. The message is redacted (aiohttp embeds the URL, path and query, in its errors) so
    that what is logged, journaled and retried on never carries a webhook's secret."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(redact_text(message))
        self.retryable = retryable


class Delivery(Protocol):
    name: str
    retries: int

    async def deliver(self, message: Message) -> None:
        """Deliver once or raise :class:`DeliveryError`."""
        ...

    async def close(self) -> None: ...


class WebhookDelivery:
    """POST the message body as JSON. 2xx is delivered; 429, 5xx and network errors are retried."""

    def __init__(self, name: str, channel: WebhookChannel) -> None:
        self.name = name
        self.channel = channel
        self.retries = channel.retries
        self._http: aiohttp.ClientSession | None = None

    async def deliver(self, message: Message) -> None:
        if self._http is None:
            # Real time, not the injected clock (like the gateway's per-attempt cut-off): this bounds network
            # I/O, which always takes real time; the backoff between attempts is on the clock (the notifier).
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                total=self.channel.timeout.total_seconds()))
        headers = {"Content-Type": "application/json", "User-Agent": SOURCE, **self.channel.headers}
        try:
            async with self._http.post(str(self.channel.url), data=json.dumps(message.body(), default=str),
                                       headers=headers) as response:
                if 200 <= response.status < 300:
                    return
                retryable = response.status == 429 or response.status >= 500
                raise DeliveryError(f"HTTP {response.status}", retryable=retryable)
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise DeliveryError(f"{type(error).__name__}: {error}", retryable=True) from error

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


def _aws_error(error: AwsCallError) -> DeliveryError:
    return DeliveryError(f"{error.code}: {error.message}", retryable=error.code in RETRYABLE_AWS_CODES)


class SnsDelivery:
    """SNS Publish: ``Subject`` is the event's sentence (cut to 100 characters), ``Message`` the JSON body."""

    def __init__(self, name: str, channel: SnsChannel, gateway: Gateway) -> None:
        self.name = name
        self.channel = channel
        self.gateway = gateway
        self.retries = DEFAULT_AWS_RETRIES

    async def deliver(self, message: Message) -> None:
        subject = f"[{message.severity}] {message.detail_type}"[:100]
        try:
            await self.gateway.call(
                "Publish", {"TopicArn": self.channel.topic_arn, "Subject": subject,
                            "Message": json.dumps(message.body(), default=str),
                            "MessageAttributes": {
                                "event": {"DataType": "String", "StringValue": message.event},
                                "severity": {"DataType": "String", "StringValue": message.severity}}},
                priority=Priority.NOTIFY, service="sns", region=self.channel.effective_region,
                endpoint_url=str(self.channel.endpoint_url) if self.channel.endpoint_url else None,
            )
        except AwsCallError as error:
            raise _aws_error(error) from error

    async def close(self) -> None:
        return None


class EventBridgeDelivery:
    """EventBridge PutEvents: ``Source`` from the channel, ``DetailType`` per event, ``Detail`` the JSON body."""

    def __init__(self, name: str, channel: EventBridgeChannel, gateway: Gateway) -> None:
        self.name = name
        self.channel = channel
        self.gateway = gateway
        self.retries = DEFAULT_AWS_RETRIES

    async def deliver(self, message: Message) -> None:
        entry = {"Source": self.channel.source, "DetailType": message.detail_type,
                 "Detail": json.dumps(message.body(), default=str), "EventBusName": self.channel.event_bus_name,
                 "Time": message.time}
        try:
            response = await self.gateway.call(
                "PutEvents", {"Entries": [entry]}, priority=Priority.NOTIFY, service="events",
                region=self.channel.region,
                endpoint_url=str(self.channel.endpoint_url) if self.channel.endpoint_url else None,
            )
        except AwsCallError as error:
            raise _aws_error(error) from error
        if response.get("FailedEntryCount"):
            failed = (response.get("Entries") or [{}])[0]
            code = str(failed.get("ErrorCode", ""))
            raise DeliveryError(f"{code}: {failed.get('ErrorMessage', '')}",
                                retryable=code in RETRYABLE_AWS_CODES or "Internal" in code)

    async def close(self) -> None:
        return None
