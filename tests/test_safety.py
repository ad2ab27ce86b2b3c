from __future__ import annotations

from datetime import UTC, datetime, timedelta

from supervisor.core.safety import SafetyRails

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def rails(active: int = 1000, per_minute: int = 3, fraction: float = 0.5, minimum: int = 2) -> SafetyRails:
    return SafetyRails(max_actions_per_minute=per_minute, breaker_fraction=fraction, breaker_min_targets=minimum,
                       active_sessions=lambda: active)


def test_actions_beyond_the_minute_budget_wait_for_a_slot() -> None:
    guard = rails()
    for i in range(3):
        assert guard.admit(f"s{i}", T0 + timedelta(seconds=i)).allowed
    held = guard.admit("s9", T0 + timedelta(seconds=10))
    assert not held.allowed and held.reason == "rate_limit" and held.retry_at == T0 + timedelta(minutes=1)
    assert guard.admit("s9", T0 + timedelta(minutes=1, seconds=1)).allowed


def test_the_breaker_opens_on_an_abnormal_share_and_stays_open() -> None:
    guard = rails(active=4, per_minute=100, fraction=0.5, minimum=2)
    assert guard.admit("s1", T0).allowed
    assert guard.admit("s2", T0).allowed
    tripped = guard.admit("s3", T0)
    assert not tripped.allowed and tripped.reason == "circuit_breaker" and tripped.retry_at is None
    assert guard.breaker_open
    assert not guard.admit("s1", T0 + timedelta(hours=1)).allowed


def test_repeated_actions_on_one_session_count_once_for_the_breaker() -> None:
    guard = rails(active=4, per_minute=100, fraction=0.5, minimum=2)
    for _ in range(5):
        assert guard.admit("s1", T0).allowed


def test_sessions_terminated_in_the_window_still_count_as_watched() -> None:
    active = [4]
    guard = SafetyRails(max_actions_per_minute=100, breaker_fraction=1.0, breaker_min_targets=1,
                        active_sessions=lambda: active[0])
    for i in range(4):
        assert guard.admit(f"s{i}", T0).allowed
        active[0] -= 1  # each action ended a session
    assert not guard.breaker_open


def test_before_the_sessions_are_listed_the_breaker_waits_for_their_count_and_the_budget_still_holds() -> None:
    # A restart or a takeover knows only the sessions it resumed, all of them due: no share to judge yet.
    active: list[int | None] = [None]
    guard = SafetyRails(max_actions_per_minute=5, breaker_fraction=0.5, breaker_min_targets=2,
                        active_sessions=lambda: active[0])
    for i in range(5):
        assert guard.admit(f"s{i}", T0).allowed
    held = guard.admit("s5", T0)
    assert not held.allowed and held.reason == "rate_limit"
    assert not guard.breaker_open
    # Listed: 6 active sessions; the 5 hit this minute and one more are over half of them.
    active[0] = 6
    tripped = guard.admit("s5", T0 + timedelta(seconds=30))
    assert tripped.reason == "rate_limit"  # the budget first, still full this minute
    tripped = guard.admit("s5", T0 + timedelta(seconds=61))
    assert tripped.allowed  # the minute passed: the first five are forgotten, one of 6 hit
    for i in range(6, 8):
        assert guard.admit(f"s{i}", T0 + timedelta(seconds=62)).allowed
    assert not guard.admit("s8", T0 + timedelta(seconds=62)).allowed and guard.breaker_open  # 4 > 0.5 × 6
