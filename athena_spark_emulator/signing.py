"""What a SigV4 ``Authorization`` header says about the caller: the access key id and the credential scope.

``AWS4-HMAC-SHA256 Credential=AKID/20261125/eu-west-1/athena/aws4_request, SignedHeaders=…, Signature=…``
names the access key id and, in its scope, the date, region and service. Signatures are never checked (any
secret works, as before); only who signed and for which region matter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

REGION_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_CREDENTIAL = re.compile(r"Credential=([^,\s]+)")
_SCOPE = re.compile(rf"(\d{{8}})/({REGION_NAME.pattern})/([A-Za-z0-9-]+)/aws4_request")


@dataclass(frozen=True, slots=True)
class Signature:
    """The parts of a signed request's credential that identify the caller.

    Attributes:
        access_key_id: the access key id that signed.
        region: the region of the credential scope, or None when the scope does not parse.
        service: the service of the credential scope (``athena``, ``sts``), or None likewise.
    """

    access_key_id: str
    region: str | None = None
    service: str | None = None


def parse_authorization(header: str | None) -> Signature | None:
    """The signature an ``Authorization`` header carries; None when the request is not SigV4-signed."""
    if not header or not header.startswith("AWS4-"):
        return None
    match = _CREDENTIAL.search(header)
    if match is None:
        return None
    access_key_id, _, scope = match.group(1).partition("/")
    if not access_key_id:
        return None
    parts = _SCOPE.fullmatch(scope)
    if parts is None:
        return Signature(access_key_id)
    return Signature(access_key_id, region=parts.group(2), service=parts.group(3))
