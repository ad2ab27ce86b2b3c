"""Pure budget arithmetic: periods, spend allocation, threshold crossings and forecasts.

No I/O and no clock reads: ``now`` is always an argument. Times are aware datetimes (UTC in, UTC out).

- **Calendar periods** (``daily``, ``weekly`` starting Monday, ``monthly``) start at local midnight in the
  budget's ``timezone``; a period's spend is the spend allocated to it. Daylight-saving days are 23 or
  25 hours long, as the wall clock says.
- **Rolling windows** (``rolling:<duration>``) have no boundaries: the spend is the sum over the last
  ``window``, kept in buckets of ``window / 100`` (at least 10 ms, at most 5 min), so the sum is exact to
  about one percent of the window.
- **Episodes**: a threshold fires once per calendar period; in a rolling window it fires once, then again
  only after the window's spend has fallen back below it (the rolling analogue of a period reset).
- **Forecast**: the burn rate (USD per second, from the latest accrual of the active sessions) projected
  to the period end; for a rolling window the steady state ``rate × window``. The predicted crossing of a
  threshold is ``now + (amount − spent) / rate`` (None at rate 0, or when it falls after a calendar
  period's end).
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from supervisor.config import BudgetConfig, BudgetThreshold
from supervisor.core.accrual import usd_per_second

MIN_BUCKET = timedelta(milliseconds=10)
MAX_BUCKET = timedelta(minutes=5)
BUCKETS_PER_WINDOW = 100
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Bounds = tuple[datetime, datetime]


def is_rolling(budget: BudgetConfig) -> bool:
    return budget.rolling_window is not None


def period_bounds(budget: BudgetConfig, now: datetime) -> Bounds:
    """The current period ``[start, end)``; for a rolling window ``(now − window, now)``."""
    window = budget.rolling_window
    if window is not None:
        return now - window, now
    return calendar_period(budget.period, budget.timezone, now)


def calendar_period(period: str, timezone: str, at: datetime) -> Bounds:
    """The calendar day, week (Monday start) or month containing ``at``, in ``timezone``, as UTC bounds."""
    zone = ZoneInfo(timezone)
    day = at.astimezone(zone).date()
    if period == "daily":
        first, after = day, day + timedelta(days=1)
    elif period == "weekly":
        first = day - timedelta(days=day.weekday())
        after = first + timedelta(days=7)
    elif period == "monthly":
        first = day.replace(day=1)
        after = first + timedelta(days=calendar.monthrange(day.year, day.month)[1])
    else:
        raise ValueError(f"not a calendar period: {period!r}")
    return (datetime.combine(first, time(), zone).astimezone(UTC),
            datetime.combine(after, time(), zone).astimezone(UTC))


def bucket_width(window: timedelta) -> timedelta:
    return min(MAX_BUCKET, max(MIN_BUCKET, window / BUCKETS_PER_WINDOW))


def bucket_of(budget: BudgetConfig, at: datetime) -> Bounds:
    """The accounting bucket containing ``at``: the calendar period itself, or a slice of a rolling window."""
    window = budget.rolling_window
    if window is None:
        return calendar_period(budget.period, budget.timezone, at)
    width = bucket_width(window)
    start = EPOCH + width * ((at - EPOCH) // width)
    return start, start + width


def accounting_horizon(budget: BudgetConfig, now: datetime) -> datetime:
    """Spend before this instant can no longer count towards the current period."""
    return period_bounds(budget, now)[0]


def allocate(
    usd: float, start: datetime, end: datetime, bucket: Callable[[datetime], Bounds], horizon: datetime
) -> list[tuple[datetime, float]]:
    """Spread ``usd`` accrued during ``[start, end]`` uniformly over the buckets it overlaps.

    The share accrued before ``horizon`` is dropped (it belongs to periods that are over). Returns
    ``(bucket_start, usd)`` pairs in time order.
    """
    if usd <= 0:
        return []
    if end <= start:
        return [(bucket(end)[0], usd)] if end >= horizon else []
    total = (end - start).total_seconds()
    shares: list[tuple[datetime, float]] = []
    cursor = max(start, horizon)
    while cursor < end:
        first, after = bucket(cursor)
        until = min(after, end)
        shares.append((first, usd * (until - cursor).total_seconds() / total))
        cursor = until
    return shares


def threshold_amount(budget: BudgetConfig, threshold: BudgetThreshold) -> float:
    return budget.limit_usd * threshold.at_percent / 100


def crossed_thresholds(
    spent: float, limit: float, thresholds: Sequence[BudgetThreshold]
) -> list[BudgetThreshold]:
    """The thresholds ``spent`` has reached, in ascending order."""
    return [t for t in sorted(thresholds, key=lambda t: t.at_percent) if spent >= limit * t.at_percent / 100]


def predicted_crossing(spent: float, amount: float, rate: float, now: datetime) -> datetime | None:
    """When ``spent`` reaches ``amount`` at ``rate`` USD/s (``now`` if already reached; None if never)."""
    if spent >= amount:
        return now
    if rate <= 0:
        return None
    return now + timedelta(seconds=(amount - spent) / rate)


def forecast(budget: BudgetConfig, spent: float, rate: float, now: datetime) -> float:
    """Spend expected at the period end (rolling: in a window at the current rate)."""
    window = budget.rolling_window
    if window is not None:
        return max(spent, rate * window.total_seconds())
    end = period_bounds(budget, now)[1]
    return spent + max(0.0, rate) * max(0.0, (end - now).total_seconds())


@dataclass(frozen=True, slots=True)
class ThresholdStatus:
    at_percent: float
    action: str
    amount_usd: float
    crossed: bool
    predicted_at: datetime | None


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """A budget's position at one instant."""

    name: str
    period_start: datetime
    period_end: datetime
    rolling: bool
    spent_usd: float
    limit_usd: float
    rate_usd_per_hour: float
    forecast_usd: float
    thresholds: tuple[ThresholdStatus, ...]
    period: str = ""  # as configured: daily, weekly, monthly or rolling:<duration>

    @property
    def period_key(self) -> str:
        """Identifies a calendar period (empty for rolling windows, whose episodes are keyed otherwise)."""
        return "" if self.rolling else self.period_start.isoformat()

    def as_dict(self) -> dict[str, object]:
        return {
            "budget": self.name, "period": self.period or ("rolling" if self.rolling else "calendar"),
            "rolling": self.rolling,
            "period_start": self.period_start.isoformat(), "period_end": self.period_end.isoformat(),
            "spent_usd": round(self.spent_usd, 6), "limit_usd": self.limit_usd,
            "percent": round(100 * self.spent_usd / self.limit_usd, 3),
            "rate_usd_per_hour": round(self.rate_usd_per_hour, 6), "forecast_usd": round(self.forecast_usd, 6),
            "thresholds": [
                {"at_percent": t.at_percent, "action": t.action, "amount_usd": round(t.amount_usd, 6),
                 "crossed": t.crossed, "predicted_at": t.predicted_at.isoformat() if t.predicted_at else None}
                for t in self.thresholds
            ],
        }


def budget_status(budget: BudgetConfig, spent: float, rate: float, now: datetime) -> BudgetStatus:
    """Where ``budget`` stands with ``spent`` USD in its period and a burn rate of ``rate`` USD/s."""
    start, end = period_bounds(budget, now)
    thresholds = []
    for threshold in budget.thresholds:
        amount = threshold_amount(budget, threshold)
        predicted = predicted_crossing(spent, amount, rate, now)
        if predicted is not None and not is_rolling(budget) and predicted >= end:
            predicted = None
        thresholds.append(ThresholdStatus(threshold.at_percent, threshold.action, amount, spent >= amount, predicted))
    return BudgetStatus(
        name=budget.name, period_start=start, period_end=end, rolling=is_rolling(budget), spent_usd=spent,
        limit_usd=budget.limit_usd, rate_usd_per_hour=rate * 3600, forecast_usd=forecast(budget, spent, rate, now),
        thresholds=tuple(thresholds), period=budget.period,
    )


Allocation = list[tuple[str, datetime, float]]  # (budget, bucket_start, usd)


@dataclass(frozen=True, slots=True)
class Counted:
    """The last counted observation of a session."""

    session_id: str
    workgroup: str
    millis: int
    observed_at: datetime
    ended: bool


@dataclass(frozen=True, slots=True)
class Episode:
    """A threshold that fired and has not been reset yet (or has, when ``closed_at`` is set)."""

    episode_id: int
    budget: str
    at_percent: float
    action: str
    period_key: str
    opened_at: datetime
    spent_usd: float
    closed_at: datetime | None = None


def slack(budget: BudgetConfig) -> timedelta:
    """One bucket: a rolling window's edge buckets straddle the window boundary."""
    window = budget.rolling_window
    return bucket_width(window) if window is not None else timedelta(0)


def spend_window(budget: BudgetConfig, now: datetime) -> Bounds:
    """The bucket starts ``[since, until)`` whose spend counts towards the current period."""
    start, end = period_bounds(budget, now)
    return start, (end if budget.rolling_window is None else now + slack(budget))


def allocation(budgets: Sequence[BudgetConfig], usd: float, start: datetime, end: datetime,
               now: datetime) -> Allocation:
    """Which buckets of which budgets receive ``usd`` accrued during ``[start, end]``."""
    shares: Allocation = []
    for budget in budgets:
        horizon = accounting_horizon(budget, now) - slack(budget)
        bucket = _bucket_function(budget)
        shares.extend((budget.name, first, part) for first, part in allocate(usd, start, end, bucket, horizon))
    return shares


def _bucket_function(budget: BudgetConfig) -> Callable[[datetime], Bounds]:
    def bucket(at: datetime) -> Bounds:
        return bucket_of(budget, at)
    return bucket


def episode_over(budget: BudgetConfig, status: BudgetStatus, episode: Episode) -> bool:
    """A calendar episode ends with its period; a rolling one when spend falls back below its threshold (or
    when its threshold is no longer configured)."""
    amount = next((threshold_amount(budget, t) for t in budget.thresholds if t.at_percent == episode.at_percent),
                  None)
    if amount is None:
        return True
    if status.rolling:
        return status.spent_usd < amount
    return episode.period_key != status.period_key


def warnings_due(budget: BudgetConfig, status: BudgetStatus, now: datetime) -> list[ThresholdStatus]:
    """Thresholds predicted to be crossed within the budget's ``notify_before``."""
    if budget.notify_before is None:
        return []
    return [t for t in status.thresholds if not t.crossed and t.predicted_at is not None
            and t.predicted_at - now <= budget.notify_before]


def status_at(budget: BudgetConfig, spent: float, dpus: float, dpu_hour_usd: float, now: datetime) -> BudgetStatus:
    """Where ``budget`` stands with ``spent`` USD counted and ``dpus`` DPUs accruing in its workgroups."""
    return budget_status(budget, spent, usd_per_second(dpus, dpu_hour_usd), now)

