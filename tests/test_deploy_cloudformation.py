"""deploy/cloudformation/: every template passes cfn-lint, and the two IAM roles of a fleet grant exactly what
supervisor/iam.py says (the member role: the daemon's Athena actions on the account's workgroups; the
supervisor's role: the journal table and the member roles), stay clean under parliament once instantiated,
and suit a StackSet (no account, region or partition written in them). The event-fed discovery templates
(events.yaml, events-member.yaml) match the Athena calls of issue 14 and nothing else (checked on moto's
EventBridge and SQS), let only their own rule write to the queue, and forward member accounts' events to the
central bus.

Templates are read with cfn-lint's own YAML loader (it knows the ``!Sub``-style tags) and instantiated by a
small evaluator of the intrinsic functions they use (``Ref``, ``Fn::Sub``, ``Fn::If``, ``Fn::Join``,
``Fn::Equals``, ``Fn::Not``, ``Fn::And``, ``Fn::GetAtt``) for a given set of parameters, as CloudFormation
would, leaving out the resources and outputs whose ``Condition`` does not hold.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from supervisor import iam
from tests.test_deploy_iam import (
    ACCEPTED_FINDINGS,
    EXAMPLES,
    PLACEHOLDER,
    SEVERITIES,
    community_config,
    resource_types,
)

REPO = Path(__file__).resolve().parents[1]
CFN_DIR = REPO / "deploy" / "cloudformation"
MEMBER_ROLE = CFN_DIR / "member-role.yaml"
SUPERVISOR_ROLE = CFN_DIR / "supervisor-role.yaml"
EVENTS = CFN_DIR / "events.yaml"
EVENTS_MEMBER = CFN_DIR / "events-member.yaml"
PSEUDO = {"AWS::Partition": "aws", "AWS::AccountId": "123456789012", "AWS::Region": "us-east-1",
          "AWS::StackName": "stack", "AWS::URLSuffix": "amazonaws.com"}
SUPERVISOR_ROLE_ARN = "arn:aws:iam::123456789012:role/athena-supervisor-fleet"
OIDC = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
LINT_REGIONS = ["us-east-1", "eu-west-1"]

Template = dict[str, Any]
NO_VALUE = object()


def templates() -> list[Path]:
    """Every template in deploy/cloudformation/, whoever wrote it (the table's comes from the storage work)."""
    return sorted(CFN_DIR.glob("*.yaml"))


def load(path: Path) -> Template:
    from cfnlint.decode import decode  # cfnlint and parliament are imported by the tests that use them, not by
    # every xdist worker at collection (~1.4 s of CPU each)

    template, errors = decode(str(path))
    assert not errors, [str(error) for error in errors]
    assert isinstance(template, dict)
    return template


def instantiate(template: Template, **parameters: str) -> Template:
    """``Resources`` and ``Outputs`` as CloudFormation would create them with ``parameters`` (else defaults)."""
    declared = template.get("Parameters", {})
    unknown = set(parameters) - set(declared)
    assert not unknown, f"no such parameters: {sorted(unknown)}"
    values: dict[str, Any] = dict(PSEUDO)
    for name, spec in declared.items():
        value = parameters.get(name, spec.get("Default"))
        assert value is not None, f"parameter {name} has no default: pass it"
        values[name] = value.split(",") if spec["Type"] == "CommaDelimitedList" else value
    conditions = template.get("Conditions", {})

    def condition(name: str) -> bool:
        return bool(resolve(conditions[name]))

    def substitute(text: str, variables: dict[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if "." in name:  # ${Logical.Attribute}
                return f"<{name}>"
            value = variables[name] if name in variables else values[name]
            assert isinstance(value, str), f"${{{name}}} is not a string"
            return value

        return re.sub(r"\$\{([^}!]+)\}", one, text)

    functions: dict[str, Callable[[Any], Any]] = {
        "Ref": lambda name: NO_VALUE if name == "AWS::NoValue" else values.get(name, f"<{name}>"),
        "Fn::Sub": lambda arg: (substitute(arg, {}) if isinstance(arg, str)
                                else substitute(arg[0], {k: resolve(v) for k, v in arg[1].items()})),
        "Fn::If": lambda arg: resolve(arg[1] if condition(arg[0]) else arg[2]),
        "Fn::Join": lambda arg: arg[0].join(resolve(arg[1])),
        "Fn::Equals": lambda arg: resolve(arg[0]) == resolve(arg[1]),
        "Fn::Not": lambda arg: not resolve(arg[0]),
        "Fn::And": lambda arg: all(resolve(item) for item in arg),
        "Fn::Or": lambda arg: any(resolve(item) for item in arg),
        "Condition": condition,
        "Fn::GetAtt": lambda arg: f"<{'.'.join(arg) if isinstance(arg, list) else arg}>",
    }

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if len(node) == 1:
                ((key, argument),) = node.items()
                if key in functions:
                    return functions[key](argument)
                assert not key.startswith("Fn::"), f"{key}: not evaluated here"
            resolved = {key: resolve(value) for key, value in node.items()}
            return {key: value for key, value in resolved.items() if value is not NO_VALUE}
        if isinstance(node, list):
            return [item for item in (resolve(item) for item in node) if item is not NO_VALUE]
        return node

    def created(section: dict[str, Any]) -> dict[str, Any]:
        """The section's entries whose ``Condition`` holds (or that have none)."""
        return {name: {key: value for key, value in entry.items() if key != "Condition"}
                for name, entry in section.items() if "Condition" not in entry or condition(entry["Condition"])}

    return {"Resources": resolve(created(template["Resources"])),
            "Outputs": resolve(created(template.get("Outputs", {})))}


def the_role(instance: Template) -> dict[str, Any]:
    (role,) = [resource for resource in instance["Resources"].values() if resource["Type"] == "AWS::IAM::Role"]
    properties: dict[str, Any] = role["Properties"]
    return properties


def permissions(role: dict[str, Any]) -> dict[str, Any]:
    (policy,) = role["Policies"]
    document: dict[str, Any] = policy["PolicyDocument"]
    return document


def trust(role: dict[str, Any]) -> dict[str, Any]:
    document = role["AssumeRolePolicyDocument"]
    parsed: dict[str, Any] = json.loads(document) if isinstance(document, str) else document
    return parsed


def grants(document: dict[str, Any]) -> dict[str, tuple[frozenset[str], str]]:
    """Sid -> (actions, resource) of every statement."""
    result = {}
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        result[statement["Sid"]] = (frozenset(actions), statement["Resource"])
    return result


def generated(features: tuple[iam.Feature, ...], **placeholders: str) -> dict[str, tuple[frozenset[str], str]]:
    """supervisor.iam's statements for ``features``, their ${Placeholders} given example values."""
    values = {**EXAMPLES, "Account": PSEUDO["AWS::AccountId"], **placeholders}
    text = PLACEHOLDER.sub(lambda match: values[match.group(1)], json.dumps(iam.policy_document(features)))
    return grants(json.loads(text))


def parliament_problems(document: dict[str, Any]) -> list[str]:
    import parliament

    parliament.override_config(str(community_config()))
    analyzed = parliament.analyze_policy_string(json.dumps(document), include_community_auditors=True)
    problems = []
    for finding in map(parliament.enhance_finding, analyzed.findings):
        details = finding.detail if isinstance(finding.detail, list) else [finding.detail]
        details = [*details, finding.location] if not any(isinstance(d, dict) for d in details) else details
        keys = {(finding.issue, d.get("action") or ",".join(d.get("actions", [])), d.get("required_format", ""))
                for d in details if isinstance(d, dict)}
        if keys and keys <= ACCEPTED_FINDINGS:
            continue
        if finding.issue.startswith("UNKNOWN_") or SEVERITIES.index(finding.severity) >= SEVERITIES.index("MEDIUM"):
            problems.append(f"{finding.severity} {finding.issue}: {finding.detail} at {finding.location}")
    return problems


# --- every template ---------------------------------------------------------------------------------------------


def test_the_fleet_s_templates_are_there() -> None:
    assert {MEMBER_ROLE, SUPERVISOR_ROLE, EVENTS, EVENTS_MEMBER} <= set(templates())


def test_cfn_lint_finds_nothing_and_catches_a_broken_template(tmp_path: Path) -> None:
    """Every template is clean; guard: the linter sees what we claim it checks (a misspelt resource type, a bad
    Ref in copies of the member role). One linter run for all of them: loading cfn-lint's rules costs more than
    linting a template (~0.7 s of CPU per run, ~0.3 s per template)."""
    from cfnlint.config import ConfigMixIn
    from cfnlint.runner import Runner

    text = MEMBER_ROLE.read_text(encoding="utf-8")
    broken = {}
    for (old, new), rule in (
        (("Type: AWS::IAM::Role", "Type: AWS::IAM::Rol"), "E3006"),
        (("!Ref SupervisorRoleArn", "!Ref SupervisorRole"), "E1020"),
    ):
        path = tmp_path / f"{rule}.yaml"
        path.write_text(text.replace(old, new), encoding="utf-8")
        broken[path] = (old, new, rule)
    linted = [*templates(), *broken]
    matches: dict[Path, list[Any]] = {path: [] for path in linted}
    for match in Runner(ConfigMixIn(["--template", *map(str, linted)], regions=LINT_REGIONS)).run():
        matches[Path(match.filename)].append(match)
    for path in templates():
        assert not matches[path], "\n".join(str(match) for match in matches[path])
    for path, (old, new, rule) in broken.items():
        rules = {match.rule.id for match in matches[path]}
        assert rule in rules, f"{old} -> {new}: {rules}"


@pytest.mark.parametrize("path", templates(), ids=lambda path: path.name)
def test_templates_write_no_account_region_or_partition(path: Path) -> None:
    """A StackSet deploys one template everywhere: accounts, regions and partitions come from pseudo
    parameters and parameters, never from literals (comments and parameter descriptions aside)."""
    template = load(path)
    literals: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, str):
            literals.append(node)

    walk({"Resources": template["Resources"], "Outputs": template.get("Outputs", {})})
    for text in literals:
        assert not re.search(r"(?<!\d)\d{12}(?!\d)", text), f"{path.name}: an account id in {text!r}"
        assert not re.search(r"\b[a-z]{2}-[a-z]+-\d\b", text), f"{path.name}: a region in {text!r}"
        assert not re.search(r"arn:aws(-[a-z-]+)?:", text), f"{path.name}: a partition in {text!r}"


# --- the member role ------------------------------------------------------------------------------------------


def athena_grants(**placeholders: str) -> dict[str, tuple[frozenset[str], str]]:
    return generated((iam.DAEMON, iam.BUDGETS_DISABLE_WORKGROUP), **placeholders)


def test_member_role_grants_the_daemon_s_athena_actions_on_the_account_s_workgroups() -> None:
    role = the_role(instantiate(load(MEMBER_ROLE), SupervisorRoleArn=SUPERVISOR_ROLE_ARN,
                                AllowDisableWorkgroup="true", WorkgroupPrefix="spark-"))
    # One role serves every region of the account: the workgroup ARNs' region is a wildcard.
    assert grants(permissions(role)) == athena_grants(Region="*", WorkgroupPrefix="spark-")


def test_member_role_athena_actions_are_iam_py_s() -> None:
    text = MEMBER_ROLE.read_text(encoding="utf-8")
    written = set(re.findall(r"\b(athena:\w+)", text))
    assert written == iam.actions_of([iam.DAEMON, iam.BUDGETS_DISABLE_WORKGROUP])


@pytest.mark.parametrize(("parameters", "absent"), [
    ({}, {"DisableWorkgroupForBudgets"}),
    ({"AllowEnforcement": "false"}, {"DisableWorkgroupForBudgets", "EnforceOnSparkWorkgroups"}),
    ({"AllowDisableWorkgroup": "true"}, set()),
], ids=["default", "watch-only", "disable-workgroup"])
def test_member_role_grants_only_what_is_asked(parameters: dict[str, str], absent: set[str]) -> None:
    role = the_role(instantiate(load(MEMBER_ROLE), SupervisorRoleArn=SUPERVISOR_ROLE_ARN, **parameters))
    expected = {sid: grant for sid, grant in athena_grants(Region="*", WorkgroupPrefix="").items()
                if sid not in absent}
    assert grants(permissions(role)) == expected


def test_member_role_can_be_held_to_the_watched_regions() -> None:
    role = the_role(instantiate(load(MEMBER_ROLE), SupervisorRoleArn=SUPERVISOR_ROLE_ARN,
                                Regions="us-east-1,eu-west-1"))
    for statement in permissions(role)["Statement"]:
        assert statement["Condition"] == {"StringEquals": {"aws:RequestedRegion": ["us-east-1", "eu-west-1"]}}
    role = the_role(instantiate(load(MEMBER_ROLE), SupervisorRoleArn=SUPERVISOR_ROLE_ARN))
    assert not any("Condition" in statement for statement in permissions(role)["Statement"])


@pytest.mark.parametrize("external_id", ["", "athena-supervisor"])
def test_member_role_trusts_only_the_supervisor_s_role(external_id: str) -> None:
    role = the_role(instantiate(load(MEMBER_ROLE), SupervisorRoleArn=SUPERVISOR_ROLE_ARN, ExternalId=external_id))
    (statement,) = trust(role)["Statement"]
    assert statement["Principal"] == {"AWS": SUPERVISOR_ROLE_ARN}
    assert statement["Action"] == "sts:AssumeRole"
    if external_id:
        assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": external_id}}
    else:
        assert "Condition" not in statement


def test_member_role_is_named_as_the_fleet_policy_assumes() -> None:
    template = load(MEMBER_ROLE)
    assert template["Parameters"]["RoleName"]["Default"] == EXAMPLES["MemberRole"]
    assert load(SUPERVISOR_ROLE)["Parameters"]["MemberRoleName"]["Default"] == EXAMPLES["MemberRole"]
    role = the_role(instantiate(template, SupervisorRoleArn=SUPERVISOR_ROLE_ARN))
    assert role["RoleName"] == EXAMPLES["MemberRole"]
    assert role["MaxSessionDuration"] == 3600


# --- the supervisor's role --------------------------------------------------------------------------------------


def test_supervisor_role_grants_the_fleet_policy() -> None:
    instance = instantiate(load(SUPERVISOR_ROLE), OidcProvider=OIDC)
    expected = generated((iam.FLEET_STORAGE, iam.FLEET_ACCOUNTS), TableRegion="us-east-1")
    assert grants(permissions(the_role(instance))) == expected


def test_supervisor_role_optional_grants() -> None:
    topic = "arn:aws:sns:us-east-1:123456789012:athena-supervisor"
    bus = "arn:aws:events:us-east-1:123456789012:event-bus/athena-supervisor"
    instance = instantiate(load(SUPERVISOR_ROLE), OidcProvider=OIDC, TableRegion="eu-west-1",
                           AllowTableSetup="true", NotificationTopicArn=topic, EventBusArn=bus)
    expected = generated((iam.FLEET_STORAGE, iam.FLEET_ACCOUNTS, iam.FLEET_SETUP), TableRegion="eu-west-1")
    expected["CreateJournalTable"] = generated((iam.FLEET_SETUP,), TableRegion="eu-west-1")["CreateJournalTable"]
    expected |= generated((iam.NOTIFY_SNS, iam.NOTIFY_EVENTBRIDGE), Region="us-east-1")
    assert grants(permissions(the_role(instance))) == expected


def test_supervisor_role_trusts_the_service_account_or_pod_identity() -> None:
    role = the_role(instantiate(load(SUPERVISOR_ROLE), OidcProvider=OIDC))
    (statement,) = trust(role)["Statement"]
    assert statement["Principal"] == {"Federated": f"arn:aws:iam::123456789012:oidc-provider/{OIDC}"}
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Condition"] == {"StringEquals": {
        f"{OIDC}:sub": "system:serviceaccount:athena-supervisor:athena-supervisor", f"{OIDC}:aud": "sts.amazonaws.com"}}
    (statement,) = trust(the_role(instantiate(load(SUPERVISOR_ROLE))))["Statement"]
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert set(statement["Action"]) == {"sts:AssumeRole", "sts:TagSession"}


# --- both roles, instantiated, under parliament -------------------------------------------------------------------


@pytest.mark.parametrize(("path", "parameters"), [
    (MEMBER_ROLE, {"SupervisorRoleArn": SUPERVISOR_ROLE_ARN, "AllowDisableWorkgroup": "true",
                   "Regions": "us-east-1,eu-west-1", "ExternalId": "x"}),
    (SUPERVISOR_ROLE, {"OidcProvider": OIDC, "AllowTableSetup": "true",
                       "NotificationTopicArn": "arn:aws:sns:us-east-1:123456789012:t",
                       "EventBusArn": "arn:aws:events:us-east-1:123456789012:event-bus/b",
                       "EventsQueueArn": "arn:aws:sqs:us-east-1:123456789012:athena-supervisor-events"}),
    (EVENTS_MEMBER, {"CentralAccountId": "210987654321", "CentralRegion": "eu-west-1"}),
], ids=["member-role", "supervisor-role", "events-forward-role"])
def test_parliament_finds_nothing_of_medium_severity_or_above(path: Path, parameters: dict[str, str]) -> None:
    document = permissions(the_role(instantiate(load(path), **parameters)))
    assert not parliament_problems(document)
    for statement in document["Statement"]:
        for action in statement["Action"]:
            assert (statement["Resource"] == "*") != bool(resource_types(action)), action


def test_supervisor_role_may_drain_the_events_queue() -> None:
    queue = "arn:aws:sqs:us-east-1:123456789012:athena-supervisor-events"
    statements = grants(permissions(the_role(instantiate(load(SUPERVISOR_ROLE), EventsQueueArn=queue))))
    expected = generated((iam.EVENTS,), QueueRegion="us-east-1", EventQueue="athena-supervisor-events")
    assert statements["DrainAthenaEventQueue"] == expected["DrainAthenaEventQueue"]
    assert statements["DrainAthenaEventQueue"][1] == queue
    assert "DrainAthenaEventQueue" not in grants(permissions(the_role(instantiate(load(SUPERVISOR_ROLE)))))


# --- event-fed discovery: events.yaml (the queue's account) and events-member.yaml (a StackSet) -----------------

# The calls of issue 14 whose CloudTrail events announce new work or a changed workgroup (docs/events.md).
ATHENA_EVENT_NAMES = (
    "StartSession", "StartCalculationExecution", "StopCalculationExecution", "TerminateSession",
    "CreateWorkGroup", "UpdateWorkGroup", "DeleteWorkGroup", "TagResource", "UntagResource",
)
# What the daemon does with a message: it deletes it within about 30 s of receiving it (docs/events.md).
DAEMON_HOLD_SECONDS = 30
CENTRAL_ACCOUNT = "210987654321"


def resources_of(instance: Template, kind: str) -> dict[str, dict[str, Any]]:
    return {name: resource["Properties"] for name, resource in instance["Resources"].items()
            if resource["Type"] == kind}


def the_rule(instance: Template) -> dict[str, Any]:
    (rule,) = resources_of(instance, "AWS::Events::Rule").values()
    return rule


def test_both_rules_match_the_same_athena_calls() -> None:
    central = the_rule(instantiate(load(EVENTS)))
    member = the_rule(instantiate(load(EVENTS_MEMBER), CentralAccountId=CENTRAL_ACCOUNT, CentralRegion="eu-west-1"))
    assert central["EventPattern"] == member["EventPattern"] == {
        "source": ["aws.athena"],
        "detail-type": ["AWS API Call via CloudTrail"],
        "detail": {"eventSource": ["athena.amazonaws.com"], "eventName": list(ATHENA_EVENT_NAMES),
                   "errorCode": [{"exists": False}]},
    }
    for rule in (central, member):
        assert rule["EventBusName"] == "default", "CloudTrail puts its events on the default bus"
        assert rule["State"] == "ENABLED"


def test_the_rule_feeds_the_queue_and_gives_up_into_the_dead_letter_queue() -> None:
    instance = instantiate(load(EVENTS))
    (target,) = the_rule(instance)["Targets"]
    assert target["Arn"] == "<EventsQueue.Arn>"
    assert target["DeadLetterConfig"] == {"Arn": "<DeadLetterQueue.Arn>"}
    assert target["RetryPolicy"]["MaximumEventAgeInSeconds"] <= 3600
    assert instance["Outputs"]["QueueUrl"]["Value"] == "<EventsQueue>"
    assert instance["Outputs"]["QueueArn"]["Value"] == "<EventsQueue.Arn>"


def test_the_queue_outlasts_the_daemon_s_hold_and_tolerates_hand_backs() -> None:
    queues = resources_of(instantiate(load(EVENTS)), "AWS::SQS::Queue")
    queue, dead = queues["EventsQueue"], queues["DeadLetterQueue"]
    assert int(queue["VisibilityTimeout"]) >= 4 * DAEMON_HOLD_SECONDS
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == "<DeadLetterQueue.Arn>"
    # A replica hands back a message for a shard it does not hold: with R replicas the owner receives it after
    # about R receives, more during a lease takeover. Ten replicas in a takeover stay far from the limit.
    assert int(queue["RedrivePolicy"]["maxReceiveCount"]) >= 50
    assert int(queue["ReceiveMessageWaitTimeSeconds"]) == 20
    assert int(dead["MessageRetentionPeriod"]) >= int(queue["MessageRetentionPeriod"])
    for properties in (queue, dead):
        assert properties["SqsManagedSseEnabled"] is True
    assert queue["QueueName"] == "athena-supervisor-events" and dead["QueueName"] == "athena-supervisor-events-dlq"
    assert dead["RedriveAllowPolicy"]["sourceQueueArns"] == [
        "arn:aws:sqs:us-east-1:123456789012:athena-supervisor-events"]


def test_only_the_rule_may_send_to_the_queues() -> None:
    (policy,) = resources_of(instantiate(load(EVENTS)), "AWS::SQS::QueuePolicy").values()
    assert policy["Queues"] == ["<EventsQueue>", "<DeadLetterQueue>"]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Resource"] == ["<EventsQueue.Arn>", "<DeadLetterQueue.Arn>"]
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": "<AthenaCallsRule.Arn>"}}


@pytest.mark.parametrize(("parameters", "expected"), [
    ({}, {}),
    ({"MemberAccountIds": "111111111111,222222222222"},
     {"athena-supervisor-member-accounts": ({"AWS": ["111111111111", "222222222222"]}, None)}),
    ({"OrganizationId": "o-abcdef1234"},
     {"athena-supervisor-organization": ("*", {"StringEquals": {"aws:PrincipalOrgID": "o-abcdef1234"}})}),
], ids=["one-account", "member-accounts", "organization"])
def test_the_default_bus_admits_only_the_member_accounts_asked_for(
        parameters: dict[str, str], expected: dict[str, tuple[Any, Any]]) -> None:
    policies = resources_of(instantiate(load(EVENTS), **parameters), "AWS::Events::EventBusPolicy").values()
    found = {}
    for policy in policies:
        statement = policy["Statement"]
        assert policy["EventBusName"] == "default"
        assert statement["Action"] == "events:PutEvents"
        assert statement["Resource"] == "arn:aws:events:us-east-1:123456789012:event-bus/default"
        found[policy["StatementId"]] = (statement["Principal"], statement.get("Condition"))
    assert found == expected


def test_a_member_forwards_to_the_central_bus_through_a_role_only_its_rule_may_use() -> None:
    central_bus = f"arn:aws:events:eu-west-1:{CENTRAL_ACCOUNT}:event-bus/default"
    instance = instantiate(load(EVENTS_MEMBER), CentralAccountId=CENTRAL_ACCOUNT, CentralRegion="eu-west-1")
    (target,) = the_rule(instance)["Targets"]
    assert target["Arn"] == central_bus and target["RoleArn"] == "<ForwardRole.Arn>"
    role = the_role(instance)
    assert "RoleName" not in role, "a StackSet creates one stack per region; IAM names are global"
    assert grants(permissions(role)) == {"PutOnTheCentralBus": (frozenset({"events:PutEvents"}), central_bus)}
    (statement,) = trust(role)["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    rule_arn = "arn:aws:events:us-east-1:123456789012:rule/athena-supervisor-events-forward"
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012", "aws:SourceArn": rule_arn}}
    assert the_rule(instance)["Name"] == rule_arn.rsplit("/", 1)[1]


def test_a_member_stack_in_the_central_region_forwards_nothing() -> None:
    """The central account is often watched too: its other regions forward, its own region has events.yaml."""
    account = PSEUDO["AWS::AccountId"]
    other_region = instantiate(load(EVENTS_MEMBER), CentralAccountId=account, CentralRegion="eu-west-1")
    assert {"ForwardRole", "ForwardRule"} <= set(other_region["Resources"])
    central = instantiate(load(EVENTS_MEMBER), CentralAccountId=account, CentralRegion="us-east-1")
    assert [resource["Type"] for resource in central["Resources"].values()] == [
        "AWS::CloudFormation::WaitConditionHandle"]
    assert "RuleArn" not in central["Outputs"]


# --- the pattern on moto's EventBridge, delivered to SQS -----------------------------------------------------------


def cloudtrail_detail(event_name: str, **overrides: Any) -> dict[str, Any]:
    """The ``detail`` of an "AWS API Call via CloudTrail" event for an Athena call, as CloudTrail writes it."""
    return {
        "eventVersion": "1.09", "eventTime": "2026-01-05T10:00:00Z", "eventSource": "athena.amazonaws.com",
        "eventName": event_name, "awsRegion": "us-east-1", "sourceIPAddress": "192.0.2.10",
        "userAgent": "aws-cli/2", "requestParameters": {"workGroup": "spark-etl"},
        "responseElements": {"sessionId": "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111", "state": "CREATING"},
        "requestID": "5ec1a7e2-EXAMPLE", "eventID": f"{event_name}-EXAMPLE", "readOnly": False,
        "eventType": "AwsApiCall", "managementEvent": True, "recipientAccountId": "123456789012",
        "eventCategory": "Management", **overrides,
    }


def test_the_rule_delivers_successful_athena_writes_and_nothing_else(moto_dynamodb: str) -> None:
    """moto in server mode (the session's, every service) stands in for EventBridge and SQS: the queues are made
    with the template's attributes, the rule with its pattern and target, and CloudTrail-shaped events put on
    the default bus; the queue receives exactly the successful calls the daemon wants."""
    import boto3

    instance = instantiate(load(EVENTS), QueueName=f"events-{uuid.uuid4().hex[:12]}",
                           RuleName=f"events-{uuid.uuid4().hex[:12]}")
    queues = resources_of(instance, "AWS::SQS::Queue")
    options = {"endpoint_url": moto_dynamodb, "region_name": PSEUDO["AWS::Region"],
               "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    sqs, events = boto3.client("sqs", **options), boto3.client("events", **options)

    created: dict[str, str] = {}  # "<Logical.Arn>" -> the ARN moto gave it

    def create_queue(logical: str) -> str:
        properties = queues[logical]
        attributes = {}
        for key, value in properties.items():
            if key in {"QueueName", "Tags"}:
                continue
            text = json.dumps(value) if isinstance(value, dict) else str(value).lower() if isinstance(value, bool) \
                else str(value)
            for placeholder, arn in created.items():
                text = text.replace(placeholder, arn)
            attributes[key] = text
        url: str = sqs.create_queue(QueueName=properties["QueueName"], Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        created[f"<{logical}.Arn>"] = arn
        return url

    dead_url = create_queue("DeadLetterQueue")
    queue_url = create_queue("EventsQueue")
    queue_arn, dead_arn = created["<EventsQueue.Arn>"], created["<DeadLetterQueue.Arn>"]
    assert json.loads(sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])
                      ["Attributes"]["RedrivePolicy"])["deadLetterTargetArn"] == dead_arn
    rule = the_rule(instance)
    events.put_rule(Name=rule["Name"], EventPattern=json.dumps(rule["EventPattern"]), State=rule["State"])
    (target,) = rule["Targets"]
    events.put_targets(Rule=rule["Name"], Targets=[{**target, "Arn": queue_arn, "DeadLetterConfig": {"Arn": dead_arn}}])
    try:
        wanted = [cloudtrail_detail(name) for name in ATHENA_EVENT_NAMES]
        unwanted = [
            cloudtrail_detail("StartSession", errorCode="AccessDenied", errorMessage="not authorized",
                              responseElements=None),                 # a failed call changed nothing
            cloudtrail_detail("GetSession", readOnly=True),           # a read
            cloudtrail_detail("StartQueryExecution"),                 # Athena SQL, not Spark
            cloudtrail_detail("StartSession", eventSource="glue.amazonaws.com"),
        ]
        entries = [{"Source": "aws.athena", "DetailType": "AWS API Call via CloudTrail", "Detail": json.dumps(detail)}
                   for detail in [*wanted, *unwanted]]
        entries.append({"Source": "aws.athena", "DetailType": "AWS Service Event via CloudTrail",
                        "Detail": json.dumps(cloudtrail_detail("StartSession"))})
        for start in range(0, len(entries), 10):  # PutEvents takes ten entries at most
            assert events.put_events(Entries=entries[start:start + 10])["FailedEntryCount"] == 0
        received = []
        while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=0).get("Messages", []):
            received += [json.loads(message["Body"]) for message in batch]
        assert sorted(event["detail"]["eventName"] for event in received) == sorted(ATHENA_EVENT_NAMES)
        assert {(event["source"], event["detail-type"]) for event in received} == {
            ("aws.athena", "AWS API Call via CloudTrail")}
    finally:
        events.remove_targets(Rule=rule["Name"], Ids=[target["Id"]])
        events.delete_rule(Name=rule["Name"])
        for url in (queue_url, dead_url):
            sqs.delete_queue(QueueUrl=url)
