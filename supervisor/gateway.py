"""The only module that talks to AWS.

Every call goes through :meth:`Gateway.call`: a priority token bucket (enforcement before verification
before discovery), explicit connect and read timeouts, retries of throttling, server and network errors with
exponential backoff and jitter, and one ``aws_api_calls_total{operation,outcome}`` sample per attempt.
botocore's own retries are turned off so that every attempt passes through the bucket and is counted.
Backoff sleeps on the injected :class:`~supervisor.clock.Clock`, so under a manual clock retries happen at exact
virtual instants. The retry loop is written out rather than built with tenacity: an ``AsyncRetrying`` per call
cost ~90 µs of CPU even when the first attempt succeeds (nearly every call), ~4 % of a call's CPU. ListSessions,
ListCalculationExecutions and ListWorkGroups have no botocore paginator: :meth:`Gateway.paginate` follows
NextToken for all of them.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import timedelta
from enum import IntEnum
from types import TracebackType
from typing import Any, Protocol

import anyio
import structlog
from aiobotocore.config import AioConfig
from aiobotocore.hooks import AioHierarchicalEmitter
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError
from botocore.hooks import EventAliaser
from botocore.loaders import Loader, create_loader
from botocore.utils import EVENT_ALIASES

from supervisor import __version__
from supervisor.clock import Clock, SystemClock
from supervisor.iam import AUTHORIZED_BY, FEATURES, actions_of
from supervisor.metrics import Metrics
from supervisor.ratelimit import PriorityRateLimiter

# Every AWS action the gateway may call (the daemon and the read-only commands): the union of the features'
# grants in supervisor/iam.py, which generates deploy/iam/*.json; the gateway refuses anything else, and
# tests/test_deploy_iam.py compares this set with the operations the source calls.
IAM_ACTIONS: frozenset[str] = actions_of(FEATURES)

# Allowed without any IAM grant (GetCallerIdentity needs no permission), so not in the policy.
UNGRANTED_ACTIONS: frozenset[str] = frozenset({"sts:GetCallerIdentity"})
# Operations IAM authorises by the actions of their parts (a DynamoDB transaction: its items' actions): allowed
# when every one of those is.
COMPOSITE_ACTIONS: frozenset[str] = frozenset(
    operation for operation, needs in AUTHORIZED_BY.items() if needs <= IAM_ACTIONS)
# What Gateway.call accepts, as one set (a union per call was ~3 µs of every call).
ALLOWED_ACTIONS: frozenset[str] = IAM_ACTIONS | UNGRANTED_ACTIONS | COMPOSITE_ACTIONS

THROTTLING_CODES = frozenset({
    "TooManyRequestsException", "ThrottlingException", "Throttling", "ThrottledException",
    "RequestLimitExceeded", "SlowDown", "ProvisionedThroughputExceededException",
})
# A conditional write whose condition did not hold: a normal answer (a claim already taken, a lease held by
# another replica), never retried, and counted apart from errors so that it raises no error-rate alert.
CONDITION_FAILED_CODE = "ConditionalCheckFailedException"
TRANSACTION_CANCELED_CODE = "TransactionCanceledException"
CONDITION_REASONS = frozenset({"ConditionalCheckFailed", "None"})
SERVICE_PREFIXES = {"athena": "athena", "sns": "sns", "events": "events", "sts": "sts", "dynamodb": "dynamodb",
                    "sqs": "sqs"}

# Backoff between attempts: WAIT_INITIAL × 2^(attempt-1) plus up to WAIT_JITTER of jitter, at most WAIT_MAX.
WAIT_INITIAL = 0.1
WAIT_MAX = 5.0
WAIT_JITTER = 0.2
DEFAULT_CONNECT_TIMEOUT = timedelta(seconds=2)
DEFAULT_READ_TIMEOUT = timedelta(seconds=10)


class Priority(IntEnum):
    """Lower is served first."""

    ENFORCE = 0
    VERIFY = 1
    NOTIFY = 2
    # A look an event asked for (a session or calculation just started): before the listings of a sweep, so a
    # backstop sweep (at 10,000 sessions, minutes of listings) never delays what events announce.
    ANNOUNCED = 3
    DISCOVER = 4
    ACCOUNT = 5  # budget accounting: after discovery, with its own share (service.ACCOUNTING_SHARE)


class AwsCallError(Exception):
    """A call failed for good (not retryable, or out of attempts).

    ``reasons`` are the codes of a canceled DynamoDB transaction's items, in the order of the request
    (``"None"`` for an item that passed), so the caller can tell which condition failed.
    """

    def __init__(self, operation: str, code: str, message: str, outcome: str = "client_error",
                 reasons: tuple[str, ...] = ()) -> None:
        super().__init__(f"{operation} failed: {code}: {message}")
        self.operation = operation
        self.code = code
        self.message = message
        # As in aws_api_calls_total (throttled, client_error, server_error, network_error, condition_failed), or
        # not_sent (a destructive call not started: this replica's lease may expire first).
        self.outcome = outcome
        self.reasons = reasons

    @property
    def is_condition_failed(self) -> bool:
        """A conditional write was refused because its condition did not hold (nothing was written)."""
        return self.outcome == "condition_failed"

    @property
    def is_not_found(self) -> bool:
        return self.code == "ResourceNotFoundException"

    @property
    def may_have_taken_effect(self) -> bool:
        """AWS may have processed the request (a 5xx, or no answer at all): look before sending it again."""
        return self.outcome in ("server_error", "network_error")


def cancellation_reasons(error: ClientError) -> tuple[str, ...]:
    """The item codes of a canceled DynamoDB transaction (empty for any other error)."""
    reasons = error.response.get("CancellationReasons") or ()
    return tuple(str(reason.get("Code") or "None") for reason in reasons if isinstance(reason, Mapping))


def classify(error: BaseException) -> str:
    """The ``outcome`` label of a failed attempt."""
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in THROTTLING_CODES or status == 429:
            return "throttled"
        if code == CONDITION_FAILED_CODE or (
                code == TRANSACTION_CANCELED_CODE and set(cancellation_reasons(error)) <= CONDITION_REASONS):
            return "condition_failed"
        return "server_error" if status >= 500 else "client_error"
    if _is_network_error(error):
        return "network_error"
    return "client_error"  # e.g. no credentials: nothing reached AWS, and retrying will not help


def _is_network_error(error: BaseException) -> bool:
    return isinstance(error, ConnectionError | HTTPClientError | OSError | TimeoutError)


def _is_retryable(error: BaseException) -> bool:
    if isinstance(error, ClientError):
        return classify(error) in ("throttled", "server_error")
    return _is_network_error(error)


def _was_refused(error: BaseException) -> bool:
    """AWS answered that it did not process the request, and asking again may succeed."""
    return isinstance(error, ClientError) and classify(error) == "throttled"


def error_code(error: BaseException | None) -> str:
    """The AWS error code of a failed attempt, or the exception's class name when AWS never answered."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "")) or type(error).__name__
    return type(error).__name__ if error is not None else ""


@functools.cache
def _shared_loader(data_path: str | None) -> Loader:
    """botocore's data loader for ``data_path`` (``AWS_DATA_PATH``), one per process.

    Service models, endpoint rulesets and partitions are read-only JSON that a loader parses once and caches;
    botocore gives every session a loader of its own, so each session would parse them again (~0.1 s of CPU
    per session, most of what creating a client costs).
    """
    return create_loader(data_path)


@functools.cache
def _builtin_handlers() -> AioHierarchicalEmitter:
    """botocore's and aiobotocore's built-in event handlers, registered once per process.

    A session registers ~130 of them when it is made (each event name aliased, each handler's signature
    checked): ~12 of the ~15 ms of CPU a session costs. Sessions start from a copy of these instead, as botocore's
    clients start from a copy of their session's handlers; what a session or client registers later stays its own.
    """
    emitter = AioHierarchicalEmitter()
    AioSession(event_hooks=emitter)  # registers the built-in handlers on emitter
    return emitter


class _SharedAliases(EventAliaser):  # type: ignore[misc]  # botocore is untyped
    """botocore's event aliaser (it renames old event names to new ones before every emit and registration), with
    the names it has worked out kept for the whole process instead of for one client.

    botocore works out each event name's alias once per aliaser, by trying each of its ~65 aliases in turn
    (~20 µs), and every client gets an aliaser of its own with nothing worked out (``__copy__``). Every event of a
    client's first call of each operation is worked out again: ~15 per call, ~2% of the suite's CPU, where
    clients are made by the hundred. The answer depends only on the name and the aliases, the same for every
    aliaser that has botocore's aliases, so those share one table (copies too: ``__copy__`` makes this class).
    """

    _worked_out: dict[str, str] = {}

    def __init__(self, event_emitter: Any, event_aliases: dict[str, str] | None = None) -> None:
        super().__init__(event_emitter, event_aliases)
        if self._event_aliases == EVENT_ALIASES:
            self._alias_name_cache = self._worked_out


def new_session(profile: str | None = None) -> AioSession:
    """An aiobotocore session for ``profile`` (None: the default credential chain) whose data loader and
    built-in event handlers are shared with every other session of the process (copied, for the handlers), as
    are the aliases of event names (:class:`_SharedAliases`); credentials and configuration stay the session's
    own."""
    handlers = copy.copy(_builtin_handlers())
    session = AioSession(profile=profile, event_hooks=handlers, include_builtin_handlers=False)
    # The emitter clients are made with (a copy of it each). The session's own aliaser wraps the same handlers, so
    # what is registered through either reaches both.
    session.register_component("event_emitter", _SharedAliases(handlers))
    # Lazily, as botocore registers its own: reading data_path reads the profile, which may not exist.
    session.lazy_register_component(
        "data_loader", lambda: _shared_loader(session.get_config_variable("data_path")))
    return session


class Uniform(Protocol):
    """A random source for jitter: ``random.Random`` or the :mod:`random` module itself."""

    def uniform(self, a: float, b: float) -> float: ...


def _seconds(value: float | timedelta) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not seconds > 0 or math.isinf(seconds):
        raise ValueError(f"a timeout must be a finite number of seconds > 0, got {value!r}")
    return seconds


class Gateway:
    """AWS access for one region. Use as an async context manager; clients are created on first use.

    Args:
        region: the default region of every client.
        metrics: where every attempt is counted.
        limiter: the token bucket every attempt waits on.
        endpoint_url: Athena's endpoint (an emulator, a VPC endpoint); None for AWS's.
        sts_endpoint_url: STS's endpoint; when None, ``endpoint_url`` if set (the emulator answers
            GetCallerIdentity), else AWS's.
        profile: the AWS profile for credentials.
        max_attempts: attempts per call unless the caller asks for fewer.
        connect_timeout / read_timeout: seconds or a timedelta, handed to botocore for every client.
        clock: backoff between attempts sleeps on it (default real time).
        rng: the jitter source (default the :mod:`random` module, so ``random.seed`` makes it repeatable).
        session: the aiobotocore session (default: :func:`new_session` for ``profile``).
    """

    def __init__(
        self,
        *,
        region: str,
        metrics: Metrics,
        limiter: PriorityRateLimiter,
        endpoint_url: str | None = None,
        sts_endpoint_url: str | None = None,
        profile: str | None = None,
        max_attempts: int = 8,
        connect_timeout: float | timedelta = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float | timedelta = DEFAULT_READ_TIMEOUT,
        clock: Clock | None = None,
        rng: Uniform | None = None,
        session: AioSession | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.region = region
        self.endpoint_url = endpoint_url
        self.sts_endpoint_url = sts_endpoint_url
        self.metrics = metrics
        self.limiter = limiter
        self.max_attempts = max_attempts
        self.connect_timeout = _seconds(connect_timeout)
        self.read_timeout = _seconds(read_timeout)
        self.clock: Clock = clock or SystemClock()
        self._rng: Uniform = rng if rng is not None else random
        self._session = session or new_session(profile)
        self._log = logger or structlog.get_logger("supervisor.gateway")
        self._stack = contextlib.AsyncExitStack()
        self._clients: dict[tuple[str, str, str | None], Any] = {}
        # Set by a replica for the shards it leases: while it says False, no call that must not reach AWS twice
        # (the destructive ones) starts an attempt, because another replica may own the shard by then.
        self.may_send: Callable[[], bool] = lambda: True

    async def __aenter__(self) -> Gateway:
        await self._stack.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._clients.clear()
        await self._stack.__aexit__(exc_type, exc, tb)

    @property
    def session(self) -> AioSession:
        """The aiobotocore session the clients are made from (its credentials, its loaded service models)."""
        return self._session

    @property
    def in_flight_window(self) -> timedelta:
        """The longest a call that is not repeatable (Stop, Terminate) can be in flight from its first attempt:
        throttled attempts are retried for at most ``attempt_timeout``, and the last one lasts at most as
        long."""
        return 2 * self.attempt_timeout

    @property
    def attempt_timeout(self) -> timedelta:
        """The longest a single attempt may be in flight (connect + read); each attempt is cut off there.

        After a crash with a Stop or Terminate in flight, waiting this long guarantees the old attempt is over.
        """
        return timedelta(seconds=self.connect_timeout + self.read_timeout)

    def _default_endpoint(self, service: str) -> str | None:
        # The configured endpoint_url (an emulator, a VPC endpoint) is Athena's, and STS's unless STS has its
        # own; other services use AWS's.
        if service == "athena":
            return self.endpoint_url
        if service == "sts":
            return self.sts_endpoint_url if self.sts_endpoint_url is not None else self.endpoint_url
        return None

    async def _client(self, service: str, region: str | None, endpoint_url: str | None) -> Any:
        endpoint = endpoint_url if endpoint_url is not None else self._default_endpoint(service)
        key = (service, region or self.region, endpoint)
        client = self._clients.get(key)
        if client is None:
            config = AioConfig(
                retries={"mode": "standard", "total_max_attempts": 1},
                max_pool_connections=64, connect_timeout=self.connect_timeout, read_timeout=self.read_timeout,
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
        attempts: int | None = None,
        repeatable: bool = True,
    ) -> dict[str, Any]:
        """Call ``operation`` (e.g. ``"GetSession"``), waiting for a token at ``priority`` before each attempt.

        Args:
            attempts: at most this many attempts (default ``max_attempts``).
            repeatable: False for a call that must not reach AWS twice (Stop, Terminate: no client token):
                only attempts AWS refused for certain (throttled) are retried here; after a 5xx or no answer
                the caller decides (enforcement looks at the target first).

        Raises:
            AwsCallError: the call failed for good.
        """
        action = f"{SERVICE_PREFIXES.get(service, service)}:{operation}"
        if action not in ALLOWED_ACTIONS:
            raise ValueError(f"{action} is not an action the gateway may call (see IAM_ACTIONS)")
        if attempts is not None and attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        client = await self._client(service, region, endpoint_url)
        method = getattr(client, _snake_case(operation))
        request = dict(params or {})
        max_attempts = attempts if attempts is not None else self.max_attempts
        retryable = _is_retryable if repeatable else _was_refused
        # A call that is not repeatable is bounded so that its last attempt starts within attempt_timeout of the
        # first: it is in flight for at most in_flight_window (what a restart waits out before sending it again).
        started, budget = self.clock.now(), self.attempt_timeout
        attempt = 1
        try:
            while True:
                try:
                    if not repeatable and not self.may_send():
                        raise AwsCallError(operation, "LeaseExpiring", "this replica's lease of the account-region "
                                           "may expire before the call is sent; not sent", "not_sent")
                    return await self._attempt(operation, method, request, priority)
                except Exception as error:
                    if not retryable(error):
                        raise
                    # The wait (its jitter) is drawn before the stop conditions are read, also for the last
                    # attempt, as tenacity did: the jitter sequence, hence every retry instant, stays the same.
                    wait = self._backoff(attempt)
                    if attempt >= max_attempts or (not repeatable and self.clock.now() - started >= budget):
                        raise
                    self._log_retry(operation, attempt, error, wait)
                await self.clock.sleep(wait)
                attempt += 1
        except ClientError as error:
            details = error.response.get("Error", {})
            raise AwsCallError(operation, str(details.get("Code", "")), str(details.get("Message", "")),
                               classify(error), cancellation_reasons(error)) from error
        except (ConnectionError, HTTPClientError, OSError, TimeoutError) as error:
            raise AwsCallError(operation, "NetworkError", str(error) or type(error).__name__,
                               "network_error") from error
        except BotoCoreError as error:  # NoCredentialsError and the like: reported, never a crash
            raise AwsCallError(operation, type(error).__name__, str(error)) from error

    async def _attempt(
        self, operation: str, method: Callable[..., Any], request: dict[str, Any], priority: Priority
    ) -> dict[str, Any]:
        """One attempt: a token, the request cut off at ``attempt_timeout``, one metric sample."""
        await self.limiter.acquire(priority)
        started = time.perf_counter()  # real time, as the timeout below: network I/O always takes real time
        try:
            with anyio.fail_after(self.connect_timeout + self.read_timeout):
                response: dict[str, Any] = await method(**request)
        except Exception as error:
            self.metrics.aws_api_call_seconds.labels(operation).observe(time.perf_counter() - started)
            self.metrics.aws_api_calls.labels(operation, classify(error)).inc()
            raise
        self.metrics.aws_api_call_seconds.labels(operation).observe(time.perf_counter() - started)
        self.metrics.aws_api_calls.labels(operation, "success").inc()
        return response

    def _backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (from 1) before the next one."""
        exponential = WAIT_INITIAL * 2.0 ** min(attempt - 1, 64)
        return min(WAIT_MAX, exponential + self._rng.uniform(0, WAIT_JITTER))

    def _log_retry(self, operation: str, attempt: int, error: BaseException, wait: float) -> None:
        """One line per retry, naming the operation."""
        outcome = classify(error)
        log = self._log.info if outcome == "throttled" else self._log.warning
        log("aws.retrying", operation=operation, attempt=attempt, error=error_code(error), outcome=outcome,
            wait=round(wait, 3))

    async def paginate(
        self,
        operation: str,
        params: Mapping[str, Any],
        *,
        result_key: str,
        priority: Priority,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield each page's ``result_key`` list, following NextToken.

        Raises:
            AwsCallError: code ``MalformedAnswer`` when a page lacks ``result_key`` altogether (an empty
                result is an empty list): a page that says nothing must not read as "nothing is there".
        """
        request = dict(params)
        while True:
            response = await self.call(operation, request, priority=priority)
            items = response.get(result_key)
            if not isinstance(items, list):
                self.metrics.malformed_items.labels(operation).inc()
                raise AwsCallError(operation, "MalformedAnswer", f"the answer has no {result_key} list",
                                   "client_error")
            yield items
            token = response.get("NextToken")
            if not token:
                return
            request["NextToken"] = token


@functools.cache  # a few dozen operations, each converted on every call otherwise
def _snake_case(operation: str) -> str:
    out = []
    for index, char in enumerate(operation):
        if char.isupper() and index:
            out.append("_")
        out.append(char.lower())
    return "".join(out)
