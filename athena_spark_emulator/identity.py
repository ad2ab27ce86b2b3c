"""Who the emulator says the caller is: the account, region and IAM identity behind every ARN it shows.

STS ``GetCallerIdentity`` answers it, and injected AccessDeniedException messages name it the way IAM does.
A caller is either an IAM user (long-term access keys) or a role session (credentials issued by
``sts:AssumeRole``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

CALLER_NAME = "athena-emulator"


def _stable_id(prefix: str, seed: str) -> str:
    """An IAM unique id: ``prefix`` and 17 more upper-case characters, stable per ``seed``."""
    return prefix + hashlib.sha256(seed.encode()).hexdigest().upper()[:17]


@dataclass(frozen=True, slots=True)
class AssumedRole:
    """A role session: the role ``arn:aws:iam::ACCOUNT:role/[PATH/]NAME`` assumed as ``session_name``."""

    role_arn: str
    account_id: str
    role_name: str
    session_name: str

    @property
    def arn(self) -> str:
        """``arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION``, as STS and IAM messages name it."""
        return f"arn:aws:sts::{self.account_id}:assumed-role/{self.role_name}/{self.session_name}"

    @property
    def assumed_role_id(self) -> str:
        """``AROA…:SESSION``: the role's unique id (stable per role ARN) and the session name."""
        return f"{_stable_id('AROA', self.role_arn)}:{self.session_name}"


@dataclass(frozen=True, slots=True)
class Identity:
    """The caller of one request, in the account-region that serves it.

    Attributes:
        account_id / region: the account-region (it owns the resources the request names).
        role: the role session, for credentials issued by ``sts:AssumeRole``; None for an IAM user.
    """

    account_id: str
    region: str
    role: AssumedRole | None = None

    @property
    def caller_arn(self) -> str:
        if self.role is not None:
            return self.role.arn
        return f"arn:aws:iam::{self.account_id}:user/{CALLER_NAME}"

    @property
    def user_id(self) -> str:
        """An IAM user id ``AIDA…`` (stable per account), or ``AROA…:SESSION`` for a role session."""
        if self.role is not None:
            return self.role.assumed_role_id
        return _stable_id("AIDA", self.account_id)

    def workgroup_arn(self, name: str) -> str:
        return f"arn:aws:athena:{self.region}:{self.account_id}:workgroup/{name}"
