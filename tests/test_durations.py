from __future__ import annotations

from datetime import timedelta

import pytest

from supervisor.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", timedelta(seconds=45)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1.5s", timedelta(milliseconds=1500)),
        ("500ms", timedelta(milliseconds=500)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s5ms", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5)),
        ("0.25h", timedelta(minutes=15)),
        ("0s", timedelta(0)),
        ("  30s ", timedelta(seconds=30)),
        ("0.000001s", timedelta(microseconds=1)),
    ],
)
def test_parse_accepts(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("30", "a number without a unit is not a duration"),
        ("1.5", "a number without a unit is not a duration"),
        ("30 minutes", "not a duration"),
        ("", "not a duration"),
        ("1h 30m", "not a duration"),
        ("-5s", "not a duration"),
        ("5sec", "not a duration"),
        ("1w", "not a duration"),
        (".5s", "not a duration"),
        ("5S", "not a duration"),
        ("30m1h", "units must appear once each, largest first"),
        ("1m1m", "units must appear once each, largest first"),
    ],
)
def test_parse_rejects_with_message(text: str, problem: str) -> None:
    with pytest.raises(DurationError) as caught:
        parse_duration(text)
    assert caught.value.problem == problem
    assert f"got {text!r}" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_parse_error_tells_how_to_fix() -> None:
    with pytest.raises(ValueError, match=r"use a number with a unit \(ms, s, m, h, d\), e.g. 45s, 15m, 2h"):
        parse_duration("30 minutes")
    with pytest.raises(ValueError, match="add a unit"):
        parse_duration("30")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(seconds=90), "1m30s"),
        (timedelta(0), "0s"),
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(milliseconds=1500), "1.5s"),
        (timedelta(hours=36), "1d12h"),
        (timedelta(hours=2), "2h"),
        (timedelta(days=1, seconds=1), "1d1s"),
        (timedelta(microseconds=1500), "0.0015s"),
    ],
)
def test_format_shortest_form(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@pytest.mark.parametrize(
    "value",
    [timedelta(microseconds=n) for n in (1, 999, 1000, 10**6 + 1, 59 * 10**6, 3_599_999_999, 86_400_000_001)],
)
def test_format_then_parse_round_trips(value: timedelta) -> None:
    assert parse_duration(format_duration(value)) == value


def test_format_rejects_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_duration(timedelta(seconds=-1))
