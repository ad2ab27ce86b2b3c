"""The DynamoDB server of the fleet harness (``bench/dynamodb_server.py``): moto's answers, transactions run on
their own items. A canceled transaction must leave every item as it was, a successful one apply all of its writes,
and neither may touch another item.

The server is the script's: its application (:class:`SerialMoto`, one request at a time, idempotent transactions)
behind its HTTP server (:func:`serving`), with moto made cheaper as its ``main`` makes it, served from a thread and
an event loop of this process rather than a process of its own (a fresh interpreter importing moto, ~1.3 s of CPU).
moto keeps its state in module-level backends, which this process's other moto (``tests/dynamodb_fixtures.py``)
shares: the table is deleted at the end, and nothing else calls moto while these tests run, one at a time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[Any]:
    from bench import moto_speedups
    from bench.dynamodb_server import SerialMoto, serving

    moto_speedups.install()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="dynamodb-server", daemon=True)
    thread.start()
    server = serving(SerialMoto())
    try:
        url = asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result(30)
        client = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1", aws_access_key_id="a",
                              aws_secret_access_key="b")
        client.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                       {"AttributeName": "sk", "KeyType": "RANGE"}],
                            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                                  {"AttributeName": "sk", "AttributeType": "S"}])
        try:
            yield client
        finally:
            client.delete_table(TableName="t")
            asyncio.run_coroutine_threadsafe(server.__aexit__(None, None, None), loop).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def key(pk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": "1"}}


def item(client: Any, pk: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = client.get_item(TableName="t", Key=key(pk), ConsistentRead=True).get("Item")
    return found


def test_a_canceled_transaction_writes_nothing_and_a_successful_one_everything(dynamodb: Any) -> None:
    dynamodb.put_item(TableName="t", Item={**key("a"), "n": {"N": "1"}})
    dynamodb.put_item(TableName="t", Item={**key("c"), "n": {"N": "1"}})
    dynamodb.put_item(TableName="t", Item={**key("untouched"), "n": {"N": "7"}})
    writes = [
        {"Put": {"TableName": "t", "Item": {**key("b"), "n": {"N": "1"}}}},
        {"Update": {"TableName": "t", "Key": key("a"), "UpdateExpression": "SET #n = #n + :one",
                    "ExpressionAttributeNames": {"#n": "n"}, "ExpressionAttributeValues": {":one": {"N": "1"}}}},
    ]
    fails = {"Delete": {"TableName": "t", "Key": key("c"), "ConditionExpression": "attribute_not_exists(pk)"}}
    with pytest.raises(ClientError) as canceled:
        dynamodb.transact_write_items(TransactItems=[*writes, fails])
    assert [reason["Code"] for reason in canceled.value.response["CancellationReasons"]] == [
        "None", "None", "ConditionalCheckFailed"]
    assert item(dynamodb, "b") is None
    assert item(dynamodb, "a") == {**key("a"), "n": {"N": "1"}}
    assert item(dynamodb, "c") == {**key("c"), "n": {"N": "1"}}

    dynamodb.transact_write_items(TransactItems=[*writes, {"Delete": {"TableName": "t", "Key": key("c")}}])
    assert item(dynamodb, "b") == {**key("b"), "n": {"N": "1"}}
    assert item(dynamodb, "a") == {**key("a"), "n": {"N": "2"}}
    assert item(dynamodb, "c") is None
    assert item(dynamodb, "untouched") == {**key("untouched"), "n": {"N": "7"}}


def test_a_transaction_sent_again_with_its_token_is_answered_without_applying_it_twice(dynamodb: Any) -> None:
    dynamodb.put_item(TableName="t", Item={**key("counter"), "n": {"N": "0"}})
    increment = {"Update": {"TableName": "t", "Key": key("counter"), "UpdateExpression": "SET #n = #n + :one",
                            "ExpressionAttributeNames": {"#n": "n"}, "ExpressionAttributeValues": {":one": {"N": "1"}},
                            "ConditionExpression": "attribute_exists(pk)"}}
    claim = {"Put": {"TableName": "t", "Item": key("claim"), "ConditionExpression": "attribute_not_exists(pk)"}}
    for _ in range(2):  # a retry after a lost answer, as the gateway sends it: same token, same items
        dynamodb.transact_write_items(TransactItems=[increment, claim], ClientRequestToken="retry-1")
    assert item(dynamodb, "counter") == {**key("counter"), "n": {"N": "1"}}
    with pytest.raises(ClientError):  # a new token is a new transaction: the claim is taken
        dynamodb.transact_write_items(TransactItems=[increment, claim], ClientRequestToken="retry-2")


def test_a_query_reads_its_partition_as_moto_does(dynamodb: Any) -> None:
    for pk in ("q1", "q2"):
        for sk in ("c", "a", "b"):
            dynamodb.put_item(TableName="t", Item={"pk": {"S": pk}, "sk": {"S": sk}, "n": {"N": str(ord(sk))}})

    def query(**extra: Any) -> list[str]:
        found = dynamodb.query(TableName="t", KeyConditionExpression="pk = :pk",
                               ExpressionAttributeValues={":pk": {"S": "q1"}, **extra.pop("values", {})},
                               ConsistentRead=True, **extra)
        return [entry["sk"]["S"] for entry in found["Items"]]

    assert query() == ["a", "b", "c"]
    assert query(ScanIndexForward=False, Limit=2) == ["c", "b"]
    assert query(FilterExpression="n > :n", values={":n": {"N": str(ord("a"))}}) == ["b", "c"]
    assert dynamodb.query(TableName="t", KeyConditionExpression="pk = :pk",
                          ExpressionAttributeValues={":pk": {"S": "nothing"}})["Items"] == []
