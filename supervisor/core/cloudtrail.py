"""Athena API calls as EventBridge delivers them ("AWS API Call via CloudTrail"), parsed into what discovery needs.

Athena publishes no events of its own for Spark sessions and calculations, but a CloudTrail trail that logs
management events puts every Athena write call on EventBridge; a rule sends them to the SQS queue the daemon
drains (``discovery.events``, docs/events.md). A message body is the EventBridge event::

    {"id": …, "detail-type": "AWS API Call via CloudTrail", "source": "aws.athena", "account": …, "region": …,
     "time": …, "detail": {"eventName": …, "eventTime": …, "requestParameters": {…}, "responseElements": {…},
                          "errorCode": … (a refused call only), …}}

CloudTrail writes the call's parameters with the first letter of each name lowered (``workGroup``,
``sessionId``, ``calculationExecutionId``, ``resourceARN``). Pure: no clock, no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    """What an Athena write call tells discovery."""

    SESSION_STARTED = "session_started"
    CALCULATION_STARTED = "calculation_started"
    # A Stop or Terminate (ours or anyone's): the target is on its way out; a fresh look tells when it ended.
    CALCULATION_STOPPED = "calculation_stopped"
    SESSION_TERMINATED = "session_terminated"
    WORKGROUP_CHANGED = "workgroup_changed"  # created, updated (state, engine), tagged, untagged
    WORKGROUP_DELETED = "workgroup_deleted"


EVENT_KINDS: dict[str, EventKind] = {
    "StartSession": EventKind.SESSION_STARTED,
    "StartCalculationExecution": EventKind.CALCULATION_STARTED,
    "StopCalculationExecution": EventKind.CALCULATION_STOPPED,
    "TerminateSession": EventKind.SESSION_TERMINATED,
    "CreateWorkGroup": EventKind.WORKGROUP_CHANGED,
    "UpdateWorkGroup": EventKind.WORKGROUP_CHANGED,
    "DeleteWorkGroup": EventKind.WORKGROUP_DELETED,
    "TagResource": EventKind.WORKGROUP_CHANGED,
    "UntagResource": EventKind.WORKGROUP_CHANGED,
}
"""The event names the rule forwards (deploy/cloudformation/events.yaml) and what each means."""

DETAIL_TYPE = "AWS API Call via CloudTrail"
SOURCE = "aws.athena"


class MalformedEvent(ValueError):
    """A message that is not an Athena API-call event as EventBridge delivers it (``str()`` says what is wrong)."""


@dataclass(frozen=True, slots=True)
class AthenaEvent:
    """One Athena API call. ``kind`` is None for a call this version does not act on (an unknown event name,
    a tag change on something other than a workgroup); ``failed`` when the call was refused (``errorCode``):
    it changed nothing. Ids a call does not carry are empty."""

    event_id: str
    name: str
    kind: EventKind | None
    account: str
    region: str
    time: datetime
    failed: bool = False
    workgroup: str = ""
    session_id: str = ""
    calculation_id: str = ""


def parse_event(body: str | bytes) -> AthenaEvent:
    """The event in an SQS message body; raises :class:`MalformedEvent`."""
    try:
        event = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise MalformedEvent(f"not JSON ({error.__class__.__name__})") from None
    if not isinstance(event, dict):
        raise MalformedEvent("not a JSON object")
    if event.get("source") != SOURCE or event.get("detail-type") != DETAIL_TYPE:
        raise MalformedEvent(f"not an Athena API call event (source {event.get('source')!r}, "
                             f"detail-type {event.get('detail-type')!r})")
    detail = event.get("detail")
    if not isinstance(detail, dict):
        raise MalformedEvent("no detail")
    name = _text(detail, "eventName")
    account = _text(event, "account") or _text(detail, "recipientAccountId")
    region = _text(event, "region") or _text(detail, "awsRegion")
    # CloudTrail's own id: the same in every copy of the event, however it was wrapped on its way (a bus that
    # forwards it, a redelivery); EventBridge's envelope id only when the record has none.
    event_id = _text(detail, "eventID") or _text(event, "id")
    if not (name and account and region and event_id):
        missing = [field for field, value in (("detail.eventName", name), ("account", account), ("region", region),
                                              ("id", event_id)) if not value]
        raise MalformedEvent(f"missing {', '.join(missing)}")
    time = _time(_text(detail, "eventTime") or _text(event, "time"))
    request = _members(detail, "requestParameters")
    response = _members(detail, "responseElements")
    kind = EVENT_KINDS.get(name)
    found = AthenaEvent(event_id=event_id, name=name, kind=kind, account=account, region=region, time=time,
                        failed=bool(detail.get("errorCode")))
    if kind is None or found.failed:
        return found
    return _with_ids(found, kind, request, response)


def _with_ids(event: AthenaEvent, kind: EventKind, request: dict[str, Any], response: dict[str, Any]) -> AthenaEvent:
    """The ids the call names; a call of a known kind without the ids it must carry is malformed."""
    match kind:
        case EventKind.SESSION_STARTED:
            found = replace(event, workgroup=_text(request, "workGroup"), session_id=_text(response, "sessionId"))
            return _require(found, "workgroup", "session_id", names=("requestParameters.workGroup",
                                                                      "responseElements.sessionId"))
        case EventKind.CALCULATION_STARTED:
            found = replace(event, session_id=_text(request, "sessionId"),
                             calculation_id=_text(response, "calculationExecutionId"))
            return _require(found, "session_id", "calculation_id",
                            names=("requestParameters.sessionId", "responseElements.calculationExecutionId"))
        case EventKind.CALCULATION_STOPPED:
            found = replace(event, calculation_id=_text(request, "calculationExecutionId"))
            return _require(found, "calculation_id", names=("requestParameters.calculationExecutionId",))
        case EventKind.SESSION_TERMINATED:
            found = replace(event, session_id=_text(request, "sessionId"))
            return _require(found, "session_id", names=("requestParameters.sessionId",))
        case _:
            return _workgroup_event(event, request)


def _workgroup_event(event: AthenaEvent, request: dict[str, Any]) -> AthenaEvent:
    """CreateWorkGroup names it ``name``, Update/DeleteWorkGroup ``workGroup``, Tag/UntagResource by its ARN
    (``arn:aws:athena:<region>:<account>:workgroup/<name>``); a tag change on another kind of resource (a data
    catalog, a capacity reservation) is not discovery's business."""
    if event.name in ("TagResource", "UntagResource"):
        arn = _text(request, "resourceARN")
        if not arn:
            raise MalformedEvent("missing requestParameters.resourceARN")
        resource = arn.split(":", 5)[-1] if arn.count(":") >= 5 else ""
        kind, _, name = resource.partition("/")
        if kind != "workgroup" or not name:
            return replace(event, kind=None)
        return replace(event, workgroup=name)
    field = "name" if event.name == "CreateWorkGroup" else "workGroup"
    return _require(replace(event, workgroup=_text(request, field)), "workgroup",
                    names=(f"requestParameters.{field}",))


def _require(event: AthenaEvent, *attributes: str, names: tuple[str, ...]) -> AthenaEvent:
    missing = [name for attribute, name in zip(attributes, names, strict=True) if not getattr(event, attribute)]
    if missing:
        raise MalformedEvent(f"{event.name} without {', '.join(missing)}")
    return event


def _text(members: dict[str, Any], name: str) -> str:
    value = members.get(name)
    return value if isinstance(value, str) else ""


def _members(detail: dict[str, Any], name: str) -> dict[str, Any]:
    value = detail.get(name)
    return value if isinstance(value, dict) else {}


def _time(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedEvent(f"unreadable eventTime {text!r}") from None
    if parsed.tzinfo is None:
        raise MalformedEvent(f"eventTime {text!r} has no time zone")
    return parsed
