"""Who the emulator says the caller is: the account, region and IAM identity behind every ARN it shows.

STS ``GetCallerIdentity`` answers it, and injected AccessDeniedException messages name it the way IAM does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

CALLER_NAME = "athena-emulator"


@dataclass(frozen=True, slots=True)
class Identity:
    account_id: str
    region: str

    @property
    def caller_arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:user/{CALLER_NAME}"

    @property
    def user_id(self) -> str:
        """An IAM user id: ``AIDA`` and 17 more upper-case characters, stable per account."""
        return "AIDA" + hashlib.sha256(self.account_id.encode()).hexdigest().upper()[:17]

    def workgroup_arn(self, name: str) -> str:
        return f"arn:aws:athena:{self.region}:{self.account_id}:workgroup/{name}"
