"""Credentials of a member account: its role, assumed through STS and refreshed before it expires.

botocore's refreshable credentials do the refreshing (15 minutes before the expiry, or at the latest 10
minutes before, on every signed request); they read the time from the injected clock, so virtual-time tests
see the same refreshes a real process would. The AssumeRole call itself goes through the daemon's own
gateway (its rate limiter, retries and call metrics).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import anyio
from aiobotocore.credentials import AioCredentialResolver, AioRefreshableCredentials
from aiobotocore.session import AioSession
from botocore.credentials import CredentialProvider

from supervisor.clock import Clock
from supervisor.gateway import Gateway, Priority, new_session

ROLE_SESSION_DURATION = timedelta(hours=1)
# Role session names allow [\w+=,.@-]{2,64}; the name shows in the member account's CloudTrail.
ROLE_SESSION_NAME = "athena-supervisor"


class _Loaded(CredentialProvider):  # type: ignore[misc]  # aiobotocore is untyped
    """A credential provider that hands out credentials obtained beforehand."""

    METHOD = "assume-role"
    CANONICAL_NAME = "athena-supervisor-assume-role"

    def __init__(self, credentials: AioRefreshableCredentials) -> None:
        self._credentials = credentials

    async def load(self) -> AioRefreshableCredentials:
        return self._credentials


class AssumedRole:
    """The credentials of ``role_arn``, assumed with the daemon's own credentials through ``gateway``."""

    def __init__(self, *, gateway: Gateway, clock: Clock, role_arn: str, external_id: str | None = None,
                 duration: timedelta = ROLE_SESSION_DURATION, session_name: str = ROLE_SESSION_NAME) -> None:
        self.gateway = gateway
        self.clock = clock
        self.role_arn = role_arn
        self._external_id = external_id
        self._duration = duration
        self._session_name = session_name

    async def fetch(self) -> dict[str, Any]:
        """One AssumeRole call; botocore's refreshable-credentials metadata.

        Raises:
            AwsCallError: the role could not be assumed (AccessDenied, a wrong external id, STS unreachable).
        """
        params: dict[str, Any] = {"RoleArn": self.role_arn, "RoleSessionName": self._session_name,
                                  "DurationSeconds": int(self._duration.total_seconds())}
        if self._external_id is not None:
            params["ExternalId"] = self._external_id
        # Enforcement priority: every call of the account, its destructive calls too, waits on these.
        answer = await self.gateway.call("AssumeRole", params, service="sts", priority=Priority.ENFORCE)
        credentials = answer["Credentials"]
        expiration = credentials["Expiration"]
        return {
            "access_key": credentials["AccessKeyId"],
            "secret_key": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
            "expiry_time": expiration.isoformat() if isinstance(expiration, datetime) else str(expiration),
        }

    async def session(self) -> AioSession:
        """An aiobotocore session signing with the role's credentials (assumed now, refreshed when due).

        Raises:
            AwsCallError: the role could not be assumed.
        """
        return (await self.assumed())[0]

    async def assumed(self) -> tuple[AioSession, AioRefreshableCredentials]:
        """:meth:`session`, with the credentials it signs with (their expiry, ``refresh_needed``)."""
        metadata = await self.fetch()
        credentials = AioRefreshableCredentials(
            access_key=metadata["access_key"], secret_key=metadata["secret_key"], token=metadata["token"],
            expiry_time=AioRefreshableCredentials._expiry_datetime(metadata["expiry_time"]),
            refresh_using=self.fetch, method="assume-role", time_fetcher=self.clock.now,
        )
        session = new_session()  # the built-in event handlers copied, not registered again (~12 ms of CPU)
        session.register_component("credential_provider", AioCredentialResolver([_Loaded(credentials)]))
        # The service models are loaded once per process, not once per shard: a new session would parse them again
        # (~0.2 s of CPU per client, on the event loop, where a replica's lease renewals and acting deadlines run).
        session.register_component("data_loader", self.gateway.session.get_component("data_loader"))
        return session, credentials


class RoleSessions:
    """The member roles' sessions of the process, one per role (and external id): the regions of an account, and
    every new holder of one of its shards in this replica (a takeover, a lease taken back), share one AssumeRole,
    refreshed by botocore while in use.

    A cached session is handed out only while its credentials have more than :data:`REUSE_MARGIN` left (one
    unused since is not refreshed by anyone): past that the role is assumed again, so a broken role is found, and
    reported by the shard asking, within that margin.
    """

    REUSE_MARGIN = timedelta(minutes=15)

    def __init__(self, *, gateway: Gateway, clock: Clock) -> None:
        self.gateway = gateway
        self.clock = clock
        self._cached: dict[tuple[str, str | None], tuple[AioSession, AioRefreshableCredentials]] = {}
        self._locks: dict[tuple[str, str | None], anyio.Lock] = {}

    async def session(self, role_arn: str, external_id: str | None = None) -> AioSession:
        """The role's session, assumed now unless a fresh enough one is cached.

        Raises:
            AwsCallError: the role could not be assumed.
        """
        key = (role_arn, external_id)
        async with self._locks.setdefault(key, anyio.Lock()):  # the regions of an account ask at once: one call
            cached = self._cached.get(key)
            if cached is not None and not cached[1].refresh_needed(self.REUSE_MARGIN.total_seconds()):
                return cached[0]
            self._cached[key] = await AssumedRole(gateway=self.gateway, clock=self.clock, role_arn=role_arn,
                                                  external_id=external_id).assumed()
            return self._cached[key][0]
