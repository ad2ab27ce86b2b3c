"""The Storage protocol's contract, run against both backends: SQLite (a file) and DynamoDB (moto in server mode on
loopback, the real DynamoDB protocol through the gateway).

``backend.open()`` opens another root storage on the same store, as a second replica (or a second process on the
same SQLite file) would. Fencing and leases exist only on DynamoDB: SQLite has one process owning every shard, so
it accepts a fence and ignores it (its own test here).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, closing
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry

from supervisor.config import Settings, parse_settings
from supervisor.core import escalation as machine
from supervisor.core.budgets import Counted
from supervisor.core.escalation import Escalation, Step, Timing
from supervisor.core.fleet import Fence, Shard, WatchEntry
from supervisor.core.model import Origin, TargetKey, TargetKind, TargetRef, Verdict
from supervisor.metrics import Metrics, sum_samples
from supervisor.storage import EventQuery, FenceLost, LeaseStore, Storage
from supervisor.storage.factory import lease_store, open_storage
from tests.dynamodb_fixtures import create_table, dynamodb_settings, dynamodb_storage, new_table_name

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TIMING = Timing(stop_grace=timedelta(seconds=30), terminate_grace=timedelta(seconds=60))
SHARD_A = Shard("111111111111", "us-east-1")
SHARD_B = Shard("222222222222", "eu-west-1")
IMPLICIT = Shard("", "us-east-1", implicit=True)


@dataclass(frozen=True)
class Backend:
    name: str
    settings: Settings

    def open(self, registry: CollectorRegistry | None = None) -> AbstractAsyncContextManager[Storage]:
        """A root storage on this backend's store: another replica (its own connection or gateway), its DynamoDB
        calls counted in ``registry``."""
        return dynamodb_storage(self.settings, registry) if self.name == "dynamodb" else open_storage(
            self.settings, metrics=Metrics(registry or CollectorRegistry()))


@pytest.fixture(params=["sqlite", "dynamodb"])
async def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", parse_settings({"journal": {"path": str(tmp_path / "j.db")}}, environ={}))
    settings = dynamodb_settings(request.getfixturevalue("moto_dynamodb"), new_table_name())
    await create_table(settings)
    return Backend("dynamodb", settings)


@pytest.fixture
async def storage(backend: Backend) -> AsyncIterator[Storage]:
    async with backend.open() as opened:
        yield opened


def leases_of(storage: Storage) -> LeaseStore:
    leases = lease_store(storage)
    if leases is None:
        pytest.skip("SQLite has no leases: one process owns every shard of its file")
    return leases


def verdict(target_id: str = "c1", *, session_id: str = "s1", workgroup: str = "etl-a",
            origin: Origin = Origin.POLICY) -> Verdict:
    return Verdict(target=TargetRef(TargetKind.CALCULATION, target_id, session_id, workgroup), policy="p",
                   rule="max_runtime", observed=1801.5, limit=1800.0, unit="seconds", crossed_at=T0,
                   decided_at=T0 + timedelta(seconds=1), action="stop", mode="enforce", origin=origin)


def disable(workgroup: str, scope: str = "disable:1") -> Verdict:
    return Verdict(target=TargetRef.of_workgroup(workgroup, scope), policy="b", rule="disable_workgroup",
                   observed=5.0, limit=4.0, unit="usd", crossed_at=T0, decided_at=T0, action="disable_workgroup",
                   mode="enforce", origin=Origin.BUDGET)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def per_second(budget: str = "b") -> Callable[[int, Counted | None], list[tuple[str, datetime, float]]]:
    """One USD per DPU-second, all in the bucket at T0."""
    return lambda delta, previous: [(budget, T0, delta / 1000)]


async def sent_stop(storage: Storage, escalation: Escalation) -> Escalation:
    intended = machine.intend(escalation, Step.SEND_STOP, at(1))
    await storage.save(intended, "stop.intent", {}, time=at(1))
    stopped = machine.sent(intended, Step.SEND_STOP, at(2), TIMING)
    await storage.save(stopped, "stop.sent", {"state": "CANCELING"}, time=at(2))
    return stopped


# --- escalations: claims, intents and answers -------------------------------------------------------------


async def test_an_escalation_survives_reopening_exactly(backend: Backend, storage: Storage) -> None:
    escalation = machine.begin(verdict(origin=Origin.BUDGET), "e1", T0)
    assert await storage.claim(escalation, "decision", {"why": "test"})
    stopped = await sent_stop(storage, escalation)
    async with backend.open() as reopened:
        assert await reopened.open_escalations() == [stopped]
        assert await reopened.escalation_for(TargetKey.calculation("c1")) == stopped
        events = await reopened.recent_events(10)
    assert [e.event for e in events] == ["stop.sent", "stop.intent", "decision"]
    assert events[0].detail == {"state": "CANCELING"} and events[0].phase == "stop_requested"
    assert (events[2].policy, events[2].rule, events[2].target_id, events[2].escalation_id) == (
        "p", "max_runtime", "c1", "e1")


async def test_a_target_is_claimed_once_and_workgroup_scopes_are_distinct(storage: Storage) -> None:
    assert await storage.claim(machine.begin(verdict(), "e1", T0), "decision", {})
    assert not await storage.claim(machine.begin(verdict(), "e2", T0), "decision", {})
    assert await storage.claim(machine.begin(disable("etl-a", "disable:1"), "e3", T0), None, {})
    assert await storage.claim(machine.begin(disable("etl-a", "disable:2"), "e4", T0), None, {})
    assert await storage.claimed_targets() == {
        TargetKey.calculation("c1"), TargetKey(TargetKind.WORKGROUP, "etl-a", "disable:1"),
        TargetKey(TargetKind.WORKGROUP, "etl-a", "disable:2")}
    found = await storage.escalation_for(TargetKey(TargetKind.WORKGROUP, "etl-a", "disable:1"))
    assert found is not None and found.escalation_id == "e3" and found.verdict.target.scope == "disable:1"
    assert await storage.escalation_for(TargetKey.calculation("nope")) is None
    assert [e.event for e in await storage.recent_events(10)] == ["decision"], "a None event journals nothing"


async def test_settled_escalations_are_not_reopened(storage: Storage) -> None:
    escalation = machine.begin(verdict(), "e1", T0)
    await storage.claim(escalation, "decision", {})
    done = machine.calculation_observed(machine.sent(escalation, Step.SEND_STOP, T0, TIMING), None, T0, TIMING,
                                        found=False)
    await storage.save(done, "verify.done", {}, time=T0)
    assert await storage.open_escalations() == []
    assert await storage.claimed_targets() == {TargetKey.calculation("c1")}, "settled, still claimed"


async def test_open_escalations_come_in_the_order_they_were_created(storage: Storage) -> None:
    for index, target in enumerate(("c3", "c1", "c2")):
        await storage.claim(machine.begin(verdict(target), f"e{index}", at(index)), "decision", {})
    assert [e.verdict.target.target_id for e in await storage.open_escalations()] == ["c3", "c1", "c2"]


# --- events and notices --------------------------------------------------------------------------------------


async def test_events_newest_first_limited_and_by_target(storage: Storage) -> None:
    await storage.record("warning", target=verdict("c2").target, policy="p", rule="max_runtime", detail={"x": 1},
                         time=at(1))
    await storage.claim(machine.begin(verdict("c3"), "e3", at(2)), "decision", {})
    await storage.record("budget.threshold", policy="b", rule="80%", detail={"spent_usd": 4.0}, time=at(3))
    assert [e.event for e in await storage.recent_events(10)] == ["budget.threshold", "decision", "warning"]
    assert [e.event for e in await storage.recent_events(2)] == ["budget.threshold", "decision"]
    (warning,) = await storage.recent_events(10, target_id="c2")
    assert (warning.target_id, warning.session_id, warning.workgroup, warning.detail, warning.time) == (
        "c2", "s1", "etl-a", {"x": 1}, at(1))
    assert {e.target_id for e in await storage.recent_events(10, target_id="s1")} == {"c2", "c3"}
    assert await storage.recent_events(10, target_id="unknown") == []


async def test_events_on_several_days_read_back_across_days(storage: Storage) -> None:
    for day in range(3):
        await storage.record("warning", policy="p", detail={"day": day}, time=T0 + timedelta(days=day))
    assert [e.detail["day"] for e in await storage.recent_events(2)] == [2, 1]
    assert [e.detail["day"] for e in await storage.recent_events(10)] == [2, 1, 0]


async def test_events_are_queried_by_time_policy_workgroup_name_and_mode(storage: Storage) -> None:
    dry = replace(verdict("c5", session_id="s5", workgroup="etl-b"), mode="dry-run")
    await storage.claim(machine.begin(verdict("c1"), "e1", at(0)), "decision", verdict("c1").describe())
    await sent_stop(storage, machine.begin(verdict("c1"), "e1", at(0)))  # stop.intent at 1 s, stop.sent at 2 s
    await storage.record("stop.held", target=verdict("c2").target, policy="p", rule="max_runtime",
                         detail={"reason": "rate_limit"}, time=at(3))
    await storage.claim(machine.begin(dry, "e5", at(4)), "decision", dry.describe())
    await storage.record("warning", target=verdict("c6").target, policy="q", rule="max_runtime", time=at(5))
    await storage.record("budget_threshold", policy="b", rule="threshold:80",
                         detail={"workgroup": "etl-b", "mode": "dry-run", "action": "notify"},
                         time=T0 + timedelta(days=1))

    async def events(**conditions: Any) -> list[str]:
        return [f"{e.event}@{e.target_id or e.policy}" for e in await storage.query_events(EventQuery(**conditions))]

    assert await events(limit=3) == ["budget_threshold@b", "warning@c6", "decision@c5"]
    assert await events(since=at(1), until=at(4)) == ["stop.held@c2", "stop.sent@c1", "stop.intent@c1"]
    assert await events(policy="p", mode="dry-run") == ["decision@c5"]
    assert await events(mode="enforce") == ["stop.held@c2", "stop.sent@c1", "stop.intent@c1", "decision@c1"]
    assert await events(workgroup="etl-b") == ["budget_threshold@b", "decision@c5"]
    assert await events(events=("stop.*", "warning")) == ["warning@c6", "stop.held@c2", "stop.sent@c1",
                                                          "stop.intent@c1"]
    assert await events(target_id="s1", since=at(2)) == ["warning@c6", "stop.held@c2", "stop.sent@c1"]
    assert await events(since=T0 + timedelta(hours=1), limit=None) == ["budget_threshold@b"]
    (threshold, *_) = await storage.query_events(EventQuery(limit=1))
    assert (threshold.mode, threshold.action) == ("dry-run", "notify")
    (sent,) = await storage.query_events(EventQuery(events=("stop.sent",)))
    assert (sent.mode, sent.action, sent.shard) == ("enforce", "stop", "")
    (warning,) = await storage.query_events(EventQuery(events=("warning",)))
    assert (warning.mode, warning.action) == (None, None)


async def test_an_id_prefix_names_the_calculations_and_sessions_that_start_with_it(backend: Backend,
                                                                                   storage: Storage) -> None:
    await storage.claim(machine.begin(verdict("c3727b86-aaaa", session_id="5e55-1"), "e1", T0), "decision", {})
    await storage.record("warning", target=verdict("c3727b86-bbbb", session_id="5e55-2").target, policy="p",
                         time=at(1))
    await storage.for_shard(SHARD_A).claim(machine.begin(verdict("c3727b99", session_id="5e55-3"), "e2", T0),
                                           "decision", {})
    await storage.claim(machine.begin(disable("c3727-workgroup"), "e3", T0), None, {})
    assert await storage.target_ids("c3727b86-a") == ["c3727b86-aaaa"]
    assert await storage.target_ids("c3727b9") == ["c3727b99"], "in every shard"
    assert await storage.target_ids("5e55-") == ["5e55-1", "5e55-2", "5e55-3"]
    # DynamoDB has no index by prefix: the claims are searched (one Query each), every event only when none matches.
    assert await storage.target_ids("c3727b8") == (
        ["c3727b86-aaaa", "c3727b86-bbbb"] if backend.name == "sqlite" else ["c3727b86-aaaa"])
    assert await storage.target_ids("c3727b86-b") == ["c3727b86-bbbb"], "only warned about"
    assert await storage.target_ids("zz") == []
    assert await storage.target_ids("c3727", limit=1) == ["c3727b86-aaaa"]


async def test_a_notice_is_marked_once_by_every_shard_and_replica(backend: Backend, storage: Storage) -> None:
    assert await storage.for_shard(SHARD_A).mark_once("warning:calculation:c1:max_runtime", T0)
    assert not await storage.for_shard(SHARD_B).mark_once("warning:calculation:c1:max_runtime", T0)
    async with backend.open() as other:
        assert not await other.mark_once("warning:calculation:c1:max_runtime", T0)
        assert await other.mark_once("budget-warning:b:80:2026-11", T0)


# --- shards ------------------------------------------------------------------------------------------------


async def test_claims_escalations_and_events_belong_to_their_shard(storage: Storage) -> None:
    a, b = storage.for_shard(SHARD_A), storage.for_shard(SHARD_B)
    await a.prepare(T0)  # what a new owner does ahead of its first claim: nothing to see, nothing changes
    assert await a.claimed_targets() == set() and await a.recent_events(10) == []
    # Workgroup names repeat across accounts: the same target key is claimed once per shard.
    assert await a.claim(machine.begin(disable("etl"), "ea", T0), "decision", {})
    assert await b.claim(machine.begin(disable("etl"), "eb", at(1)), "decision", {})
    assert not await a.claim(machine.begin(disable("etl"), "ea2", T0), "decision", {})
    assert await a.claim(machine.begin(verdict("c1"), "ec", at(2)), "decision", {})
    key = TargetKey(TargetKind.WORKGROUP, "etl", "disable:1")
    assert await a.claimed_targets() == {key, TargetKey.calculation("c1")}
    assert await b.claimed_targets() == {key}
    assert [e.escalation_id for e in await b.open_escalations()] == ["eb"]
    found = await b.escalation_for(key)
    assert found is not None and found.escalation_id == "eb"
    assert [e.escalation_id for e in await a.recent_events(10)] == ["ec", "ea"]
    assert [e.escalation_id for e in await b.recent_events(10, target_id="etl")] == ["eb"]
    # The root view reads every shard.
    assert {e.escalation_id for e in await storage.open_escalations()} == {"ea", "eb", "ec"}
    assert await storage.claimed_targets() == {key, TargetKey.calculation("c1")}
    assert [e.escalation_id for e in await storage.recent_events(10)] == ["ec", "eb", "ea"]


async def test_the_implicit_shard_is_what_the_root_view_writes(storage: Storage) -> None:
    """A single-account daemon uses the root view: its records are the implicit shard's, as before fleets."""
    await storage.claim(machine.begin(verdict("c1"), "e1", T0), "decision", {})
    await storage.set_checkpoint(T0)
    await storage.count("s1", "etl-a", 1000, T0, per_second())
    implicit = storage.for_shard(IMPLICIT)
    assert [e.escalation_id for e in await implicit.open_escalations()] == ["e1"]
    assert await implicit.checkpoint() == T0
    assert set(await implicit.open_sessions()) == {"s1"}
    assert await storage.for_shard(SHARD_A).open_escalations() == []
    assert await storage.for_shard(SHARD_A).checkpoint() is None


async def test_counted_sessions_checkpoints_and_disabled_workgroups_are_per_shard(storage: Storage) -> None:
    a, b = storage.for_shard(SHARD_A), storage.for_shard(SHARD_B)
    await a.count("sa", "etl", 2000, T0, per_second())
    await b.count("sb", "etl", 3000, T0, per_second())
    assert set(await a.open_sessions()) == {"sa"} and set(await b.open_sessions()) == {"sb"}
    assert set(await a.counted(["sa", "sb"])) == {"sa"}
    assert set(await storage.open_sessions()) == {"sa", "sb"}
    # Budget buckets are shared: a budget spanning accounts and regions counts both.
    assert await a.spent("b", T0, at(1)) == pytest.approx(5.0)
    await a.set_checkpoint(at(10))
    await b.set_checkpoint(at(20))
    assert (await a.checkpoint(), await b.checkpoint(), await storage.checkpoint()) == (at(10), at(20), None)
    episode = await a.open_episode("b", 100, "disable_workgroup", "2026-11-25", 5.0, T0)
    assert episode is not None
    await a.record_disabled("etl", episode, T0)
    await b.record_disabled("etl", episode, T0)
    assert await a.disabled_in(episode.episode_id) == {"etl"}
    await b.forget_disabled("etl", episode.episode_id)
    assert await b.disabled_in(episode.episode_id) == set()
    assert await a.disabled_in(episode.episode_id) == {"etl"}, "the same name in another account is another one"


# --- the watch list ------------------------------------------------------------------------------------------


def watched(target_id: str, seconds: float, kind: TargetKind = TargetKind.CALCULATION) -> WatchEntry:
    if kind is TargetKind.WORKGROUP:
        return WatchEntry(TargetRef.of_workgroup(target_id, "disable:1"), at(seconds))
    return WatchEntry(TargetRef(kind, target_id, "s1", "etl-a"), at(seconds))


async def test_a_save_makes_the_watch_list_exactly_its_entries_per_shard(backend: Backend, storage: Storage) -> None:
    a, b = storage.for_shard(SHARD_A), storage.for_shard(SHARD_B)
    assert await a.watch() == []
    first = [watched("c1", 1), watched("s1", 2, TargetKind.SESSION), watched("etl", 3, TargetKind.WORKGROUP)]
    await a.save_watch(first)
    await b.save_watch([watched("c9", 9)])
    key = lambda entry: str(entry.target.key)  # noqa: E731
    assert sorted(await a.watch(), key=key) == sorted(first, key=key)
    await a.save_watch([watched("c2", 5)])
    async with backend.open() as other:  # what a new owner of the shard resumes from
        assert await other.for_shard(SHARD_A).watch() == [watched("c2", 5)]
        assert sorted(await other.watch(), key=key) == [watched("c2", 5), watched("c9", 9)]
    await a.save_watch([])
    assert await a.watch() == []
    assert await b.watch() == [watched("c9", 9)]


async def test_the_watch_list_is_read_by_deadline(backend: Backend, storage: Storage) -> None:
    view = storage.for_shard(SHARD_A)
    entries = [watched(f"c{index}", index) for index in range(1, 6)]
    await view.save_watch(entries)
    await storage.for_shard(SHARD_B).save_watch([watched("b1", 1)])
    # What a new owner reads first (due before a horizon), then the rest (due from it): together, the whole list.
    assert by_key(await view.watch(due_before=at(3))) == entries[:2]
    assert by_key(await view.watch(due_from=at(3))) == entries[2:]
    assert by_key(await view.watch(due_from=at(2), due_before=at(4))) == entries[1:3]
    # A moved deadline moves the target between the two reads.
    moved = [replace(entries[4], next_check_at=at(0.5)), *entries[:4]]
    await view.save_watch(moved)
    assert by_key(await view.watch(due_before=at(3))) == by_key([moved[0], *entries[:2]])
    async with backend.open() as other:
        assert by_key(await other.for_shard(SHARD_A).watch()) == by_key(moved)


class Writes:
    """What a backend wrote, as seen from outside the storage: DynamoDB's TransactWriteItems calls (the storage's
    own metrics); SQLite's commits (``data_version`` from another connection changes with each) and the rowid of
    each row (an INSERT OR REPLACE gives a rewritten row a new one)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.registries: list[CollectorRegistry] = []

    def registry(self) -> CollectorRegistry:
        """The registry of one more storage opened on the backend."""
        self.registries.append(CollectorRegistry())
        return self.registries[-1]

    def transactions(self) -> float:
        return self.calls("TransactWriteItems")

    def calls(self, operation: str) -> float:
        return sum(sum_samples(registry, "athena_supervisor_aws_api_calls_total", operation=operation)
                   for registry in self.registries)

    def sqlite(self) -> tuple[int, dict[str, int]]:
        with closing(sqlite3.connect(self.backend.settings.journal.path)) as db:
            version = db.execute("PRAGMA data_version").fetchone()[0]
            rows = dict(db.execute("SELECT target_key, rowid FROM watch").fetchall())
        return version, rows


def by_key(entries: list[WatchEntry]) -> list[WatchEntry]:
    return sorted(entries, key=lambda entry: str(entry.target.key))


async def test_a_watch_save_writes_only_what_changed(backend: Backend) -> None:
    writes = Writes(backend)
    dynamodb = backend.name == "dynamodb"
    entries = [watched(f"c{index:03}", index) for index in range(150)]  # DynamoDB: more than one transaction
    async with backend.open(writes.registry()) as storage:
        view = storage.for_shard(SHARD_A)
        await view.save_watch(entries)
        first = writes.transactions()
        assert first == (2 if dynamodb else 0)
        # Nothing changed: nothing written, however often it is saved.
        before = None if dynamodb else writes.sqlite()
        for _ in range(3):
            await view.save_watch(entries)
        assert writes.transactions() == first
        assert before is None or writes.sqlite() == before
        # One deadline moved, one target gone, one added: one transaction of three writes, the rest untouched.
        changed = [replace(entries[0], next_check_at=at(900)), *entries[2:], watched("c999", 9)]
        await view.save_watch(changed)
        assert by_key(await view.watch()) == by_key(changed)
        if dynamodb:
            assert writes.transactions() == first + 1
        else:
            assert before is not None
            rows = writes.sqlite()[1]
            untouched = [str(entry.target.key) for entry in entries[2:]]
            assert [rows[key] for key in untouched] == [before[1][key] for key in untouched]
            assert rows[str(entries[0].target.key)] != before[1][str(entries[0].target.key)]
    # A new owner resumes from what it reads (due soon first, then the rest); its saves write only what changed
    # since, without reading the list again.
    async with backend.open(writes.registry()) as other:
        view = other.for_shard(SHARD_A)
        soon = await view.watch(due_before=at(100))
        assert by_key([*soon, *await view.watch(due_from=at(100))]) == by_key(changed)
        counted, queries = writes.transactions(), writes.calls("Query")
        await view.save_watch(changed)
        assert (writes.transactions(), writes.calls("Query")) == (counted, queries)
        await view.save_watch(changed[1:])
        assert writes.transactions() == counted + (1 if dynamodb else 0)
        assert by_key(await view.watch()) == by_key(changed[1:])


# --- the ledger: counted spend -----------------------------------------------------------------------------------


async def test_only_the_difference_is_counted_and_allocated(storage: Storage) -> None:
    seen: list[tuple[int, Counted | None]] = []

    def allocate(delta: int, previous: Counted | None) -> list[tuple[str, datetime, float]]:
        seen.append((delta, previous))
        return [("b", T0, delta / 1000)]

    assert (await storage.count("s", "wg", 5000, T0, allocate))[0] == 5000
    assert (await storage.count("s", "wg", 5000, at(1), allocate))[0] == 0
    assert (await storage.count("s", "wg", 4000, at(2), allocate))[0] == 0  # never backwards
    assert set(await storage.open_sessions()) == {"s"}
    delta, previous = await storage.count("s", "wg", 7500, at(3), allocate, ended=True)
    assert (delta, previous) == (2500, Counted("s", "wg", 5000, at(2), False))
    assert [d for d, _ in seen] == [5000, 2500]
    assert await storage.spent("b", T0, T0 + timedelta(days=1)) == pytest.approx(7.5)
    assert await storage.open_sessions() == {}
    assert await storage.counted(["s", "unknown"]) == {"s": Counted("s", "wg", 7500, at(3), True)}


async def test_a_session_marked_ended_leaves_the_open_sessions(storage: Storage) -> None:
    await storage.count("s1", "wg", 1000, T0, per_second())
    await storage.count("s2", "wg", 1000, T0, per_second())
    await storage.mark_ended("s1", "wg", at(5))
    await storage.mark_ended("never-counted", "wg", at(5))
    assert set(await storage.open_sessions()) == {"s2"}
    counted = await storage.counted(["s1", "never-counted"])
    assert counted["s1"] == Counted("s1", "wg", 1000, T0, True)
    assert counted["never-counted"] == Counted("never-counted", "wg", 0, at(5), True)


async def test_spend_is_summed_per_bucket_and_pruned(storage: Storage) -> None:
    hours = [T0 + timedelta(hours=h) for h in range(4)]

    def hourly(delta: int, previous: Counted | None) -> list[tuple[str, datetime, float]]:
        return [("b", hour, 1.0) for hour in hours] + [("other", hours[0], 9.0)]

    await storage.count("s", "wg", 1000, T0, hourly)
    assert await storage.spent("b", hours[1], hours[3]) == pytest.approx(2.0), "[since, until)"
    await storage.prune("b", hours[2])
    assert await storage.spent("b", T0, T0 + timedelta(days=1)) == pytest.approx(2.0)
    assert await storage.spent("other", T0, at(1)) == pytest.approx(9.0)


async def test_an_allocation_over_more_buckets_than_a_transaction_holds_is_counted_whole(storage: Storage) -> None:
    """A long gap in a rolling window spreads one delta over more buckets than a DynamoDB transaction holds."""
    buckets = [T0 + timedelta(minutes=m) for m in range(125)]

    def spread(delta: int, previous: Counted | None) -> list[tuple[str, datetime, float]]:
        return [("rolling", bucket, delta / 1000 / len(buckets)) for bucket in buckets]

    assert (await storage.count("s", "wg", 125_000, T0, spread))[0] == 125_000
    assert await storage.spent("rolling", T0, T0 + timedelta(days=1)) == pytest.approx(125.0)
    assert await storage.spent("rolling", T0, buckets[100]) == pytest.approx(100.0)
    assert (await storage.count("s", "wg", 125_000, at(60), spread))[0] == 0
    assert await storage.counted(["s"]) == {"s": Counted("s", "wg", 125_000, at(60), False)}


async def test_concurrent_counts_from_two_replicas_count_every_millisecond_once(backend: Backend,
                                                                                storage: Storage) -> None:
    observations = [1000 * n for n in range(1, 13)]
    deltas: list[int] = []
    async with backend.open() as other:
        views = [storage.for_shard(SHARD_A), other.for_shard(SHARD_A)]

        async def observe(view: Storage, millis: int) -> None:
            delta, _ = await view.count("s", "wg", millis, at(millis / 1000), per_second())
            deltas.append(delta)

        async with anyio.create_task_group() as group:
            for index, millis in enumerate(observations):
                group.start_soon(observe, views[index % 2], millis)
    assert sum(deltas) == max(observations)
    assert await storage.spent("b", T0, at(1)) == pytest.approx(max(observations) / 1000)
    assert (await storage.for_shard(SHARD_A).counted(["s"]))["s"].millis == max(observations)


async def test_a_replica_counting_between_a_read_and_a_write_is_not_counted_twice(backend: Backend,
                                                                                  storage: Storage) -> None:
    """Another replica counts the same session while this one is between its read and its write (inside
    ``allocate``). DynamoDB lets the other finish; this write's version condition then fails and it counts again
    from the other's value. SQLite makes the other wait for this transaction, then counts only what is left."""
    calls: list[int] = []

    def other_counts() -> None:
        async def count() -> None:
            async with backend.open() as other:
                await other.for_shard(SHARD_A).count("s", "wg", 8000, at(8), per_second())
        anyio.run(count)

    racer = threading.Thread(target=other_counts)

    def allocate(delta: int, previous: Counted | None) -> list[tuple[str, datetime, float]]:
        calls.append(delta)
        if len(calls) == 1:
            racer.start()
            if backend.name == "dynamodb":
                racer.join()
        return [("b", T0, delta / 1000)]

    await storage.for_shard(SHARD_A).count("s", "wg", 1000, T0, per_second())
    delta, previous = await storage.for_shard(SHARD_A).count("s", "wg", 10_000, at(10), allocate)
    await anyio.to_thread.run_sync(racer.join)
    assert await storage.spent("b", T0, at(1)) == pytest.approx(10.0), "every millisecond counted once"
    assert (await storage.for_shard(SHARD_A).counted(["s"]))["s"].millis == 10_000
    if backend.name == "dynamodb":
        assert (calls, delta, previous and previous.millis) == ([9000, 2000], 2000, 8000)
    else:
        assert (calls, delta, previous and previous.millis) == ([9000], 9000, 1000)


# --- the ledger: episodes and disabled workgroups ------------------------------------------------------------------


async def test_a_threshold_opens_once_per_period_and_reopens_after_a_reset(storage: Storage) -> None:
    first = await storage.open_episode("b", 100, "disable_workgroup", "2026-03-04", 10.0, T0)
    assert first is not None and (first.budget, first.at_percent, first.period_key) == ("b", 100, "2026-03-04")
    assert await storage.open_episode("b", 100, "disable_workgroup", "2026-03-04", 11.0, T0) is None
    assert await storage.open_episode("b", 100, "disable_workgroup", "2026-03-05", 11.0, T0) is None, "one open"
    await storage.record_disabled("etl", first, T0)
    assert await storage.releasable() == {}
    await storage.close_episode(first.episode_id, at(3600))
    assert await storage.open_episode("b", 100, "disable_workgroup", "2026-03-04", 12.0, T0) is None  # same period
    assert await storage.releasable() == {"etl": [(first.episode_id, "b")]}
    await storage.mark_enabled("etl", at(3600))
    assert await storage.releasable() == {}
    again = await storage.open_episode("b", 100, "disable_workgroup", "2026-03-05", 1.0, T0 + timedelta(days=1))
    assert again is not None and again.episode_id != first.episode_id
    assert await storage.episode_count("b", 100) == 2
    assert await storage.episode_count("b", 80) == 0


async def test_open_episodes_by_budget_in_threshold_order(storage: Storage) -> None:
    await storage.open_episode("b", 100, "stop_calculations", "p1", 10.0, T0)
    await storage.open_episode("b", 80, "notify", "p1", 8.0, T0)
    await storage.open_episode("b2", 50, "notify", "", 1.0, T0)
    assert [(e.budget, e.at_percent) for e in await storage.open_episodes("b")] == [("b", 80), ("b", 100)]
    assert [(e.budget, e.at_percent) for e in await storage.open_episodes()] == [("b2", 50), ("b", 80), ("b", 100)]
    (unnamed,) = await storage.open_episodes("b2")
    assert unnamed.period_key == T0.isoformat(timespec="microseconds"), "an unnamed period is named by its start"


async def test_two_replicas_opening_the_same_episode_one_wins(backend: Backend, storage: Storage) -> None:
    opened: list[Any] = []
    async with backend.open() as other:
        async def open_one(view: Storage) -> None:
            opened.append(await view.open_episode("b", 100, "stop_calculations", "2026-11", 10.0, T0))

        async with anyio.create_task_group() as group:
            for view in (storage.for_shard(SHARD_A), other.for_shard(SHARD_B), storage, other):
                group.start_soon(open_one, view)
    winners = [episode for episode in opened if episode is not None]
    assert len(winners) == 1 and len(opened) == 4
    assert await storage.open_episodes("b") == winners


async def test_a_disable_held_by_an_open_episode_is_not_released(storage: Storage) -> None:
    first = await storage.open_episode("b1", 100, "disable_workgroup", "p", 1.0, T0)
    second = await storage.open_episode("b2", 100, "disable_workgroup", "p", 1.0, T0)
    assert first is not None and second is not None
    await storage.record_disabled("etl", first, T0)
    await storage.record_disabled("etl", second, T0)
    await storage.close_episode(first.episode_id, at(1))
    assert await storage.releasable() == {}, "b2 still holds etl disabled"
    await storage.close_episode(second.episode_id, at(2))
    released = await storage.releasable()
    assert sorted(released["etl"]) == sorted([(first.episode_id, "b1"), (second.episode_id, "b2")])


# --- fencing and leases ------------------------------------------------------------------------------------------


async def test_sqlite_accepts_a_fence_and_ignores_it(backend: Backend, storage: Storage) -> None:
    if backend.name != "sqlite":
        pytest.skip("SQLite only: DynamoDB checks fences")
    view = storage.for_shard(SHARD_A, Fence("nobody", 99))
    assert await view.claim(machine.begin(verdict(), "e1", T0), "decision", {})
    await sent_stop(view, machine.begin(verdict(), "e1", T0))
    await view.save_watch([watched("c1", 1)])
    assert [e.event for e in await view.recent_events(10)] == ["stop.sent", "stop.intent", "decision"]


async def test_a_stale_fence_can_neither_claim_nor_save(backend: Backend, storage: Storage) -> None:
    leases = leases_of(storage)
    old = await leases.acquire(SHARD_A.scope, "r1", expires_at=at(10), expired_before=T0)
    assert old is not None
    fenced = storage.for_shard(SHARD_A, old.fence)
    escalation = machine.begin(verdict("c1"), "e1", T0)
    assert await fenced.claim(escalation, "decision", {})
    assert not await fenced.claim(machine.begin(verdict("c1"), "e1b", T0), "decision", {}), "claimed: False"
    await fenced.save_watch([watched("c0", 0), watched("c1", 1)])
    # r1's lease lapses; r2 takes the shard with the next token.
    new = await leases.acquire(SHARD_A.scope, "r2", expires_at=at(40), expired_before=at(20))
    assert new is not None and new.token == old.token + 1
    with pytest.raises(FenceLost) as lost:
        await fenced.claim(machine.begin(verdict("c2"), "e2", T0), "decision", {})
    assert (lost.value.shard_scope, lost.value.fence) == (SHARD_A.scope, old.fence)
    with pytest.raises(FenceLost):
        await sent_stop(fenced, escalation)
    with pytest.raises(FenceLost):
        await fenced.save_watch([watched("c1", 5)])
    # Nothing the stale fence tried was written.
    assert await storage.for_shard(SHARD_A).claimed_targets() == {TargetKey.calculation("c1")}
    assert await storage.for_shard(SHARD_A).open_escalations() == [escalation]
    assert [e.event for e in await storage.for_shard(SHARD_A).recent_events(10)] == ["decision"]
    assert by_key(await storage.for_shard(SHARD_A).watch()) == [watched("c0", 0), watched("c1", 1)]
    # The current fence works; the new owner's list is its own, whatever the stale one tries next.
    current = storage.for_shard(SHARD_A, new.fence)
    assert await current.claim(machine.begin(verdict("c2"), "e2", T0), "decision", {})
    await sent_stop(current, escalation)
    assert len(await current.watch()) == 2
    await current.save_watch([watched("c1", 1), watched("c2", 2)])
    with pytest.raises(FenceLost):
        await fenced.save_watch([])
    assert by_key(await current.watch()) == [watched("c1", 1), watched("c2", 2)]


async def test_leases_are_taken_when_free_or_expired_and_tokens_grow(backend: Backend, storage: Storage) -> None:
    leases = leases_of(storage)
    first = await leases.acquire(SHARD_A.scope, "r1", expires_at=at(30), expired_before=at(0))
    assert first is not None and (first.owner, first.token, first.expires_at) == ("r1", 1, at(30))
    assert await leases.acquire(SHARD_A.scope, "r2", expires_at=at(40), expired_before=at(10)) is None, "held"
    again = await leases.acquire(SHARD_A.scope, "r1", expires_at=at(40), expired_before=at(10))
    assert again is not None and again.token == 2, "re-acquiring one's own lease moves the token on"
    taken = await leases.acquire(SHARD_A.scope, "r2", expires_at=at(90), expired_before=at(41))
    assert taken is not None and (taken.owner, taken.token) == ("r2", 3)
    assert await leases.renew(again, expires_at=at(100)) is None, "lost: renewing fails"
    renewed = await leases.renew(taken, expires_at=at(120))
    assert renewed is not None and (renewed.token, renewed.expires_at) == (3, at(120))
    await leases.release(again)  # not ours any more: nothing happens
    assert await leases.acquire(SHARD_A.scope, "r3", expires_at=at(130), expired_before=at(60)) is None
    await leases.release(renewed)
    after = await leases.acquire(SHARD_A.scope, "r3", expires_at=at(130), expired_before=at(60))
    assert after is not None and (after.owner, after.token) == ("r3", 4), "released: free at once"
    implicit = await leases.acquire("", "r1", expires_at=at(30), expired_before=at(0))
    assert implicit is not None and implicit.shard_scope == ""
    async with backend.open() as other:
        assert sorted(await leases_of(other).leases(), key=lambda lease: lease.shard_scope) == [implicit, after]


async def test_replicas_are_live_until_their_heartbeat_lapses(storage: Storage) -> None:
    leases = leases_of(storage)
    await leases.heartbeat("r2", at(30))
    await leases.heartbeat("r1", at(10))
    assert await leases.live_replicas(at(5)) == ["r1", "r2"]
    assert await leases.live_replicas(at(20)) == ["r2"]
    await leases.heartbeat("r1", at(60))
    assert await leases.live_replicas(at(20)) == ["r1", "r2"]


# --- retention -------------------------------------------------------------------------------------------------


async def test_old_events_go_with_the_retention_and_nothing_else_does(backend: Backend, storage: Storage) -> None:
    old, recent = T0 - timedelta(days=100), T0
    await storage.claim(machine.begin(verdict("c1"), "e1", old), "decision", {})
    await storage.record("warning", policy="p", time=old)
    await storage.record("warning", policy="p", time=recent)
    await storage.for_shard(SHARD_A).record("warning", policy="p", time=old)
    pruned = await storage.for_shard(IMPLICIT).prune_events(T0 - backend.settings.journal.retention)
    if backend.name == "sqlite":
        assert pruned == 2
        assert sorted(e.time for e in await storage.recent_events(10)) == [old, recent], "the other shard's stays"
    else:
        assert pruned == 0, "DynamoDB expires events through the table's TTL (tests/test_storage_dynamodb.py)"
    assert await storage.claimed_targets() == {TargetKey.calculation("c1")}


async def test_a_replaced_escalation_keeps_its_verdict(storage: Storage) -> None:
    escalation = machine.begin(verdict("c1"), "e1", T0)
    await storage.claim(escalation, "decision", {})
    failed = replace(machine.intend(escalation, Step.SEND_STOP, at(1)), failures=2)
    await storage.save(failed, "stop.error", {"error": "x"}, time=at(1))
    assert await storage.escalation_for(TargetKey.calculation("c1")) == failed
