"""IAM roles as ``sts:AssumeRole`` sees them: any role may be assumed unless a rule says otherwise.

A rule (``POST /_emulator/roles``) makes one role refuse every assumption (``deny``) or require an
``ExternalId``; a refused AssumeRole answers ``AccessDenied`` (HTTP 403), as STS does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from athena_spark_emulator.errors import FORBIDDEN, ApiError
from athena_spark_emulator.identity import AssumedRole, Identity
from athena_spark_emulator.selectors import rule_body

# arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME
_ROLE_ARN = re.compile(r"arn:aws(?:-[a-z]+)*:iam::(\d{12}):role/(?:[\w+=,.@-]+/)*([\w+=,.@-]{1,64})")
_KEYS = {"role_arn", "deny", "external_id"}


def assumed_role(role_arn: str, session_name: str) -> AssumedRole:
    """The role session ``role_arn`` + ``session_name``; raise ValueError when it is not a role ARN."""
    match = _ROLE_ARN.fullmatch(role_arn)
    if match is None:
        raise ValueError(f"{role_arn} is not a valid role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
    return AssumedRole(role_arn=role_arn, account_id=match.group(1), role_name=match.group(2),
                       session_name=session_name)


@dataclass(frozen=True, slots=True)
class RoleRule:
    """How one role answers AssumeRole.

    Attributes:
        role_arn: the role.
        deny: refuse every assumption.
        external_id: the ``ExternalId`` an assumption must pass (None: any or none).
    """

    role_arn: str
    deny: bool = False
    external_id: str | None = None

    @classmethod
    def from_json(cls, body: Any) -> RoleRule:
        """Parse a control-API body; raise ValueError naming the bad key."""
        body = rule_body(body, _KEYS)
        role_arn = body.get("role_arn")
        if not isinstance(role_arn, str):
            raise ValueError("role_arn is required: arn:aws:iam::ACCOUNT:role/NAME")
        try:
            assumed_role(role_arn, "-")
        except ValueError as error:
            raise ValueError(f"role_arn: {error}") from None
        deny = body.get("deny", False)
        if not isinstance(deny, bool):
            raise ValueError("deny must be true or false")
        external_id = body.get("external_id")
        if external_id is not None and (not isinstance(external_id, str) or not external_id):
            raise ValueError("external_id must be a non-empty string")
        return cls(role_arn, deny, external_id)

    def to_json(self) -> dict[str, Any]:
        return {"role_arn": self.role_arn, "deny": self.deny, "external_id": self.external_id}

    def refusal(self, external_id: str | None) -> str | None:
        """Why an assumption passing ``external_id`` is refused, or None when it is allowed."""
        if self.deny:
            return "the role refuses every assumption"
        if self.external_id is not None and external_id != self.external_id:
            return "the ExternalId does not match"
        return None


class Roles:
    """The role rules, one per role ARN (a new rule for a role replaces its previous one)."""

    def __init__(self) -> None:
        self._rules: dict[str, RoleRule] = {}

    def put(self, rule: RoleRule) -> None:
        self._rules[rule.role_arn] = rule

    def remove(self, role_arn: str | None = None) -> None:
        """Remove the rule of ``role_arn`` (KeyError if none), or every rule."""
        if role_arn is None:
            self._rules.clear()
        else:
            del self._rules[role_arn]

    def to_json(self) -> list[dict[str, Any]]:
        return [rule.to_json() for rule in self._rules.values()]

    def check(self, caller: Identity, role: AssumedRole, external_id: str | None) -> None:
        """Raise the ``AccessDenied`` STS answers when ``caller`` may not assume ``role``."""
        rule = self._rules.get(role.role_arn)
        reason = rule.refusal(external_id) if rule is not None else None
        if reason is not None:
            raise ApiError("AccessDenied", f"User: {caller.caller_arn} is not authorized to perform: "
                           f"sts:AssumeRole on resource: {role.role_arn} ({reason})", status=FORBIDDEN)
