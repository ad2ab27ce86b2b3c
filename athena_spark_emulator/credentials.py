"""Temporary credentials issued by ``sts:AssumeRole``: who they belong to and until when they are valid."""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

from athena_spark_emulator.identity import AssumedRole

_KEY_CHARACTERS = string.ascii_uppercase + string.digits
_SECRET_CHARACTERS = string.ascii_letters + string.digits + "+/"


@dataclass(frozen=True, slots=True)
class IssuedCredentials:
    """One set of temporary credentials.

    Attributes:
        access_key_id: ``ASIA`` and 16 more upper-case characters.
        secret_access_key: 40 characters (never checked: the emulator verifies no signature).
        session_token: what the client must send as ``X-Amz-Security-Token``.
        expiration: epoch seconds on the emulator's clock after which requests signed with them are refused.
        role: the role session they act as.
    """

    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: float
    role: AssumedRole

    def expired(self, now: float) -> bool:
        return now >= self.expiration


class Keyring:
    """The credentials issued so far, by access key id.

    Args:
        rng: the random source of keys, secrets and tokens (inject a seeded one for reproducible values).
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._issued: dict[str, IssuedCredentials] = {}

    def _text(self, alphabet: str, length: int) -> str:
        return "".join(self._rng.choice(alphabet) for _ in range(length))

    def issue(self, role: AssumedRole, *, expiration: float) -> IssuedCredentials:
        """New credentials for ``role``, valid until ``expiration`` (epoch seconds)."""
        access_key_id = "ASIA" + self._text(_KEY_CHARACTERS, 16)
        while access_key_id in self._issued:
            access_key_id = "ASIA" + self._text(_KEY_CHARACTERS, 16)
        credentials = IssuedCredentials(
            access_key_id=access_key_id, secret_access_key=self._text(_SECRET_CHARACTERS, 40),
            session_token="FwoGZXIvYXdzE" + self._text(_SECRET_CHARACTERS, 143), expiration=expiration,
            role=role,
        )
        self._issued[access_key_id] = credentials
        return credentials

    def get(self, access_key_id: str) -> IssuedCredentials | None:
        return self._issued.get(access_key_id)

    def clear(self) -> None:
        self._issued.clear()
