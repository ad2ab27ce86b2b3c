"""The journal in DynamoDB for one shard: escalations (the unique claims, intents and answers), the event history,
and one-off notices (shared by every shard).

A claim is one transaction: the escalation item put under ``attribute_not_exists`` (one per shard and target
key, ever: the unique claim), its decision event, and, when the view is fenced, a ``ConditionCheck`` that the
shard's lease still has the writer's owner and token. A save is the same transaction with the escalation put
unconditionally. A stale fence cancels the transaction before anything is written: :class:`FenceLost`.

Events are ordered by their time, then by the writer's sequence (SQLite orders by insertion; the daemon writes
its events in time order, so both read the same). Item layout: :mod:`~supervisor.storage.dynamodb_layout`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from supervisor.core.escalation import Escalation, Phase
from supervisor.core.fleet import Fence
from supervisor.core.model import Origin, TargetKey, TargetKind, TargetRef, Verdict
from supervisor.gateway import Priority
from supervisor.storage import FenceLost
from supervisor.storage.dynamodb_codec import Item, expires, iso, iso_or_none, parse_time, time_or_none
from supervisor.storage.dynamodb_layout import ShardKeys, notice
from supervisor.storage.dynamodb_leases import fence_check
from supervisor.storage.dynamodb_registry import ShardRegistry, day_of
from supervisor.storage.dynamodb_table import Key, Table, TransactionCanceled, Write
from supervisor.storage.records import EventQuery, JournalEntry


class FencedWriter:
    """Runs a shard's transactions behind its fence: a stale fence raises FenceLost, nothing written."""

    def __init__(self, table: Table, scope: str, fence: Fence | None) -> None:
        self.table = table
        self.scope = scope
        self.fence = fence

    async def transact(self, writes: Sequence[Write], *, priority: Priority) -> TransactionCanceled | None:
        """Apply ``writes`` atomically; the cancellation (reasons indexed like ``writes``) if a condition of
        theirs failed.

        Raises:
            FenceLost: the fence is no longer the lease's holder.
        """
        checks = [fence_check(self.scope, self.fence)] if self.fence is not None else []
        try:
            await self.table.transact([*checks, *writes], priority=priority)
        except TransactionCanceled as canceled:
            if self.fence is not None and canceled.failed(0):
                raise FenceLost(self.scope, self.fence) from None
            return TransactionCanceled(canceled.reasons[len(checks):])
        return None


class DynamoJournal:
    """One shard's escalations and events in ``table`` (``scope``: the shard's; writes fenced by ``fence``)."""

    def __init__(self, table: Table, registry: ShardRegistry, scope: str, fence: Fence | None = None) -> None:
        self._table = table
        self._registry = registry
        self._keys = ShardKeys(scope)
        self._writer = FencedWriter(table, scope, fence)

    # -- escalations ----------------------------------------------------------------------------------------

    async def claim(self, escalation: Escalation, event: str | None, detail: Mapping[str, Any]) -> bool:
        await self._registry.ensure_shard(self._keys)
        claimed = Write.put(self._keys.escalation(escalation.verdict.target.key),
                            _escalation_item(escalation, escalation.created_at, self._registry.retention),
                            condition="attribute_not_exists(#pk)")
        events = await self._escalation_event(escalation, event, detail, escalation.created_at) if event else []
        canceled = await self._writer.transact([claimed, *events], priority=Priority.ENFORCE)
        if canceled is not None and canceled.failed(0):
            return False
        if canceled is not None:
            raise canceled
        return True

    async def save(self, escalation: Escalation, event: str, detail: Mapping[str, Any], *, time: datetime) -> None:
        await self._registry.ensure_shard(self._keys)
        stored = Write.put(self._keys.escalation(escalation.verdict.target.key),
                           _escalation_item(escalation, time, self._registry.retention))
        events = await self._escalation_event(escalation, event, detail, time)
        canceled = await self._writer.transact([stored, *events], priority=Priority.ENFORCE)
        if canceled is not None:
            raise canceled

    async def claimed_targets(self) -> set[TargetKey]:
        items = await self._table.query(self._keys.escalations, projection="#sk", priority=Priority.VERIFY)
        return {TargetKey.parse(str(item["sk"])) for item in items}

    async def open_escalations(self) -> list[Escalation]:
        # Every claim of the shard is read (settled ones expire with the retention); this runs once, at start.
        items = await self._table.query(self._keys.escalations, filter="#phase <> :done",
                                        values={":done": Phase.DONE.value}, priority=Priority.VERIFY)
        return sorted((_escalation(item) for item in items), key=lambda e: e.created_at)

    async def escalation_for(self, key: TargetKey) -> Escalation | None:
        item = await self._table.get(self._keys.escalation(key), priority=Priority.VERIFY)
        return _escalation(item) if item else None

    # -- events ---------------------------------------------------------------------------------------------

    async def record(self, event: str, *, target: TargetRef | None = None, policy: str | None = None,
                     rule: str | None = None, detail: Mapping[str, Any] | None = None, time: datetime) -> None:
        await self._registry.ensure_shard(self._keys)
        writes = await self._event(event, time, {
            "target_kind": target.kind.value if target else None, "target_id": target.target_id if target else None,
            "session_id": target.session_id if target else None, "workgroup": target.workgroup if target else None,
            "policy": policy, "rule": rule, "detail": json.dumps(dict(detail or {}), default=str),
        })
        if len(writes) == 1:  # one item needs no transaction
            await self._table.put(writes[0].key, writes[0].item)
        else:
            await self._table.transact(writes)

    async def recent_events(self, limit: int = 50, *, target_id: str | None = None) -> list[JournalEntry]:
        """The newest ``limit`` events, newest first (optionally only those about one target or session)."""
        if target_id is not None:
            items = await self._table.query(self._keys.events_about(target_id), forward=False, limit=limit)
            return [_entry(item, self._keys.scope) for item in items]
        days = await self._table.query(self._keys.event_days, forward=False, projection="#sk")
        found: list[Item] = []
        for day in days:
            found += await self._table.query(self._keys.events_of_day(str(day["sk"])), forward=False,
                                             limit=limit - len(found))
            if len(found) >= limit:
                break
        return [_entry(item, self._keys.scope) for item in found]

    async def query_events(self, query: EventQuery) -> list[JournalEntry]:
        """The events ``query`` matches, newest first: one Query of the target's partition, or of each day's
        between ``since`` and ``until`` (newest first, until enough match), narrowed by time in the key
        condition and matched one by one."""
        sk, values = _time_range(query)
        if query.target_id is not None:
            partitions = [self._keys.events_about(query.target_id)]
        else:
            days = await self._table.query(self._keys.event_days, forward=False, projection="#sk")
            partitions = [self._keys.events_of_day(str(day["sk"])) for day in days
                          if (query.until is None or str(day["sk"]) <= day_of(query.until))
                          and (query.since is None or str(day["sk"]) >= day_of(query.since))]
        found: list[JournalEntry] = []
        for partition in partitions:
            items = await self._table.query(partition, sk=sk, values=values, forward=False)
            found += [entry for entry in (_entry(item, self._keys.scope) for item in items) if query.matches(entry)]
            if query.full(len(found)):
                break
        return found[:query.limit] if query.limit is not None else found

    async def target_ids(self, prefix: str) -> set[str]:
        """Calculation and session ids starting with ``prefix``: of the shard's claims (one Query per kind), else,
        when no claim matches, of every event the shard keeps (an id only warned about)."""
        found: set[str] = set()
        for kind in ("calculation", "session"):
            items = await self._table.query(self._keys.escalations, sk="begins_with(#sk, :prefix)",
                                            values={":prefix": f"{kind}:{prefix}"},
                                            projection="#target_id, #session_id")
            found |= {str(item["target_id"]) for item in items}
            found |= {str(item["session_id"]) for item in items if str(item.get("session_id", "")).startswith(prefix)}
        if found:
            return found
        for entry in await self.query_events(EventQuery(limit=None)):
            if entry.target_kind in ("calculation", "session") and entry.target_id and entry.target_id.startswith(
                    prefix):
                found.add(entry.target_id)
            if entry.session_id and entry.session_id.startswith(prefix):
                found.add(entry.session_id)
        return found

    async def _escalation_event(self, escalation: Escalation, event: str, detail: Mapping[str, Any] | None,
                                time: datetime) -> list[Write]:
        verdict = escalation.verdict
        return await self._event(event, time, {
            "escalation_id": escalation.escalation_id, "target_kind": verdict.target.kind.value,
            "target_id": verdict.target.target_id, "session_id": verdict.target.session_id,
            "workgroup": verdict.target.workgroup, "policy": verdict.policy, "rule": verdict.rule,
            "phase": escalation.phase.value, "detail": json.dumps(dict(detail or {}), default=str),
        })

    async def _event(self, event: str, time: datetime, fields: Mapping[str, Any]) -> list[Write]:
        """The event's item in its day's partition and its copies under the ids it is about."""
        day = await self._registry.ensure_day(self._keys, time)
        seq = self._registry.next_seq()
        sort_key = f"{iso(time)}#{seq:020d}"
        item = {**fields, "event": event, "time": iso(time), "seq": seq,
                "ttl": expires(time, self._registry.retention)}
        partitions = [self._keys.events_of_day(day)]
        about = dict.fromkeys(str(fields[name]) for name in ("target_id", "session_id") if fields.get(name))
        partitions += [self._keys.events_about(target) for target in about]
        return [Write.put(Key(partition, sort_key), item) for partition in partitions]


async def mark_once(table: Table, retention: timedelta, notice_key: str, time: datetime) -> bool:
    """True the first time ``notice_key`` is marked (by any replica), False ever after (until it expires with the
    retention: notice keys name targets and budget periods that do not come back)."""
    writer = uuid.uuid4().hex
    key = notice(notice_key)
    if await table.put(key, {"time": iso(time), "writer": writer, "ttl": expires(time, retention)},
                       condition="attribute_not_exists(#pk)"):
        return True
    # The put may have landed on an earlier attempt whose answer was lost (the gateway sent it again).
    found = await table.get(key)
    return found is not None and found.get("writer") == writer


def _escalation_item(escalation: Escalation, updated_at: datetime, retention: timedelta) -> dict[str, Any]:
    verdict = escalation.verdict
    return {
        "escalation_id": escalation.escalation_id, "target_kind": verdict.target.kind.value,
        "target_id": verdict.target.target_id, "session_id": verdict.target.session_id,
        "workgroup": verdict.target.workgroup, "policy": verdict.policy, "rule": verdict.rule,
        "observed": float(verdict.observed), "limit_value": float(verdict.limit), "unit": verdict.unit,
        "crossed_at": iso(verdict.crossed_at), "decided_at": iso(verdict.decided_at), "action": verdict.action,
        "mode": verdict.mode, "origin": verdict.origin.value, "phase": escalation.phase.value,
        "created_at": iso(escalation.created_at), "next_step_at": iso(escalation.next_step_at),
        "stop_intent_at": iso_or_none(escalation.stop_intent_at), "stop_sent_at": iso_or_none(escalation.stop_sent_at),
        "terminate_intent_at": iso_or_none(escalation.terminate_intent_at),
        "terminate_sent_at": iso_or_none(escalation.terminate_sent_at),
        "terminate_attempts": escalation.terminate_attempts, "failures": escalation.failures,
        "outcome": escalation.outcome, "intent_at": iso_or_none(escalation.intent_at), "updated_at": iso(updated_at),
        # A settled claim may go with the retention (its target never comes back); an open one never expires.
        "ttl": expires(updated_at, retention) if escalation.is_done else None,
    }


def _escalation(item: Item) -> Escalation:
    key = TargetKey.parse(str(item["sk"]))
    verdict = Verdict(
        target=TargetRef(TargetKind(item["target_kind"]), str(item["target_id"]), str(item.get("session_id", "")),
                         str(item["workgroup"]), key.scope),
        policy=str(item["policy"]), rule=str(item["rule"]), observed=float(item["observed"]),
        limit=float(item["limit_value"]), unit=str(item["unit"]), crossed_at=parse_time(item["crossed_at"]),
        decided_at=parse_time(item["decided_at"]), action=item["action"], mode=item["mode"],
        origin=Origin(item["origin"]),
    )
    return Escalation(
        escalation_id=str(item["escalation_id"]), verdict=verdict, phase=Phase(item["phase"]),
        created_at=parse_time(item["created_at"]), next_step_at=parse_time(item["next_step_at"]),
        stop_intent_at=time_or_none(item.get("stop_intent_at")), stop_sent_at=time_or_none(item.get("stop_sent_at")),
        terminate_intent_at=time_or_none(item.get("terminate_intent_at")),
        terminate_sent_at=time_or_none(item.get("terminate_sent_at")),
        terminate_attempts=int(item["terminate_attempts"]), failures=int(item["failures"]),
        outcome=item.get("outcome"), intent_at=time_or_none(item.get("intent_at")),
    )


def _time_range(query: EventQuery) -> tuple[str | None, dict[str, object] | None]:
    """The sort key condition of ``since <= time < until`` (sort keys are ``<time>#<seq>``)."""
    if query.since is not None and query.until is not None:
        return "#sk BETWEEN :since AND :until", {":since": iso(query.since), ":until": iso(query.until)}
    if query.since is not None:
        return "#sk >= :since", {":since": iso(query.since)}
    if query.until is not None:
        return "#sk < :until", {":until": iso(query.until)}
    return None, None


def _entry(item: Item, shard: str) -> JournalEntry:
    return JournalEntry(
        seq=int(item["seq"]), time=parse_time(item["time"]), event=str(item["event"]),
        escalation_id=item.get("escalation_id"), target_kind=item.get("target_kind"),
        target_id=item.get("target_id"), session_id=item.get("session_id"), workgroup=item.get("workgroup"),
        policy=item.get("policy"), rule=item.get("rule"), phase=item.get("phase"),
        detail=json.loads(item.get("detail") or "{}"), shard=shard,
    )
