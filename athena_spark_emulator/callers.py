"""The account rule: which account-region a request belongs to, from its credentials and its SigV4 scope.

- Credentials the emulator issued through ``sts:AssumeRole`` belong to the assumed role's account (the
  ``ACCOUNT`` of ``arn:aws:iam::ACCOUNT:role/NAME``).
- An access key id of exactly 12 digits is that account (moto's convention).
- Any other access key id, and an unsigned request, belong to the default account.

The region is the credential scope's; a request without a parsable scope is in the default region.
Issued credentials are refused once expired on the emulator's clock (``ExpiredTokenException``) and when
the request's ``X-Amz-Security-Token`` is not theirs (``UnrecognizedClientException``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from athena_spark_emulator.credentials import Keyring
from athena_spark_emulator.errors import ApiError
from athena_spark_emulator.identity import Identity
from athena_spark_emulator.signing import parse_authorization

ACCOUNT_ID = re.compile(r"\d{12}")
DEFAULT_ACCOUNT = "123456789012"
DEFAULT_REGION = "us-east-1"


def expired_token() -> ApiError:
    return ApiError("ExpiredTokenException", "The security token included in the request is expired")


def unrecognized_client() -> ApiError:
    return ApiError("UnrecognizedClientException", "The security token included in the request is invalid.")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request, and the authentication error to answer instead of serving it (if any)."""

    identity: Identity
    refusal: ApiError | None = None
    access_key_id: str | None = None


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What the HTTP request says besides its body, for the CloudTrail event of a call.

    Attributes:
        request_id: the ``x-amzn-RequestId`` answered.
        user_agent: the request's ``User-Agent`` (empty when it had none).
        source_ip: the client's address.
    """

    request_id: str
    user_agent: str = ""
    source_ip: str = "127.0.0.1"


class Callers:
    """Applies the account rule.

    Args:
        keyring: the credentials issued by ``sts:AssumeRole``.
        default_account / default_region: for other access keys, unsigned requests and unparsable scopes.
    """

    def __init__(self, keyring: Keyring, *, default_account: str = DEFAULT_ACCOUNT,
                 default_region: str = DEFAULT_REGION) -> None:
        self._keyring = keyring
        self.default_account = default_account
        self.default_region = default_region

    def identify(self, authorization: str | None, security_token: str | None, now: float) -> Caller:
        """The caller of a request from its ``Authorization`` and ``X-Amz-Security-Token`` headers."""
        signature = parse_authorization(authorization)
        if signature is None:
            return Caller(Identity(self.default_account, self.default_region))
        region = signature.region or self.default_region
        key = signature.access_key_id
        issued = self._keyring.get(key)
        if issued is not None:
            identity = Identity(issued.role.account_id, region, issued.role)
            if security_token != issued.session_token:
                return Caller(identity, unrecognized_client(), key)
            if issued.expired(now):
                return Caller(identity, expired_token(), key)
            return Caller(identity, access_key_id=key)
        return Caller(Identity(self.account_of(key), region), access_key_id=key)

    def account_of(self, access_key_id: str) -> str:
        """The account of a long-term access key id: itself when it is 12 digits, else the default."""
        return access_key_id if ACCOUNT_ID.fullmatch(access_key_id) else self.default_account
