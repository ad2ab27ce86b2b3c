"""moto as the tests and the benches run it: the same answers, for less CPU per request.

moto stands in for DynamoDB (and SNS, SQS, EventBridge) in the test suite (``tests/moto_in_loop.py``,
``tests/dynamodb_fixtures.py``) and in the fleet harness (``bench/dynamodb_server.py``). Five of its costs grow with
things that have nothing to do with the request, and one is a layer the answer does not need; :func:`install` and
:class:`Dispatcher` remove them without changing any answer:

- **Responses of DynamoDB items.** moto 5.2 serializes every response by walking botocore's output shape, and each
  ``AttributeValue`` (every attribute of every item) asks a chain of alias providers for each of the ten members
  the shape has (``S``, ``N``, ``B``, ... ``BOOL``): ~1.5 ms of CPU per item returned. An ``AttributeValue`` moto
  holds as a plain dict of wire members is written here directly, member by member in the shape's order, exactly
  as moto's serializer writes it (``tests/test_moto_speedups.py`` compares both on every kind of value); anything
  else (binary values, objects) goes through moto's own code.
- **Transactions.** Before each TransactWriteItems moto deep-copies every table it names (its rollback), so a
  transaction costs time in proportion to the whole table: a fleet's table holds every event and watched target.
  Here a transaction runs on a table holding only the items it names (its conditions can only read those) and its
  outcome is written back: the same answers, errors and rollbacks at the cost of its own items
  (:func:`transact_on_own_items`; ``tests/test_dynamodb_server.py``). moto's backup of that table is taken once,
  not once per write of the transaction (:func:`_copied_once`).
- **Queries.** moto answers a Query by listing and sorting every item of the table (every partition), then keeping
  the queried partition's, so each Query costs time in proportion to the whole table: a fleet's table holds every
  event, escalation and watched target, and in the tests' fleets the Queries of each lease round were the largest
  part of moto's CPU. DynamoDB reads only the partition. Here a Query (not on an index) runs on a view of the table
  that holds only the queried partition (:func:`query_own_partition`): the same items, order, filters and pages,
  at the partition's cost.
- **Items.** moto builds an item attribute by attribute, and each one added sums the sizes of every attribute
  already there (its 400 KB limit): building an item of n attributes costs n²/2 size computations. Here the same
  sums are kept as a running total (:func:`_build_item`): the same limit, raised at the same attribute.
- **Dispatching.** moto's server finds the service of each request from its host name by listing moto's package
  directory and matching every service's URL patterns, twice per request; the answer depends on the host name
  only, so :class:`Dispatcher` remembers it. A DynamoDB request goes straight to moto's DynamoDB handler, without
  the Flask application moto wraps around it (:func:`_dynamodb`).
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections import defaultdict
from collections.abc import Callable
from enum import Enum
from typing import Any

from botocore.exceptions import ClientError
from moto.core.request import Request
from moto.core.serialize import BaseJSONSerializer
from moto.dynamodb.exceptions import ItemSizeTooLarge
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
from moto.dynamodb.models.table import Table
from moto.dynamodb.models.utilities import bytesize
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

# Members written as strings (moto's _serialize_type_string), as they are (booleans), as string lists, and the
# containers; binary members (B, BS) are left to moto.
_STRINGS = frozenset({"S", "N"})
_AS_IS = frozenset({"NULL", "BOOL"})
_STRING_SETS = frozenset({"SS", "NS"})
_HANDLED = _STRINGS | _AS_IS | _STRING_SETS | {"M", "L"}


class _NotPlain(Exception):
    """A value the fast path leaves to moto's serializer."""


def _string(value: Any) -> Any:
    if isinstance(value, Enum):
        value = value.value
    return str(value) if value not in [None, {}, []] else value


def _attribute_value(value: Any, order: tuple[str, ...]) -> dict[str, Any]:
    """``value`` (an AttributeValue as a dict of wire members) as moto's JSON serializer writes it."""
    if type(value) is not dict or not value.keys() <= _HANDLED:
        raise _NotPlain
    written: dict[str, Any] = {}
    for member in order:
        member_value = value.get(member)
        if member_value is None:
            continue
        if member in _STRINGS:
            written[member] = _string(member_value)
        elif member in _AS_IS:
            written[member] = member_value
        elif member in _STRING_SETS:
            if type(member_value) is not list:
                raise _NotPlain
            written[member] = [_string(item) for item in member_value]
        elif member == "M":
            if type(member_value) is not dict or "" in member_value:  # moto writes an empty name its own way
                raise _NotPlain
            written[member] = {key: _attribute_value(item, order) for key, item in member_value.items()
                               if item is not None}
        else:  # L
            if type(member_value) is not list:
                raise _NotPlain
            written[member] = [None if item is None else _attribute_value(item, order) for item in member_value]
    return written


_moto_serialize_structure = BaseJSONSerializer._serialize_type_structure


def _serialize_type_structure(self: BaseJSONSerializer, serialized: Any, value: Any, shape: Any, key: str) -> None:
    if key and shape.name == "AttributeValue" and not shape.serialization.get("name") and value is not None:
        try:
            serialized[key] = _attribute_value(value, tuple(shape.members))
            return
        except _NotPlain:
            pass
    _moto_serialize_structure(self, serialized, value, shape, key)


def _touched(table: Any, op: dict[str, Any]) -> tuple[DynamoType, DynamoType] | None:
    """The (hash, range) key of the item one transaction write names, or None if it cannot be read."""
    key = op.get("Item") if "Item" in op else op.get("Key")
    try:
        return DynamoType(key[table.hash_key_attr]), DynamoType(key[table.range_key_attr])  # type: ignore[index]
    except (KeyError, TypeError):
        return None


def _copied_once(table: Any) -> Callable[[dict[int, Any]], Any]:
    """A ``__deepcopy__`` for a transaction's own table: moto backs the tables of a transaction up (its rollback) by
    deep-copying the table once per write that names it, so a transaction of n writes on its n items made n² item
    copies (a watch list saved 100 writes at a time: 10,000 per transaction). The copies are all taken before the
    first write, so they are equal, and moto keeps one per table: the first serves them all."""
    copied: list[Any] = []

    def deepcopy(memo: dict[int, Any]) -> Any:
        if not copied:
            del table.__deepcopy__  # the copy is moto's own, of the table as it is
            try:
                copied.append(copy.deepcopy(table, memo))
            finally:
                table.__deepcopy__ = deepcopy
        return copied[0]

    return deepcopy


def transact_on_own_items(transact: Callable[..., None]) -> Callable[..., None]:
    """Wrap moto's ``DynamoDBBackend.transact_write_items`` so that it runs on tables holding only the items the
    transaction names, then writes them back (see the module docstring)."""

    @functools.wraps(transact)
    def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
        real: dict[str, Any] = {}
        keys: dict[str, list[tuple[DynamoType, DynamoType]]] = defaultdict(list)
        for item in transact_items:
            op = next(iter(item.values()), None) if isinstance(item, dict) else None
            name = op.get("TableName") if isinstance(op, dict) else None
            table = self.tables.get(name) if isinstance(name, str) else None
            key = _touched(table, op) if table is not None and table.range_key_attr else None  # type: ignore[arg-type]
            if table is None or key is None or table.global_indexes or table.indexes or table.stream_shard:
                return transact(self, transact_items)  # anything unusual: moto's own way
            real[name] = table  # type: ignore[index]
            keys[name].append(key)  # type: ignore[index]
        for name, table in real.items():
            own = copy.copy(table)
            own.items = defaultdict(dict)
            for hash_key, range_key in keys[name]:
                found = table.items.get(hash_key, {}).get(range_key)
                if found is not None:
                    own.items[hash_key][range_key] = copy.deepcopy(found)
            own.__deepcopy__ = _copied_once(own)  # type: ignore[attr-defined]
            self.tables[name] = own
        try:
            return transact(self, transact_items)
        finally:
            for name, table in real.items():
                own = self.tables[name]  # the transaction's table, or moto's rollback copy of it
                for hash_key, range_key in keys[name]:
                    found = own.items.get(hash_key, {}).get(range_key)
                    if found is not None:
                        table.items[hash_key][range_key] = found
                    elif range_key in table.items.get(hash_key, {}):
                        del table.items[hash_key][range_key]
                self.tables[name] = table

    transact_write_items.own_items = True  # type: ignore[attr-defined]
    return transact_write_items


def query_own_partition(query: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap moto's ``Table.query`` so that a Query of a partition (not of an index) runs on a view of the table
    holding only that partition (see the module docstring)."""
    signature = inspect.signature(query)

    @functools.wraps(query)
    def partition_query(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)
        hash_key = bound.arguments.get("hash_key")
        if hash_key is None or bound.arguments.get("index_name") or not self.range_key_attr:
            return query(self, *args, **kwargs)
        own = copy.copy(self)
        own.items = {hash_key: self.items[hash_key]} if hash_key in self.items else {}
        return query(own, *args, **kwargs)

    partition_query.own_partition = True  # type: ignore[attr-defined]
    return partition_query


ITEM_SIZE_LIMIT = 405000  # moto's (LimitedSizeDict.__setitem__)


def _size(value: Any) -> int:
    return int(value.size()) if type(value) is DynamoType else int(bytesize(str(value)))


def _build_item(self: Item, hash_key: DynamoType, range_key: DynamoType | None, attrs: dict[str, Any]) -> None:
    """``Item.__init__`` with the size of the attributes so far kept as a running total: what
    ``LimitedSizeDict.__setitem__`` sums again for each attribute added (an attribute named twice cannot occur:
    ``attrs`` is a dict)."""
    self.hash_key = hash_key
    self.range_key = range_key
    self.attrs = LimitedSizeDict()
    total = 0
    for key, value in attrs.items():
        typed = DynamoType(value)
        added = _size(key) + _size(typed)
        if total + added > ITEM_SIZE_LIMIT:
            raise ItemSizeTooLarge
        dict.__setitem__(self.attrs, key, typed)
        total += added


_moto_build_item = Item.__init__


class Dispatcher(DomainDispatcherApplication):
    """moto's server application (every service), remembering the service of each host name, and handing a
    DynamoDB request straight to moto's DynamoDB handler."""

    def __init__(self, create_app: Callable[..., Any]) -> None:
        super().__init__(create_app)
        self._backends: dict[str | None, Any] = {}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith(DYNAMODB_TARGET):
            return _dynamodb(environ, start_response)
        return super().__call__(environ, start_response)

    def get_backend_for_host(self, host: str | None) -> Any:
        if host not in self._backends:
            self._backends[host] = super().get_backend_for_host(host)
        return self._backends[host]


# The X-Amz-Target of every DynamoDB request (its JSON protocol's API version).
DYNAMODB_TARGET = "DynamoDB_20120810."


class _ServerRequest(Request):
    """moto's request, as its server's Flask request class says it came: through a WSGI server (moto then leaves
    the Date header to the server, as it does behind Flask)."""

    from_wsgi_server = True


def _dynamodb(environ: dict[str, Any], start_response: Any) -> Any:
    """What moto's server answers a DynamoDB request, without its Flask application around the handler.

    moto's server routes each request through a Flask application per service: the app's context, its URL map
    (DynamoDB has one URL), CORS headers on the way out, then ``convert_to_flask_response``, which calls the
    handler (``DynamoHandler.dispatch``) with moto's request object and builds the response from the handler's
    status, headers and body. That wrapping was a quarter of moto's CPU per DynamoDB request (a GetItem: 0.83 ms
    → 0.63 ms). Here the handler gets the same request (moto's ``Request``, marked as its server's Flask request
    class marks it; that class only adds Flask's own) and the same arguments, and the answer is built as
    ``convert_to_flask_response`` builds it; only Flask's CORS header (``Access-Control-Allow-Origin``, for
    browsers) is not added.
    """
    from moto.dynamodb.responses import DynamoHandler
    from werkzeug.wrappers import Response

    request = _ServerRequest(environ)
    try:
        result = DynamoHandler.dispatch(request, request.raw_url, dict(request.headers))
    except ClientError as error:
        result = 400, {}, error.response["Error"]["Message"]
    status, headers, content = result if len(result) == 3 else (200, {}, result)
    return Response(response=content, status=status, headers=headers)(environ, start_response)


def install() -> None:
    """Make this process's moto cheaper as the module docstring says (idempotent)."""
    if BaseJSONSerializer._serialize_type_structure is not _serialize_type_structure:
        BaseJSONSerializer._serialize_type_structure = _serialize_type_structure  # type: ignore[method-assign]
    if not getattr(Table.query, "own_partition", False):
        Table.query = query_own_partition(Table.query)  # type: ignore[method-assign]
    if Item.__init__ is not _build_item:
        Item.__init__ = _build_item  # type: ignore[method-assign]
    if not getattr(DynamoDBBackend.transact_write_items, "own_items", False):
        DynamoDBBackend.transact_write_items = transact_on_own_items(  # type: ignore[method-assign]
            DynamoDBBackend.transact_write_items)
