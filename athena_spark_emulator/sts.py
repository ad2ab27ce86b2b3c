"""STS over the AWS Query protocol, served on the Athena endpoint: the wire format of requests and answers.

A daemon checks its credentials (and learns its account id) with GetCallerIdentity and gets per-account
credentials with AssumeRole; pointing its STS client at the emulator's ``endpoint_url`` serves both.
Requests are ``POST /`` with a form body (``Action=GetCallerIdentity&Version=2011-06-15``); answers and
errors are the XML documents botocore's query parser reads.
"""

from __future__ import annotations

import urllib.parse
from xml.sax.saxutils import escape

from athena_spark_emulator.audit import iso_millis
from athena_spark_emulator.credentials import IssuedCredentials
from athena_spark_emulator.errors import FORBIDDEN, SERVER_ERROR, ApiError
from athena_spark_emulator.identity import Identity

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
XML_CONTENT_TYPE = "text/xml"
VERSION = "2011-06-15"
NAMESPACE = f"https://sts.amazonaws.com/doc/{VERSION}/"
OPERATIONS = frozenset({"GetCallerIdentity", "AssumeRole"})
# The emulator's error names (Athena's) as STS spells them, and the status STS answers when it differs.
_STS_CODES: dict[str, tuple[str, int | None]] = {
    "TooManyRequestsException": ("Throttling", None),
    "InternalServerException": ("InternalFailure", None),
    "AccessDeniedException": ("AccessDenied", None),
    "InvalidRequestException": ("InvalidParameterValue", None),
    "ResourceNotFoundException": ("InvalidParameterValue", None),
    "ExpiredTokenException": ("ExpiredToken", FORBIDDEN),
    "UnrecognizedClientException": ("InvalidClientTokenId", FORBIDDEN),
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


def _document(operation: str, result: str, request_id: str) -> bytes:
    return (
        f'<{operation}Response xmlns="{NAMESPACE}">'
        f"<{operation}Result>{result}</{operation}Result>"
        f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
        f"</{operation}Response>"
    ).encode()


def caller_identity(identity: Identity, request_id: str) -> bytes:
    return _document("GetCallerIdentity", (
        f"<Arn>{escape(identity.caller_arn)}</Arn>"
        f"<UserId>{escape(identity.user_id)}</UserId>"
        f"<Account>{escape(identity.account_id)}</Account>"
    ), request_id)


def assumed_role(credentials: IssuedCredentials, request_id: str) -> bytes:
    role = credentials.role
    return _document("AssumeRole", (
        "<Credentials>"
        f"<AccessKeyId>{credentials.access_key_id}</AccessKeyId>"
        f"<SecretAccessKey>{escape(credentials.secret_access_key)}</SecretAccessKey>"
        f"<SessionToken>{escape(credentials.session_token)}</SessionToken>"
        f"<Expiration>{iso_millis(credentials.expiration)}</Expiration>"
        "</Credentials>"
        "<AssumedRoleUser>"
        f"<AssumedRoleId>{escape(role.assumed_role_id)}</AssumedRoleId>"
        f"<Arn>{escape(role.arn)}</Arn>"
        "</AssumedRoleUser>"
    ), request_id)


def error_document(error: ApiError, request_id: str) -> tuple[int, str, bytes]:
    """``(HTTP status, code, XML body)`` of an error as the Query protocol answers it."""
    code, status = _STS_CODES.get(error.error_type, (error.error_type, None))
    status = status or error.status
    kind = "Receiver" if status >= SERVER_ERROR else "Sender"
    body = (
        f'<ErrorResponse xmlns="{NAMESPACE}">'
        f"<Error><Type>{kind}</Type><Code>{escape(code)}</Code><Message>{escape(error.message)}</Message></Error>"
        f"<RequestId>{request_id}</RequestId>"
        "</ErrorResponse>"
    ).encode()
    return status, code, body
