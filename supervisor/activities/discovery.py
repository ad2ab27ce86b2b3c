"""Discovery: sweep the watched workgroups, reconcile what is known, hand every target to checks.

A sweep: ListWorkGroups (and each watched workgroup's tags, every ``discovery.workgroup_refresh``, default a
minute, or every sweep when sweeps are further apart), then ListSessions per watched workgroup (one listing
per state), then, as soon as a workgroup is listed, ListCalculationExecutions for each of its sessions that
may have live calculations (every active state but IDLE) whose policy or budget judges calculations. Only
``PySpark engine version 3`` sessions have calculations: the calculations of a Spark Connect session
(``Apache Spark version 3.5``, its ``EngineVersion``, else its workgroup's) are never listed. Sweeps repeat
every ``discovery_interval`` (back to back when a sweep takes longer).

With event-fed discovery (``discovery.events``, docs/events.md) the feed hands each Athena API-call event to
:meth:`Discovery.on_event`: a new session or calculation is looked at (a Get at discovery priority) and handed
to checks at once, a workgroup change has the workgroups read again (and a newly watched one listed). Full
sweeps are then the backstop, every ``discovery.backstop_interval``; a session or calculation a sweep finds
that an event should have announced is counted (``discovery_missed_events_total``).

Discovery never dies: a failing listing (one workgroup, one session, one page) is logged with its operation
and counted; what it would have told stays as last known, the rest of the sweep goes on, and the next sweep
retries. A deleted workgroup is dropped from the watch list; a disabled one once its known sessions have
ended. A malformed item is skipped, logged and counted. Meanwhile enforcement of known targets goes on.

With a ``sweep_slot`` (a shard of a multi-account config), sweeps follow the shard's own slot of the interval
(:func:`~supervisor.core.fleet.next_slot`) instead of the instant the shard started: every shard of a replica
starts at once, and sweeping them all at the same moments (a burst of every shard's listings, every interval)
delays the looks that act, on a busy replica by seconds. A shard that resumed a saved watch list (a restart, a
takeover) knows its targets and their deadlines, so its first sweep waits for its slot too: a replica that takes
over many shards at once sweeps them one after the other over the interval, not all at the instant it needs
its CPU for their overdue looks.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Literal

import anyio
import anyio.abc
import structlog

from supervisor import athena
from supervisor.clock import Clock
from supervisor.config import Settings
from supervisor.core.cloudtrail import AthenaEvent, EventKind
from supervisor.core.fleet import next_slot
from supervisor.core.inventory import Inventory
from supervisor.core.model import (
    ACTIVE_SESSION_STATES,
    CalculationSnapshot,
    MalformedItem,
    SessionSnapshot,
    SessionState,
    TargetKey,
    TargetKind,
    WorkgroupSnapshot,
    runs_calculations,
)
from supervisor.core.policy import Policy, has_limits, match_policy, workgroup_in_scope
from supervisor.gateway import AwsCallError, Gateway, Priority
from supervisor.metrics import Metrics

from .checks import Checks
from .event_path import EventPath

# While exemption tags cannot be read, the workgroups are read again after a backoff doubling up to this.
ACCOUNT_RETRY_MAX = timedelta(minutes=1)
# While the account id (needed to read exemption tags) cannot be learned, it is asked again after a backoff.
ACCOUNT_RETRY_INITIAL = timedelta(seconds=1)
CONCURRENT_LISTINGS = 8
# Sessions are listed by state (ListSessions has one StateFilter). IDLE and BUSY, where sessions spend their
# lives and calculations run, are listed every sweep; the transient or rare states (CREATING, CREATED,
# DEGRADED) every RARE_STATES_EVERY sweeps, which saves three calls per workgroup on most sweeps. A session
# known in a rare state is kept between those listings; any action on it is confirmed by a fresh Get first.
EVERY_SWEEP_STATES = frozenset({SessionState.IDLE, SessionState.BUSY})
RARE_STATES_EVERY = 5
# Sessions whose calculations are listed: every active state but IDLE. A session still CREATING or CREATED accepts
# calculations, which wait QUEUED (max_queued) until it is ready; a DEGRADED one runs its calculations on.
CALCULATING_SESSION_STATES = ACTIVE_SESSION_STATES - {SessionState.IDLE}
EventOutcome = Literal["applied", "known", "unwatched", "unknown_event"]
SKIP_REASONS = ("out_of_scope", "not_spark", "exempt_workgroup", "tags_unknown", "disabled")


class Discovery:
    def __init__(
        self,
        *,
        settings: Settings,
        gateway: Gateway,
        clock: Clock,
        inventory: Inventory,
        checks: Checks,
        policies: Iterable[Policy],
        metrics: Metrics,
        event_path: EventPath | None = None,
        sweep_slot: str | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.settings = settings
        self.event_path = event_path
        self.sweep_slot = sweep_slot
        self.gateway = gateway
        self.clock = clock
        self.inventory = inventory
        self.checks = checks
        self.policies = tuple(policies)
        self.metrics = metrics
        self._log = logger or structlog.get_logger("supervisor.discovery")
        self.account_id = settings.aws.account_id
        self.account_problem: str | None = None
        self.sweeps = 0
        self.last_discovery_at: datetime | None = None
        self.last_sweep_duration = timedelta(0)
        # What failed, by listing: in the last complete sweep and so far in the running one (a listing that keeps
        # failing stays reported while the next sweep retries it; a healed one is gone once a sweep completes).
        self.problems: dict[str, str] = {}
        self._sweep_problems: dict[str, str] = {}
        self._refresh_at: datetime | None = None
        self._reread_until = datetime.min.replace(tzinfo=UTC)
        self._account_backoff = ACCOUNT_RETRY_INITIAL
        self._listings = anyio.CapacityLimiter(CONCURRENT_LISTINGS)
        self._swept = anyio.Event()
        self._inapplicable: set[tuple[str, str]] = set()  # (workgroup, kind) reported
        self._wakeup = anyio.Event()
        # One workgroup refresh at a time: a sweep's and those workgroup events ask for.
        self._refreshing = anyio.Lock()

    @property
    def interval(self) -> timedelta:
        """How often full sweeps run: ``discovery_interval``; with events, ``discovery.backstop_interval``."""
        if self.event_path is not None:
            return self.settings.discovery.backstop_interval
        return self.settings.discovery_interval

    def apply(self, settings: Settings, policies: Iterable[Policy]) -> None:
        """Take reloaded settings. A new scope (``workgroups``, ``safety.exempt_tag``) or workgroup refresh has the
        workgroups re-read by a sweep at once; a new ``discovery_interval`` paces the next sweeps."""
        previous = self.settings
        self.settings = settings
        self.policies = tuple(policies)
        if (settings.workgroups, settings.safety.exempt_tag, settings.discovery) != (
                previous.workgroups, previous.safety.exempt_tag, previous.discovery):
            self._refresh_at = None
            self._wakeup.set()

    # -- running ------------------------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self.sweep_slot is not None and self.checks.resumed_targets:
            first = self._next_sweep_at(self.clock.now())
            self._log.info("discovery.first_sweep_in_slot", at=first.isoformat(), resumed=self.checks.resumed_targets)
            await self.clock.sleep_until(first, self._wakeup)
        while True:
            started = self.clock.now()
            self._wakeup = anyio.Event()
            self.metrics.discovery_interval.set(self.interval.total_seconds())
            try:
                await self.sweep()
            except Exception as error:  # an odd answer never stops discovery
                self.problems["sweep"] = repr(error)
                self._log.exception("discovery.sweep_failed", error=repr(error))
            await self.clock.sleep_until(self._next_sweep_at(started), self._wakeup)

    def _next_sweep_at(self, started: datetime) -> datetime:
        """When the sweep after one started at ``started`` is due: an interval later, or (with a slot) at the
        shard's next slot, never later than an interval."""
        interval = self.interval
        if self.sweep_slot is None:
            return started + interval
        return next_slot(started, interval, self.sweep_slot)

    async def first_sweep(self) -> None:
        """Return once a sweep has completed: the watched workgroups and their active sessions are known."""
        await self._swept.wait()

    def readiness(self) -> str | None:
        """Why discovery is not ready (no recent complete sweep, or a part of it failing), or None."""
        if self.last_discovery_at is None:
            return "no discovery sweep has completed yet" + (f"; {self._problem_text()}" if self.problems else "")
        stale_after = max(self.interval * 3, self.last_sweep_duration * 2, timedelta(seconds=30))
        age = self.clock.now() - self.last_discovery_at
        if age > stale_after:
            return f"last discovery sweep finished {age.total_seconds():.0f}s ago"
        if self.account_problem:
            return self.account_problem
        unreadable = sorted(name for name, reason in self._skipped(self.inventory.workgroups).items()
                            if reason == "tags_unknown")
        if unreadable:
            return f"degraded: exemption tags of {', '.join(unreadable[:3])} cannot be read; not enforced"
        if self.problems:
            return f"degraded: {self._problem_text()}"
        return None

    def _problem_text(self) -> str:
        first = sorted(self.problems.items())[:3]
        more = len(self.problems) - len(first)
        return "; ".join(f"{where}: {what}" for where, what in first) + (f" (+{more} more)" if more > 0 else "")

    def _failed(self, where: str, error: AwsCallError) -> None:
        self.problems[where] = self._sweep_problems[where] = f"{error.operation} {error.code}"
        self.metrics.listing_failures.labels(error.operation).inc()
        self._log.error("discovery.listing_failed", where=where, operation=error.operation, error=error.code,
                        message=error.message)

    def _malformed(self, operation: str, error: MalformedItem) -> None:
        self.metrics.malformed_items.labels(operation).inc()
        self._log.warning("discovery.malformed_item", operation=operation, shape=error.shape, missing=error.field)

    # -- a sweep --------------------------------------------------------------------------------------------

    async def sweep(self) -> None:
        """One look at every watched workgroup, session and live calculation. Never raises an AWS error."""
        started = self.clock.now()
        self._sweep_problems = {}
        if self._refresh_at is None or started >= self._refresh_at or started < self._reread_until:
            await self._refresh_workgroups(started)
        watched = self.watched()
        states = ACTIVE_SESSION_STATES if self.sweeps % RARE_STATES_EVERY == 0 else EVERY_SWEEP_STATES
        known: dict[str, list[str]] = {}
        for session_id, session in self.inventory.sessions.items():
            known.setdefault(session.workgroup, []).append(session_id)

        async with anyio.create_task_group() as task_group:
            for workgroup in watched:
                task_group.start_soon(self._list_workgroup, workgroup, states, known.get(workgroup, ()))
        still_watched = set(self.watched())
        for session_id in [sid for sid, s in self.inventory.sessions.items() if s.workgroup not in still_watched]:
            self.checks.forget_target(TargetKey.session(session_id))
        self._update_gauges(self.watched())
        finished = self.clock.now()
        self.sweeps += 1
        self.inventory.listed = True
        self.last_discovery_at = finished
        self.last_sweep_duration = finished - started
        self.metrics.last_discovery.set(finished.timestamp())
        self.problems = self._sweep_problems
        self._swept.set()
        self._log.debug("discovery.sweep", workgroups=len(watched), sessions=len(self.inventory.sessions),
                        calculations=len(self.inventory.calculations), failures=len(self.problems),
                        seconds=self.last_sweep_duration.total_seconds())

    async def _list_workgroup(self, workgroup: str, states: Collection[SessionState], known: Iterable[str]) -> None:
        """List one workgroup's sessions in ``states``, reconcile them with the ``known`` ones, and list the
        calculations of those that may have some."""
        async with self._listings:
            listed_at = self.clock.now()
            try:
                sessions = await athena.list_sessions(
                    self.gateway, workgroup, self.clock, sorted(states), on_malformed=self._malformed)
            except AwsCallError as error:
                if error.is_not_found:
                    self._drop_workgroup(workgroup, "deleted")
                else:
                    self._failed(f"workgroup {workgroup}", error)
                return
        # Reconciled, and its calculations listed, as soon as it is listed: a workgroup whose listing is slow
        # or failing (retries take seconds) never holds up the others.
        busy = self._reconcile_sessions(sessions, known, states, listed_at)
        await self._list_calculations(busy)

    def watched(self) -> list[str]:
        exempt_tag = self.settings.safety.exempt_tag
        return sorted(
            wg.name for wg in self.inventory.workgroups.values()
            if workgroup_in_scope(wg, self.settings.workgroups, exempt_tag) is None and self._still_watched(wg)
        )

    def _still_watched(self, workgroup: WorkgroupSnapshot) -> bool:
        """A disabled workgroup starts nothing new: it is watched only while it has known active sessions."""
        return workgroup.enabled or any(
            s.workgroup == workgroup.name and s.is_active for s in self.inventory.sessions.values())

    async def _list_calculations(self, busy: list[SessionSnapshot]) -> None:
        pending = iter(busy)

        async def worker() -> None:
            # A few workers share one iterator rather than a task per BUSY session: 10,000 waiting tasks
            # cost ~25 MiB and their scheduling shows in the profile.
            for session in pending:
                try:
                    async with self._listings:
                        listed_at = self.clock.now()
                        live = await athena.list_calculations(self.gateway, session, self.clock,
                                                              on_malformed=self._malformed)
                except AwsCallError as error:
                    if not error.is_not_found:
                        self._failed(f"session {session.session_id}", error)
                        continue  # its calculations stay as last known
                    live = []
                if session.session_id in self.inventory.sessions:  # not forgotten while we listed
                    self._reconcile_calculations(session, live, listed_at)

        async with anyio.create_task_group() as task_group:
            for _ in range(min(CONCURRENT_LISTINGS, len(busy))):
                task_group.start_soon(worker)

    # -- events ---------------------------------------------------------------------------------------------

    async def on_event(self, event: AthenaEvent) -> EventOutcome:
        """Act on one Athena API call of this shard; the outcome, as ``events_received_total`` counts it:
        ``applied`` (a look or a workgroup refresh was made), ``known`` (nothing new), ``unwatched`` (not
        supervised here), ``unknown_event``.

        Raises:
            AwsCallError: a look it needed failed (the event is then delivered again).
        """
        match event.kind:
            case EventKind.SESSION_STARTED:
                return await self._session_started(event.session_id, event.workgroup)
            case EventKind.CALCULATION_STARTED:
                return await self._calculation_started(event.calculation_id, event.session_id)
            case EventKind.CALCULATION_STOPPED:
                return self._ending(TargetKey.calculation(event.calculation_id))
            case EventKind.SESSION_TERMINATED:
                return self._ending(TargetKey.session(event.session_id))
            case EventKind.WORKGROUP_CHANGED | EventKind.WORKGROUP_DELETED:
                return await self._workgroup_changed(event.workgroup)
        return "unknown_event"

    async def _session_started(self, session_id: str, workgroup: str) -> EventOutcome:
        if session_id in self.inventory.sessions:
            return "known"
        await self._know_workgroup(workgroup)
        if workgroup not in self.watched():
            return "unwatched"
        # GetSession, not GetSessionStatus: the description (exemption marker) and the engine.
        session = await athena.get_session(self.gateway, session_id, workgroup, self.clock,
                                           priority=Priority.ANNOUNCED, statistics=True)
        if self.inventory.put_session(session) is not None:
            return "known"  # a sweep or a look got there first
        if not session.is_exempt:
            self._judge(TargetKey.session(session_id), session.raw_state, known=session.state is not None)
        return "applied"

    async def _calculation_started(self, calculation_id: str, session_id: str) -> EventOutcome:
        if calculation_id in self.inventory.calculations:
            return "known"
        session = self.inventory.sessions.get(session_id)
        if session is None:  # its StartSession event is late, lost, or in an unwatched workgroup
            session = await athena.get_session(self.gateway, session_id, "", self.clock, priority=Priority.ANNOUNCED,
                                               statistics=True)
            await self._know_workgroup(session.workgroup)
            if session.workgroup not in self.watched():
                return "unwatched"
            self.inventory.put_session(session)
        if session.is_exempt or session.workgroup not in self.watched() or not self._judges_calculations(session):
            return "unwatched"
        calculation = await athena.get_calculation(self.gateway, calculation_id, session_id, session.workgroup,
                                                   self.clock, priority=Priority.ANNOUNCED)
        if self.inventory.put_calculation(calculation) is not None:
            return "known"
        self._judge(TargetKey.calculation(calculation_id), calculation.raw_state,
                    known=calculation.state is not None)
        return "applied"

    async def _know_workgroup(self, workgroup: str) -> None:
        """Read the workgroups again if ``workgroup`` is not among them: created moments ago (its own event may
        still be on the way, or lost), or not read yet at all (a shard taken over, whose first sweep waits for
        its slot, knows its targets from the saved watch list but no workgroup).

        Raises:
            AwsCallError: the workgroups could not be listed (the event is then delivered again, not dropped).
        """
        if workgroup not in self.inventory.workgroups:
            error = await self._refresh_workgroups(self.clock.now())
            if error is not None:
                raise error

    def _ending(self, key: TargetKey) -> EventOutcome:
        """A Stop or Terminate was asked (by us, or by its owner): a known target is looked at soon, so that
        its end is seen without waiting for a sweep."""
        known = (self.inventory.calculations if key.kind is TargetKind.CALCULATION else self.inventory.sessions)
        if key.target_id not in known:
            return "unwatched"
        return "applied" if self.checks.look_soon(key) else "known"

    async def _workgroup_changed(self, workgroup: str) -> EventOutcome:
        """Created, updated (enabled, disabled, engine), tagged or deleted: the workgroups are read again at once;
        one that is watched now and was not has its sessions listed at once."""
        before = set(self.watched())
        await self._refresh_workgroups(self.clock.now())
        if workgroup in self.watched() and workgroup not in before:
            known = [sid for sid, session in self.inventory.sessions.items() if session.workgroup == workgroup]
            await self._list_workgroup(workgroup, ACTIVE_SESSION_STATES, known)
            self._update_gauges(self.watched())
            return "applied"
        return "applied" if workgroup in before or workgroup in self.watched() else "unwatched"

    # -- workgroups -------------------------------------------------------------------------------------------

    async def _refresh_workgroups(self, now: datetime) -> AwsCallError | None:
        """Read the workgroups again; the error if they could not be listed (reported, and asked again by the
        next sweep)."""
        async with self._refreshing:
            return await self._read_workgroups(now)

    async def _read_workgroups(self, now: datetime) -> AwsCallError | None:
        try:
            summaries = await athena.list_workgroups(self.gateway)
        except AwsCallError as error:
            self._failed("workgroups", error)
            self._refresh_at = None  # the next sweep asks again
            return error
        exempt_tag = self.settings.safety.exempt_tag
        if exempt_tag:
            await self._learn_account_id()
        fresh: dict[str, WorkgroupSnapshot] = {}
        for summary in summaries:
            name = summary.get("Name")
            if not isinstance(name, str) or not name:
                self._malformed("ListWorkGroups", MalformedItem("workgroup", "Name"))
                continue
            snapshot = athena.workgroup_snapshot(summary, {})
            if exempt_tag and workgroup_in_scope(snapshot, self.settings.workgroups, None) is None:
                snapshot = athena.workgroup_snapshot(summary, await self._tags(name))
            fresh[name] = snapshot
        for name in set(self.inventory.workgroups) - set(fresh):
            self._drop_workgroup(name, "deleted")
        self.inventory.workgroups = fresh
        retry_soon = self.account_problem is not None or any(wg.tags is None for wg in fresh.values())
        self._refresh_at = now + (self._account_backoff if retry_soon else self.settings.discovery.workgroup_refresh)
        if retry_soon:
            self._account_backoff = min(self._account_backoff * 2, ACCOUNT_RETRY_MAX)
        else:
            self._account_backoff = ACCOUNT_RETRY_INITIAL
        skipped = self._skipped(fresh)
        for reason in SKIP_REASONS:
            self.metrics.skipped_workgroups.labels(reason).set(sum(1 for r in skipped.values() if r == reason))
        self._log.info("discovery.workgroups", watched=self.watched(), skipped=skipped)
        self._report_inapplicable()
        return None

    def _report_inapplicable(self) -> None:
        """Report, once per watched workgroup, limits its engine makes inapplicable: its policy's calculation limits,
        and budgets' stop_calculations thresholds, where sessions have no calculations (Apache Spark version 3.5).
        Logged once (``policy.calculation_limits_inapplicable``, ``budget.stop_calculations_inapplicable``) and
        shown while it lasts by ``inapplicable_limits``."""
        found: set[tuple[str, str]] = set()
        for name in self.watched():
            engine = self.inventory.workgroups[name].engine
            if not engine or runs_calculations(engine):
                continue
            policy = match_policy(self.policies, name, engine)
            if policy is not None and has_limits(policy.calculation):
                found.add((name, "calculation_limits"))
                if (name, "calculation_limits") not in self._inapplicable:
                    self._log.warning("policy.calculation_limits_inapplicable", workgroup=name, engine=engine,
                                      policy=policy.name, reason="sessions of this engine have no calculations")
            budgets = [budget.name for budget in self.settings.budgets_for(name)
                       if any(threshold.action == "stop_calculations" for threshold in budget.thresholds)]
            if budgets:
                found.add((name, "budget_stop_calculations"))
                if (name, "budget_stop_calculations") not in self._inapplicable:
                    self._log.warning("budget.stop_calculations_inapplicable", workgroup=name, engine=engine,
                                      budgets=budgets, reason="sessions of this engine have no calculations: "
                                      "stop_calculations stops nothing here")
        for workgroup, kind in found - self._inapplicable:
            self.metrics.inapplicable_limits.labels(workgroup, kind).set(1)
        for workgroup, kind in self._inapplicable - found:
            self.metrics.inapplicable_limits.labels(workgroup, kind).set(0)
        self._inapplicable = found

    def skipped(self) -> dict[str, str]:
        """The workgroups seen but not watched, each with the reason (``SKIP_REASONS``)."""
        return self._skipped(self.inventory.workgroups)

    def _skipped(self, workgroups: Mapping[str, WorkgroupSnapshot]) -> dict[str, str]:
        exempt_tag = self.settings.safety.exempt_tag
        skipped = {name: reason for name, wg in workgroups.items()
                   if (reason := workgroup_in_scope(wg, self.settings.workgroups, exempt_tag))}
        watched = set(self.watched())
        skipped.update({name: "disabled" for name in workgroups if name not in skipped and name not in watched})
        return skipped

    async def _learn_account_id(self) -> None:
        """The account id names workgroup ARNs (for their tags); learned once from STS unless configured."""
        if self.account_id is not None:
            return
        try:
            identity = await self.gateway.call("GetCallerIdentity", {}, priority=Priority.DISCOVER, service="sts")
            self.account_id = str(identity["Account"])
            self.account_problem = None
        except (AwsCallError, KeyError) as error:
            code = error.code if isinstance(error, AwsCallError) else "no Account in the answer"
            self.account_problem = (f"account id unknown (sts:GetCallerIdentity: {code}); workgroups with "
                                    f"unreadable exemption tags are not enforced; set aws.account_id")
            self._log.error("discovery.account_id_unknown", error=code, retry_in=self._account_backoff.total_seconds())

    async def _tags(self, workgroup: str) -> Mapping[str, str] | None:
        """The workgroup's tags; the last known ones if they cannot be read now; None if never read."""
        known = self.inventory.workgroups.get(workgroup)
        if self.account_id is None:
            return known.tags if known else None
        arn = athena.workgroup_arn(self.gateway.region, self.account_id, workgroup)
        try:
            return await athena.workgroup_tags(self.gateway, arn)
        except AwsCallError as error:
            self._failed(f"tags of {workgroup}", error)
            return known.tags if known else None

    def _drop_workgroup(self, workgroup: str, reason: str) -> None:
        if self.inventory.workgroups.pop(workgroup, None) is None:
            return
        self._log.warning("discovery.workgroup_dropped", workgroup=workgroup, reason=reason)
        # A workgroup deleted and created again (same name, a deploy) is found at the next sweep, not the next
        # re-read: the workgroups are re-read every sweep for a while after a drop.
        self._reread_until = self.clock.now() + self.settings.discovery.workgroup_refresh
        for session_id in [sid for sid, s in self.inventory.sessions.items() if s.workgroup == workgroup]:
            self.checks.forget_target(TargetKey.session(session_id))

    # -- reconciling ----------------------------------------------------------------------------------------

    def _reconcile_sessions(
        self, listed: list[SessionSnapshot], known: Iterable[str], states: Collection[SessionState],
        listed_at: datetime,
    ) -> list[SessionSnapshot]:
        """Store the sessions one workgroup listed; forget the ``known`` ones of that workgroup it no longer
        lists; return the sessions to list calculations of.

        A session missing from a sweep that listed only IDLE and BUSY may have become DEGRADED (a rare state,
        listed every RARE_STATES_EVERY sweeps; its calculations run on): it is kept, with its deadlines, until a
        sweep that lists every active state, unless a fresh look showed it ended. Sessions of a workgroup whose
        listing failed stay as last known, and so do those learned (an event, a fresh look) after the listing
        was asked for."""
        seen = {session.session_id for session in listed}
        every_state = set(states) >= ACTIVE_SESSION_STATES
        for session_id in known:
            session = self.inventory.sessions.get(session_id)
            if (session is not None and session_id not in seen and (every_state or not session.is_active)
                    and session.observed_at < listed_at):
                self.checks.forget_target(TargetKey.session(session_id))
        busy: list[SessionSnapshot] = []
        for session in listed:
            if self.inventory.put_session(session) is None:
                self._note_if_missed(TargetKey.session(session.session_id), session.started_at)
            if session.is_exempt or not self._judge(TargetKey.session(session.session_id), session.raw_state,
                                                    known=session.state is not None):
                continue
            if session.state in CALCULATING_SESSION_STATES and self._judges_calculations(session):
                busy.append(session)
            else:
                for calculation_id in list(self.inventory.calculations_by_session.get(session.session_id, ())):
                    self.checks.forget_target(TargetKey.calculation(calculation_id))
        return busy

    def _judges_calculations(self, session: SessionSnapshot) -> bool:
        """Only sessions with calculations (of an engine that has the calculation API) whose policy has calculation
        limits, or whose budget may stop calculations, need their calculations listed."""
        engine = self.inventory.engine_of(session)
        if not runs_calculations(engine):
            return False
        policy = match_policy(self.policies, session.workgroup, engine)
        if policy is not None and policy.calculation is not None:
            return True
        return any(
            threshold.action == "stop_calculations"
            for budget in self.settings.budgets_for(session.workgroup) for threshold in budget.thresholds
        )

    def _reconcile_calculations(self, session: SessionSnapshot, live: Iterable[CalculationSnapshot],
                                listed_at: datetime) -> None:
        live = list(live)
        live_ids = {calculation.calculation_id for calculation in live}
        for calculation_id in list(self.inventory.calculations_by_session.get(session.session_id, ())):
            known = self.inventory.calculations.get(calculation_id)
            if calculation_id not in live_ids and (known is None or known.observed_at < listed_at):
                self.checks.forget_target(TargetKey.calculation(calculation_id))
        for calculation in live:
            if self.inventory.put_calculation(calculation) is None:
                self._note_if_missed(TargetKey.calculation(calculation.calculation_id), calculation.submitted_at)
            self._judge(TargetKey.calculation(calculation.calculation_id), calculation.raw_state,
                        known=calculation.state is not None)

    def _note_if_missed(self, key: TargetKey, started_at: datetime | None) -> None:
        """A sweep found a target it did not know: with events on, count it if its start event should have come."""
        if self.event_path is None or not self.event_path.should_have_announced(started_at, self.clock.now()):
            return
        self.metrics.missed_events.labels(key.kind.value).inc()
        self._log.warning("discovery.missed_event", target_kind=key.kind.value, target_id=key.target_id,
                          started_at=started_at.isoformat() if started_at else None)

    def _judge(self, key: TargetKey, raw_state: str, *, known: bool) -> bool:
        """Hand a listed target to checks; False (and reported once) when its state is unknown."""
        self.checks.listed(key, raw_state)
        if not known:
            self.checks.report_unknown_state(key, raw_state)
            return False
        self.checks.consider(key, fresh=False)
        return True

    def _update_gauges(self, watched: list[str]) -> None:
        sessions, calculations = self.inventory.counts_by_workgroup()
        for workgroup in watched:
            self.metrics.active_sessions.labels(workgroup).set(sessions.get(workgroup, 0))
            self.metrics.active_calculations.labels(workgroup).set(calculations.get(workgroup, 0))
