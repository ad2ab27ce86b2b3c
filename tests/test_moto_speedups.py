"""``bench/moto_speedups.py`` makes the tests' moto cheaper without changing any answer: DynamoDB items written out
directly must be byte for byte what moto's own serializer writes, for every kind of attribute value; the remembered
dispatching must find the same service as moto's."""

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
