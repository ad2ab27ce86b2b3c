"""One account-region (a shard): its credentials, gateway and activities, started and stopped as a unit.

:func:`shard_runtime` builds a shard's collaborators (the same graph the single-account daemon always had);
:class:`ShardHost` keeps one shard supervised: it obtains the shard's credentials (assuming its role, retried
with backoff while that fails, reported on ``/readyz`` and in metrics) and runs its activities until it is
cancelled (shutdown, or the shard's lease moving to another replica). One shard failing never stops another.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import anyio
import anyio.abc
import structlog
from aiobotocore.session import AioSession

from supervisor.activities.accounting import Accounting
from supervisor.activities.budgets import Budgets
from supervisor.activities.checks import Checks
from supervisor.activities.discovery import Discovery
from supervisor.activities.enforcement import Enforcement
from supervisor.activities.event_path import EventPath
from supervisor.activities.warnings import Warnings
from supervisor.clock import Clock, SystemClock
from supervisor.config import Settings
from supervisor.core.escalation import Timing
from supervisor.core.fleet import Fence, Shard
from supervisor.core.inventory import Inventory
from supervisor.core.model import Origin, Verdict
from supervisor.core.policy import Policy, compile_policies
from supervisor.core.safety import SafetyRails
from supervisor.credentials import RoleSessions
from supervisor.events import EventSink
from supervisor.gateway import AwsCallError, Gateway, Priority
from supervisor.metrics import Metrics
from supervisor.ratelimit import PriorityRateLimiter
from supervisor.storage import Storage

# Budget accounting's own share of the API budget: at the lowest priority, while it waits it still gets this
# share of the calls, taken from discovery's (never from enforcement, verification or notifications).
ACCOUNTING_SHARE = 0.2
CREDENTIALS_RETRY_INITIAL = timedelta(seconds=1)
CREDENTIALS_RETRY_MAX = timedelta(minutes=5)


class TaskCrashed(Exception):
    """A root task of the daemon ended with an error; the process stops."""

    def __init__(self, name: str, error: BaseException) -> None:
        super().__init__(f"task {name!r} crashed: {error!r}")
        self.name = name


async def supervised(name: str, run: Callable[..., Awaitable[None]], *,
                     task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Run a root task; a crash is logged with the task's name and stops the process."""
    try:
        await run(task_status=task_status)
    except Exception as error:
        if _already_reported(error):
            raise
        structlog.get_logger("supervisor").critical("supervisor.task_crashed", task=name, error=repr(error),
                                                    exc_info=True)
        raise TaskCrashed(name, error) from error


def _already_reported(error: Exception) -> bool:
    """A nested task crashed (a shard's activity): it was logged with its own name where it happened."""
    if isinstance(error, ExceptionGroup):
        return error.split(TaskCrashed)[1] is None
    return isinstance(error, TaskCrashed)


def build_gateway(settings: Settings, metrics: Metrics, *, clock: Clock | None = None,
                  session: AioSession | None = None) -> Gateway:
    """The gateway the settings describe (one per shard: its own rate limiter and credentials)."""
    aws = settings.aws
    clock = clock or SystemClock()
    rate = aws.max_requests_per_second
    return Gateway(
        region=aws.region,
        endpoint_url=str(aws.endpoint_url) if aws.endpoint_url else None,
        sts_endpoint_url=aws.effective_sts_endpoint_url,
        profile=aws.profile if session is None else None,
        max_attempts=aws.max_attempts,
        metrics=metrics,
        # A burst of one second's worth keeps us under a server-side bucket of the same rate.
        limiter=PriorityRateLimiter(rate, burst=max(1.0, rate), clock=clock,
                                    shares={Priority.ACCOUNT: ACCOUNTING_SHARE}, protected=Priority.NOTIFY),
        clock=clock,
        connect_timeout=aws.connect_timeout,
        read_timeout=aws.read_timeout,
        session=session,
    )


def void_reason_for(settings: Settings, policies: tuple[Policy, ...]) -> Callable[[Verdict], str | None]:
    """Why a journaled escalation that never sent anything must not go on under the current config."""

    def void_reason(verdict: Verdict) -> str | None:
        if verdict.origin is Origin.BUDGET:
            if not any(budget.name == verdict.policy for budget in settings.budgets):
                return f"budget {verdict.policy!r} is no longer configured"
            return "dry-run mode is on" if settings.mode == "dry-run" else None
        policy = next((p for p in policies if p.name == verdict.policy), None)
        if policy is None:
            return f"policy {verdict.policy!r} is no longer configured"
        if policy.mode == "dry-run":
            return f"policy {verdict.policy!r} is now in dry-run mode"
        return None

    return void_reason


@dataclass(slots=True)
class ShardRuntime:
    """The activities of one shard, wired together. :meth:`apply` hands them reloaded settings."""

    shard: Shard
    settings: Settings
    gateway: Gateway
    storage: Storage
    metrics: Metrics
    inventory: Inventory
    discovery: Discovery
    checks: Checks
    enforcement: Enforcement
    warnings: Warnings
    accounting: Accounting | None
    budgets: Budgets | None
    clock: Clock | None = None
    events: EventSink | None = None
    _task_group: anyio.abc.TaskGroup | None = None

    def readiness(self) -> str | None:
        return self.discovery.readiness() or self.enforcement.readiness()

    def apply(self, settings: Settings) -> None:
        """Hand the activities this shard's reloaded settings (``Settings.for_shard``): policies, mode, scope, pace,
        price, escalation timing, safety limits, budgets; every known target is judged again at once. Budget
        activities start when the first budget comes. (The gateway's settings, ``aws``, need a restart.)"""
        policies = compile_policies(settings)
        timing = self.enforcement.timing
        self.enforcement.apply(
            timing=replace(timing, stop_grace=settings.escalation.stop_grace,
                           terminate_grace=settings.escalation.terminate_grace,
                           retry_backoff_max=settings.escalation.retry_backoff_max),
            void_reason=void_reason_for(settings, policies))
        safety = settings.safety
        self.enforcement.rails.configure(max_actions_per_minute=safety.max_actions_per_minute,
                                         breaker_fraction=safety.circuit_breaker_fraction,
                                         breaker_min_targets=safety.circuit_breaker_min_targets)
        self.discovery.apply(settings, policies)
        if self.accounting is not None and self.budgets is not None:
            self.accounting.apply(settings)
            self.budgets.apply(settings)
        elif settings.budgets and self._task_group is not None and self.clock is not None:
            self.accounting, self.budgets = budget_activities(
                settings, gateway=self.gateway, storage=self.storage, clock=self.clock, inventory=self.inventory,
                discovery=self.discovery, enforcement=self.enforcement, warnings=self.warnings,
                metrics=self.metrics, events=self.events)
            self._start_budgets(self._task_group)
        self.settings = settings
        self.checks.apply(policies, settings.pricing.price_for(self.shard.region))

    def _start_budgets(self, task_group: anyio.abc.TaskGroup) -> None:
        suffix = "" if self.shard.implicit else f"[{self.shard}]"
        if self.accounting is not None and self.budgets is not None:
            task_group.start_soon(supervised, f"budgets{suffix}", self.budgets.run, name=f"budgets{suffix}")
            task_group.start_soon(supervised, f"accounting{suffix}", self.accounting.run, name=f"accounting{suffix}")

    async def _prepare_storage(self) -> None:
        try:
            await self.storage.prepare(self.clock.now() if self.clock is not None else datetime.now(UTC))
        except Exception as error:  # the first write registers what it needs itself, as it always could
            structlog.get_logger("supervisor.shard").warning("shard.storage_prepare_failed", error=repr(error))

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start every activity (enforcement first: it loads the claims and resumes open escalations before
        anything is judged) and run until cancelled."""
        suffix = "" if self.shard.implicit else f"[{self.shard}]"
        async with anyio.create_task_group() as task_group:
            # What a new owner of the shard reads first, side by side: the claims and open escalations (resumed
            # before anything is judged) and the saved targets due soon.
            async with anyio.create_task_group() as reading:
                reading.start_soon(self.checks.read_watch)
                reading.start_soon(self._prepare_storage)
                await task_group.start(supervised, f"enforcement{suffix}", self.enforcement.run)
            await task_group.start(supervised, f"warnings{suffix}", self.warnings.run)
            await task_group.start(supervised, f"checks{suffix}", self.checks.run)
            await task_group.start(supervised, f"discovery{suffix}", self.discovery.run)
            if self.accounting is not None and self.budgets is not None:
                await task_group.start(supervised, f"budgets{suffix}", self.budgets.run)
                await task_group.start(supervised, f"accounting{suffix}", self.accounting.run)
            self._task_group = task_group
            task_status.started()


@asynccontextmanager
async def shard_runtime(
    shard: Shard, settings: Settings, *, storage: Storage, metrics: Metrics, clock: Clock,
    events: EventSink | None, session: AioSession | None = None, fence: Fence | None = None,
    may_send: Callable[[], bool] | None = None, fence_lost: Callable[[], None] | None = None,
    event_path: EventPath | None = None,
) -> AsyncIterator[ShardRuntime]:
    """Build ``shard``'s collaborators from the process-wide ``settings``; the gateway closes on exit.

    ``fence`` and ``may_send`` come with a lease (a replica of a cluster): claims and intents are fenced
    writes, and no destructive call starts while ``may_send`` says False. ``event_path``: with event-fed
    discovery, the state of the event feed (discovery then sweeps every ``backstop_interval``)."""
    settings = settings.for_shard(shard)
    metrics = metrics.for_shard(shard)
    storage = storage.for_shard(shard, fence)
    policies = compile_policies(settings)
    async with build_gateway(settings, metrics, clock=clock, session=session) as gateway:
        if may_send is not None:
            gateway.may_send = may_send
        inventory = Inventory()
        rails = SafetyRails(
            max_actions_per_minute=settings.safety.max_actions_per_minute,
            breaker_fraction=settings.safety.circuit_breaker_fraction,
            breaker_min_targets=settings.safety.circuit_breaker_min_targets,
            active_sessions=inventory.listed_active_sessions,
        )
        enforcement = Enforcement(
            gateway=gateway, storage=storage, metrics=metrics, clock=clock, rails=rails, events=events,
            timing=Timing(
                stop_grace=settings.escalation.stop_grace, terminate_grace=settings.escalation.terminate_grace,
                retry_backoff_max=settings.escalation.retry_backoff_max,
                in_flight_window=gateway.in_flight_window,
            ),
            void_reason=void_reason_for(settings, policies), fence_lost=fence_lost,
        )
        warnings = Warnings(storage=storage, metrics=metrics, clock=clock, events=events)
        checks = Checks(
            gateway=gateway, clock=clock, inventory=inventory, enforcement=enforcement, warnings=warnings,
            policies=policies, dpu_hour_usd=settings.pricing.price_for(shard.region), metrics=metrics,
            storage=storage, watch_slot=f"watch {shard}",
        )
        discovery = Discovery(
            settings=settings, gateway=gateway, clock=clock, inventory=inventory, checks=checks,
            policies=policies, metrics=metrics, event_path=event_path,
            sweep_slot=None if shard.implicit else str(shard),
        )
        accounting, budgets = budget_activities(
            settings, gateway=gateway, storage=storage, clock=clock, inventory=inventory, discovery=discovery,
            enforcement=enforcement, warnings=warnings, metrics=metrics, events=events,
        ) if settings.budgets else (None, None)
        yield ShardRuntime(shard, settings, gateway, storage, metrics, inventory, discovery, checks, enforcement,
                           warnings, accounting, budgets, clock, events)


def budget_activities(settings: Settings, *, gateway: Gateway, storage: Storage, clock: Clock, inventory: Inventory,
                      discovery: Discovery, enforcement: Enforcement, warnings: Warnings, metrics: Metrics,
                      events: EventSink | None) -> tuple[Accounting, Budgets]:
    """A shard's budget accounting and the budgets it feeds."""
    accounting = Accounting(
        settings=settings, gateway=gateway, storage=storage, clock=clock, inventory=inventory,
        watched=discovery.watched, metrics=metrics, discovered=discovery.first_sweep,
    )
    budgets = Budgets(
        settings=settings, storage=storage, clock=clock, accounting=accounting, enforcement=enforcement,
        warnings=warnings, inventory=inventory, watched=discovery.watched, metrics=metrics, events=events,
    )
    return accounting, budgets


@dataclass
class ShardHost:
    """Keeps one shard supervised: credentials first (retried with backoff), then its activities.

    ``runtime`` is set while the activities run; ``problem`` says why they do not (the role cannot be
    assumed).
    """

    shard: Shard
    settings: Settings
    storage: Storage
    metrics: Metrics
    clock: Clock
    events: EventSink | None
    sts: Gateway
    fence: Fence | None = None
    may_send: Callable[[], bool] | None = None
    fence_lost: Callable[[], None] | None = None
    event_path: EventPath | None = None
    roles: RoleSessions | None = None  # the process's role sessions (default: this host assumes its own)
    runtime: ShardRuntime | None = None
    problem: str | None = None
    _log: structlog.typing.FilteringBoundLogger = field(
        default_factory=lambda: structlog.get_logger("supervisor.shard"))

    def apply(self, settings: Settings) -> None:
        """Take the process-wide reloaded settings; the shard's activities, when they run, get their view."""
        self.settings = settings
        if self.runtime is not None:
            self.runtime.apply(settings.for_shard(self.shard))

    def readiness(self) -> str | None:
        if self.problem is not None:
            return self.problem
        if self.runtime is None:
            return "not started yet"
        return self.runtime.readiness()

    async def _session(self, on_failure: Callable[[], None]) -> AioSession:
        """The session of the shard's role, once it could be assumed; ``on_failure`` is called after each failed
        attempt. Without a role, the daemon's own session (``sts``'s): the same profile (``aws`` needs a restart to
        change), so its credentials are resolved once, not once more per shard (a new session also costs ~20 ms of
        CPU to make, on the event loop)."""
        account = self.settings.account_for(self.shard)
        if account is None or account.role_arn is None:
            return self.sts.session
        roles = self.roles or RoleSessions(gateway=self.sts, clock=self.clock)
        metrics = self.metrics.for_shard(self.shard)
        backoff = CREDENTIALS_RETRY_INITIAL
        while True:
            try:
                session = await roles.session(account.role_arn, account.external_id)
            except AwsCallError as error:
                self.problem = f"{self.shard}: cannot assume {account.role_arn} ({error.code})"
                metrics.shard_credentials_failing.set(1)
                self._log.error("shard.credentials_failing", role_arn=account.role_arn, error=error.code,
                                retry_in=backoff.total_seconds())
                on_failure()
                await self.clock.sleep(backoff.total_seconds())
                backoff = min(backoff * 2, CREDENTIALS_RETRY_MAX)
                continue
            if self.problem is not None:
                self._log.info("shard.credentials_restored", role_arn=account.role_arn)
            self.problem = None
            metrics.shard_credentials_failing.set(0)
            return session

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Supervise the shard until cancelled. ``task_status`` is reported once its activities run, or after
        the first failure to assume its role (so one account's broken role never delays another's start)."""
        metrics = self.metrics.for_shard(self.shard)
        reported = False

        def report() -> None:
            nonlocal reported
            if not reported:
                reported = True
                task_status.started()

        context = {} if self.shard.implicit else {"account": self.shard.account_id, "region": self.shard.region}
        with structlog.contextvars.bound_contextvars(**context):
            try:
                session = await self._session(report)
                async with (
                    shard_runtime(self.shard, self.settings, storage=self.storage, metrics=self.metrics,
                                  clock=self.clock, events=self.events, session=session,
                                  fence=self.fence, may_send=self.may_send,
                                  fence_lost=self.fence_lost, event_path=self.event_path) as runtime,
                    anyio.create_task_group() as task_group,
                ):
                    await task_group.start(runtime.run)
                    self.runtime = runtime
                    metrics.shard_owned.set(1)
                    report()
            finally:
                self.runtime = None
                metrics.forget_shard()
