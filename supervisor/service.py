"""The only wiring: builds every collaborator from the settings and starts every activity as a named task.

Reading :func:`running_service` tells the whole process layout. A task that crashes is logged with its name
and stops the process (``run`` exits non-zero); it never dies silently.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass

import anyio
import anyio.abc
import structlog
from prometheus_client import CollectorRegistry

from supervisor.activities.accounting import Accounting
from supervisor.activities.budgets import Budgets
from supervisor.activities.checks import Checks
from supervisor.activities.discovery import Discovery
from supervisor.activities.enforcement import Enforcement
from supervisor.activities.retention import Retention
from supervisor.activities.warnings import Warnings
from supervisor.clock import Clock, SystemClock
from supervisor.config import Settings
from supervisor.core.escalation import Timing
from supervisor.core.inventory import Inventory
from supervisor.core.model import Origin, Verdict
from supervisor.core.policy import Policy, compile_policies
from supervisor.core.safety import SafetyRails
from supervisor.events import EventSink
from supervisor.gateway import Gateway, Priority
from supervisor.http import serving
from supervisor.metrics import Metrics
from supervisor.notify import Notifier, notifying
from supervisor.ratelimit import PriorityRateLimiter
from supervisor.storage import Storage
from supervisor.storage.factory import open_storage

EXIT_TASK_CRASHED = 1
# Budget accounting's own share of the API budget: at the lowest priority, while it waits it still gets this
# share of the calls, taken from discovery's (never from enforcement, verification or notifications).
ACCOUNTING_SHARE = 0.2


class TaskCrashed(Exception):
    """A root task of the daemon ended with an error; the process stops."""

    def __init__(self, name: str, error: BaseException) -> None:
        super().__init__(f"task {name!r} crashed: {error!r}")
        self.name = name


@dataclass(frozen=True, slots=True)
class RunningService:
    metrics: Metrics
    storage: Storage
    http_url: str
    discovery: Discovery
    checks: Checks
    enforcement: Enforcement
    accounting: Accounting | None
    budgets: Budgets | None
    notifier: Notifier | None = None


def build_gateway(settings: Settings, metrics: Metrics, *, clock: Clock | None = None) -> Gateway:
    """The gateway the settings describe; its rate limiter and retry backoff run on ``clock``."""
    aws = settings.aws
    clock = clock or SystemClock()
    rate = aws.max_requests_per_second
    return Gateway(
        region=aws.region,
        endpoint_url=str(aws.endpoint_url) if aws.endpoint_url else None,
        sts_endpoint_url=aws.effective_sts_endpoint_url,
        profile=aws.profile,
        max_attempts=aws.max_attempts,
        metrics=metrics,
        # A burst of one second's worth keeps us under a server-side bucket of the same rate.
        limiter=PriorityRateLimiter(rate, burst=max(1.0, rate), clock=clock,
                                    shares={Priority.ACCOUNT: ACCOUNTING_SHARE}, protected=Priority.NOTIFY),
        clock=clock,
        connect_timeout=aws.connect_timeout,
        read_timeout=aws.read_timeout,
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


def _journal_name(settings: Settings) -> str:
    journal = settings.journal
    return str(journal.path) if journal.backend == "sqlite" else f"dynamodb:{journal.table}"


async def _supervised(name: str, run: Callable[..., Awaitable[None]], *,
                      task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Run a root task; a crash is logged with the task's name and stops the process."""
    try:
        await run(task_status=task_status)
    except Exception as error:
        structlog.get_logger("supervisor").critical("supervisor.task_crashed", task=name, error=repr(error),
                                                    exc_info=True)
        raise TaskCrashed(name, error) from error


@asynccontextmanager
async def running_service(
    settings: Settings,
    *,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    events: EventSink | None = None,
    storage: Storage | None = None,
) -> AsyncIterator[RunningService]:
    """Start the daemon in the current event loop; leaving the block stops it gracefully.

    ``storage``: the journal to use (the caller closes it); by default the one ``journal`` names, opened here.
    """
    metrics = Metrics(registry)
    clock = clock or SystemClock()
    log = structlog.get_logger("supervisor")
    policies = compile_policies(settings)
    journal: AbstractAsyncContextManager[Storage] = (
        open_storage(settings, metrics=metrics, clock=clock) if storage is None else nullcontext(storage))
    try:
        async with journal as storage, build_gateway(settings, metrics, clock=clock) as gateway:
            # Without an injected sink, events go to the configured channels (flushed, bounded, at exit).
            notifier = Notifier.from_settings(
                settings, gateway=gateway, metrics=metrics, journal=storage, clock=clock,
            ) if events is None and settings.notifications else None
            sink = events or notifier
            inventory = Inventory()
            rails = SafetyRails(
                max_actions_per_minute=settings.safety.max_actions_per_minute,
                breaker_fraction=settings.safety.circuit_breaker_fraction,
                breaker_min_targets=settings.safety.circuit_breaker_min_targets,
                active_sessions=inventory.active_sessions,
            )
            enforcement = Enforcement(
                gateway=gateway, storage=storage, metrics=metrics, clock=clock, rails=rails, events=sink,
                timing=Timing(
                    stop_grace=settings.escalation.stop_grace, terminate_grace=settings.escalation.terminate_grace,
                    retry_backoff_max=settings.escalation.retry_backoff_max,
                    in_flight_window=gateway.in_flight_window,
                ),
                void_reason=void_reason_for(settings, policies),
            )
            warnings = Warnings(storage=storage, metrics=metrics, clock=clock, events=sink)
            checks = Checks(
                gateway=gateway, clock=clock, inventory=inventory, enforcement=enforcement, warnings=warnings,
                policies=policies, dpu_hour_usd=settings.pricing.price_for(settings.aws.region), metrics=metrics,
            )
            discovery = Discovery(
                settings=settings, gateway=gateway, clock=clock, inventory=inventory, checks=checks,
                policies=policies, metrics=metrics,
            )
            accounting = Accounting(
                settings=settings, gateway=gateway, storage=storage, clock=clock, inventory=inventory,
                watched=discovery.watched, metrics=metrics, discovered=discovery.first_sweep,
            ) if settings.budgets else None
            budgets = Budgets(
                settings=settings, storage=storage, clock=clock, accounting=accounting, enforcement=enforcement,
                warnings=warnings, inventory=inventory, watched=discovery.watched, metrics=metrics, events=sink,
            ) if accounting is not None else None
            retention = Retention(storage=storage, clock=clock, retention=settings.journal.retention)

            def readiness() -> tuple[bool, str]:
                reason = discovery.readiness() or enforcement.readiness()
                return (reason is None, reason or "ok")

            async with (
                serving(metrics.registry, readiness, settings.http.host, settings.http.port) as url,
                notifying(notifier),
                anyio.create_task_group() as task_group,
            ):
                log.info("supervisor.started", http=url, mode=settings.mode, journal=_journal_name(settings),
                         policies=[policy.name for policy in policies], region=settings.aws.region)
                # Enforcement first: it loads the claims and resumes open escalations before anything is judged.
                await task_group.start(_supervised, "enforcement", enforcement.run, name="enforcement")
                await task_group.start(_supervised, "warnings", warnings.run, name="warnings")
                await task_group.start(_supervised, "checks", checks.run, name="checks")
                await task_group.start(_supervised, "discovery", discovery.run, name="discovery")
                if accounting is not None and budgets is not None:
                    await task_group.start(_supervised, "budgets", budgets.run, name="budgets")
                    await task_group.start(_supervised, "accounting", accounting.run, name="accounting")
                await task_group.start(_supervised, "retention", retention.run, name="retention")
                try:
                    yield RunningService(metrics, storage, url, discovery, checks, enforcement, accounting, budgets,
                                         notifier)
                finally:
                    task_group.cancel_scope.cancel()
    finally:
        log.info("supervisor.stopped")


async def run_until_signalled(settings: Settings) -> int:
    """The ``run`` command: serve until SIGTERM/SIGINT, then finish in-flight calls and exit. SIGHUP is
    logged and ignored (no reload yet; without a handler it would end the process).

    Returns the exit status: 0 after a signal, 1 when a root task crashed.
    """
    crashed = False
    log = structlog.get_logger("supervisor")
    try:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with running_service(settings):
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        log.info("supervisor.sighup_ignored", reason="reload is not supported; restart to apply")
                        continue
                    log.info("supervisor.stopping", signal=signal.Signals(signum).name)
                    break
    except* TaskCrashed:
        crashed = True
    return EXIT_TASK_CRASHED if crashed else 0
