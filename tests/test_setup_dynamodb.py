"""``athena-supervisor setup-dynamodb --config FILE`` through the real CLI against moto (server mode, loopback):
it creates the table once and finds it the second time, refuses a table it cannot use and any other problem in
one line with exit 2; and ``deploy/cloudformation/dynamodb-table.yaml`` declares the same table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from supervisor.cli import main as cli_main
from supervisor.storage.dynamodb_setup import ATTRIBUTE_DEFINITIONS, BILLING_MODE, KEY_SCHEMA, TTL_ATTRIBUTE
from tests.dynamodb_fixtures import new_table_name

TEMPLATE = Path(__file__).resolve().parents[1] / "deploy" / "cloudformation" / "dynamodb-table.yaml"


def write_config(tmp_path: Path, journal: dict[str, Any]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"aws": {"region": "us-east-1"}, "journal": journal}))
    return path


def dynamodb_config(tmp_path: Path, endpoint_url: str, table: str) -> Path:
    return write_config(tmp_path, {"backend": "dynamodb", "table": table, "endpoint_url": endpoint_url})


def client(endpoint_url: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=endpoint_url, region_name="us-east-1")


def setup(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], list[str]]:
    status = cli_main(["setup-dynamodb", "--config", str(config)])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err.splitlines()


def test_the_table_is_created_once_and_found_after(tmp_path: Path, moto_dynamodb: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    table = new_table_name()
    config = dynamodb_config(tmp_path, moto_dynamodb, table)
    assert setup(config, capsys) == (0, [
        f"created table {table} in us-east-1: key pk (S, HASH) + sk (S, RANGE), on-demand billing",
        f"table {table} in us-east-1 is ACTIVE",
        f"enabled TTL on attribute ttl of table {table} in us-east-1 (expired items are deleted within days)",
    ], [])
    described = client(moto_dynamodb).describe_table(TableName=table)["Table"]
    assert described["KeySchema"] == list(KEY_SCHEMA)
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = client(moto_dynamodb).describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "ttl")
    assert setup(config, capsys) == (0, [
        f"table {table} in us-east-1 exists with the journal's key (pk (S, HASH) + sk (S, RANGE)): kept as it is",
        f"table {table} in us-east-1 is ACTIVE",
        f"TTL on attribute ttl of table {table} in us-east-1: already enabled",
    ], [])


def test_an_existing_table_without_ttl_gets_it(tmp_path: Path, moto_dynamodb: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    table = new_table_name()
    client(moto_dynamodb).create_table(TableName=table, KeySchema=list(KEY_SCHEMA),
                                       AttributeDefinitions=list(ATTRIBUTE_DEFINITIONS), BillingMode=BILLING_MODE)
    status, out, err = setup(dynamodb_config(tmp_path, moto_dynamodb, table), capsys)
    assert (status, err) == (0, [])
    assert out[0].endswith("kept as it is") and out[-1].startswith("enabled TTL on attribute ttl")


def test_a_table_with_another_key_is_refused(tmp_path: Path, moto_dynamodb: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    table = new_table_name()
    client(moto_dynamodb).create_table(
        TableName=table, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    assert setup(dynamodb_config(tmp_path, moto_dynamodb, table), capsys) == (2, [], [
        f"setup-dynamodb: table {table} in us-east-1 exists with key id (S, HASH), but the journal needs pk (S, "
        "HASH) + sk (S, RANGE); set journal.table to another name (setup-dynamodb creates it), or delete the table"])


def test_ttl_on_another_attribute_is_refused(tmp_path: Path, moto_dynamodb: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    table = new_table_name()
    dynamodb = client(moto_dynamodb)
    dynamodb.create_table(TableName=table, KeySchema=list(KEY_SCHEMA),
                          AttributeDefinitions=list(ATTRIBUTE_DEFINITIONS), BillingMode=BILLING_MODE)
    dynamodb.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": True,
                                                                            "AttributeName": "expires"})
    status, out, err = setup(dynamodb_config(tmp_path, moto_dynamodb, table), capsys)
    assert (status, out, len(err)) == (2, [], 1)
    assert err[0].startswith(f"setup-dynamodb: table {table} in us-east-1 expires items by attribute 'expires', "
                             "but the journal's items expire by 'ttl'")


def test_an_sqlite_journal_needs_no_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, {"path": str(tmp_path / "j.db")})
    assert setup(config, capsys) == (2, [], [
        f"{config}: journal.backend is sqlite; setup-dynamodb creates the table of journal.backend: dynamodb (set "
        "it and journal.table)"])


def test_an_unreachable_endpoint_is_one_line_without_secrets(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = dynamodb_config(tmp_path, "http://operator:s3cr3t@127.0.0.1:1", "athena-supervisor")
    status, out, err = setup(config, capsys)
    assert (status, out, len(err)) == (2, [], 1)
    assert err[0].startswith("setup-dynamodb: table athena-supervisor in us-east-1 at http://***@127.0.0.1:1: "
                             "DescribeTable failed: NetworkError: ")
    assert "s3cr3t" not in err[0] and "Traceback" not in err[0]


def test_an_invalid_config_is_reported_as_for_every_command(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, {"backend": "dynamodb"})
    status, out, err = setup(config, capsys)
    assert (status, out) == (2, [])
    assert err == [f"{config}: journal.table: missing required key; backend dynamodb needs the table's name, e.g. "
                   "table: athena-supervisor (create it with athena-supervisor setup-dynamodb --config FILE)"]


def test_the_cloudformation_table_is_the_one_setup_creates() -> None:
    from cfnlint.decode import decode  # imported by the test that uses it, not at collection

    template, errors = decode(str(TEMPLATE))
    assert not errors
    (table,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::DynamoDB::Table"]
    properties = table["Properties"]
    assert properties["KeySchema"] == list(KEY_SCHEMA)
    assert sorted(properties["AttributeDefinitions"], key=str) == sorted(ATTRIBUTE_DEFINITIONS, key=str)
    assert properties["BillingMode"] == BILLING_MODE
    assert properties["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"]["SSEEnabled"] is True
    assert table["DeletionPolicy"] == "Retain", "the journal outlives its stack"
