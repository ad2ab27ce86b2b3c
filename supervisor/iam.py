"""Least privilege: the AWS actions each feature calls, and the IAM policy documents generated from them.

A :class:`Feature` is something the code does that needs AWS permissions (the daemon's discovery and
enforcement, a budget's ``disable_workgroup``, a notification channel, the read-only ``explain`` and
``budgets`` commands); each of its :class:`Grant` s becomes one policy statement. The gateway may call
exactly the union of all features' actions (``supervisor.gateway.IAM_ACTIONS``), and
``tests/test_deploy_iam.py`` checks that union against the operation names the source calls, so an unused
grant and an ungranted call both fail.

Regenerate the committed policies after a change here::

    python -m supervisor.iam --write deploy/iam     # deploy/iam/policy.json and explain-policy.json
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
JOURNAL_TABLE_ARN = "arn:aws:dynamodb:${Region}:${Account}:table/${JournalTable}"


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
MEMBER_ROLE_ARN = "arn:aws:iam::*:role/${MemberRoleName}"
ASSUME_MEMBER_ROLES = Feature(
    "assume_member_roles", "only with accounts that name a role_arn (the role is assumed through STS)",
    (Grant("AssumeMemberAccountRoles", ("sts:AssumeRole",), MEMBER_ROLE_ARN),),
)
EXPLAIN = Feature("explain", "the read-only commands explain and budgets (an operator's role, not the daemon's)", (
    Grant("ListWorkgroups", ("athena:ListWorkGroups",), "*"),
    Grant("ReadSparkWorkgroups", (
        "athena:ListTagsForResource", "athena:ListSessions", "athena:GetSession",
        "athena:GetCalculationExecution",
    ), WORKGROUP_ARN),
))

JOURNAL_DYNAMODB = Feature("journal_dynamodb", "only with journal.backend dynamodb (the shared journal table)", (
    Grant("JournalTable", (
        "dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem",
        "dynamodb:DeleteItem", "dynamodb:BatchWriteItem", "dynamodb:ConditionCheckItem",
    ), JOURNAL_TABLE_ARN),
))
SETUP_DYNAMODB = Feature(
    "setup_dynamodb", "the setup-dynamodb command, once per table (an operator's role, not the daemon's)",
    (Grant("CreateJournalTable", ("dynamodb:CreateTable", "dynamodb:DescribeTable", "dynamodb:UpdateTimeToLive",
                                  "dynamodb:DescribeTimeToLive"), JOURNAL_TABLE_ARN),),
)

FEATURES: tuple[Feature, ...] = (DAEMON, BUDGETS_DISABLE_WORKGROUP, NOTIFY_SNS, NOTIFY_EVENTBRIDGE,
                                 ASSUME_MEMBER_ROLES, EXPLAIN, JOURNAL_DYNAMODB, SETUP_DYNAMODB)
DAEMON_FEATURES: tuple[Feature, ...] = (DAEMON, BUDGETS_DISABLE_WORKGROUP, NOTIFY_SNS, NOTIFY_EVENTBRIDGE,
                                        ASSUME_MEMBER_ROLES)
POLICY_FILES: dict[str, tuple[Feature, ...]] = {
    "policy.json": DAEMON_FEATURES,
    "explain-policy.json": (EXPLAIN,),
}
"""File name under ``deploy/iam/`` -> the features it grants. The DynamoDB journal is optional: its grant comes
with ``--config`` for a config that uses it."""

OPERATION_ACTIONS: dict[str, frozenset[str]] = {
    "dynamodb:TransactWriteItems": frozenset({"dynamodb:ConditionCheckItem", "dynamodb:PutItem",
                                              "dynamodb:UpdateItem", "dynamodb:DeleteItem"}),
}
"""Operations IAM authorises by other actions (no action has their name): a transaction needs the action of
each of its items."""


def actions_of(features: Iterable[Feature]) -> frozenset[str]:
    """Every action granted to ``features`` (``service:Operation``)."""
    return frozenset(action for feature in features for action in feature.actions)


def features_for(settings: Settings) -> tuple[Feature, ...]:
    """The daemon features a configuration uses: the core, plus each optional one it needs."""
    actions = {threshold.action for budget in settings.budgets for threshold in budget.thresholds}
    channels = {channel.type for channel in settings.notifications}
    optional = {BUDGETS_DISABLE_WORKGROUP: "disable_workgroup" in actions, NOTIFY_SNS: "sns" in channels,
                NOTIFY_EVENTBRIDGE: "eventbridge" in channels,
                ASSUME_MEMBER_ROLES: any(account.role_arn for account in settings.accounts),
                JOURNAL_DYNAMODB: settings.journal.backend == "dynamodb"}
    return (DAEMON, *(feature for feature, used in optional.items() if used))


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
    group.add_argument("--write", metavar="DIR", type=Path, help="write policy.json and explain-policy.json")
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
