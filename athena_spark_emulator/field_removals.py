"""Answers with members missing: "ListCalculationExecutions items have no Status.SubmissionDateTime",
"ListSessions items of session X have no SessionId".

A removal names an operation, dotted member paths and optionally a resource. Each path is removed from
the response where it exists at the top level and from every item of the response's lists of objects
(``Sessions``, ``Calculations``, ``WorkGroups``…), so ``Status.SubmissionDateTime`` works for
GetCalculationExecution and for each ListCalculationExecutions item alike. With a resource, a list item
is affected only when it is about that resource (its own id, or the request's). Only successful answers
are changed; the stored state never is (the response is copied along each removed path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from athena_spark_emulator.rulebook import RuleBook
from athena_spark_emulator.selectors import SELECTOR_KEYS, Resources, Selector, rule_body

_KEYS = {*SELECTOR_KEYS, "fields"}
# List items that are resources themselves, by the member holding their id.
_ITEM_IDS = (("SessionId", "session"), ("CalculationExecutionId", "calculation"))
_WORKGROUP_ITEMS = "ListWorkGroups"  # WorkGroupSummary names the workgroup in ``Name``


@dataclass(frozen=True, slots=True)
class FieldRemoval:
    """Drop ``fields`` (dotted paths) from the answers ``selector`` picks (its operation is required)."""

    selector: Selector
    fields: tuple[str, ...]

    @classmethod
    def from_json(cls, body: Any, operations: frozenset[str]) -> FieldRemoval:
        """Parse a control-API body; raise ValueError naming the bad key."""
        body = rule_body(body, _KEYS)
        selector = Selector.from_json(body, operations)
        if selector.operation is None:
            raise ValueError("operation is required")
        fields = body.get("fields")
        if (not isinstance(fields, list) or not fields
                or not all(isinstance(f, str) and f and all(f.split(".")) for f in fields)):
            raise ValueError("fields must be a non-empty list of member paths such as \"Status.State\"")
        return cls(selector, tuple(fields))

    def to_json(self) -> dict[str, Any]:
        return {**self.selector.to_json(), "fields": list(self.fields)}


def _without(value: dict[str, Any], path: list[str]) -> dict[str, Any]:
    """``value`` without the member at ``path``: copies only the dicts along the path."""
    head = path[0]
    if head not in value:
        return value
    if len(path) == 1:
        return {key: item for key, item in value.items() if key != head}
    child = value[head]
    if not isinstance(child, dict):
        return value
    return {**value, head: _without(child, path[1:])}


def _item_resources(operation: str, item: dict[str, Any], request: Resources) -> Resources:
    found = request
    for member, kind in _ITEM_IDS:
        value = item.get(member)
        if isinstance(value, str):
            found = found.plus(**{kind: value})
    if operation == _WORKGROUP_ITEMS and isinstance(item.get("Name"), str):
        found = found.plus(workgroup=item["Name"])
    return found


class FieldRemovals(RuleBook[FieldRemoval]):
    """The installed removals (ids ``removal-N``)."""

    def __init__(self) -> None:
        super().__init__("removal")

    def apply(self, operation: str, resources: Resources, payload: dict[str, Any]) -> dict[str, Any]:
        """The answer to send: ``payload`` without the members that the matching removals name."""
        for _, rule in self.items():
            if rule.selector.operation != operation:
                continue
            paths = [field.split(".") for field in rule.fields]
            if rule.selector.matches(operation, resources):
                for path in paths:
                    payload = _without(payload, path)
            for key, value in list(payload.items()):
                if isinstance(value, list) and any(isinstance(item, dict) for item in value):
                    payload = {**payload, key: [self._item(rule, operation, item, resources, paths)
                                                for item in value]}
        return payload

    @staticmethod
    def _item(rule: FieldRemoval, operation: str, item: Any, request: Resources,
              paths: list[list[str]]) -> Any:
        if not isinstance(item, dict) or not rule.selector.matches(operation, _item_resources(operation, item,
                                                                                             request)):
            return item
        for path in paths:
            item = _without(item, path)
        return item
