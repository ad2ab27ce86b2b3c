from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from supervisor.config import BudgetConfig
from supervisor.core.budgets import (
    allocate,
    bucket_of,
    budget_status,
    crossed_thresholds,
    forecast,
    period_bounds,
    predicted_crossing,
)


def budget(**overrides: Any) -> BudgetConfig:
    data: dict[str, Any] = {"name": "b", "period": "daily", "limit_usd": 100,
                            "thresholds": [{"at_percent": 50, "action": "notify"},
                                           {"at_percent": 100, "action": "stop_calculations"}]}
    data.update(overrides)
    return BudgetConfig.model_validate(data)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(("period", "timezone", "now", "start", "end"), [
    ("daily", "UTC", utc(2026, 3, 4, 15), utc(2026, 3, 4), utc(2026, 3, 5)),
    ("daily", "Europe/Berlin", utc(2026, 3, 4, 23, 30), utc(2026, 3, 4, 23), utc(2026, 3, 5, 23)),
    # DST starts in Berlin on 2026-03-29: that local day is 23 hours long.
    ("daily", "Europe/Berlin", utc(2026, 3, 29, 12), utc(2026, 3, 28, 23), utc(2026, 3, 29, 22)),
    ("weekly", "UTC", utc(2026, 3, 8, 23, 59), utc(2026, 3, 2), utc(2026, 3, 9)),  # Sunday → Monday start
    ("weekly", "UTC", utc(2026, 3, 9), utc(2026, 3, 9), utc(2026, 3, 16)),
    ("monthly", "UTC", utc(2026, 2, 14), utc(2026, 2, 1), utc(2026, 3, 1)),
    ("monthly", "America/New_York", utc(2026, 1, 1, 3), utc(2025, 12, 1, 5), utc(2026, 1, 1, 5)),
])
def test_calendar_periods(period: str, timezone: str, now: datetime, start: datetime, end: datetime) -> None:
    assert period_bounds(budget(period=period, timezone=timezone), now) == (start, end)


def test_rolling_window_and_its_buckets() -> None:
    rolling = budget(period="rolling:24h")
    now = utc(2026, 3, 4, 15, 7, 30)
    assert period_bounds(rolling, now) == (now - timedelta(hours=24), now)
    assert bucket_of(rolling, now) == (utc(2026, 3, 4, 15, 5), utc(2026, 3, 4, 15, 10))  # 5 min cap
    short = budget(period="rolling:2s")
    first, after = bucket_of(short, utc(2026, 1, 1, 0, 0, 1) + timedelta(milliseconds=37))
    assert (first, after - first) == (utc(2026, 1, 1, 0, 0, 1) + timedelta(milliseconds=20), timedelta(milliseconds=20))


def test_allocate_spreads_uniformly_and_drops_what_is_before_the_horizon() -> None:
    daily = budget()
    bucket = lambda at: bucket_of(daily, at)  # noqa: E731
    shares = allocate(30.0, utc(2026, 3, 3, 22), utc(2026, 3, 4, 1), bucket, horizon=utc(2026, 3, 1))
    assert shares == [(utc(2026, 3, 3), pytest.approx(20.0)), (utc(2026, 3, 4), pytest.approx(10.0))]
    assert allocate(30.0, utc(2026, 3, 3, 22), utc(2026, 3, 4, 1), bucket, horizon=utc(2026, 3, 4)) == [
        (utc(2026, 3, 4), pytest.approx(10.0))]
    assert allocate(5.0, utc(2026, 3, 4, 1), utc(2026, 3, 4, 1), bucket, horizon=utc(2026, 3, 4)) == [
        (utc(2026, 3, 4), 5.0)]
    assert allocate(0.0, utc(2026, 3, 4), utc(2026, 3, 4, 1), bucket, horizon=utc(2026, 3, 4)) == []


def test_crossed_thresholds_in_ascending_order() -> None:
    b = budget(thresholds=[{"at_percent": 50, "action": "notify"}, {"at_percent": 80, "action": "notify"},
                           {"at_percent": 120, "action": "disable_workgroup"}])
    assert [t.at_percent for t in crossed_thresholds(79.9, 100, b.thresholds)] == [50]
    assert [t.at_percent for t in crossed_thresholds(80, 100, b.thresholds)] == [50, 80]
    assert [t.at_percent for t in crossed_thresholds(500, 100, b.thresholds)] == [50, 80, 120]


def test_prediction_and_forecast() -> None:
    now = utc(2026, 3, 4, 12)
    assert predicted_crossing(40, 50, 0.01, now) == now + timedelta(seconds=1000)
    assert predicted_crossing(60, 50, 0.0, now) == now
    assert predicted_crossing(40, 50, 0.0, now) is None
    assert forecast(budget(), 40, 0.001, now) == pytest.approx(40 + 0.001 * 12 * 3600)
    assert forecast(budget(period="rolling:1h"), 1, 0.01, now) == pytest.approx(36)
    status = budget_status(budget(), 40, 0.001, now)
    assert [(t.crossed, t.predicted_at) for t in status.thresholds] == [
        (False, now + timedelta(seconds=10_000)), (False, None)]  # 100 % would fall after midnight
    assert status.as_dict()["percent"] == 40
