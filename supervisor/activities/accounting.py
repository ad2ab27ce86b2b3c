"""Accounting: count the spend of budgeted workgroups on its own cadence, never inside a discovery sweep.

One pass (every ``discovery_interval``, at the lowest API priority, so discovery sweeps keep their pace; the
first one once discovery has completed a sweep, since accounting lists only the workgroups discovery watches):

1. **Active sessions** of budgeted workgroups (as discovery knows them): GetSession for fresh statistics; the
   DPU-milliseconds since the last counted observation are spread over the budgets' buckets
   (:func:`supervisor.core.budgets.allocation`) and the burn rate is taken from the same difference.
2. **Sessions that vanished** from the active listings since they were last counted (ended between two
   looks, or while the daemon was down): GetSession once for their final statistics.
3. **Sessions that started and ended unseen**: ListSessions with StateFilter TERMINATED and FAILED per
   budgeted workgroup, newest first, paging stops at sessions started before the last checkpoint; those not
   yet counted as ended get one GetSession.

Each pass ends with a :class:`Spend` handed to the budgets activity. The ``budgets`` and ``explain`` commands
run one pass of this same code against a scratch copy of the storage, so they agree with the daemon by
construction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import anyio
import anyio.abc
import structlog

from supervisor import athena
from supervisor.clock import Clock
from supervisor.config import Settings
from supervisor.core.accrual import accrual_rate, accrued_since, cost_usd
from supervisor.core.budgets import Allocation, Counted, accounting_horizon, allocation
from supervisor.core.inventory import Inventory
from supervisor.core.model import ENDED_SESSION_STATES, SessionSnapshot
from supervisor.gateway import AwsCallError, Gateway, Priority
from supervisor.metrics import Metrics
from supervisor.storage import Storage

# ListSessions of ended sessions looks this far before the checkpoint (clock skew between AWS and us).
CHECKPOINT_MARGIN = timedelta(minutes=1)
CONCURRENT_READS = 16


@dataclass(frozen=True, slots=True)
class Spend:
    """What one pass learned: when, and the DPUs accruing now per session (session id → (workgroup, DPUs))."""

    at: datetime
    rates: Mapping[str, tuple[str, float]] = field(default_factory=dict)

    def dpus(self, matches: Callable[[str], bool]) -> float:
        """DPUs accruing now in the workgroups ``matches`` accepts."""
        return sum(rate for workgroup, rate in self.rates.values() if matches(workgroup))


class Accounting:
    """Spend of the budgeted workgroups, one pass every ``discovery_interval``.

    Args:
        watched: the workgroups discovery watches (the budgeted ones among them are accounted).
        discovered: awaited once before the first pass of :meth:`run`; returns when discovery knows the
            watched workgroups and their active sessions (``Discovery.first_sweep``). None: start at once
            (the ``budgets`` command passes the workgroups it listed itself).
    """

    def __init__(
        self,
        *,
        settings: Settings,
        gateway: Gateway,
        storage: Storage,
        clock: Clock,
        inventory: Inventory,
        watched: Callable[[], Sequence[str]],
        metrics: Metrics,
        discovered: Callable[[], Awaitable[None]] | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.settings = settings
        self.gateway = gateway
        self.storage = storage
        self.clock = clock
        self.inventory = inventory
        self._watched = watched
        self._discovered = discovered
        self.metrics = metrics
        self._log = logger or structlog.get_logger("supervisor.accounting")
        self.price = settings.pricing.price_for(settings.aws.region)
        self.passes = 0
        self.latest: Spend | None = None
        self._passed = anyio.Event()
        self._reads = anyio.CapacityLimiter(CONCURRENT_READS)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self._discovered is not None:
            # Before that, no workgroup is known: a pass would list nothing and move the checkpoint past
            # sessions that ended while the daemon was down (or, on a fresh install, earlier in the period).
            await self._discovered()
        while True:
            started = self.clock.now()
            try:
                await self.pass_once()
            except Exception as error:
                self._log.exception("accounting.failed", error=repr(error))
            await self.clock.sleep_until(started + self.settings.discovery_interval)

    async def next_spend(self) -> Spend:
        """Wait for the next pass to end; its spend."""
        await self._passed.wait()
        assert self.latest is not None
        return self.latest

    def apply(self, settings: Settings) -> None:
        """Take reloaded settings (budgets, price, pace) from the next pass on."""
        self.settings = settings
        self.price = settings.pricing.price_for(settings.aws.region)

    async def pass_once(self) -> Spend:
        """Count what the budgeted workgroups spent since the last pass."""
        started = self.clock.now()
        if not self.settings.budgets:  # all removed by a reload: nothing to count
            return self._passed_with(Spend(started))
        budgeted = [workgroup for workgroup in self._watched() if self.settings.budgets_for(workgroup)]
        checkpoint = await self.storage.checkpoint()
        if checkpoint is None:  # first run: count what ended in the current periods
            checkpoint = min(accounting_horizon(budget, started) for budget in self.settings.budgets)
        active = {
            s.session_id: s for s in self.inventory.sessions.values() if s.is_active and s.workgroup in budgeted
        }
        open_rows = await self.storage.open_sessions()
        final: dict[str, str] = {sid: row.workgroup for sid, row in open_rows.items() if sid not in active}
        try:
            ended = await self._list_ended(budgeted, checkpoint - CHECKPOINT_MARGIN)
        except AwsCallError as error:  # the checkpoint stays: the next pass lists from it again
            self._log.error("budget.listing_failed", operation=error.operation, error=error.code,
                            message=error.message)
            ended = []
            started = checkpoint
        known = await self.storage.counted(s.session_id for s in ended)
        for session in ended:
            row = known.get(session.session_id)
            if (row is None or not row.ended) and session.session_id not in active:
                final[session.session_id] = session.workgroup
        rates: dict[str, tuple[str, float]] = {}
        async with anyio.create_task_group() as task_group:
            for session in active.values():
                task_group.start_soon(self._observe, session.session_id, session.workgroup, rates)
            for session_id, workgroup in final.items():
                task_group.start_soon(self._observe, session_id, workgroup, rates)
        if budgeted:  # with none known (discovery's listing of workgroups failed so far), nothing was listed
            await self.storage.set_checkpoint(started)
        return self._passed_with(Spend(self.clock.now(), rates))

    def _passed_with(self, spend: Spend) -> Spend:
        self.passes += 1
        self.latest = spend
        passed, self._passed = self._passed, anyio.Event()
        passed.set()
        return spend

    async def _list_ended(self, workgroups: Sequence[str], since: datetime) -> list[SessionSnapshot]:
        found: list[SessionSnapshot] = []

        async def list_one(workgroup: str, state: str) -> None:
            async with self._reads:
                async for page in self.gateway.paginate(
                    "ListSessions", {"WorkGroup": workgroup, "StateFilter": state, "MaxResults": athena.PAGE_SIZE},
                    result_key="Sessions", priority=Priority.ACCOUNT,
                ):
                    now = self.clock.now()
                    sessions = athena.parse_items(page, athena.session_parser(workgroup, now), "ListSessions",
                                                  self._malformed)
                    found.extend(s for s in sessions if s.ended_at is None or s.ended_at >= since)
                    if all(s.started_at is not None and s.started_at < since for s in sessions):
                        break

        async with anyio.create_task_group() as task_group:
            for workgroup in workgroups:
                for state in ("TERMINATED", "FAILED"):
                    task_group.start_soon(list_one, workgroup, state)
        return found

    def _malformed(self, operation: str, error: Exception) -> None:
        self.metrics.malformed_items.labels(operation).inc()
        self._log.warning("accounting.malformed_item", operation=operation, error=str(error))

    async def _observe(self, session_id: str, workgroup: str, rates: dict[str, tuple[str, float]]) -> None:
        """GetSession and count what it adds."""
        try:
            async with self._reads:
                session = await athena.get_session(self.gateway, session_id, workgroup, self.clock,
                                                   priority=Priority.ACCOUNT, statistics=True)
        except AwsCallError as error:
            if error.is_not_found:
                await self.storage.mark_ended(session_id, workgroup, self.clock.now())
            else:
                self._log.warning("budget.observe_failed", session_id=session_id, operation=error.operation,
                                  error=error.code, message=error.message)
            return
        ended = session.state in ENDED_SESSION_STATES
        if session.dpu_millis is None:
            if ended:
                await self.storage.mark_ended(session_id, workgroup, session.observed_at)
            return
        now = self.clock.now()

        def allocate(delta: int, previous: Counted | None) -> Allocation:
            start = previous.observed_at if previous else (session.started_at or session.observed_at)
            end = session.ended_at if ended and session.ended_at else session.observed_at
            budgets = self.settings.budgets_for(session.workgroup)
            return allocation(budgets, cost_usd(delta, self.price), start, end, now)

        delta, previous = await self.storage.count(session_id, workgroup, session.dpu_millis, session.observed_at,
                                                   allocate, ended=ended)
        if delta:
            self.metrics.estimated_cost.labels(workgroup).inc(cost_usd(delta, self.price))
        if not ended:
            rates[session_id] = (workgroup, dpus_now(session, previous))


def dpus_now(session: SessionSnapshot, previous: Counted | None) -> float:
    """DPUs accruing now: from the counted observation before this one, else the average since start."""
    assert session.dpu_millis is not None
    if previous is None:
        return accrual_rate(session.dpu_millis, session.observed_at, None, session.started_at) or 0.0
    if accrued_since(session.dpu_millis, previous.millis) == 0:
        return 0.0
    return accrual_rate(session.dpu_millis, session.observed_at, (previous.millis, previous.observed_at),
                        session.started_at) or 0.0
