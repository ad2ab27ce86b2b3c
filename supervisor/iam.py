"""Least privilege: the AWS actions each feature calls, and the IAM policy documents generated from them.

A :class:`Feature` is something the code does that needs AWS permissions (the daemon's discovery and
enforcement, a budget's ``disable_workgroup``, a notification channel, the read-only ``explain`` and
``budgets`` commands, a fleet's DynamoDB table and member roles); each of its :class:`Grant` s becomes one
policy statement. The gateway may call exactly the union of all features' actions
(``supervisor.gateway.IAM_ACTIONS``), and ``tests/test_deploy_iam.py`` checks that union against the operation
names the source calls, so an unused grant and an ungranted call both fail.

Regenerate the committed policies after a change here::

    python -m supervisor.iam --write deploy/iam     # deploy/iam/*.json (POLICY_FILES)
    python -m supervisor.iam --check deploy/iam     # exit 1 when a committed file is stale
    python -m supervisor.iam --config config.yaml   # the daemon's policy for the features a config uses
    python -m supervisor.iam --explain              # the read-only policy of explain/budgets
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supervisor.config import Settings

WORKGROUP_ARN = "arn:aws:athena:${Region}:${Account}:workgroup/${WorkgroupPrefix}*"
SNS_TOPIC_ARN = "arn:aws:sns:${Region}:${Account}:${NotificationTopic}"
EVENT_BUS_ARN = "arn:aws:events:${Region}:${Account}:event-bus/${EventBus}"
EVENT_QUEUE_ARN = "arn:aws:sqs:${QueueRegion}:${Account}:${EventQueue}"


@dataclass(frozen=True, slots=True)
class Grant:
    """One policy statement: ``actions`` allowed on ``resource``."""

    sid: str
    actions: tuple[str, ...]
    resource: str


@dataclass(frozen=True, slots=True)
class Feature:
    """Something the code does with AWS; ``needed_for`` says when a deployment needs its grants."""

    name: str
    needed_for: str
    grants: tuple[Grant, ...]

    @property
    def actions(self) -> frozenset[str]:
        return frozenset(action for grant in self.grants for action in grant.actions)


DAEMON = Feature("daemon", "always: discovery, fresh looks before acting, and enforcement", (
    Grant("DiscoverWorkgroups", ("athena:ListWorkGroups",), "*"),
    Grant("WatchSparkWorkgroups", (
        "athena:ListTagsForResource", "athena:ListSessions", "athena:GetSession", "athena:GetSessionStatus",
        "athena:ListCalculationExecutions", "athena:GetCalculationExecutionStatus",
    ), WORKGROUP_ARN),
    Grant("EnforceOnSparkWorkgroups", ("athena:StopCalculationExecution", "athena:TerminateSession"),
          WORKGROUP_ARN),
))
BUDGETS_DISABLE_WORKGROUP = Feature(
    "budgets_disable_workgroup",
    "only when a budget threshold has action disable_workgroup (UpdateWorkGroup can change any setting of a "
    "matching workgroup)",
    (Grant("DisableWorkgroupForBudgets", ("athena:UpdateWorkGroup",), WORKGROUP_ARN),),
)
NOTIFY_SNS = Feature("notifications_sns", "only with an sns notification channel",
                     (Grant("NotifySnsTopic", ("sns:Publish",), SNS_TOPIC_ARN),))
NOTIFY_EVENTBRIDGE = Feature("notifications_eventbridge", "only with an eventbridge notification channel",
                             (Grant("NotifyEventBus", ("events:PutEvents",), EVENT_BUS_ARN),))
EVENTS = Feature(
    "events",
    "only with discovery.events: the SQS queue an EventBridge rule fills with Athena's API calls (docs/events.md); "
    "ChangeMessageVisibility hands a message for another replica's shard back at once",
    (Grant("DrainAthenaEventQueue", ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                                     "sqs:ChangeMessageVisibility"), EVENT_QUEUE_ARN),),
)
EXPLAIN = Feature("explain", "the read-only commands explain and budgets (an operator's role, not the daemon's)", (
    Grant("ListWorkgroups", ("athena:ListWorkGroups",), "*"),
    Grant("ReadSparkWorkgroups", (
        "athena:ListTagsForResource", "athena:ListSessions", "athena:GetSession",
        "athena:GetCalculationExecution",
    ), WORKGROUP_ARN),
))


# --- fleet: many accounts and regions, replicas sharing one DynamoDB table (docs/fleet.md) -----------------
# Kept in one block so the fleet branches (storage, accounts, deploy) merge here without conflicts. The Athena
# grants of a member account are DAEMON's and BUDGETS_DISABLE_WORKGROUP's, carried by the role the supervisor
# assumes there (deploy/cloudformation/member-role.yaml); the supervisor's own role needs only what follows.
JOURNAL_TABLE_ARN = "arn:aws:dynamodb:${TableRegion}:${Account}:table/${Table}"
MEMBER_ROLE_ARN = "arn:aws:iam::*:role/${MemberRole}"

FLEET_STORAGE = Feature(
    "fleet_storage",
    "journal.backend: dynamodb (journal, claims, intents, shard leases and watch lists in one table)",
    (Grant("JournalTable", (
        "dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
        "dynamodb:DeleteItem", "dynamodb:Query",
        "dynamodb:ConditionCheckItem", "dynamodb:BatchWriteItem", "dynamodb:DescribeTable",
        "dynamodb:DescribeTimeToLive",
    ), JOURNAL_TABLE_ARN),),
)
FLEET_ACCOUNTS = Feature("fleet_accounts", "accounts with a role_arn: the member role assumed in each (sts:AssumeRole)",
                         (Grant("AssumeMemberRoles", ("sts:AssumeRole",), MEMBER_ROLE_ARN),))
FLEET_SETUP = Feature(
    "fleet_setup",
    "athena-supervisor setup-dynamodb, once (an operator's role, not the daemon's): create the table, turn TTL on",
    (Grant("CreateJournalTable", (
        "dynamodb:CreateTable", "dynamodb:DescribeTable", "dynamodb:UpdateTimeToLive", "dynamodb:DescribeTimeToLive",
    ), JOURNAL_TABLE_ARN),),
)
FLEET_FEATURES: tuple[Feature, ...] = (FLEET_STORAGE, FLEET_ACCOUNTS, FLEET_SETUP)
AUTHORIZED_BY: dict[str, frozenset[str]] = {
    "dynamodb:TransactWriteItems": frozenset({"dynamodb:ConditionCheckItem", "dynamodb:PutItem",
                                              "dynamodb:UpdateItem", "dynamodb:DeleteItem"}),
    "dynamodb:TransactGetItems": frozenset({"dynamodb:GetItem"}),
    "sqs:DeleteMessageBatch": frozenset({"sqs:DeleteMessage"}),
}
"""Operations that IAM has no action for: each is authorized by the actions of its items instead."""


def fleet_features_for(settings: Settings) -> tuple[Feature, ...]:
    """The fleet features a configuration uses (read defensively: older configs have no fleet keys)."""
    backend = getattr(settings.journal, "backend", "sqlite")
    accounts = getattr(settings, "accounts", None) or ()
    assumed = any(getattr(account, "role_arn", None) for account in accounts)
    return tuple(feature for feature, used in ((FLEET_STORAGE, backend == "dynamodb"), (FLEET_ACCOUNTS, assumed))
                 if used)


def watches_the_credentials_account(settings: Settings) -> bool:
    """Whether the daemon calls Athena with its own credentials (no accounts, or one without a role_arn)."""
    accounts = getattr(settings, "accounts", None) or ()
    return not accounts or any(not getattr(account, "role_arn", None) for account in accounts)


# --- end of the fleet block ----------------------------------------------------------------------------------

FEATURES: tuple[Feature, ...] = (
    DAEMON, BUDGETS_DISABLE_WORKGROUP, NOTIFY_SNS, NOTIFY_EVENTBRIDGE, EVENTS, EXPLAIN, *FLEET_FEATURES)
DAEMON_FEATURES: tuple[Feature, ...] = (DAEMON, BUDGETS_DISABLE_WORKGROUP, NOTIFY_SNS, NOTIFY_EVENTBRIDGE, EVENTS)
POLICY_FILES: dict[str, tuple[Feature, ...]] = {
    "policy.json": DAEMON_FEATURES,
    "explain-policy.json": (EXPLAIN,),
    "fleet-policy.json": (FLEET_STORAGE, FLEET_ACCOUNTS, NOTIFY_SNS, NOTIFY_EVENTBRIDGE, EVENTS),
    "fleet-setup-policy.json": (FLEET_SETUP,),
}
"""File name under ``deploy/iam/`` -> the features it grants. The DynamoDB journal is optional: its grant comes
with ``--config`` for a config that uses it."""

def actions_of(features: Iterable[Feature]) -> frozenset[str]:
    """Every action granted to ``features`` (``service:Operation``)."""
    return frozenset(action for feature in features for action in feature.actions)


def features_for(settings: Settings) -> tuple[Feature, ...]:
    """The features the daemon's own credentials need for a configuration: the core and the budgets' Athena
    grants unless every account is reached through an assumed role (whose member role carries them), each
    notification channel it uses, and the fleet's features."""
    actions = {threshold.action for budget in settings.budgets for threshold in budget.thresholds}
    channels = {channel.type for channel in settings.notifications}
    own = watches_the_credentials_account(settings)
    events = getattr(getattr(settings, "discovery", None), "events", None)
    optional = {BUDGETS_DISABLE_WORKGROUP: own and "disable_workgroup" in actions, NOTIFY_SNS: "sns" in channels,
                NOTIFY_EVENTBRIDGE: "eventbridge" in channels, EVENTS: events is not None}
    core = (DAEMON,) if own else ()
    return (*core, *(feature for feature, used in optional.items() if used), *fleet_features_for(settings))


def policy_document(features: Iterable[Feature]) -> dict[str, Any]:
    """An IAM policy with one statement per grant; an action already allowed on the same resource by an
    earlier statement is left out (a statement left empty is dropped)."""
    statements: list[dict[str, Any]] = []
    granted: set[tuple[str, str]] = set()
    for feature in features:
        for grant in feature.grants:
            actions = sorted(a for a in set(grant.actions) if (a, grant.resource) not in granted)
            granted.update((action, grant.resource) for action in actions)
            if actions:
                statements.append({"Sid": grant.sid, "Effect": "Allow", "Action": actions,
                                   "Resource": grant.resource})
    return {"Version": "2012-10-17", "Statement": statements}


def render(document: dict[str, Any]) -> str:
    """The JSON text as committed: two-space indent, a final newline."""
    return json.dumps(document, indent=2) + "\n"


def expected_files() -> dict[str, str]:
    """File name -> the text the generator writes."""
    return {name: render(policy_document(features)) for name, features in POLICY_FILES.items()}


def write_policies(directory: Path) -> list[Path]:
    """Write every file of :data:`POLICY_FILES` into ``directory``; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in expected_files().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def stale_policies(directory: Path) -> list[Path]:
    """The files in ``directory`` that are missing or differ from what the generator writes."""
    return [directory / name for name, text in expected_files().items()
            if not (directory / name).is_file() or (directory / name).read_text(encoding="utf-8") != text]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m supervisor.iam",
        description="Generate the IAM policies of athena-supervisor from the AWS actions of each feature.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="DIR", type=Path, help="write every policy file (policy.json, ...)")
    group.add_argument("--check", metavar="DIR", type=Path, help="exit 1 if the files in DIR are stale")
    group.add_argument("--config", metavar="FILE", help="print the daemon's policy for this config's features")
    group.add_argument("--explain", action="store_true", help="print the read-only policy of explain/budgets")
    args = parser.parse_args(argv)
    if args.write is not None:
        for path in write_policies(args.write):
            print(f"wrote {path}")
        return 0
    if args.check is not None:
        stale = stale_policies(args.check)
        for path in stale:
            print(f"{path}: stale; run python -m supervisor.iam --write {args.check}", file=sys.stderr)
        return 1 if stale else 0
    features: tuple[Feature, ...] = (EXPLAIN,) if args.explain else DAEMON_FEATURES
    if args.config is not None:
        from supervisor.config import ConfigError, load_settings

        try:
            features = features_for(load_settings(args.config))
        except ConfigError as error:
            print(error, file=sys.stderr)
            return 2
    print(render(policy_document(features)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
