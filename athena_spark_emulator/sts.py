"""``sts:GetCallerIdentity`` over the AWS Query protocol, served on the Athena endpoint.

A daemon checks its credentials (and learns its account id) with GetCallerIdentity; pointing its STS
client at the emulator's ``endpoint_url`` answers the emulator's configured account. Requests are
``POST /`` with a form body (``Action=GetCallerIdentity&Version=2011-06-15``); answers and errors are the
XML documents botocore's query parser reads.
"""

from __future__ import annotations

import urllib.parse
from xml.sax.saxutils import escape

from athena_spark_emulator.errors import SERVER_ERROR, ApiError
from athena_spark_emulator.identity import Identity

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
XML_CONTENT_TYPE = "text/xml"
VERSION = "2011-06-15"
NAMESPACE = f"https://sts.amazonaws.com/doc/{VERSION}/"
OPERATIONS = frozenset({"GetCallerIdentity"})
# The emulator's error names (Athena's) as STS spells them.
_STS_CODES = {
    "TooManyRequestsException": "Throttling",
    "InternalServerException": "InternalFailure",
    "AccessDeniedException": "AccessDenied",
    "InvalidRequestException": "InvalidParameterValue",
    "ResourceNotFoundException": "InvalidParameterValue",
}


def decode_form(raw: bytes) -> dict[str, str]:
    """The form's fields (the last value of a repeated one)."""
    fields = urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return dict(fields)


def operation_of(form: dict[str, str]) -> str:
    """The requested action; anything but a supported action of this API version is InvalidAction."""
    action = form.get("Action", "")
    if action not in OPERATIONS or form.get("Version") != VERSION:
        raise ApiError("InvalidAction", f"Could not find operation {action} for version {form.get('Version')}")
    return action


def caller_identity(identity: Identity, request_id: str) -> bytes:
    return (
        f'<GetCallerIdentityResponse xmlns="{NAMESPACE}">'
        "<GetCallerIdentityResult>"
        f"<Arn>{escape(identity.caller_arn)}</Arn>"
        f"<UserId>{escape(identity.user_id)}</UserId>"
        f"<Account>{escape(identity.account_id)}</Account>"
        "</GetCallerIdentityResult>"
        f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
        "</GetCallerIdentityResponse>"
    ).encode()


def error_document(error: ApiError, request_id: str) -> tuple[str, bytes]:
    """``(code, XML body)`` of an error as the Query protocol answers it."""
    code = _STS_CODES.get(error.error_type, error.error_type)
    kind = "Receiver" if error.status >= SERVER_ERROR else "Sender"
    body = (
        f'<ErrorResponse xmlns="{NAMESPACE}">'
        f"<Error><Type>{kind}</Type><Code>{escape(code)}</Code><Message>{escape(error.message)}</Message></Error>"
        f"<RequestId>{request_id}</RequestId>"
        "</ErrorResponse>"
    ).encode()
    return code, body
