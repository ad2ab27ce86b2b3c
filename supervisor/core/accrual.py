"""DPU accrual and its cost: the one place that turns ``DpuExecutionInMillis`` into DPU-hours, USD and rates.

Used by policy evaluation (DPU/cost limits and their predicted crossings), budget accounting (spend and burn
rate), and the ``budgets`` and ``explain`` commands, so they all agree by construction.
"""

from __future__ import annotations

from datetime import datetime

MILLIS_PER_HOUR = 3_600_000
SECONDS_PER_HOUR = 3600


def dpu_hours(dpu_millis: int | float) -> float:
    return dpu_millis / MILLIS_PER_HOUR


def cost_usd(dpu_millis: int | float, dpu_hour_usd: float) -> float:
    return dpu_hours(dpu_millis) * dpu_hour_usd


def usd_per_second(dpus: float, dpu_hour_usd: float) -> float:
    """The burn rate of ``dpus`` DPUs accruing at once."""
    return dpus * dpu_hour_usd / SECONDS_PER_HOUR


def accrual_rate(
    current: int, observed_at: datetime, previous: tuple[int, datetime] | None, accruing_since: datetime | None
) -> float | None:
    """DPUs accruing (DPU-milliseconds per millisecond): between two observations when there are two and
    the counter moved, else the average since ``accruing_since``; None when neither says anything."""
    if previous is not None:
        previous_millis, previous_at = previous
        elapsed = (observed_at - previous_at).total_seconds() * 1000
        if elapsed > 0 and current > previous_millis:
            return (current - previous_millis) / elapsed
    if accruing_since is not None:
        elapsed = (observed_at - accruing_since).total_seconds() * 1000
        if elapsed > 0 and current > 0:
            return current / elapsed
    return None


def accrued_since(current: int, counted: int) -> int:
    """DPU-milliseconds not yet counted (the counter never goes back; a smaller value adds nothing)."""
    return max(0, current - counted)
