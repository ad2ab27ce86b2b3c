"""Event publishing settings (pure): parsing with errors naming the field, defaults, and the delivery draws."""

from __future__ import annotations

import random
from typing import Any

import pytest

from athena_spark_emulator.event_settings import EventSettings, parse_delay

QUEUE = "http://127.0.0.1:5000/123456789012/events"


@pytest.mark.parametrize(("value", "seconds"), [
    (0, (0.0, 0.0)), ("2s", (2.0, 2.0)), (1.5, (1.5, 1.5)), ("1s-5s", (1.0, 5.0)), ("500ms-2s", (0.5, 2.0)),
    (" 1s - 1s ", (1.0, 1.0)), ("3", (3.0, 3.0)),
])
def test_delays(value: Any, seconds: tuple[float, float]) -> None:
    assert parse_delay(value) == seconds


@pytest.mark.parametrize("value", ["5s-1s", "-1s", "1s-", "-", "soon", True, None, [1], "1s-2s-3s"])
def test_bad_delays_name_the_field(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^delay: expected a duration such as 2s, or a range such as 1s-5s"):
        parse_delay(value)


def test_defaults_come_from_the_queue_url() -> None:
    settings = EventSettings.from_json({"sqs_queue_url": QUEUE})
    assert settings.to_json() == {"sqs_queue_url": QUEUE, "event_bus_name": None,
                                  "endpoint_url": "http://127.0.0.1:5000", "region": "us-east-1", "delay": "0s",
                                  "drop_rate": 0.0, "duplicate_rate": 0.0, "seed": None}
    aws = EventSettings.from_json({"sqs_queue_url": "https://sqs.eu-west-1.amazonaws.com/210987654321/q"})
    assert (aws.endpoint_url, aws.region) == ("https://sqs.eu-west-1.amazonaws.com", "eu-west-1")


def test_settings_round_trip() -> None:
    body = {"sqs_queue_url": None, "event_bus_name": "central", "endpoint_url": "http://localhost:4566",
            "region": "eu-central-1", "delay": "0.5s-5s", "drop_rate": 0.01, "duplicate_rate": 0.02, "seed": 7}
    assert EventSettings.from_json({key: value for key, value in body.items() if value is not None}).to_json() == body
    assert EventSettings.from_json(body).to_json() == body  # what GET shows can be posted again


def test_draws_follow_the_rates_and_the_seed() -> None:
    settings = EventSettings.from_json({"sqs_queue_url": QUEUE, "delay": "1s-5s", "drop_rate": 0.1,
                                        "duplicate_rate": 0.2, "seed": 1})
    rng = random.Random(1)
    plans = [settings.plan(rng) for _ in range(20_000)]
    again = random.Random(1)
    assert plans == [settings.plan(again) for _ in range(20_000)]
    dropped = sum(not plan for plan in plans)
    duplicated = sum(len(plan) == 2 for plan in plans)
    assert 1_800 <= dropped <= 2_200  # 10 %
    assert 3_300 <= duplicated <= 3_900  # 20 % of the 90 % kept
    delays = [delay for plan in plans for delay in plan]
    assert 1.0 <= min(delays) < 1.01 and 4.99 < max(delays) <= 5.0
    assert 2.9 < sum(delays) / len(delays) < 3.1
    fixed = EventSettings.from_json({"sqs_queue_url": QUEUE, "delay": "2s"})
    assert {fixed.plan(rng) for _ in range(100)} == {(2.0,)}
