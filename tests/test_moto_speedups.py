"""``bench/moto_speedups.py`` makes the tests' moto cheaper without changing any answer: DynamoDB items written out
directly must be byte for byte what moto's own serializer writes, for every kind of attribute value; the remembered
dispatching must find the same service as moto's, and a DynamoDB request sent straight to moto's handler must get
the answer moto's Flask application gives."""

from __future__ import annotations

import base64
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

# Every member of AttributeValue, nested both ways, and the edge values: empty strings and containers, None inside
# lists and maps, false and true, numbers written as numbers. Binary members, empty attribute names and values that
# are not plain dicts of members are left to moto's own code (ODD and the last ones of SCALARS and NESTED).
PLAIN: list[dict[str, Any]] = [
    {"S": "a"}, {"S": ""}, {"S": "2026-01-01T00:00:00.000000+00:00"}, {"N": "12"}, {"N": "-0.5"}, {"N": 3},
    {"N": Decimal("1.25")}, {"BOOL": True}, {"BOOL": False}, {"NULL": True}, {"SS": ["a", "b"]}, {"SS": []},
    {"NS": ["1", "2.5"]}, {"M": {}}, {"L": []}, {"M": {"a": {"S": "x"}, "b": {"N": "1"}, "c": None}},
    {"L": [{"S": "x"}, None, {"L": [{"M": {"deep": {"BOOL": False}}}]}]},
    {"M": {"list": {"L": [{"NULL": True}, {"SS": ["s"]}]}, "map": {"M": {"n": {"N": "0"}}}}},
    {}, {"S": None}, {"S": "a", "N": "1"},
]
LEFT_TO_MOTO: list[Any] = [
    {"B": base64.b64encode(b"\x00\x01").decode()}, {"B": b"raw"}, {"BS": [base64.b64encode(b"x").decode()]},
    {"M": {"list": {"L": [{"B": "AAE="}]}}}, {"M": {"": {"S": "empty name"}}}, {"X": "unknown member"},
    {"s": "lower case"},
]


@pytest.fixture(scope="module")
def serialized() -> Callable[[bool, str, dict[str, Any]], Any]:
    """``serialized(fast, operation, result)``: the response body moto writes for ``result``, with the fast path
    or with moto's own code (whatever is installed in this process). moto is imported here, not at collection."""
    from moto.core.serialize import JSONSerializer, XFormedAttributePicker
    from moto.core.utils import get_service_model

    from bench import moto_speedups

    class MotoSerializer(JSONSerializer):
        _serialize_type_structure = moto_speedups._moto_serialize_structure

    class FastSerializer(JSONSerializer):
        _serialize_type_structure = moto_speedups._serialize_type_structure

    model = get_service_model("dynamodb")  # the model moto serializes with

    def serialize(fast: bool, operation: str, result: dict[str, Any]) -> Any:
        serializer = (FastSerializer if fast else MotoSerializer)(
            operation_model=model.operation_model(operation), pretty_print=False,
            value_picker=XFormedAttributePicker())
        return serializer.serialize(result)["body"]

    return serialize


@pytest.mark.parametrize("value", [*PLAIN, *LEFT_TO_MOTO], ids=repr)
def test_an_item_is_written_as_moto_writes_it(serialized: Callable[[bool, str, dict[str, Any]], Any],
                                               value: dict[str, Any]) -> None:
    results = {
        "GetItem": {"Item": {"pk": {"S": "k"}, "v": value}},
        "Query": {"Items": [{"pk": {"S": "k"}, "v": value}, {"pk": {"S": "k2"}}], "Count": 2, "ScannedCount": 2,
                  "LastEvaluatedKey": {"pk": {"S": "k2"}}},
        "UpdateItem": {"Attributes": {"v": value}},
        "BatchGetItem": {"Responses": {"t": [{"v": value}]}, "UnprocessedKeys": {}},
    }
    for operation, result in results.items():
        assert serialized(True, operation, result) == serialized(False, operation, result), operation


def test_plain_values_take_the_fast_path_and_the_others_do_not() -> None:
    from bench.moto_speedups import _attribute_value, _NotPlain

    order = ("S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL")
    for value in PLAIN:
        _attribute_value(value, order)
    for value in LEFT_TO_MOTO:
        with pytest.raises(_NotPlain):
            _attribute_value(value, order)


def test_a_description_without_items_is_written_as_moto_writes_it(
    serialized: Callable[[bool, str, dict[str, Any]], Any],
) -> None:
    result = {"Table": {"TableName": "t", "TableStatus": "ACTIVE", "ItemCount": 3,
                        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}]}}
    assert serialized(True, "DescribeTable", result) == serialized(False, "DescribeTable", result)


@pytest.mark.parametrize("host", ["127.0.0.1:4566", "dynamodb.us-east-1.amazonaws.com", "sns.eu-west-1.amazonaws.com",
                                  "dynamodb", None])
def test_the_dispatcher_finds_the_service_moto_finds(host: str | None) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication
    from moto.server import create_backend_app

    from bench.moto_speedups import Dispatcher

    remembered = Dispatcher(create_backend_app)
    assert remembered.get_backend_for_host(host) == DomainDispatcherApplication(create_backend_app) \
        .get_backend_for_host(host)
    assert remembered.get_backend_for_host(host) == remembered.get_backend_for_host(host)


def _table_of_partitions() -> Any:
    """A moto table (hash and range key) of three partitions, its items put in no particular order."""
    from moto.dynamodb.models.table import Table

    table = Table("t", account_id="123456789012", region="us-east-1",
                  schema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                  attr=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}])
    for n in (7, 3, 11, 0, 5, 9, 1):
        for pk in ("b", "a", "c"):
            table.put_item({"pk": {"S": pk}, "sk": {"S": f"{n:02d}"}, "n": {"N": str(n)}})
    return table


QUERIES: list[dict[str, Any]] = [
    {},
    {"scan_index_forward": False},
    {"limit": 2},
    {"limit": 2, "scan_index_forward": False, "exclusive_start_key": {"pk": {"S": "a"}, "sk": {"S": "09"}}},
    {"exclusive_start_key": {"pk": {"S": "a"}, "sk": {"S": "03"}}},
    {"range_comparison": "BETWEEN", "range_values": [{"S": "02"}, {"S": "08"}]},
    {"range_comparison": "BEGINS_WITH", "range_values": [{"S": "0"}], "limit": 3},
    {"filter_expression": "n > :n", "values": {":n": {"N": "4"}}},
]


@pytest.mark.parametrize("hash_key", ["a", "c", "nothing"])
@pytest.mark.parametrize("query", QUERIES, ids=repr)
def test_a_query_of_a_partition_answers_as_moto_answers(hash_key: str, query: dict[str, Any]) -> None:
    """The same items, in the same order, the same scanned count and the same key to go on from, as moto's own
    Query over the whole table, for every way the storage (and a client) reads a partition."""
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    from bench.moto_speedups import query_own_partition

    table = _table_of_partitions()
    moto_query = getattr(Table.query, "__wrapped__", Table.query)
    own_partition = query_own_partition(moto_query)
    options = dict(query)
    values = options.pop("values", None)
    arguments = (DynamoType({"S": hash_key}), options.pop("range_comparison", None),
                 [DynamoType(v) for v in options.pop("range_values", [])], options.pop("limit", None),
                 options.pop("exclusive_start_key", None), options.pop("scan_index_forward", True), None)
    filter_expression = options.pop("filter_expression", None)
    keywords = {"filter_expression": get_filter_expression(filter_expression, {}, values)} if filter_expression else {}
    assert not options

    def answer(found: tuple[list[Any], int, Any]) -> tuple[list[Any], int, Any]:
        items, scanned, last = found
        return [item.to_json() for item in items], scanned, last

    expected = answer(moto_query(table, *arguments, **keywords))
    assert answer(own_partition(table, *arguments, **keywords)) == expected
    assert expected[0] or hash_key == "nothing" or "exclusive_start_key" in query  # (a key of partition a)
    assert len(table.items) == 3  # the table itself is left as it was


def test_an_item_is_built_as_moto_builds_it_and_refused_at_the_same_size() -> None:
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models.dynamo_type import DynamoType, Item

    from bench.moto_speedups import ITEM_SIZE_LIMIT, _build_item, _moto_build_item

    def built(build: Callable[..., None], attrs: dict[str, Any]) -> Item:
        item = Item.__new__(Item)
        build(item, DynamoType({"S": "k"}), DynamoType({"S": "r"}), attrs)
        return item

    values = [{"S": "a"}, {"S": ""}, {"N": "12"}, {"BOOL": False}, {"NULL": True}, {"SS": ["a", "b"]}, {"NS": ["1"]},
              {"M": {"a": {"S": "x"}, "b": {"L": [{"N": "1"}]}}}, {"L": []}, {"B": b"raw"}]
    attrs = {"pk": {"S": "k"}, "sk": {"S": "r"}, **{f"a{i}": value for i, value in enumerate(values)}}
    fast, moto = built(_build_item, attrs), built(_moto_build_item, attrs)
    assert fast == moto and fast.to_json() == moto.to_json() and type(fast.attrs) is type(moto.attrs)
    # Attributes of 100,000 bytes each: the fifth makes the item too large (the key and the name count too).
    large = {f"v{i}": {"S": "x" * 100_000} for i in range(5)}
    for build in (_build_item, _moto_build_item):
        assert built(build, dict(list(large.items())[:4])).attrs.keys() == {"v0", "v1", "v2", "v3"}
        with pytest.raises(ItemSizeTooLarge):
            built(build, large)
    # Right at the limit: an attribute filling it exactly is accepted, one byte more refused, by both.
    room = ITEM_SIZE_LIMIT - len("v0") - len("v1") - 1
    for build in (_build_item, _moto_build_item):
        assert built(build, {"v0": {"S": "x"}, "v1": {"S": "y" * room}}).attrs["v1"].value == "y" * room
        with pytest.raises(ItemSizeTooLarge):
            built(build, {"v0": {"S": "x"}, "v1": {"S": "y" * (room + 1)}})


def test_a_dynamodb_request_is_answered_as_moto_s_flask_application_answers_it() -> None:
    import json

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication
    from moto.server import create_backend_app
    from werkzeug.test import EnvironBuilder

    from bench.moto_http import call_wsgi
    from bench.moto_speedups import Dispatcher

    direct, flask = Dispatcher(create_backend_app), DomainDispatcherApplication(create_backend_app)
    table = "speedups-direct"

    def answer(app: Any, operation: str, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        headers = {"X-Amz-Target": f"DynamoDB_20120810.{operation}", "Content-Type": "application/x-amz-json-1.0",
                   "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/dynamodb/aws4_request, "
                                    "SignedHeaders=host, Signature=0"}
        status, answered, payload = call_wsgi(app, EnvironBuilder(method="POST", path="/", headers=headers,
                                                                  data=json.dumps(body).encode()).get_environ())
        # What differs between two answers of moto to one request: its request id; and Flask's CORS header.
        varying = {"x-amzn-requestid", "access-control-allow-origin"}
        kept = {k.lower(): v for k, v in answered if k.lower() not in varying}
        return status, kept, json.loads(payload)

    create = {"TableName": table, "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
              "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}], "BillingMode": "PAY_PER_REQUEST"}
    assert answer(flask, "CreateTable", create)[0] == 200
    requests: list[tuple[str, dict[str, Any]]] = [
        ("PutItem", {"TableName": table, "Item": {"pk": {"S": "a"}, "n": {"N": "1"}}}),
        ("GetItem", {"TableName": table, "Key": {"pk": {"S": "a"}}}),
        ("UpdateItem", {"TableName": table, "Key": {"pk": {"S": "a"}}, "UpdateExpression": "ADD n :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}}, "ReturnValues": "ALL_NEW"}),
        ("PutItem", {"TableName": table, "Item": {"pk": {"S": "a"}},
                     "ConditionExpression": "attribute_not_exists(pk)"}),
        ("GetItem", {"TableName": "no-such-table", "Key": {"pk": {"S": "a"}}}),
        ("Query", {"TableName": table, "KeyConditionExpression": "pk = :a",
                   "ExpressionAttributeValues": {":a": {"S": "a"}}}),
        ("DeleteItem", {"TableName": table, "Key": {"pk": {"S": "a"}}, "ReturnValues": "ALL_OLD"}),
    ]
    statuses = []
    for operation, body in requests:
        # The same request twice, the item put back as it was in between (an update adds 1 each time it is applied).
        before = answer(flask, "GetItem", {"TableName": table, "Key": {"pk": {"S": "a"}}})[2].get("Item")
        theirs = answer(flask, operation, body)
        if before is not None:
            answer(flask, "PutItem", {"TableName": table, "Item": before})
        assert answer(direct, operation, body) == theirs, operation
        statuses.append(theirs[0])
    assert statuses == [200, 200, 200, 400, 400, 200, 200]  # errors (a failed condition, no table) too
    answer(flask, "DeleteTable", {"TableName": table})
