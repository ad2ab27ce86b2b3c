"""The journal's DynamoDB table definition, and creating it idempotently (``athena-supervisor setup-dynamodb``).

One definition, used by the command and compared by the tests with ``deploy/cloudformation/dynamodb-table.yaml``:
key ``pk`` (string, HASH) + ``sk`` (string, RANGE), on-demand billing, TTL on ``ttl``. An existing table with this
key is used as it is; one with another key is an error (the journal cannot live in it), as is TTL enabled on
another attribute (a table has one TTL attribute, and the journal's items expire through ``ttl``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from supervisor.clock import Clock
from supervisor.gateway import AwsCallError, Priority
from supervisor.storage.dynamodb_table import Table

KEY_SCHEMA: tuple[dict[str, str], ...] = (
    {"AttributeName": "pk", "KeyType": "HASH"},
    {"AttributeName": "sk", "KeyType": "RANGE"},
)
ATTRIBUTE_DEFINITIONS: tuple[dict[str, str], ...] = (
    {"AttributeName": "pk", "AttributeType": "S"},
    {"AttributeName": "sk", "AttributeType": "S"},
)
BILLING_MODE = "PAY_PER_REQUEST"
TTL_ATTRIBUTE = "ttl"
ACTIVE_WAIT = timedelta(minutes=5)
POLL_INTERVAL = 1.0  # seconds between DescribeTable calls while the table is being created


class TableProblem(Exception):
    """The table cannot serve as the journal; ``str()`` is one line: the table, what is wrong, the fix."""


def _key_text(schema: list[dict[str, str]], types: dict[str, str]) -> str:
    return " + ".join(f"{part['AttributeName']} ({types.get(part['AttributeName'], '?')}, {part['KeyType']})"
                      for part in schema)


EXPECTED_KEY = _key_text(list(KEY_SCHEMA), {d["AttributeName"]: d["AttributeType"] for d in ATTRIBUTE_DEFINITIONS})


async def ensure_table(table: Table, clock: Clock, *, wait: timedelta = ACTIVE_WAIT) -> list[str]:
    """Create ``table`` (and its TTL) unless it exists with the journal's key; wait until it is ACTIVE.

    Returns:
        One line per thing found or done, for the operator.

    Raises:
        TableProblem: the table exists with another key, or TTL is on another attribute, or it did not become
            ACTIVE within ``wait``.
        AwsCallError: a call failed (no permission, no credentials, unreachable endpoint).
    """
    done: list[str] = []
    where = f"table {table.name} in {table.region}"
    description = await _describe(table)
    if description is None:
        await table.call("CreateTable", {
            "TableName": table.name, "KeySchema": list(KEY_SCHEMA),
            "AttributeDefinitions": list(ATTRIBUTE_DEFINITIONS), "BillingMode": BILLING_MODE,
        }, Priority.ENFORCE)
        done.append(f"created {where}: key {EXPECTED_KEY}, on-demand billing")
    else:
        types = {d["AttributeName"]: d["AttributeType"] for d in description.get("AttributeDefinitions", [])}
        found = _key_text(description.get("KeySchema", []), types)
        if found != EXPECTED_KEY:
            raise TableProblem(f"{where} exists with key {found}, but the journal needs {EXPECTED_KEY}; set "
                               "journal.table to another name (setup-dynamodb creates it), or delete the table")
        done.append(f"{where} exists with the journal's key ({EXPECTED_KEY}): kept as it is")
    waited = timedelta(0)
    while (description := await _describe(table)) is None or description.get("TableStatus") != "ACTIVE":
        if waited >= wait:
            status = description.get("TableStatus") if description else "not found"
            raise TableProblem(f"{where} is still {status} after {int(wait.total_seconds())} s; run setup-dynamodb "
                               "again later")
        await clock.sleep(POLL_INTERVAL)
        waited += timedelta(seconds=POLL_INTERVAL)
    done.append(f"{where} is ACTIVE")
    done.append(await _ensure_ttl(table, where))
    return done


async def _describe(table: Table) -> dict[str, Any] | None:
    try:
        answer = await table.call("DescribeTable", {"TableName": table.name}, Priority.ENFORCE)
    except AwsCallError as error:
        if error.is_not_found:
            return None
        raise
    description: dict[str, Any] = answer["Table"]
    return description


async def _ensure_ttl(table: Table, where: str) -> str:
    answer = await table.call("DescribeTimeToLive", {"TableName": table.name}, Priority.ENFORCE)
    ttl = answer.get("TimeToLiveDescription") or {}
    status, attribute = ttl.get("TimeToLiveStatus", "DISABLED"), ttl.get("AttributeName")
    if status in ("ENABLED", "ENABLING") and attribute == TTL_ATTRIBUTE:
        return f"TTL on attribute {TTL_ATTRIBUTE} of {where}: already {status.lower()}"
    if status in ("ENABLED", "ENABLING"):
        raise TableProblem(f"{where} expires items by attribute {attribute!r}, but the journal's items expire by "
                           f"{TTL_ATTRIBUTE!r} (a table has one TTL attribute); set journal.table to another name, "
                           "or change the table's TTL attribute to ttl")
    if status == "DISABLING":
        raise TableProblem(f"TTL of {where} is being disabled; run setup-dynamodb again in an hour (DynamoDB allows "
                           "one TTL change per hour)")
    await table.call("UpdateTimeToLive", {"TableName": table.name, "TimeToLiveSpecification": {
        "Enabled": True, "AttributeName": TTL_ATTRIBUTE}}, Priority.ENFORCE)
    return f"enabled TTL on attribute {TTL_ATTRIBUTE} of {where} (expired items are deleted within days)"
