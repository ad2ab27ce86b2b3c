"""The STS service: GetCallerIdentity and AssumeRole, for the caller the account rule identified.

Requests are validated against botocore's ``sts`` model (scalar members: required, types, lengths, ranges,
patterns; a violation answers ``ValidationError``). AssumeRole checks the role's rules, then issues
temporary credentials valid for ``DurationSeconds`` (default 3600) on the emulator's clock.
"""

from __future__ import annotations

from typing import Any

from athena_spark_emulator import sts
from athena_spark_emulator.credentials import Keyring
from athena_spark_emulator.errors import ApiError
from athena_spark_emulator.identity import Identity
from athena_spark_emulator.roles import Roles, assumed_role
from athena_spark_emulator.validation import validate_value

DEFAULT_DURATION_SECONDS = 3600
_SCALARS = frozenset({"string", "integer", "long", "boolean"})


def validation_error(message: str) -> ApiError:
    return ApiError("ValidationError", message)


def _typed(shape: Any, name: str, text: str) -> Any:
    kind = shape.type_name
    if kind in ("integer", "long"):
        try:
            return int(text)
        except ValueError:
            raise validation_error(f"1 validation error detected: Value {text!r} at '{name}' failed to satisfy "
                                   f"constraint: Member must be of type {kind}") from None
    if kind == "boolean":
        return text.lower() == "true"
    return text


def form_parameters(operation_model: Any, form: dict[str, str]) -> dict[str, Any]:
    """The scalar members of a Query-protocol form, typed and validated against the operation's input.

    Lists and structures (``Tags.member.1.Key``…) are accepted and ignored.
    """
    shape = operation_model.input_shape
    if shape is None:
        return {}
    params = {name: _typed(member, name, form[name]) for name, member in shape.members.items()
              if member.type_name in _SCALARS and name in form}
    try:
        validate_value(shape, params, "")
    except ApiError as error:
        raise validation_error(error.message) from None
    return params


class StsService:
    """Answers STS actions.

    Args:
        keyring: where issued credentials are kept (the account rule reads it).
        roles: the rules that make roles refuse assumption.
        model: botocore's STS ``ServiceModel``.
    """

    def __init__(self, keyring: Keyring, roles: Roles, model: Any) -> None:
        self.keyring = keyring
        self.roles = roles
        self._operations = {name: model.operation_model(name) for name in sts.OPERATIONS}

    def handle(self, operation: str, form: dict[str, str], caller: Identity, now: float,
               request_id: str) -> bytes:
        """The XML answer to one action; raise :class:`ApiError` for an error the client should see."""
        params = form_parameters(self._operations[operation], form)
        if operation == "AssumeRole":
            return self._assume_role(params, caller, now, request_id)
        return sts.caller_identity(caller, request_id)

    def _assume_role(self, params: dict[str, Any], caller: Identity, now: float, request_id: str) -> bytes:
        try:
            role = assumed_role(params["RoleArn"], params["RoleSessionName"])
        except ValueError as error:
            raise validation_error(str(error)) from None
        self.roles.check(caller, role, params.get("ExternalId"))
        duration = params.get("DurationSeconds", DEFAULT_DURATION_SECONDS)
        credentials = self.keyring.issue(role, expiration=now + duration)
        return sts.assumed_role(credentials, request_id)
