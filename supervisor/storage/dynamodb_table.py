"""The journal's DynamoDB table: reads, conditional writes and transactions, every call through the gateway.

The rest of the DynamoDB storage speaks in :class:`Key`, :class:`Write` and plain Python items; this module turns
them into the low-level API's requests (:mod:`~supervisor.storage.dynamodb_codec`) and back, and gives DynamoDB's
answers their meaning here:

- a condition that does not hold is an answer, not an error: :meth:`Table.put` and :meth:`Table.update` return
  False/None, :meth:`Table.transact` raises :class:`TransactionCanceled` with the reason of each item;
- a transaction that collided with another one touching the same items (``TransactionConflict``) is sent again,
  with a new client token, after a short backoff on the clock (the gateway retries throttling and 5xx with the
  same token: DynamoDB makes a retried transaction idempotent for ten minutes);
- items a batch did not process (``UnprocessedItems``/``UnprocessedKeys``, DynamoDB's way of throttling a batch)
  are sent again the same way;
- every read of state a write depends on is strongly consistent.

Expression attribute names are derived from the ``#name`` tokens of the expressions (every attribute is written
``#name``, so no reserved word can break an expression).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from supervisor.gateway import TRANSACTION_CANCELED_CODE, AwsCallError, Gateway, Priority
from supervisor.storage.dynamodb_codec import Item, decode_item, encode, encode_item

SERVICE = "dynamodb"
TRANSACTION_LIMIT = 100  # items per TransactWriteItems
BATCH_WRITE_LIMIT = 25
BATCH_GET_LIMIT = 100
RESEND_ATTEMPTS = 8  # a conflicted transaction or an unprocessed batch: sent at most this many times
RESEND_WAIT = 0.02  # seconds, doubling
CONDITION_FAILED = "ConditionalCheckFailed"
_RESENDABLE = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"})
_NAME = re.compile(r"#(\w+)")


@dataclass(frozen=True, slots=True, order=True)
class Key:
    pk: str
    sk: str

    def item(self) -> dict[str, str]:
        return {"pk": self.pk, "sk": self.sk}


WriteKind = Literal["Put", "Update", "Delete", "ConditionCheck"]


@dataclass(frozen=True, slots=True)
class Write:
    """One write of a transaction: a put of ``item`` at ``key``, an update expression, a delete, or only a
    condition on ``key``'s item. ``values`` are the expressions' ``:name`` values, as Python values."""

    kind: WriteKind
    key: Key
    item: Mapping[str, object] = field(default_factory=dict)
    update: str | None = None
    condition: str | None = None
    values: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def put(cls, key: Key, item: Mapping[str, object], condition: str | None = None,
            values: Mapping[str, object] | None = None) -> Write:
        return cls("Put", key, item=item, condition=condition, values=values or {})

    @classmethod
    def updating(cls, key: Key, update: str, values: Mapping[str, object], condition: str | None = None) -> Write:
        return cls("Update", key, update=update, condition=condition, values=values)

    @classmethod
    def delete(cls, key: Key, condition: str | None = None, values: Mapping[str, object] | None = None) -> Write:
        return cls("Delete", key, condition=condition, values=values or {})

    @classmethod
    def check(cls, key: Key, condition: str, values: Mapping[str, object]) -> Write:
        return cls("ConditionCheck", key, condition=condition, values=values)


class TransactionCanceled(Exception):
    """A transaction wrote nothing because a condition did not hold; ``reasons[i]`` is the code of item ``i``
    (``"ConditionalCheckFailed"`` or ``"None"``)."""

    def __init__(self, reasons: tuple[str, ...]) -> None:
        super().__init__(f"transaction canceled: {', '.join(reasons)}")
        self.reasons = reasons

    def failed(self, index: int) -> bool:
        """Whether item ``index``'s condition failed."""
        return index < len(self.reasons) and self.reasons[index] == CONDITION_FAILED


def _names(*expressions: str | None) -> dict[str, str]:
    return {f"#{name}": name for text in expressions if text for name in _NAME.findall(text)}


def _expression(params: dict[str, Any], *, names_from: Sequence[str | None], values: Mapping[str, object]) -> None:
    names = _names(*names_from)
    if names:
        params["ExpressionAttributeNames"] = names
    if values:
        params["ExpressionAttributeValues"] = {name: encode(value) for name, value in values.items()}


class Table:
    """The table ``name`` in ``region`` (at ``endpoint_url``, else AWS's), through ``gateway``."""

    def __init__(self, gateway: Gateway, name: str, *, region: str, endpoint_url: str | None = None) -> None:
        self.gateway = gateway
        self.name = name
        self.region = region
        self.endpoint_url = endpoint_url

    async def call(self, operation: str, params: Mapping[str, Any], priority: Priority) -> dict[str, Any]:
        """One DynamoDB operation on this table's region and endpoint (the gateway retries what may be).

        Raises:
            AwsCallError: as the gateway; a missing table's message says how to create it.
        """
        try:
            return await self.gateway.call(operation, params, priority=priority, service=SERVICE,
                                           region=self.region, endpoint_url=self.endpoint_url)
        except AwsCallError as error:
            if error.is_not_found and operation not in ("DescribeTable", "CreateTable"):
                raise AwsCallError(operation, error.code, f"DynamoDB table {self.name} in {self.region}: "
                                   f"{error.message}; create it with athena-supervisor setup-dynamodb --config FILE "
                                   "(journal.table names it)", error.outcome, error.reasons) from error
            raise

    # -- single items -------------------------------------------------------------------------------------

    async def get(self, key: Key, *, priority: Priority = Priority.DISCOVER) -> Item | None:
        answer = await self.call("GetItem", {"TableName": self.name, "Key": encode_item(key.item()),
                                             "ConsistentRead": True}, priority)
        return decode_item(answer["Item"]) if answer.get("Item") else None

    async def put(self, key: Key, item: Mapping[str, object], *, condition: str | None = None,
                  values: Mapping[str, object] | None = None, priority: Priority = Priority.DISCOVER) -> bool:
        """Write ``item`` at ``key``; False (nothing written) if ``condition`` does not hold."""
        params: dict[str, Any] = {"TableName": self.name, "Item": encode_item({**item, **key.item()})}
        if condition:
            params["ConditionExpression"] = condition
        _expression(params, names_from=[condition], values=values or {})
        try:
            await self.call("PutItem", params, priority)
        except AwsCallError as error:
            if error.is_condition_failed:
                return False
            raise
        return True

    async def update(self, key: Key, update: str, values: Mapping[str, object], *, condition: str | None = None,
                     priority: Priority = Priority.DISCOVER) -> Item | None:
        """Apply ``update`` to ``key``'s item; the item as it is now, or None (nothing written) if ``condition``
        does not hold."""
        params: dict[str, Any] = {"TableName": self.name, "Key": encode_item(key.item()),
                                  "UpdateExpression": update, "ReturnValues": "ALL_NEW"}
        if condition:
            params["ConditionExpression"] = condition
        _expression(params, names_from=[update, condition], values=values)
        try:
            answer = await self.call("UpdateItem", params, priority)
        except AwsCallError as error:
            if error.is_condition_failed:
                return None
            raise
        return decode_item(answer.get("Attributes") or {})

    async def delete(self, key: Key, *, priority: Priority = Priority.DISCOVER) -> None:
        await self.call("DeleteItem", {"TableName": self.name, "Key": encode_item(key.item())}, priority)

    # -- transactions ---------------------------------------------------------------------------------------

    async def transact(self, writes: Sequence[Write], *, priority: Priority = Priority.DISCOVER) -> None:
        """Apply ``writes`` all together or not at all.

        Raises:
            TransactionCanceled: a condition did not hold (nothing was written).
            ValueError: more than :data:`TRANSACTION_LIMIT` writes.
        """
        if not 0 < len(writes) <= TRANSACTION_LIMIT:
            raise ValueError(f"a transaction takes 1 to {TRANSACTION_LIMIT} writes, got {len(writes)}")
        items = [self._transact_item(write) for write in writes]
        for attempt in range(1, RESEND_ATTEMPTS + 1):
            try:
                await self.call("TransactWriteItems", {"TransactItems": items,
                                                       "ClientRequestToken": uuid.uuid4().hex}, priority)
                return
            except AwsCallError as error:
                if error.code != TRANSACTION_CANCELED_CODE:
                    raise
                if _RESENDABLE & set(error.reasons) and attempt < RESEND_ATTEMPTS:
                    await self.gateway.clock.sleep(RESEND_WAIT * 2 ** (attempt - 1))
                    continue
                if not error.is_condition_failed:
                    raise
                raise TransactionCanceled(error.reasons) from None
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _transact_item(self, write: Write) -> dict[str, Any]:
        body: dict[str, Any] = {"TableName": self.name}
        if write.kind == "Put":
            body["Item"] = encode_item({**write.item, **write.key.item()})
        else:
            body["Key"] = encode_item(write.key.item())
        if write.update is not None:
            body["UpdateExpression"] = write.update
        if write.condition is not None:
            body["ConditionExpression"] = write.condition
        _expression(body, names_from=[write.update, write.condition], values=write.values)
        return {write.kind: body}

    # -- queries ------------------------------------------------------------------------------------------

    async def query(self, pk: str, *, sk: str | None = None, values: Mapping[str, object] | None = None,
                    forward: bool = True, limit: int | None = None, filter: str | None = None,
                    projection: str | None = None, priority: Priority = Priority.DISCOVER) -> list[Item]:
        """The items of partition ``pk`` (whose sort key meets ``sk``, e.g. ``"#sk < :before"``), in sort key
        order (descending unless ``forward``), at most ``limit`` of them; ``filter`` drops items after reading."""
        found: list[Item] = []
        async for page in self._pages(pk, sk=sk, values=values, forward=forward, limit=limit, filter=filter,
                                      projection=projection, priority=priority):
            found.extend(decode_item(item) for item in page.get("Items", []))
            if limit is not None and len(found) >= limit:
                return found[:limit]
        return found

    async def count(self, pk: str, *, sk: str | None = None, values: Mapping[str, object] | None = None,
                    priority: Priority = Priority.DISCOVER) -> int:
        total = 0
        async for page in self._pages(pk, sk=sk, values=values, select="COUNT", priority=priority):
            total += int(page.get("Count", 0))
        return total

    async def _pages(self, pk: str, *, sk: str | None, values: Mapping[str, object] | None, forward: bool = True,
                     limit: int | None = None, filter: str | None = None, projection: str | None = None,
                     select: str | None = None, priority: Priority) -> AsyncIterator[dict[str, Any]]:
        condition = "#pk = :pk" + (f" AND {sk}" if sk else "")
        params: dict[str, Any] = {"TableName": self.name, "KeyConditionExpression": condition,
                                  "ScanIndexForward": forward, "ConsistentRead": True}
        if filter:
            params["FilterExpression"] = filter
        if projection:
            params["ProjectionExpression"] = projection
        if select:
            params["Select"] = select
        if limit is not None and filter is None:
            params["Limit"] = limit  # with a filter, Limit counts items read, not items kept
        _expression(params, names_from=[condition, filter, projection], values={**(values or {}), ":pk": pk})
        while True:
            page = await self.call("Query", params, priority)
            yield page
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            params["ExclusiveStartKey"] = last

    # -- batches ------------------------------------------------------------------------------------------

    async def get_many(self, keys: Iterable[Key], *, priority: Priority = Priority.DISCOVER) -> list[Item]:
        """The items at ``keys`` that exist (in no particular order)."""
        wanted = [encode_item(key.item()) for key in dict.fromkeys(keys)]
        found: list[Item] = []
        for start in range(0, len(wanted), BATCH_GET_LIMIT):
            request: dict[str, Any] = {self.name: {"Keys": wanted[start:start + BATCH_GET_LIMIT],
                                                   "ConsistentRead": True}}
            for attempt in range(1, RESEND_ATTEMPTS + 1):
                answer = await self.call("BatchGetItem", {"RequestItems": request}, priority)
                found.extend(decode_item(item) for item in answer.get("Responses", {}).get(self.name, []))
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
                await self._wait_to_resend(attempt, "BatchGetItem")
        return found

    async def write_many(self, puts: Sequence[tuple[Key, Mapping[str, object]]] = (),
                         deletes: Sequence[Key] = (), *, priority: Priority = Priority.DISCOVER) -> None:
        """Put and delete items, unconditionally, 25 per request (not atomic as a whole)."""
        requests: list[dict[str, Any]] = [{"PutRequest": {"Item": encode_item({**item, **key.item()})}}
                                          for key, item in puts]
        requests += [{"DeleteRequest": {"Key": encode_item(key.item())}} for key in deletes]
        for start in range(0, len(requests), BATCH_WRITE_LIMIT):
            pending: dict[str, Any] = {self.name: requests[start:start + BATCH_WRITE_LIMIT]}
            for attempt in range(1, RESEND_ATTEMPTS + 1):
                answer = await self.call("BatchWriteItem", {"RequestItems": pending}, priority)
                pending = answer.get("UnprocessedItems") or {}
                if not pending:
                    break
                await self._wait_to_resend(attempt, "BatchWriteItem")

    async def _wait_to_resend(self, attempt: int, operation: str) -> None:
        if attempt == RESEND_ATTEMPTS:
            raise AwsCallError(operation, "Unprocessed", f"items still unprocessed after {attempt} attempts",
                               "throttled")
        await self.gateway.clock.sleep(RESEND_WAIT * 2 ** (attempt - 1))
