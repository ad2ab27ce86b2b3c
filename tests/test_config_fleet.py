"""The fleet's configuration: accounts and their shards, policy and budget selectors, the cluster section; and
what ``check-config`` says of them (through the CLI's entry point, in this process: ``tests/test_cli.py`` runs
the command as a process, and a second interpreter here would only add its start, ~1 s of CPU each)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from supervisor.cli import main
from supervisor.config import ConfigError, parse_settings
from supervisor.core.fleet import Shard

FIRST, SECOND = "111111111111", "222222222222"
LIMIT = {"calculation": {"max_runtime": "1m"}}
DYNAMODB = {"backend": "dynamodb", "table": "athena-supervisor"}


def only_problem(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_settings(data, source="c.yaml", environ={})
    [line] = str(caught.value).splitlines()
    return line


def test_without_accounts_the_implicit_shard_is_the_credentials_account_in_aws_region() -> None:
    settings = parse_settings({"aws": {"region": "eu-west-1"}}, environ={})
    assert settings.shards() == (Shard("", "eu-west-1", implicit=True),)
    assert settings.shards()[0].scope == ""


def test_each_account_region_is_a_shard_and_sees_only_the_policies_and_budgets_that_select_it() -> None:
    settings = parse_settings({
        "aws": {"region": "us-east-1"},
        "accounts": [{"account_id": FIRST, "regions": ["us-east-1", "eu-west-1"]}, {"account_id": SECOND}],
        "policies": [{"name": "first-eu", "accounts": [FIRST], "regions": ["eu-west-1"], **LIMIT},
                     {"name": "everywhere", **LIMIT}],
        "budgets": [{"name": "second", "accounts": [SECOND], "period": "daily", "limit_usd": 10,
                     "thresholds": [{"at_percent": 100, "action": "notify"}]}],
    }, environ={})
    shards = settings.shards()
    assert shards == (Shard(FIRST, "us-east-1"), Shard(FIRST, "eu-west-1"), Shard(SECOND, "us-east-1"))
    seen = {str(shard): ([p.name for p in settings.for_shard(shard).policies],
                         [b.name for b in settings.for_shard(shard).budgets], settings.for_shard(shard).aws.region)
            for shard in shards}
    assert seen == {
        f"{FIRST}/us-east-1": (["everywhere"], [], "us-east-1"),
        f"{FIRST}/eu-west-1": (["first-eu", "everywhere"], [], "eu-west-1"),
        f"{SECOND}/us-east-1": (["everywhere"], ["second"], "us-east-1"),
    }


@pytest.mark.parametrize(("data", "expected"), [
    ({"accounts": [{"account_id": FIRST}, {"account_id": FIRST}]},
     f"c.yaml: accounts[1].account_id: duplicate account; got '{FIRST}'; already listed as accounts[0]; list each "
     "account once, with all its regions"),
    ({"accounts": [{"account_id": FIRST, "role_arn": f"arn:aws:iam::{SECOND}:role/x"}]},
     f"c.yaml: accounts[0].role_arn: role_arn is in another account; got 'arn:aws:iam::{SECOND}:role/x'; the role "
     f"must be in account {FIRST} (it is in {SECOND}); use the role the member account grants the supervisor"),
    ({"accounts": [{"account_id": FIRST, "role_arn": "arn:aws:iam::role/x"}]},
     "c.yaml: accounts[0].role_arn: not an IAM role ARN; got 'arn:aws:iam::role/x'; write "
     "arn:aws:iam::<12-digit account>:role/<name>"),
    ({"accounts": [{"account_id": FIRST, "regions": ["us-east-1", "us-east-1"]}]},
     "c.yaml: accounts[0].regions[1]: duplicate region; got 'us-east-1'; list each region once"),
    ({"accounts": [{"account_id": FIRST}], "policies": [{"name": "p", "accounts": [SECOND], **LIMIT}]},
     f"c.yaml: policies[0].accounts[0]: account is not supervised; got '{SECOND}'; supervised accounts: {FIRST}"),
    ({"accounts": [{"account_id": FIRST}], "policies": [{"name": "p", "regions": ["eu-west-2"], **LIMIT}]},
     "c.yaml: policies[0].regions[0]: region is not supervised; got 'eu-west-2'; supervised regions: us-east-1"),
    ({"cluster": {"lease_duration": "15s"}},
     "c.yaml: cluster: replicas need a shared journal; set journal.backend: dynamodb (and journal.table), or "
     "remove cluster"),
    ({"cluster": {"lease_duration": "4s"}, "journal": DYNAMODB, "aws": {"connect_timeout": "2s"}},
     "c.yaml: cluster.lease_duration: too short to act between renewals; got '4s'; a holder stops acting "
     "max_clock_skew + aws.connect_timeout (3s) before its lease could expire and renews every third of it: make "
     "it longer than 4.5s, or lower aws.connect_timeout"),
    ({"cluster": {"lease_duration": "2s"}, "journal": DYNAMODB},
     "c.yaml: cluster.lease_duration: too short; got '2s'; must be at least 3s (leases are renewed every third of "
     "it)"),
])
def test_fleet_mistakes_are_named_with_their_fix(data: dict[str, Any], expected: str) -> None:
    assert only_problem(data) == expected


def test_an_external_id_is_never_shown() -> None:
    problem = only_problem({"accounts": [{"account_id": FIRST, "external_id": "s3cr3t-ext"}]})
    assert problem == ("c.yaml: accounts[0].external_id: external_id without role_arn; set role_arn, or remove "
                       "external_id")


def check_config(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """What ``athena-supervisor check-config ARGS`` prints, the config being valid (exit 0)."""
    assert main(["check-config", *args]) == 0
    return capsys.readouterr().out


def test_check_config_shows_the_account_regions_and_the_cluster_without_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({
        "accounts": [{"account_id": FIRST, "role_arn": f"arn:aws:iam::{FIRST}:role/athena-supervisor",
                      "external_id": "s3cr3t-ext", "regions": ["us-east-1", "eu-west-1"]},
                     {"account_id": SECOND}],
        "journal": DYNAMODB, "cluster": {"lease_duration": "15s", "replica_id": "pod-a"},
        "policies": [{"name": "p", "accounts": [FIRST], "regions": ["eu-west-1"], **LIMIT}],
    }))
    shown = check_config(capsys, str(path))
    assert "supervised: 3 account-regions" in shown
    assert (f"  {FIRST} in us-east-1, eu-west-1: role arn:aws:iam::{FIRST}:role/athena-supervisor "
            "(with an external id)") in shown
    assert f"  {SECOND} in us-east-1: the supervisor's own credentials" in shown
    assert "cluster: replicas lease the account-regions for 15s (renewed every 5s)" in shown
    assert f"     accounts: {FIRST}\n     regions: eu-west-1" in shown
    as_json = check_config(capsys, "--json", str(path))
    assert "s3cr3t" not in shown + as_json
