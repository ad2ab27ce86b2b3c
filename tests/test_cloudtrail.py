"""The CloudTrail-shaped events EventBridge delivers for Athena's API calls, parsed (supervisor/core/cloudtrail.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from supervisor.core.cloudtrail import EventKind, MalformedEvent, parse_event
from tests.events_fixtures import api_call_event


def body(name: str, request: dict[str, Any] | None = None, response: dict[str, Any] | None = None,
         **changes: Any) -> str:
    return json.dumps(api_call_event(name, datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC), request or {}, response,
                                     **changes))


@pytest.mark.parametrize(("name", "request_parameters", "response", "expected"), [
    ("StartSession", {"workGroup": "etl-a"}, {"sessionId": "s1", "state": "CREATING"},
     (EventKind.SESSION_STARTED, "etl-a", "s1", "")),
    ("StartCalculationExecution", {"sessionId": "s1", "codeBlock": "HIDDEN_DUE_TO_SECURITY_REASONS"},
     {"calculationExecutionId": "c1", "state": "CREATING"}, (EventKind.CALCULATION_STARTED, "", "s1", "c1")),
    ("StopCalculationExecution", {"calculationExecutionId": "c1"}, {"state": "CANCELING"},
     (EventKind.CALCULATION_STOPPED, "", "", "c1")),
    ("TerminateSession", {"sessionId": "s1"}, {"state": "TERMINATING"}, (EventKind.SESSION_TERMINATED, "", "s1", "")),
    ("CreateWorkGroup", {"name": "etl-b"}, None, (EventKind.WORKGROUP_CHANGED, "etl-b", "", "")),
    ("UpdateWorkGroup", {"workGroup": "etl-b", "state": "DISABLED"}, None,
     (EventKind.WORKGROUP_CHANGED, "etl-b", "", "")),
    ("DeleteWorkGroup", {"workGroup": "etl-b"}, None, (EventKind.WORKGROUP_DELETED, "etl-b", "", "")),
    ("TagResource", {"resourceARN": "arn:aws:athena:us-east-1:123456789012:workgroup/etl-b", "tags": []}, None,
     (EventKind.WORKGROUP_CHANGED, "etl-b", "", "")),
    ("UntagResource", {"resourceARN": "arn:aws:athena:us-east-1:123456789012:workgroup/etl-b", "tagKeys": []},
     None, (EventKind.WORKGROUP_CHANGED, "etl-b", "", "")),
])
def test_each_forwarded_call_names_what_discovery_needs(
    name: str, request_parameters: dict[str, Any], response: dict[str, Any] | None,
    expected: tuple[EventKind, str, str, str],
) -> None:
    event = parse_event(body(name, request_parameters, response))
    assert (event.kind, event.workgroup, event.session_id, event.calculation_id) == expected
    assert (event.name, event.account, event.region) == (name, "123456789012", "us-east-1")
    assert event.time == datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    assert not event.failed


def test_a_tag_change_on_something_else_than_a_workgroup_and_an_unknown_call_have_no_kind() -> None:
    catalog = "arn:aws:athena:us-east-1:123456789012:datacatalog/glue"
    assert parse_event(body("TagResource", {"resourceARN": catalog})).kind is None
    assert parse_event(body("GetSession", {"sessionId": "s1"})).kind is None


def test_a_refused_call_is_marked_failed_and_needs_no_ids() -> None:
    event = parse_event(body("StartCalculationExecution", {"sessionId": "s1"}, None,
                             errorCode="InvalidRequestException"))
    assert event.failed and event.kind is EventKind.CALCULATION_STARTED and event.calculation_id == ""


def test_account_and_region_come_from_the_envelope_or_else_the_detail() -> None:
    event = json.loads(body("TerminateSession", {"sessionId": "s1"}))
    del event["account"], event["region"]
    parsed = parse_event(json.dumps(event))
    assert (parsed.account, parsed.region) == ("123456789012", "us-east-1")


@pytest.mark.parametrize(("text", "reason"), [
    ("not json", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"source": "aws.s3", "detail-type": "AWS API Call via CloudTrail", "detail": {}}),
     "not an Athena API call event"),
    (body("StartSession", {"workGroup": "etl-a"}, {}), "StartSession without responseElements.sessionId"),
    (body("StartCalculationExecution", {}, {"calculationExecutionId": "c1"}),
     "without requestParameters.sessionId"),
    (body("TagResource", {}), "missing requestParameters.resourceARN"),
    (body("TerminateSession", {"sessionId": "s1"}, None, eventTime="yesterday"), "unreadable eventTime"),
])
def test_malformed_bodies_say_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(MalformedEvent, match=reason):
        parse_event(text)


def test_copies_are_told_apart_by_cloudtrails_event_id_whatever_envelope_they_came_in() -> None:
    event = json.loads(body("TerminateSession", {"sessionId": "s1"}))
    forwarded = {**event, "id": "another-envelope"}
    assert parse_event(json.dumps(forwarded)).event_id == parse_event(json.dumps(event)).event_id == \
        event["detail"]["eventID"]


def test_an_event_without_its_id_or_name_is_malformed() -> None:
    event = json.loads(body("TerminateSession", {"sessionId": "s1"}))
    del event["id"], event["detail"]["eventID"], event["detail"]["eventName"]
    with pytest.raises(MalformedEvent, match=r"missing detail\.eventName, id"):
        parse_event(json.dumps(event))
