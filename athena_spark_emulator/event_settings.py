"""Where and how the emulator delivers its CloudTrail events: the ``POST /_emulator/events`` body, checked.

Pure: parsing (every error names its field) and the random draws of one event's deliveries
(:meth:`EventSettings.plan`): dropped, delivered once after a delay, or delivered twice, each copy after a
delay of its own.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from athena_spark_emulator.durations import parse_duration
from athena_spark_emulator.signing import REGION_NAME

KEYS = ("sqs_queue_url", "event_bus_name", "endpoint_url", "region", "delay", "drop_rate", "duplicate_rate",
        "seed")
DEFAULT_REGION = "us-east-1"
_SQS_HOST_REGION = re.compile(r"sqs\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?")
DELAY_HINT = "a duration such as 2s, or a range such as 1s-5s"


def _http_url(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field}: expected an http(s) URL, got {value!r}")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{field}: expected an http(s) URL, got {value!r}")
    return value


def _rate(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{field}: expected a probability between 0 and 1, got {value!r}")
    return float(value)


def parse_delay(value: Any) -> tuple[float, float]:
    """``(low, high)`` seconds of a delay: ``"2s"`` (or a number of seconds) is ``(2, 2)``, ``"1s-5s"`` a
    uniform range; raise ValueError naming ``delay``."""
    try:
        if isinstance(value, str) and "-" in value.strip().lstrip("-"):
            low_text, high_text = value.split("-", 1)
            low, high = parse_duration(low_text), parse_duration(high_text)
            if low > high:
                raise ValueError(f"{value!r} ends before it starts")
            return low, high
        seconds = parse_duration(value)
        return seconds, seconds
    except ValueError:
        raise ValueError(f"delay: expected {DELAY_HINT}, got {value!r}") from None


def _seconds_text(seconds: float) -> str:
    return f"{seconds:g}s"


def default_region(queue_url: str | None) -> str:
    """The region of an AWS SQS queue URL (``https://sqs.eu-west-1.amazonaws.com/…``), else us-east-1."""
    if queue_url is not None:
        match = _SQS_HOST_REGION.fullmatch(urlsplit(queue_url).hostname or "")
        if match is not None:
            return match.group(1)
    return DEFAULT_REGION


@dataclass(frozen=True, slots=True)
class EventSettings:
    """Where events go (an SQS queue or an EventBridge bus) and how (delay, drops, duplicates).

    Attributes:
        sqs_queue_url / event_bus_name: the target, exactly one of them.
        endpoint_url: the SQS/EventBridge endpoint (default for a queue: its URL's scheme and host).
        region: the region of the target's clients (default: an AWS queue URL's, else us-east-1).
        delay_low / delay_high: each delivery waits a uniform draw in this range (seconds) after the call.
        drop_rate: probability that an event is never delivered.
        duplicate_rate: probability that an event is delivered a second time (its own delay draw).
        seed: seeds the draws (None: unseeded).
    """

    sqs_queue_url: str | None
    event_bus_name: str | None
    endpoint_url: str
    region: str
    delay_low: float = 0.0
    delay_high: float = 0.0
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    seed: int | None = None

    @classmethod
    def from_json(cls, body: Any) -> EventSettings:
        """Parse a control-API body; raise ValueError whose message starts with the offending field."""
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        unknown = set(body) - set(KEYS)
        if unknown:
            raise ValueError(f"{sorted(unknown)[0]}: unknown key (known: {', '.join(KEYS)})")
        queue_url, bus = body.get("sqs_queue_url"), body.get("event_bus_name")
        if (queue_url is None) == (bus is None):
            raise ValueError("sqs_queue_url: give either sqs_queue_url or event_bus_name (exactly one)")
        if queue_url is not None:
            queue_url = _http_url(queue_url, "sqs_queue_url")
        if bus is not None and (not isinstance(bus, str) or not bus or len(bus) > 1600):
            raise ValueError(f"event_bus_name: expected a bus name or ARN, got {bus!r}")
        endpoint = body.get("endpoint_url")
        if endpoint is None:
            if queue_url is None:
                raise ValueError("endpoint_url: required with event_bus_name (the EventBridge endpoint)")
            parts = urlsplit(queue_url)
            endpoint = f"{parts.scheme}://{parts.netloc}"
        endpoint = _http_url(endpoint, "endpoint_url")
        region = body.get("region", default_region(queue_url))
        if not isinstance(region, str) or REGION_NAME.fullmatch(region) is None:
            raise ValueError(f"region: expected a region name such as us-east-1, got {region!r}")
        low, high = parse_delay(body.get("delay", 0))
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed: expected a whole number, got {seed!r}")
        return cls(queue_url, bus, endpoint, region, low, high, _rate(body.get("drop_rate", 0), "drop_rate"),
                   _rate(body.get("duplicate_rate", 0), "duplicate_rate"), seed)

    @property
    def delay_text(self) -> str:
        if self.delay_low == self.delay_high:
            return _seconds_text(self.delay_low)
        return f"{_seconds_text(self.delay_low)}-{_seconds_text(self.delay_high)}"

    def to_json(self) -> dict[str, Any]:
        """The body that configures this (every key given), as ``GET /_emulator/events`` shows it."""
        return {"sqs_queue_url": self.sqs_queue_url, "event_bus_name": self.event_bus_name,
                "endpoint_url": self.endpoint_url, "region": self.region, "delay": self.delay_text,
                "drop_rate": self.drop_rate, "duplicate_rate": self.duplicate_rate, "seed": self.seed}

    def _delay(self, rng: random.Random) -> float:
        if self.delay_low == self.delay_high:
            return self.delay_low
        return rng.uniform(self.delay_low, self.delay_high)

    def plan(self, rng: random.Random) -> tuple[float, ...]:
        """The delays of one event's deliveries: none (dropped), one, or two (duplicated)."""
        if self.drop_rate and rng.random() < self.drop_rate:
            return ()
        first = self._delay(rng)
        if self.duplicate_rate and rng.random() < self.duplicate_rate:
            return first, self._delay(rng)
        return (first,)
