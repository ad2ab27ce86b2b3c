"""The only module that talks to AWS.

Every call goes through :meth:`Gateway.call`: a priority token bucket (enforcement before verification
before discovery), retries of throttling and server errors with exponential backoff and jitter (stamina),
and one ``aws_api_calls_total{operation,outcome}`` sample per attempt. botocore's own retries are turned off
so that every attempt passes through the bucket and is counted. ListSessions, ListCalculationExecutions and
ListWorkGroups have no botocore paginator: :meth:`Gateway.paginate` follows NextToken for all of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from enum import IntEnum
from types import TracebackType
from typing import Any

import stamina
import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

from supervisor import __version__
from supervisor.iam import FEATURES, actions_of
from supervisor.metrics import Metrics
from supervisor.ratelimit import PriorityRateLimiter

# Every AWS action the gateway may call (the daemon and the read-only commands): the union of the features'
# grants in supervisor/iam.py, which generates deploy/iam/*.json; the gateway refuses anything else, and
# tests/test_deploy_iam.py compares this set with the operations the source calls.
IAM_ACTIONS: frozenset[str] = actions_of(FEATURES)

# Allowed without any IAM grant (GetCallerIdentity needs no permission), so not in the policy.
UNGRANTED_ACTIONS: frozenset[str] = frozenset({"sts:GetCallerIdentity"})

THROTTLING_CODES = frozenset({
    "TooManyRequestsException", "ThrottlingException", "Throttling", "ThrottledException",
    "RequestLimitExceeded", "SlowDown",
})
SERVICE_PREFIXES = {"athena": "athena", "sns": "sns", "events": "events", "sts": "sts"}


class Priority(IntEnum):
    """Lower is served first."""

    ENFORCE = 0
    VERIFY = 1
    NOTIFY = 2
    DISCOVER = 3
    ACCOUNT = 4  # budget accounting: never delays a discovery sweep


class AwsCallError(Exception):
    """A call failed for good (not retryable, or out of attempts)."""

    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__(f"{operation} failed: {code}: {message}")
        self.operation = operation
        self.code = code
        self.message = message

    @property
    def is_not_found(self) -> bool:
        return self.code == "ResourceNotFoundException"


def classify(error: BaseException) -> str:
    """The ``outcome`` label of a failed attempt."""
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in THROTTLING_CODES or status == 429:
            return "throttled"
        return "server_error" if status >= 500 else "client_error"
    if _is_network_error(error):
        return "network_error"
    return "client_error"  # e.g. no credentials: nothing reached AWS, and retrying will not help


def _is_network_error(error: BaseException) -> bool:
    return isinstance(error, ConnectionError | HTTPClientError | OSError | TimeoutError)


def _is_retryable(error: Exception) -> bool:
    if isinstance(error, ClientError):
        return classify(error) in ("throttled", "server_error")
    return _is_network_error(error)


class Gateway:
    """AWS access for one region. Use as an async context manager; clients are created on first use."""

    def __init__(
        self,
        *,
        region: str,
        metrics: Metrics,
        limiter: PriorityRateLimiter,
        endpoint_url: str | None = None,
        profile: str | None = None,
        max_attempts: int = 8,
        session: AioSession | None = None,
        logger: Any = None,
    ) -> None:
        self.region = region
        self.endpoint_url = endpoint_url
        self.metrics = metrics
        self.limiter = limiter
        self.max_attempts = max_attempts
        self._session = session or (AioSession(profile=profile) if profile else get_session())
        self._log = logger or structlog.get_logger("supervisor.gateway")
        self._stack = contextlib.AsyncExitStack()
        self._clients: dict[tuple[str, str, str | None], Any] = {}

    async def __aenter__(self) -> Gateway:
        await self._stack.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._clients.clear()
        await self._stack.__aexit__(exc_type, exc, tb)

    async def _client(self, service: str, region: str | None, endpoint_url: str | None) -> Any:
        # The configured endpoint_url (an emulator, a VPC endpoint) is Athena's; other services use their own.
        default_endpoint = self.endpoint_url if service == "athena" else None
        key = (service, region or self.region, endpoint_url if endpoint_url is not None else default_endpoint)
        client = self._clients.get(key)
        if client is None:
            config = AioConfig(
                retries={"mode": "standard", "total_max_attempts": 1},
                max_pool_connections=64, connect_timeout=5, read_timeout=30,
                # A fixed User-Agent, built once: botocore otherwise rebuilds it twice per request, ~10% of
                # the daemon's CPU at 50 requests/s.
                user_agent=f"athena-spark-supervisor/{__version__} {self._session.user_agent()}",
            )
            client = await self._stack.enter_async_context(
                self._session.create_client(service, region_name=key[1], endpoint_url=key[2], config=config)
            )
            self._clients[key] = client
        return client

    async def call(
        self,
        operation: str,
        params: Mapping[str, Any] | None = None,
        *,
        priority: Priority,
        service: str = "athena",
        region: str | None = None,
        endpoint_url: str | None = None,
    ) -> dict[str, Any]:
        """Call ``operation`` (e.g. ``"GetSession"``), waiting for a token at ``priority`` before each attempt."""
        action = f"{SERVICE_PREFIXES.get(service, service)}:{operation}"
        if action not in IAM_ACTIONS | UNGRANTED_ACTIONS:
            raise ValueError(f"{action} is not an action the gateway may call (see IAM_ACTIONS)")
        client = await self._client(service, region, endpoint_url)
        method = getattr(client, _snake_case(operation))
        try:
            async for attempt in stamina.retry_context(
                on=_is_retryable, attempts=self.max_attempts, timeout=None, wait_initial=0.1, wait_max=5.0,
                wait_jitter=0.2,
            ):
                with attempt:
                    await self.limiter.acquire(priority)
                    try:
                        response: dict[str, Any] = await method(**dict(params or {}))
                    except Exception as error:
                        outcome = classify(error)
                        self.metrics.aws_api_calls.labels(operation, outcome).inc()
                        if outcome == "throttled":
                            self._log.info("aws.throttled", operation=operation, attempt=attempt.num)
                        raise
                    self.metrics.aws_api_calls.labels(operation, "success").inc()
                    return response
        except ClientError as error:
            details = error.response.get("Error", {})
            raise AwsCallError(operation, str(details.get("Code", "")), str(details.get("Message", ""))) from error
        except (ConnectionError, HTTPClientError, OSError, TimeoutError) as error:
            raise AwsCallError(operation, "NetworkError", str(error)) from error
        except BotoCoreError as error:  # NoCredentialsError and the like: reported, never a crash
            raise AwsCallError(operation, type(error).__name__, str(error)) from error
        raise AssertionError("unreachable: stamina either returns a response or raises")

    async def paginate(
        self,
        operation: str,
        params: Mapping[str, Any],
        *,
        result_key: str,
        priority: Priority,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield each page's ``result_key`` list, following NextToken."""
        request = dict(params)
        while True:
            response = await self.call(operation, request, priority=priority)
            yield list(response.get(result_key) or [])
            token = response.get("NextToken")
            if not token:
                return
            request["NextToken"] = token


def _snake_case(operation: str) -> str:
    out = []
    for index, char in enumerate(operation):
        if char.isupper() and index:
            out.append("_")
        out.append(char.lower())
    return "".join(out)
