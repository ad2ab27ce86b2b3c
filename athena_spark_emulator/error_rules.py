"""Injected errors for one resource, one workgroup or one operation: "the next 3 GetSession calls about
session X answer ResourceNotFoundException", "every call in workgroup etl is AccessDenied".

Rules are checked in installation order after latency, throttling and error rates, before the request is
validated or served; the first match answers. A rule with ``count`` answers that many calls and is then
removed; without it, it answers until removed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from athena_spark_emulator.errors import CLIENT_ERROR, SERVER_ERROR, ApiError
from athena_spark_emulator.identity import Identity
from athena_spark_emulator.rulebook import RuleBook
from athena_spark_emulator.selectors import SELECTOR_KEYS, Resources, Selector, rule_body

# AccessDeniedException is not in Athena's model: AWS answers it for every service (HTTP 400, its __type),
# and botocore surfaces it as a ClientError with that code.
ERROR_STATUS: dict[str, int] = {
    "ResourceNotFoundException": CLIENT_ERROR,
    "AccessDeniedException": CLIENT_ERROR,
    "InvalidRequestException": CLIENT_ERROR,
    "TooManyRequestsException": CLIENT_ERROR,
    "InternalServerException": SERVER_ERROR,
}
_KEYS = {*SELECTOR_KEYS, "error", "message", "count"}
_RESOURCE_WORDS = {"calculation": "Calculation", "session": "Session", "workgroup": "WorkGroup"}


@dataclass(frozen=True, slots=True)
class ErrorRule:
    """Answer ``error`` to the calls ``selector`` picks.

    Attributes:
        selector: the operation and/or resource (at least one is required).
        error: one of :data:`ERROR_STATUS`.
        message: the ``Message`` (default: what AWS would say).
        count: answers left (None: until removed).
    """

    selector: Selector
    error: str
    message: str | None = None
    count: int | None = None

    @classmethod
    def from_json(cls, body: Any, operations: frozenset[str]) -> ErrorRule:
        """Parse a control-API body; raise ValueError naming the bad key."""
        body = rule_body(body, _KEYS)
        selector = Selector.from_json(body, operations)
        if selector == Selector():
            raise ValueError("name at least one of operation, session_id, calculation_id, workgroup")
        error = body.get("error")
        if error not in ERROR_STATUS:
            raise ValueError(f"error must be one of {', '.join(ERROR_STATUS)}")
        message = body.get("message")
        if message is not None and not isinstance(message, str):
            raise ValueError("message must be a string")
        count = body.get("count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ValueError("count must be a whole number >= 1")
        return cls(selector, error, message, count)

    def to_json(self) -> dict[str, Any]:
        return {**self.selector.to_json(), "error": self.error, "message": self.message, "count": self.count}

    def api_error(self, operation: str, resources: Resources, identity: Identity, service: str = "athena") -> ApiError:
        """The error answered to one call, with AWS-like default messages (``service`` prefixes IAM actions)."""
        status = ERROR_STATUS[self.error]
        kind, name = self.selector.resource or _named_resource(resources)
        if self.message is not None:
            message = self.message
        elif self.error == "ResourceNotFoundException":
            message = f"{_RESOURCE_WORDS.get(kind, 'Resource')} {name} is not found."
        elif self.error == "AccessDeniedException":
            workgroups = sorted(resources.workgroups)
            resource = identity.workgroup_arn(workgroups[0]) if workgroups else "*"
            action = f"{service}:{operation}"
            message = (f"User: {identity.caller_arn} is not authorized to perform: {action} on resource: "
                       f"{resource} because no identity-based policy allows the {action} action")
        elif self.error == "TooManyRequestsException":
            message = "Rate exceeded"
        elif self.error == "InternalServerException":
            message = "An internal error occurred (injected fault)"
        else:
            message = f"{operation} cannot be performed on {kind} {name} (injected fault)"
        extra = {"ResourceName": name} if self.error == "ResourceNotFoundException" and name else None
        return ApiError(self.error, message, status=status, extra=extra)


def _named_resource(resources: Resources) -> tuple[str, str]:
    for kind, ids in (("calculation", resources.calculations), ("session", resources.sessions),
                      ("workgroup", resources.workgroups)):
        if ids:
            return kind, sorted(ids)[0]
    return "resource", ""


class ErrorRules(RuleBook[ErrorRule]):
    """The installed error rules (ids ``error-N``)."""

    def __init__(self) -> None:
        super().__init__("error")

    def take(self, operation: str, resources: Resources) -> ErrorRule | None:
        """The first rule that picks this call, counting the answer against its ``count``."""
        for rule_id, rule in self.items():
            if not rule.selector.matches(operation, resources):
                continue
            if rule.count is not None:
                if rule.count <= 1:
                    self.remove(rule_id)
                else:
                    self.update(rule_id, replace(rule, count=rule.count - 1))
            return rule
        return None
