"""Notification channels: a discriminated union on ``type`` (webhook, sns, eventbridge)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from supervisor.config.errors import SECRET, FieldProblem
from supervisor.config.types import Count, Duration, EventName, HttpUrl, Severity, StrictModel, Text

_SNS_ARN = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?")


class _Channel(StrictModel):
    events: tuple[EventName, ...] | None = None
    min_severity: Severity = "info"

    @field_validator("events")
    @classmethod
    def _check_events(cls, value: tuple[EventName, ...] | None) -> tuple[EventName, ...] | None:
        if value is not None and not value:
            raise FieldProblem("empty list delivers no event", "omit 'events' to receive every event",
                               value=[])
        return value

    def wants(self, event: str, severity: Severity) -> bool:
        """Whether this channel receives ``event`` at ``severity``."""
        order = ("info", "warning", "critical")
        in_filter = self.events is None or event in self.events
        return in_filter and order.index(severity) >= order.index(self.min_severity)


class WebhookChannel(_Channel):
    """A webhook. ``url`` and ``headers`` are secrets: problems and ``check-config`` never show their values."""

    type: Literal["webhook"]
    url: Annotated[HttpUrl, SECRET]
    timeout: Duration = timedelta(seconds=5)
    retries: Count = Field(default=5, ge=0)
    headers: Annotated[dict[str, str], SECRET] = {}

    @model_validator(mode="after")
    def _one_credential(self) -> WebhookChannel:
        has_userinfo = "@" in urlsplit(self.url).netloc
        if has_userinfo and any(name.strip().lower() == "authorization" for name in self.headers):
            raise FieldProblem(
                "credentials both in the URL (user:password@) and in an Authorization header; an HTTP "
                "request carries one, so every delivery would fail",
                "keep one: remove user:password@ from url, or remove the Authorization header",
                subpath=("url",))
        return self


class SnsChannel(_Channel):
    type: Literal["sns"]
    topic_arn: str
    region: Text | None = None
    endpoint_url: HttpUrl | None = None

    @field_validator("topic_arn")
    @classmethod
    def _check_arn(cls, value: str) -> str:
        if not _SNS_ARN.fullmatch(value):
            raise FieldProblem("not an SNS topic ARN",
                               "write e.g. arn:aws:sns:us-east-1:123456789012:athena-supervisor")
        return value

    @property
    def effective_region(self) -> str:
        """``region`` if set, else the region inside ``topic_arn``."""
        return self.region or self.topic_arn.split(":")[3]


class EventBridgeChannel(_Channel):
    type: Literal["eventbridge"]
    event_bus_name: Text = "default"
    source: Text = "athena-supervisor"
    region: Text | None = None
    endpoint_url: HttpUrl | None = None


NotificationChannel = Annotated[WebhookChannel | SnsChannel | EventBridgeChannel, Field(discriminator="type")]
