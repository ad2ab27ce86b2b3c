"""CloudTrail records of Athena write calls, shaped as EventBridge delivers "AWS API Call via CloudTrail".

Pure: the record of one successful call (:class:`ApiCall`) in, the EventBridge event (a JSON-able dict) out;
ids are drawn by the caller. The shape is the contract with the daemon's event parser (docs/emulator.md,
"CloudTrail events"):

- ``requestParameters`` / ``responseElements`` are the request and response with the first letter of every
  member name lowered, nested too (CloudTrail's convention: ``SessionId`` → ``sessionId``, ``ResourceARN`` →
  ``resourceARN``, ``Tags: [{Key, Value}]`` → ``tags: [{key, value}]``). Map keys are user data (Spark
  properties, classification properties), so botocore's model says where they are and they are kept as
  given; members the model does not know are lowered like members.
- the calculation's code (``CodeBlock``, ``CalculationConfiguration``) reads ``HIDDEN_DUE_TO_SECURITY_REASONS``,
  as CloudTrail shows sensitive fields;
- ``responseElements`` is null when the response has no members (CreateWorkGroup, TagResource…).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from athena_spark_emulator.identity import CALLER_NAME, Identity

PUBLISHED_OPERATIONS = frozenset({
    "StartSession", "StartCalculationExecution", "StopCalculationExecution", "TerminateSession",
    "CreateWorkGroup", "UpdateWorkGroup", "DeleteWorkGroup", "TagResource", "UntagResource",
})
SOURCE = "aws.athena"
DETAIL_TYPE = "AWS API Call via CloudTrail"
EVENT_SOURCE = "athena.amazonaws.com"
EVENT_VERSION = "1.09"
HIDDEN = "HIDDEN_DUE_TO_SECURITY_REASONS"
SENSITIVE_MEMBERS = frozenset({"CodeBlock", "CalculationConfiguration"})


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One successful Athena call, as CloudTrail records it.

    Attributes:
        operation: e.g. ``StartCalculationExecution``.
        request / response: the request and response members (AWS JSON, member names as in the model).
        identity: the caller, in the account-region that served the call.
        access_key_id: the access key id that signed the request (None when it was not signed).
        time: when the call arrived, epoch seconds on the emulator's clock.
        request_id: the ``x-amzn-RequestId`` the emulator answered.
        user_agent: the request's ``User-Agent``.
        source_ip: the client's address.
    """

    operation: str
    request: dict[str, Any]
    response: dict[str, Any]
    identity: Identity
    access_key_id: str | None
    time: float
    request_id: str
    user_agent: str
    source_ip: str


def event_time(stamp: float) -> str:
    """``2026-01-01T00:00:05Z``: CloudTrail's whole-second UTC instant (the fraction is cut, not rounded)."""
    return datetime.fromtimestamp(int(stamp // 1), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def lowered_name(name: str) -> str:
    return name[:1].lower() + name[1:]


def lowered(value: Any, shape: Any) -> Any:
    """``value`` with the first letter of every member name lowered, following botocore ``shape`` (None:
    unknown, every dict key is a member name); sensitive members are hidden."""
    kind = shape.type_name if shape is not None else None
    if isinstance(value, dict):
        if kind == "map":
            return {key: lowered(item, shape.value) for key, item in value.items()}
        members = shape.members if kind == "structure" else {}
        return {lowered_name(key): HIDDEN if key in SENSITIVE_MEMBERS else lowered(item, members.get(key))
                for key, item in value.items()}
    if isinstance(value, list):
        member = shape.member if kind == "list" else None
        return [lowered(item, member) for item in value]
    return value


def user_identity(identity: Identity, access_key_id: str | None) -> dict[str, Any]:
    """CloudTrail's ``userIdentity``: an ``IAMUser`` (long-term keys) or an ``AssumedRole`` (issued by
    ``sts:AssumeRole``), with ``sessionContext.sessionIssuer`` naming the role."""
    base = {"principalId": identity.user_id, "arn": identity.caller_arn, "accountId": identity.account_id,
            "accessKeyId": access_key_id}
    role = identity.role
    if role is None:
        return {"type": "IAMUser", **base, "userName": CALLER_NAME}
    return {"type": "AssumedRole", **base, "sessionContext": {"sessionIssuer": {
        "type": "Role", "principalId": identity.user_id.split(":", 1)[0], "arn": role.role_arn,
        "accountId": role.account_id, "userName": role.role_name}}}


def cloudtrail_event(call: ApiCall, operation_model: Any, *, envelope_id: str, event_id: str) -> dict[str, Any]:
    """The EventBridge event for ``call``.

    Args:
        operation_model: botocore's model of ``call.operation`` (where the member names and maps are).
        envelope_id: the EventBridge event's ``id``.
        event_id: CloudTrail's ``detail.eventID`` (what a consumer deduplicates on).
    """
    identity = call.identity
    when = event_time(call.time)
    output = operation_model.output_shape
    return {
        "version": "0",
        "id": envelope_id,
        "detail-type": DETAIL_TYPE,
        "source": SOURCE,
        "account": identity.account_id,
        "time": when,
        "region": identity.region,
        "resources": [],
        "detail": {
            "eventVersion": EVENT_VERSION,
            "userIdentity": user_identity(identity, call.access_key_id),
            "eventTime": when,
            "eventSource": EVENT_SOURCE,
            "eventName": call.operation,
            "awsRegion": identity.region,
            "sourceIPAddress": call.source_ip,
            "userAgent": call.user_agent,
            "requestParameters": lowered(call.request, operation_model.input_shape),
            "responseElements": lowered(call.response, output) if call.response else None,
            "requestID": call.request_id,
            "eventID": event_id,
            "readOnly": False,
            "eventType": "AwsApiCall",
            "managementEvent": True,
            "recipientAccountId": identity.account_id,
            "eventCategory": "Management",
        },
    }
