"""The pure lease plan: even quotas, stable assignments, orphans taken, and the acting deadline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from supervisor.core.fleet import Lease, acting_deadline, heartbeat_expiry, next_slot, plan_leases, quotas

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SKEW = timedelta(seconds=1)
DURATION = timedelta(seconds=15)
SHARDS = [f"11111111111{n}/us-east-1" for n in range(6)]


def lease(scope: str, owner: str, expires_in: float, token: int = 1) -> Lease:
    return Lease(scope, owner, token, NOW + timedelta(seconds=expires_in))


def plan(me: str, leases: dict[str, Lease], live: list[str],
         free_since: dict[str, datetime] | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    result = plan_leases(me, SHARDS, leases, live, NOW, free_since=free_since or {},
                         orphan_after=DURATION)
    return result.acquire, result.release


def test_quotas_spread_evenly_and_agree_between_replicas() -> None:
    assert quotas(6, ["c", "a", "b"]) == {"a": 2, "b": 2, "c": 2}
    assert quotas(6, ["a", "b", "c", "d"]) == {"a": 2, "b": 2, "c": 1, "d": 1}
    assert quotas(12, ["a"]) == {"a": 12}
    assert quotas(1, ["b", "a"]) == {"a": 1, "b": 0}
    assert quotas(3, []) == {}


def test_a_lone_replica_takes_every_shard() -> None:
    acquire, release = plan("a", {}, ["a"])
    assert sorted(acquire) == sorted(SHARDS) and release == ()


def test_three_replicas_split_six_shards_without_overlap() -> None:
    leases: dict[str, Lease] = {}
    for replica in ("a", "b", "c"):
        acquire, _ = plan(replica, leases, ["a", "b", "c"])
        for scope in acquire:
            assert scope not in leases
            leases[scope] = lease(scope, replica, 15)
    owners = [lease.owner for lease in leases.values()]
    assert sorted(owners) == ["a", "a", "b", "b", "c", "c"]
    for replica in ("a", "b", "c"):  # stable: nobody moves anything once spread
        assert plan(replica, leases, ["a", "b", "c"]) == ((), ())


def test_a_joining_replica_gets_its_share_from_the_others() -> None:
    leases = {scope: lease(scope, "a", 15) for scope in SHARDS}
    acquire, release = plan("a", leases, ["a", "b"])
    assert acquire == () and len(release) == 3
    assert plan("b", leases, ["a", "b"]) == ((), ())  # held: b waits for a's releases
    for scope in release:
        del leases[scope]
    acquire, _ = plan("b", leases, ["a", "b"])
    assert sorted(acquire) == sorted(release)


def test_a_held_lease_is_never_taken_and_an_expired_one_at_once() -> None:
    leases = {scope: lease(scope, "a", 15) for scope in SHARDS[:3]}
    leases |= {scope: lease(scope, "dead", 0) for scope in SHARDS[3:]}  # expiring now: still held
    acquire, _ = plan("b", leases, ["a", "b"])
    assert acquire == ()
    leases |= {scope: lease(scope, "dead", -0.001) for scope in SHARDS[3:]}
    acquire, _ = plan("b", leases, ["a", "b"])
    assert sorted(acquire) == sorted(SHARDS[3:])


def test_orphans_are_taken_above_the_quota_once_nobody_took_them() -> None:
    leases = {scope: lease(scope, "a", 15) for scope in SHARDS[:3]}
    leases |= {scope: lease(scope, "stuck", -5) for scope in SHARDS[3:]}
    # "stuck" still heartbeats (its quota is 3), so "a" at its quota leaves them to it for a while ...
    seen_free = {scope: NOW - timedelta(seconds=10) for scope in SHARDS[3:]}
    assert plan("a", leases, ["a", "stuck"], seen_free) == ((), ())
    # ... but not for ever: free for longer than a lease duration, as this replica has seen.
    seen_free = {scope: NOW - timedelta(seconds=16) for scope in SHARDS[3:]}
    acquire, _ = plan("a", leases, ["a", "stuck"], seen_free)
    assert sorted(acquire) == sorted(SHARDS[3:])


def test_a_released_lease_is_free_at_once_but_no_orphan() -> None:
    released = Lease(SHARDS[5], "a", 3, datetime(1970, 1, 1, tzinfo=UTC))
    leases = {scope: lease(scope, "a", 15) for scope in SHARDS[:3]}
    leases |= {scope: lease(scope, "b", 15) for scope in SHARDS[3:5]} | {SHARDS[5]: released}
    # b under its quota takes it at once; a at its quota leaves it, until it has been free for a while.
    assert plan("b", leases, ["a", "b"], {SHARDS[5]: NOW}) == ((SHARDS[5],), ())
    assert plan("a", leases, ["a", "b"], {SHARDS[5]: NOW}) == ((), ())


def test_the_holder_stops_acting_before_anyone_else_may_start() -> None:
    renewed_at = NOW
    margin = SKEW + timedelta(seconds=2)  # skew + connect timeout
    stop = acting_deadline(renewed_at, DURATION, margin)
    # Another replica takes the lease just after its expiry by its own clock, which may be SKEW ahead of ours:
    # a call we started just before our deadline is on the wire (connect timeout) before that instant.
    earliest_takeover_by_our_clock = renewed_at + DURATION - SKEW
    assert stop + timedelta(seconds=2) <= earliest_takeover_by_our_clock


def test_the_other_free_shards_are_spares_for_one_another_replica_takes_first() -> None:
    # c died holding four shards: a and b (one each) may take two more each, and both want them now.
    leases = {scope: lease(scope, "c", -5) for scope in SHARDS[:4]}
    leases |= {SHARDS[4]: lease(SHARDS[4], "a", 15), SHARDS[5]: lease(SHARDS[5], "b", 15)}
    result = plan_leases("a", SHARDS, leases, ["a", "b"], NOW, free_since={}, orphan_after=DURATION)
    assert len(result.acquire) == 2
    assert sorted(result.acquire + result.spare) == sorted(SHARDS[:4])
    # At its quota a replica has no spares: it takes nothing more.
    leases |= {scope: lease(scope, "a", 15) for scope in result.acquire}
    assert plan_leases("a", SHARDS, leases, ["a", "b"], NOW, free_since={},
                       orphan_after=DURATION).spare == ()


def test_periodic_work_falls_in_each_keys_own_slot_of_the_period() -> None:
    period = timedelta(seconds=30)
    keys = [f"{account}/us-east-1" for account in ("111111111111", "222222222222", "333333333333", "444444444444")]
    slots = {key: next_slot(NOW, period, key) for key in keys}
    assert all(NOW < slot <= NOW + period for slot in slots.values())
    assert len(set(slots.values())) == len(keys), "the shards' saves are spread over the period"
    for key, slot in slots.items():
        # Every period at the same offset, whichever instant one asks from, on any replica and after any restart.
        assert next_slot(slot, period, key) == slot + period
        assert next_slot(slot - timedelta(microseconds=1), period, key) == slot
        assert next_slot(NOW + timedelta(seconds=7), period, key) in (slot, slot + period)


def test_a_dead_replicas_heartbeat_lapses_no_later_than_the_leases_it_renewed() -> None:
    # Heartbeats and renewals each go every third of the lease, on loops whose phases differ by up to a third. For
    # any death, whatever the phases, the last heartbeat says "live" no longer than the last renewal holds a lease:
    # the survivors, whose quotas count live replicas, take the shards at the leases' expiry, not a round later.
    period = DURATION / 3
    for phase in range(0, 50):
        for died_after in range(0, 50):
            first_renewal = NOW + period * (phase / 50)
            death = NOW + DURATION + period * (died_after / 50)
            last_heartbeat = NOW + ((death - NOW) // period) * period
            last_renewal = first_renewal + ((death - first_renewal) // period) * period
            assert heartbeat_expiry(last_heartbeat, DURATION) <= last_renewal + DURATION, (phase, died_after)
    # ... and it still outlives one lost heartbeat: the next one after it comes a third later, retried after 1 s.
    assert heartbeat_expiry(NOW, DURATION) > NOW + period + timedelta(seconds=1)
