"""What only the DynamoDB storage has: the item layout and its TTL attribute, reads that never scan, conditional
answers counted apart from errors, and a count left half done by a crash finished by the next one.

The items are read back with a client of the test's own (moto on loopback), as an operator would with the AWS
CLI; the contract common to both backends is in ``tests/test_storage_contract.py``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from supervisor.config import Settings
from supervisor.core import escalation as machine
from supervisor.core.budgets import Counted
from supervisor.core.escalation import Step, Timing
from supervisor.core.fleet import Shard, WatchEntry
from supervisor.core.model import Origin, TargetKind, TargetRef, Verdict
from supervisor.metrics import sum_samples
from supervisor.storage import Storage
from supervisor.storage.factory import lease_store
from tests.dynamodb_fixtures import create_table, dynamodb_settings, dynamodb_storage, new_table_name
from tests.virtual_fixtures import aws_client

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TIMING = Timing(stop_grace=timedelta(seconds=30), terminate_grace=timedelta(seconds=60))
SHARD = Shard("111111111111", "us-east-1")
RETENTION = timedelta(days=7)


@pytest.fixture
async def settings(moto_dynamodb: str) -> Settings:
    settings = dynamodb_settings(moto_dynamodb, new_table_name(), retention="7d")
    await create_table(settings)
    return settings


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def storage(settings: Settings, registry: CollectorRegistry) -> AsyncIterator[Storage]:
    async with dynamodb_storage(settings, registry) as opened:
        yield opened


class Items:
    """The table's items as DynamoDB stores them (plain values), read with the test's own client."""

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    async def partition(self, pk: str) -> list[dict[str, Any]]:
        answer = await self.client.query(TableName=self.table, KeyConditionExpression="pk = :pk",
                                         ExpressionAttributeValues={":pk": {"S": pk}})
        return [{name: next(iter(value.values())) for name, value in item.items()} for item in answer["Items"]]

    async def one(self, pk: str, sk: str) -> dict[str, Any]:
        (item,) = [item for item in await self.partition(pk) if item["sk"] == sk]
        return item

    async def put(self, item: dict[str, dict[str, Any]]) -> None:
        await self.client.put_item(TableName=self.table, Item=item)


@pytest.fixture
async def items(moto_dynamodb: str, settings: Settings) -> AsyncIterator[Items]:
    async with aws_client("dynamodb", moto_dynamodb) as client:
        assert settings.journal.table is not None
        yield Items(client, settings.journal.table)


def epoch(at: datetime) -> int:
    return math.ceil(at.timestamp())


def verdict(target_id: str = "c1") -> Verdict:
    return Verdict(target=TargetRef(TargetKind.CALCULATION, target_id, "s1", "etl-a"), policy="p",
                   rule="max_runtime", observed=1801.5, limit=1800.0, unit="seconds", crossed_at=T0, decided_at=T0,
                   action="stop", mode="enforce", origin=Origin.POLICY)


def calls(registry: CollectorRegistry, operation: str, outcome: str) -> float:
    return sum_samples(registry, "athena_supervisor_aws_api_calls_total", operation=operation, outcome=outcome)


async def test_events_and_settled_records_carry_ttl_and_open_ones_do_not(storage: Storage, items: Items) -> None:
    view = storage.for_shard(SHARD)
    escalation = machine.begin(verdict(), "e1", T0)
    assert await view.claim(escalation, "decision", {})
    open_claim = await items.one("S#111111111111/us-east-1#ESC", "calculation:c1")
    assert "ttl" not in open_claim, "an open escalation never expires"
    event, by_target, by_session = (
        await items.partition("S#111111111111/us-east-1#EV#2026-11-25"),
        await items.partition("S#111111111111/us-east-1#TGT#c1"),
        await items.partition("S#111111111111/us-east-1#TGT#s1"),
    )
    assert len(event) == len(by_target) == len(by_session) == 1
    assert event[0]["sk"] == by_target[0]["sk"] and event[0]["sk"].startswith("2026-11-25T12:00:00.000000Z#")
    assert int(event[0]["ttl"]) == epoch(T0 + RETENTION)
    (day,) = await items.partition("S#111111111111/us-east-1#EVDAY")
    assert (day["sk"], int(day["ttl"])) == ("2026-11-25", epoch(datetime(2026, 11, 26, tzinfo=UTC) + RETENTION))

    done = machine.calculation_observed(machine.sent(escalation, Step.SEND_STOP, T0, TIMING), None,
                                        T0 + timedelta(seconds=5), TIMING, found=False)
    await view.save(done, "verify.done", {}, time=T0 + timedelta(seconds=5))
    settled = await items.one("S#111111111111/us-east-1#ESC", "calculation:c1")
    assert int(settled["ttl"]) == epoch(T0 + timedelta(seconds=5) + RETENTION)

    assert await view.mark_once("warning:calculation:c1:max_runtime", T0)
    assert int((await items.one("NOTICE#warning:calculation:c1:max_runtime", "NOTICE"))["ttl"]) == epoch(
        T0 + RETENTION)


async def test_leases_buckets_episodes_and_open_sessions_never_expire(storage: Storage, items: Items) -> None:
    leases = lease_store(storage)
    assert leases is not None
    lease = await leases.acquire(SHARD.scope, "r1", expires_at=T0, expired_before=T0)
    assert lease is not None
    stored = await items.one("LEASE", "111111111111/us-east-1")
    assert "ttl" not in stored and stored["lease_expires_at"] == "2026-11-25T12:00:00.000000Z"
    assert (stored["owner"], int(stored["token"])) == ("r1", 1)
    await leases.heartbeat("r1", T0)
    assert int((await items.one("REPLICA", "r1"))["ttl"]) == epoch(T0 + timedelta(days=1))

    view = storage.for_shard(SHARD)
    await view.count("open", "wg", 1000, T0, lambda delta, previous: [("b", T0, 1.0)])
    await view.count("ended", "wg", 1000, T0, lambda delta, previous: [("b", T0, 1.0)], ended=True)
    spend = {item["sk"]: item for item in await items.partition("S#111111111111/us-east-1#SPEND")}
    assert "ttl" not in spend["open"] and int(spend["ended"]["ttl"]) == epoch(T0 + RETENTION)
    assert [item["sk"] for item in await items.partition("S#111111111111/us-east-1#OPEN_SESSION")] == ["open"]
    (bucket,) = await items.partition("B#b#SPEND")
    assert "ttl" not in bucket and float(bucket["usd"]) == 2.0
    episode = await view.open_episode("b", 80, "notify", "2026-11", 2.0, T0)
    assert episode is not None
    for pk in ("EPISODE", "OPEN_EPISODE", "B#b#EPISODE"):
        assert all("ttl" not in item for item in await items.partition(pk)), pk


async def test_lists_are_queries_never_scans(storage: Storage, registry: CollectorRegistry) -> None:
    view = storage.for_shard(SHARD)
    await view.claim(machine.begin(verdict(), "e1", T0), "decision", {})
    await view.save_watch([WatchEntry(verdict().target, T0)])
    await view.count("s1", "wg", 1000, T0, lambda delta, previous: [("b", T0, 1.0)])
    for reader in (storage, view):
        await reader.open_escalations()
        await reader.claimed_targets()
        await reader.recent_events(10)
        await reader.recent_events(10, target_id="c1")
        await reader.watch()
        await reader.open_sessions()
        await reader.releasable()
        await reader.open_episodes()
    assert calls(registry, "Query", "success") > 0
    assert calls(registry, "Scan", "success") == 0


async def test_a_refused_condition_is_an_answer_not_an_error(storage: Storage, registry: CollectorRegistry) -> None:
    assert await storage.claim(machine.begin(verdict(), "e1", T0), "decision", {})
    assert not await storage.claim(machine.begin(verdict(), "e2", T0), "decision", {})
    assert await storage.mark_once("n", T0) and not await storage.mark_once("n", T0)
    assert calls(registry, "TransactWriteItems", "condition_failed") == 1
    assert calls(registry, "PutItem", "condition_failed") == 1
    assert calls(registry, "TransactWriteItems", "client_error") == calls(registry, "PutItem", "client_error") == 0


async def test_a_count_left_half_done_is_finished_by_the_next_count(storage: Storage, items: Items) -> None:
    """A process died between the transactions of a count over many buckets: the session item holds the shares
    not yet added (``pending``); the next count, by any replica, adds them before counting anew."""
    await items.put({
        "pk": {"S": "S#-#SPEND"}, "sk": {"S": "s"}, "workgroup": {"S": "wg"}, "counted_millis": {"N": "5000"},
        "observed_at": {"S": "2026-11-25T12:00:00.000000Z"}, "ended": {"BOOL": False}, "version": {"N": "3"},
        "pending": {"L": [{"L": [{"S": "b"}, {"S": "2026-11-25T12:00:00.000000Z"}, {"N": "1.5"}]},
                          {"L": [{"S": "b"}, {"S": "2026-11-25T12:05:00.000000Z"}, {"N": "2.5"}]}]},
    })
    delta, previous = await storage.count("s", "wg", 6000, T0 + timedelta(minutes=10),
                                          lambda delta, previous: [("b", T0 + timedelta(minutes=10), delta / 1000)])
    assert (delta, previous) == (1000, Counted("s", "wg", 5000, T0, False))
    assert await storage.spent("b", T0, T0 + timedelta(hours=1)) == pytest.approx(1.5 + 2.5 + 1.0)
    assert "pending" not in await items.one("S#-#SPEND", "s")


async def test_the_root_view_finds_shards_through_the_registry(storage: Storage, items: Items) -> None:
    await storage.for_shard(SHARD).record("warning", policy="p", time=T0)
    await storage.record("warning", policy="q", time=T0)
    assert sorted(item["sk"] for item in await items.partition("SHARD")) == ["-", "111111111111/us-east-1"]
    assert sorted(e.policy or "" for e in await storage.recent_events(10)) == ["p", "q"]
