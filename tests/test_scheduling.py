from __future__ import annotations

from datetime import UTC, datetime, timedelta

from supervisor.core.scheduling import CheckKind, Deadlines

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_deadlines_pop_in_time_order_and_rescheduling_supersedes() -> None:
    deadlines = Deadlines()
    assert deadlines.schedule("a", T0 + timedelta(seconds=5), CheckKind.CROSSING)
    assert deadlines.schedule("b", T0 + timedelta(seconds=1), CheckKind.CROSSING)
    assert not deadlines.schedule("c", T0 + timedelta(seconds=3), CheckKind.STATISTICS)
    assert deadlines.schedule("a", T0, CheckKind.CROSSING)  # earlier: supersedes, now the head
    assert deadlines.next_at() == T0
    assert deadlines.pop_due(T0 + timedelta(seconds=3)) == [
        ("a", CheckKind.CROSSING), ("b", CheckKind.CROSSING), ("c", CheckKind.STATISTICS)
    ]
    assert len(deadlines) == 0 and deadlines.next_at() is None


def test_a_later_schedule_of_the_same_kind_keeps_the_earlier_one() -> None:
    deadlines = Deadlines()
    deadlines.schedule("a", T0, CheckKind.CROSSING)
    deadlines.schedule("a", T0 + timedelta(seconds=9), CheckKind.CROSSING)
    assert deadlines.next_at() == T0


def test_cancelled_deadlines_never_fire() -> None:
    deadlines = Deadlines()
    deadlines.schedule("a", T0, CheckKind.CROSSING)
    deadlines.cancel("a")
    assert deadlines.pop_due(T0 + timedelta(hours=1)) == []
