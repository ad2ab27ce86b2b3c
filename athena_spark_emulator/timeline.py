"""Lazy lifecycle: derive every state, timestamp and statistic from stored facts and a time ``t``.

No timers run. :func:`plan_session` turns a session's facts (start, pragmas, submissions, stop and
terminate requests) into a time-independent plan; :func:`session_view` and :func:`calculation_view` read
that plan at a given instant. A plan only depends on facts that already happened, so reading it at any
``t >= now`` is consistent with every answer given before.

Rules (see docs/emulator.md):
- the session is CREATING for ``start`` seconds, CREATED for ``created_for`` (default 0, ``forever``
  possible), then IDLE, BUSY while a calculation is pending (submitted and not yet terminal), back to
  IDLE; after ``SessionIdleTimeoutInMinutes`` of continuous IDLE it is TERMINATED;
- ``degraded_after``: DEGRADED from that instant (not before CREATED) until it ends; its calculations run
  on as planned, it accepts no new ones and no longer times out (the idle timer needs IDLE);
- ``fail_after``: FAILED at that instant unless it ended before; calculations still pending then are
  FAILED at that instant and queued ones never start (as when a termination completes);
- a calculation is CREATING for ``creating``, CREATED for ``created``, then QUEUED until it runs;
  calculations run one at a time in submission order: run start = max(submission + creating + created +
  queue, session ready, previous run's end); a calculation whose stop (honored) arrives before it starts
  never runs;
- TerminateSession at ``T``: TERMINATING from ``T``; with ``on_terminate=honor`` TERMINATED at
  ``T + terminate_latency`` (``stuck``: never). Queued calculations never start after ``T``; calculations
  still pending when the session ends are FAILED at that instant.
- Spark Connect jobs (``busy``, ``every``, ``dpus``, ``busy_after``: Apache Spark version 3.5 sessions, which
  have no calculations) keep the session BUSY like a calculation would: the first starts at
  ``max(ready, StartSession + busy_after)``, the next ones every ``every`` (longer than ``busy``, so jobs never
  overlap); none starts at or after the terminate request or the session's end, and a running one stops at
  the session's end (it runs on through a stuck termination).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from athena_spark_emulator.records import CalculationRecord, SessionRecord

INF = math.inf
REASON_TERMINATED = "Session was terminated"
REASON_IDLE = "Session was terminated after reaching its idle timeout"
REASON_FAILED = "Calculation failed (simulated by the workload pragma)"
REASON_CANCELED = "Calculation was canceled by StopCalculationExecution"
REASON_SESSION_GONE = "Calculation failed because its session was terminated"
REASON_SESSION_FAILED = "Calculation failed because its session failed"
REASON_DEGRADED = "Session is degraded (simulated by the session pragma)"
REASON_FAILED_SESSION = "Session failed (simulated by the session pragma)"


@dataclass(frozen=True, slots=True)
class CalculationPlan:
    run_start: float | None  # None: never runs
    run_end: float  # end of running (== end when it ran)
    end: float  # instant it becomes terminal (INF: not known yet / never)
    final_state: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class JobPlan:
    """The Spark Connect jobs of a session, read analytically (a job every few minutes for days costs nothing).

    Job ``k`` starts at ``first + k * every`` (only ``k = 0`` when ``every`` is None) if that is before
    ``last_start``, and runs ``length`` seconds (INF: forever) but not past ``cutoff``.
    """

    first: float
    length: float
    every: float | None
    dpus: int
    last_start: float
    cutoff: float

    def started(self, t: float) -> int:
        """How many jobs have started by ``t``."""
        if t < self.first or self.first >= self.last_start:
            return 0
        if self.every is None:
            return 1
        by_now = math.floor((t - self.first) / self.every) + 1
        if self.last_start == INF:
            return by_now
        return max(0, min(by_now, math.ceil((self.last_start - self.first) / self.every)))

    def last_job(self, t: float) -> tuple[float, float] | None:
        """``(start, end)`` of the latest job started by ``t``, or None."""
        count = self.started(t)
        if count == 0:
            return None
        start = self.first + (count - 1) * (self.every or 0.0)
        return start, min(start + self.length, self.cutoff)

    def dpu_millis(self, t: float) -> float:
        count = self.started(t)
        last = self.last_job(t)
        if last is None:
            return 0.0
        earlier = (count - 1) * self.length if count > 1 else 0.0
        return self.dpus * (earlier + max(0.0, min(last[1], t) - last[0])) * 1000.0


@dataclass(frozen=True, slots=True)
class SessionPlan:
    created_at: float  # CREATING -> CREATED
    ready_at: float  # CREATED -> IDLE (INF: stays CREATED)
    degraded_at: float  # INF: never DEGRADED
    end_at: float  # TERMINATED/FAILED instant, INF while it may live on
    end_state: str  # TERMINATED | FAILED
    end_reason: str
    busy: tuple[tuple[float, float], ...]  # merged [start, end) intervals with a pending calculation
    calculations: dict[str, CalculationPlan]
    jobs: JobPlan | None = None  # Spark Connect jobs (then there are no calculations)


@dataclass(frozen=True, slots=True)
class SessionView:
    state: str
    start: float
    last_modified: float
    end: float | None
    idle_since: float | None
    reason: str | None
    dpu_millis: int


@dataclass(frozen=True, slots=True)
class CalculationView:
    state: str
    submitted: float
    completed: float | None
    reason: str | None
    dpu_millis: int
    progress: str


def _plan_calculation(calc: CalculationRecord, *, ready: float, runner_free: float,
                      terminate_at: float | None, session_end: float, end_reason: str) -> CalculationPlan:
    pragma = calc.pragma
    stop = calc.stop_requested_at
    honor = stop is not None and pragma.on_stop == "honor"
    start = max(calc.submitted_at + pragma.accepted_after + pragma.queue, ready, runner_free)
    if honor and stop is not None and stop < start:
        end = stop + pragma.stop_latency
        plan = CalculationPlan(None, end, end, "CANCELED", REASON_CANCELED)
    elif terminate_at is not None and start >= terminate_at:
        plan = CalculationPlan(None, session_end, session_end, "FAILED", REASON_SESSION_GONE)
    else:
        end = start + pragma.runtime
        state, reason = ("FAILED", REASON_FAILED) if pragma.outcome == "failed" else ("COMPLETED", None)
        if honor and stop is not None and stop + pragma.stop_latency < end:
            end, state, reason = stop + pragma.stop_latency, "CANCELED", REASON_CANCELED
        plan = CalculationPlan(start, end, end, state, reason)
    if plan.end > session_end:
        run_start = plan.run_start if plan.run_start is not None and plan.run_start < session_end else None
        run_end = min(plan.run_end, session_end)
        return CalculationPlan(run_start, run_end, session_end, "FAILED", end_reason)
    return plan


def plan_session(session: SessionRecord, calculations: Sequence[CalculationRecord]) -> SessionPlan:
    """Compute the time-independent plan of a session and its calculations (in submission order)."""
    pragma = session.pragma
    created = session.created_at + pragma.start
    ready = created + pragma.created_for
    fail_at = INF if pragma.fail_after is None else session.created_at + pragma.fail_after
    degraded_at = INF if pragma.degraded_after is None else max(created, session.created_at + pragma.degraded_after)
    terminate_at = session.terminate_requested_at
    if terminate_at is None or pragma.on_terminate == "stuck":
        forced_end = INF
    else:
        forced_end = terminate_at + pragma.terminate_latency
    if pragma.busy is not None:
        return _plan_jobs(session, created, ready, degraded_at, fail_at, forced_end)
    calculations_end = min(forced_end, fail_at)
    calculations_reason = REASON_SESSION_FAILED if fail_at < forced_end else REASON_SESSION_GONE
    plans: dict[str, CalculationPlan] = {}
    runner_free = ready
    for calc in calculations:
        plan = _plan_calculation(calc, ready=ready, runner_free=runner_free, terminate_at=terminate_at,
                                 session_end=calculations_end, end_reason=calculations_reason)
        plans[calc.id] = plan
        if plan.run_start is not None:
            runner_free = max(runner_free, plan.run_end)
    busy: list[tuple[float, float]] = []
    for calc in calculations:
        begin, finish = max(calc.submitted_at, ready), plans[calc.id].end
        if finish <= begin:
            continue
        if busy and begin <= busy[-1][1]:
            busy[-1] = (busy[-1][0], max(busy[-1][1], finish))
        else:
            busy.append((begin, finish))
    if terminate_at is not None:
        end, reason = forced_end, REASON_TERMINATED
    else:
        timeout = session.idle_timeout_minutes * 60.0
        idle_from = ready
        for begin, finish in busy:
            if begin - idle_from >= timeout:
                break
            idle_from = finish
        end, reason = idle_from + timeout, REASON_IDLE
        if end >= degraded_at:  # degraded before it timed out: the idle timer no longer runs
            end = INF
    if fail_at < end:
        return SessionPlan(created, ready, degraded_at, fail_at, "FAILED", REASON_FAILED_SESSION, tuple(busy),
                           plans)
    return SessionPlan(created, ready, degraded_at, end, "TERMINATED", reason, tuple(busy), plans)


def _plan_jobs(session: SessionRecord, created: float, ready: float, degraded_at: float, fail_at: float,
               forced_end: float) -> SessionPlan:
    """The plan of a session whose work is Spark Connect jobs (its pragma's ``busy``)."""
    pragma = session.pragma
    assert pragma.busy is not None
    first = max(ready, session.created_at + (pragma.busy_after or 0.0))
    terminate_at = session.terminate_requested_at
    if terminate_at is not None:
        end, reason = forced_end, REASON_TERMINATED
    else:
        timeout = session.idle_timeout_minutes * 60.0
        if first - ready >= timeout:
            end = ready + timeout
        elif pragma.every is not None and pragma.every - pragma.busy < timeout:
            end = INF  # the next job always comes before the idle timeout
        else:
            end = first + pragma.busy + timeout
        reason = REASON_IDLE
        if end >= degraded_at:
            end = INF
    state = "TERMINATED"
    if fail_at < end:
        end, state, reason = fail_at, "FAILED", REASON_FAILED_SESSION
    last_start = min(end, terminate_at if terminate_at is not None else INF)
    jobs = JobPlan(first, pragma.busy, pragma.every, pragma.job_dpus, last_start, end)
    return SessionPlan(created, ready, degraded_at, end, state, reason, (), {}, jobs)


def _overlap_millis(start: float | None, end: float, t: float) -> float:
    if start is None:
        return 0.0
    return max(0.0, min(end, t) - start) * 1000.0


def session_view(session: SessionRecord, calculations: Sequence[CalculationRecord], plan: SessionPlan,
                 t: float) -> SessionView:
    """The session as seen at ``t``: state, timestamps and DPU statistics."""
    created = session.created_at
    alive_until = min(t, plan.end_at)
    dpu = max(0.0, alive_until - created) * 1000.0 * session.coordinator_dpus
    for calc in calculations:
        cplan = plan.calculations[calc.id]
        dpu += calc.pragma.dpus * _overlap_millis(cplan.run_start, cplan.run_end, t)
    if plan.jobs is not None:
        dpu += plan.jobs.dpu_millis(t)
    dpu_millis = int(dpu)
    terminate_at = session.terminate_requested_at
    if t >= plan.end_at:
        return SessionView(plan.end_state, created, plan.end_at, plan.end_at, None, plan.end_reason, dpu_millis)
    if terminate_at is not None and t >= terminate_at:
        return SessionView("TERMINATING", created, terminate_at, None, None, None, dpu_millis)
    if t < plan.created_at:
        return SessionView("CREATING", created, created, None, None, None, dpu_millis)
    if t >= plan.degraded_at:
        return SessionView("DEGRADED", created, plan.degraded_at, None, None, REASON_DEGRADED, dpu_millis)
    if t < plan.ready_at:
        return SessionView("CREATED", created, plan.created_at, None, None, None, dpu_millis)
    idle_since = plan.ready_at
    job = plan.jobs.last_job(t) if plan.jobs is not None else None
    if job is not None:
        if t < job[1]:
            return SessionView("BUSY", created, job[0], None, None, None, dpu_millis)
        idle_since = job[1]
    for begin, finish in plan.busy:
        if begin > t:
            break
        if t < finish:
            return SessionView("BUSY", created, begin, None, None, None, dpu_millis)
        idle_since = finish
    return SessionView("IDLE", created, idle_since, None, idle_since, None, dpu_millis)


def calculation_view(calc: CalculationRecord, plan: CalculationPlan, t: float) -> CalculationView:
    """The calculation as seen at ``t``: state, timestamps, DPU statistics and progress."""
    runtime = calc.pragma.runtime
    ran = _overlap_millis(plan.run_start, plan.run_end, t)
    dpu_millis = int(calc.pragma.dpus * ran)
    if t >= plan.end:
        state, completed, reason = plan.final_state, plan.end, plan.reason
    else:
        completed, reason = None, None
        stop = calc.stop_requested_at
        if stop is not None and t >= stop:
            state = "CANCELING"
        elif plan.run_start is not None and t >= plan.run_start:
            state = "RUNNING"
        elif calc.pragma.creating and t < calc.submitted_at + calc.pragma.creating:
            state = "CREATING"
        elif calc.pragma.created and t < calc.submitted_at + calc.pragma.accepted_after:
            state = "CREATED"
        else:
            state = "QUEUED"
    percent = 100 if state == "COMPLETED" or runtime <= 0 else min(100, int(ran / 10.0 / runtime))
    return CalculationView(state, calc.submitted_at, completed, reason, dpu_millis, f"{percent}%")
