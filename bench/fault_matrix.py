"""Fault matrix: the daemon keeps supervising through every fault the emulator can inject.

One emulator and one daemon, both real processes (``python -m supervisor emulator --port 0`` and
``python -m supervisor run --config FILE``), and a sequence of phases. In each phase:

1. the workload is started through boto3 against the emulator while no fault is on: violators whose limits
   fall *during* the coming fault (two calculations that honour Stop, one that ignores it and must be escalated
   to TerminateSession ``stop_grace`` later, one idle session over ``max_idle``) and quiet targets (a
   calculation that completes just before its limit, an exempt session whose calculation crosses it, a busy
   session in the idle-limited workgroup). Their submissions are staggered so the crossings spread over the
   fault, and the daemon has a sweep to list them before the fault starts;
2. the fault goes on through the control API (or the Athena API, for workgroup changes); half a second later
   one more violator appears (through the control API's populate, which faults do not reach), crossing
   during the fault: work the daemon could not list before. The fault stays on until ``hold`` seconds after
   the last crossing, and is cleared;
3. the phase is watched until every due action was taken (or could no longer be in time) and no repeat
   came for a few seconds.

The daemon's process is polled all along: an exit is counted (and the daemon restarted, so later phases are
still judged). Everything is judged afterwards from the emulator's audit log (successful Stop/Terminate calls,
by target): each due action's delay after the fault was cleared (at most ``--deadline`` seconds, 5 by default;
for an action the fault did not block: at most that long after it fell due), wrongful actions (on a quiet
target, before the limit, an escalation before stop_grace, or while the target reported a state no SDK knows)
and duplicates (a second successful Stop of one calculation or Terminate of one session). Any violation
comes with evidence: the daemon's log lines, journal events and audit entries about the target.

Usage:
    python bench/fault_matrix.py                      # every phase, ~7 minutes on 2 cores
    python bench/fault_matrix.py --quick              # two phases, < 1 minute (tests/test_fault_matrix_smoke.py)
    python bench/fault_matrix.py --phases stop_outage,read_outage --out results.json --keep /tmp/matrix
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from enforcement import AWS_ENV, ROOT, EmulatorProcess, epoch, pinned

from athena_spark_emulator import ControlClient

SPARK_ENGINE = "PySpark engine version 3"
CALC_WG, IDLE_WG, DISABLE_WG, DELETE_WG = "mx-calc", "mx-idle", "mx-dis", "mx-del"
WORKGROUPS = (CALC_WG, IDLE_WG, DISABLE_WG, DELETE_WG)
STOP, TERMINATE = "StopCalculationExecution", "TerminateSession"
READ_OPERATIONS = ("ListWorkGroups", "ListTagsForResource", "ListSessions", "ListCalculationExecutions",
                   "GetCalculationExecution", "GetCalculationExecutionStatus", "GetSession", "GetSessionStatus")
UNKNOWN_STATE = "HIBERNATING"
TOLERANCE = 0.002          # audit times are truncated to the millisecond
WORKGROUP_REFRESH = 60.0   # discovery.workgroup_refresh's default

# The daemon's configuration for the matrix (see daemon_config for why each value).
STOP_GRACE = 2.0
CONNECT_TIMEOUT = 0.5
READ_TIMEOUT = 1.5
RETRY_BACKOFF_MAX = 3.0
DISCOVERY_INTERVAL = 2.0
MAX_ATTEMPTS = 3
LATENCY_BELOW = 1.0        # < READ_TIMEOUT: every call is slow but answered
LATENCY_ABOVE = 3.0        # > CONNECT_TIMEOUT + READ_TIMEOUT: every call times out


# -- timing -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timing:
    """Seconds, relative to the phase start ``t0`` (when its first violator is submitted)."""

    limit: float     # max_runtime and max_idle of the policies
    spread: float    # violators are submitted over [t0, t0 + spread]: crossings over [t0 + limit, + spread]
    gap: float       # the fault goes on this long after the last submission (the daemon lists them first)
    hold: float      # the fault stays on this long after the last crossing
    settle: float    # the phase is watched at least this long after the fault is cleared
    quiet_after: float  # ... and this long after its last action (a duplicate would come within it)
    cap: float       # ... and at most this long after the fault is cleared

    @property
    def on(self) -> float:
        return self.spread + self.gap

    @property
    def off(self) -> float:
        return self.spread + self.limit + self.hold


FULL = Timing(limit=10.0, spread=3.0, gap=2.5, hold=2.0, settle=6.0, quiet_after=4.5, cap=25.0)
QUICK = Timing(limit=6.0, spread=1.5, gap=2.5, hold=1.0, settle=5.0, quiet_after=3.0, cap=15.0)


# -- targets and phases -------------------------------------------------------------------------------

@dataclass
class Target:
    role: str                 # honor | ignore | idle | late | reborn (violators); quiet_short | quiet_exempt |
    workgroup: str            # quiet_busy | doomed (never to be acted on)
    session_id: str = ""
    calculation_id: str = ""
    cross_at: float = 0.0     # epoch seconds: SubmissionDateTime (IdleSinceDateTime) + limit
    overridden: bool = False  # reported in an unknown state while the fault is on

    @property
    def is_violator(self) -> bool:
        return self.role in ("honor", "ignore", "idle", "reborn", "late")


@dataclass
class Phase:
    name: str
    fault: str                                  # what is injected, for the table
    blocked: frozenset[str]                     # due actions the fault holds up: stop, escalate, idle
    install: Callable[[Matrix, PhaseRun], None]
    clear: Callable[[Matrix, PhaseRun], None]
    violator_workgroup: str = CALC_WG
    align_to_refresh: bool = False              # run when the daemon re-reads the workgroups during the fault
    doomed: bool = False                        # targets in DELETE_WG that the deletion ends
    reborn: bool = False                        # the workgroup is recreated at clearing, with a new violator
    patience: float | None = None               # watch this long after clearing for due actions not yet taken
                                                # (default: until they can no longer be in time)


@dataclass
class PhaseRun:
    phase: Phase
    t0: float = 0.0
    on_at: float = 0.0
    off_at: float = 0.0       # the clearing request was sent (delays are measured from here)
    end_at: float = 0.0
    targets: list[Target] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)


ALL = frozenset({"stop", "escalate", "idle"})


def _global(**faults: Any) -> Callable[[Matrix, PhaseRun], None]:
    def install(matrix: Matrix, run: PhaseRun) -> None:
        matrix.control.set_faults(**faults)
    return install


def _errors(error: str, operations: tuple[str, ...]) -> Callable[[Matrix, PhaseRun], None]:
    def install(matrix: Matrix, run: PhaseRun) -> None:
        for operation in operations:
            matrix.control.add_error(error, operation=operation)
    return install


def _removals(operations: tuple[str, ...], fields: list[str]) -> Callable[[Matrix, PhaseRun], None]:
    def install(matrix: Matrix, run: PhaseRun) -> None:
        for operation in operations:
            matrix.control.remove_fields(operation, fields)
    return install


def _clear_all(matrix: Matrix, run: PhaseRun) -> None:
    matrix.control.clear_faults()  # every kind: rates, latency, error rules, state overrides, removals


def _unknown_states(matrix: Matrix, run: PhaseRun) -> None:
    for target in run.targets:
        if target.role in ("honor", "ignore"):
            matrix.control.override_state(UNKNOWN_STATE, calculation_id=target.calculation_id)
            target.overridden = True
        elif target.role == "idle":
            matrix.control.override_state(UNKNOWN_STATE, session_id=target.session_id)
            target.overridden = True


def _disable(matrix: Matrix, run: PhaseRun) -> None:
    matrix.athena.update_work_group(WorkGroup=DISABLE_WG, State="DISABLED")


def _enable(matrix: Matrix, run: PhaseRun) -> None:
    matrix.athena.update_work_group(WorkGroup=DISABLE_WG, State="ENABLED")


def _delete(matrix: Matrix, run: PhaseRun) -> None:
    matrix.athena.delete_work_group(WorkGroup=DELETE_WG, RecursiveDeleteOption=True)


def _recreate(matrix: Matrix, run: PhaseRun) -> None:
    matrix.create_workgroup(DELETE_WG)
    run.notes["recreated_at"] = time.time()
    run.targets.append(matrix.start_calculation_violator(run, "reborn", DELETE_WG, on_stop="honor"))


PHASES: list[Phase] = [
    Phase("throttle_storm", "every operation throttled to 1 request/s", ALL,
          _global(throttle_tps=1.0, burst=1.0), _clear_all),
    Phase("errors_100", "InternalServerException on 100% of calls", ALL, _global(error_rate=1.0), _clear_all),
    Phase("errors_50", "InternalServerException on 50% of calls", ALL, _global(error_rate=0.5), _clear_all),
    Phase("latency_below", f"{LATENCY_BELOW:g}s latency on every call (read timeout {READ_TIMEOUT:g}s)",
          frozenset(), _global(latency=LATENCY_BELOW), _clear_all),
    Phase("latency_above", f"{LATENCY_ABOVE:g}s latency on every call (attempt timeout "
          f"{CONNECT_TIMEOUT + READ_TIMEOUT:g}s)", ALL, _global(latency=LATENCY_ABOVE), _clear_all),
    Phase("stop_outage", "StopCalculationExecution: InternalServerException", frozenset({"stop", "escalate"}),
          _errors("InternalServerException", (STOP,)), _clear_all),
    Phase("terminate_outage", "TerminateSession: InternalServerException", frozenset({"escalate", "idle"}),
          _errors("InternalServerException", (TERMINATE,)), _clear_all),
    Phase("stop_terminate_denied", "Stop and Terminate: AccessDeniedException", ALL,
          _errors("AccessDeniedException", (STOP, TERMINATE)), _clear_all),
    Phase("read_outage", "every List*/Get*: InternalServerException", ALL,
          _errors("InternalServerException", READ_OPERATIONS), _clear_all),
    Phase("malformed_session_id", "ListSessions items without SessionId", ALL,
          _removals(("ListSessions",), ["SessionId"]), _clear_all),
    Phase("malformed_calculation_id", "ListCalculationExecutions items without CalculationExecutionId",
          frozenset({"stop", "escalate"}),
          _removals(("ListCalculationExecutions",), ["CalculationExecutionId"]), _clear_all),
    Phase("malformed_submission", "no Status.SubmissionDateTime (list items and Gets)",
          frozenset({"stop", "escalate"}),
          _removals(("ListCalculationExecutions", "GetCalculationExecution", "GetCalculationExecutionStatus"),
                    ["Status.SubmissionDateTime"]), _clear_all),
    # Watched 75 s after clearing: a target whose fresh look showed an unknown state is looked at again only
    # after a pause (supervisor/activities/checks.py UNKNOWN_STATE_RECHECK, 1 minute); this measures it.
    Phase("unknown_state", f"violators reported {UNKNOWN_STATE} (state overrides)", ALL, _unknown_states,
          _clear_all, patience=75.0),
    Phase("workgroup_disabled", f"{DISABLE_WG} DISABLED (UpdateWorkGroup) while its sessions run", frozenset(),
          _disable, _enable, violator_workgroup=DISABLE_WG, align_to_refresh=True),
    # Watched until the daemon re-reads the workgroups (at most once a minute) and finds the recreated one.
    Phase("workgroup_deleted", f"{DELETE_WG} deleted (recursive), recreated at clearing", frozenset({"reborn"}),
          _delete, _recreate, doomed=True, reborn=True, patience=WORKGROUP_REFRESH + FULL.limit + 15),
]
QUICK_PHASES = ("throttle_storm", "stop_outage")


# -- processes --------------------------------------------------------------------------------------------

def daemon_config(directory: Path, endpoint_url: str, timing: Timing) -> Path:
    """The daemon's configuration for the matrix.

    - discovery_interval 2s: new work (and work that reappears after a fault) is listed within 2 s.
    - connect 0.5s + read 1.5s: an attempt lasts at most 2 s, so a Stop/Terminate whose answer was lost (a 5xx,
      a timeout) is resent after in_flight_window = 2 × 2 s = 4 s at most: within 5 s of a fault clearing.
    - max_attempts 3: a failed read gives up within ~6.3 s and is retried by its activity (checks: 1 s later).
    - escalation.retry_backoff_max 3s: a refused (throttled, denied) Stop/Terminate is retried at least every 3 s.
    - stop_grace 2s: the escalation of an ignored Stop falls inside the phase.
    - safety rails opened as in bench/enforcement.py: the matrix acts on ~60 sessions within minutes.
    """
    path = directory / "supervisor.yaml"
    path.write_text(json.dumps({  # JSON is YAML
        "aws": {"region": "us-east-1", "endpoint_url": endpoint_url, "account_id": "123456789012",
                "max_requests_per_second": 20, "max_attempts": MAX_ATTEMPTS,
                "connect_timeout": f"{CONNECT_TIMEOUT * 1000:g}ms", "read_timeout": f"{READ_TIMEOUT * 1000:g}ms"},
        "workgroups": ["mx-*"],
        "mode": "enforce",
        "discovery_interval": f"{DISCOVERY_INTERVAL:g}s",
        "log_level": "info",
        "journal": {"path": str(directory / "journal.db")},
        "http": {"host": "127.0.0.1", "port": 0},
        "escalation": {"stop_grace": f"{STOP_GRACE:g}s", "terminate_grace": "10s",
                       "retry_backoff_max": f"{RETRY_BACKOFF_MAX:g}s"},
        "safety": {"max_actions_per_minute": 100000, "circuit_breaker_fraction": 1.0},
        "policies": [
            {"name": "mx-runtime", "workgroups": [CALC_WG, DISABLE_WG, DELETE_WG],
             "calculation": {"max_runtime": f"{timing.limit:g}s"}, "action": "stop"},
            {"name": "mx-idle", "workgroups": [IDLE_WG], "session": {"max_idle": f"{timing.limit:g}s"},
             "action": "stop"},
        ],
    }, indent=2))
    return path


class Daemon:
    """``python -m supervisor run`` as a subprocess (pinned to core 1), restarted if it exits."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.exits: list[dict[str, Any]] = []
        self.process: subprocess.Popen[bytes] | None = None
        self._start()

    def _start(self) -> None:
        env = {**os.environ, **AWS_ENV, "PYTHONPATH": str(ROOT)}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                pinned([sys.executable, "-m", "supervisor", "run", "--config", str(self.config)], 1),
                cwd=ROOT, stdout=log, stderr=log, env=env)

    def poll(self, phase: str) -> None:
        """Count an exit (and restart, so the matrix goes on)."""
        assert self.process is not None
        code = self.process.poll()
        if code is None:
            return
        self.exits.append({"phase": phase, "time": time.time(), "exit_code": code})
        print(f"[{time.strftime('%H:%M:%S')}] DAEMON EXITED with {code} during {phase}; restarting",
              file=sys.stderr, flush=True)
        self._start()

    def stop(self) -> int | None:
        assert self.process is not None
        if self.process.poll() is not None:
            return self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


# -- the matrix -------------------------------------------------------------------------------------------

class Matrix:
    def __init__(self, args: argparse.Namespace, directory: Path) -> None:
        self.args = args
        self.timing = QUICK if args.quick else FULL
        self.directory = directory
        # A throttle far above any load: EmulatorProcess always installs one; the first clearing removes it.
        self.emulator = EmulatorProcess(1e6)
        self.control = ControlClient(self.emulator.control_url)
        self.athena = boto3.client(
            "athena", endpoint_url=self.emulator.endpoint_url, region_name="us-east-1",
            aws_access_key_id="bench", aws_secret_access_key="bench",
            config=Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=30),
        )
        self.daemon: Daemon | None = None
        self.daemon_exit_code_at_sigterm: int | None = None
        self.runs: list[PhaseRun] = []
        self.current = "startup"
        self.started_at = time.time()

    # workload ---------------------------------------------------------------------------------------------

    def create_workgroup(self, name: str) -> None:
        self.athena.create_work_group(Name=name, Configuration={"EngineVersion": {"SelectedEngineVersion":
                                                                                  SPARK_ENGINE}})

    def _session(self, workgroup: str, text: str) -> str:
        response = self.athena.start_session(
            WorkGroup=workgroup, Description=f"{text}\n# sim: start=0s terminate_latency=1s",
            EngineConfiguration={"CoordinatorDpuSize": 1, "MaxConcurrentDpus": 20, "DefaultExecutorDpuSize": 1})
        return str(response["SessionId"])

    def _calculation(self, session_id: str, pragma: str, text: str) -> tuple[str, float]:
        calculation_id = str(self.athena.start_calculation_execution(
            SessionId=session_id, CodeBlock=f"# sim: {pragma}\n# {text}")["CalculationExecutionId"])
        status = self.athena.get_calculation_execution_status(CalculationExecutionId=calculation_id)["Status"]
        return calculation_id, status["SubmissionDateTime"].timestamp()

    def start_calculation_violator(self, run: PhaseRun, role: str, workgroup: str, on_stop: str) -> Target:
        text = f"matrix {run.phase.name} {role}"
        session_id = self._session(workgroup, text)
        calculation_id, submitted = self._calculation(
            session_id, f"runtime=3600s dpus=2 on_stop={on_stop} stop_latency=1s", text)
        return Target(role, workgroup, session_id, calculation_id, submitted + self.timing.limit)

    def _idle_violator(self, run: PhaseRun) -> Target:
        session_id = self._session(IDLE_WG, f"matrix {run.phase.name} idle")
        status = self.athena.get_session(SessionId=session_id)["Status"]
        since = status.get("IdleSinceDateTime") or status["StartDateTime"]
        return Target("idle", IDLE_WG, session_id, "", since.timestamp() + self.timing.limit)

    def _quiet(self, run: PhaseRun) -> list[Target]:
        limit = self.timing.limit
        name = run.phase.name
        short = self._session(CALC_WG, f"matrix {name} quiet_short")
        short_calc, _ = self._calculation(short, f"runtime={limit - 3:g}s dpus=1", f"matrix {name} quiet_short")
        exempt = self._session(CALC_WG, f"[supervisor:exempt] matrix {name} quiet_exempt")
        exempt_calc, _ = self._calculation(exempt, f"runtime={limit + 4:g}s dpus=1", f"matrix {name} quiet_exempt")
        busy = self._session(IDLE_WG, f"matrix {name} quiet_busy")
        busy_calc, _ = self._calculation(busy, "runtime=3600s dpus=1", f"matrix {name} quiet_busy")
        return [Target("quiet_short", CALC_WG, short, short_calc), Target("quiet_exempt", CALC_WG, exempt, exempt_calc),
                Target("quiet_busy", IDLE_WG, busy, busy_calc)]

    def late_violator(self, run: PhaseRun) -> Target:
        """Work that starts during the fault (through the control API's populate, which faults do not reach),
        crossing its limit in the middle of the crossings: the daemon has never listed it before the fault."""
        timing = self.timing
        cross_at = run.t0 + timing.limit + timing.spread / 2
        submitted_ago = round(timing.limit - (cross_at - time.time()), 3)
        created = self.control.populate({"sessions": [{
            "workgroup": CALC_WG, "description": f"matrix {run.phase.name} late\n# sim: start=0s",
            "started_ago": submitted_ago + 1,
            "calculations": [{"code": f"# sim: runtime=3600s dpus=2 on_stop=honor stop_latency=1s\n"
                                      f"# matrix {run.phase.name} late", "submitted_ago": submitted_ago}]}]})
        session = created["sessions"][0]
        # cross_at is read back (SubmissionDateTime) once the faults are cleared: resolve_late_crossings
        return Target("late", CALC_WG, session["SessionId"], session["CalculationExecutionIds"][0],
                      time.time() - submitted_ago + timing.limit)

    def resolve_late_crossings(self) -> None:
        for run in self.runs:
            for target in run.targets:
                if target.role == "late":
                    status = self.athena.get_calculation_execution_status(
                        CalculationExecutionId=target.calculation_id)["Status"]
                    target.cross_at = status["SubmissionDateTime"].timestamp() + self.timing.limit

    def start_workload(self, run: PhaseRun) -> None:
        """Violators at t0, t0 + spread/3, ... (crossings spread over the fault), quiet targets in between."""
        phase, spread = run.phase, self.timing.spread
        steps: list[Callable[[], list[Target]]] = [
            lambda: [self.start_calculation_violator(run, "honor", phase.violator_workgroup, "honor")],
            lambda: [self._idle_violator(run)],
            lambda: [self.start_calculation_violator(run, "ignore", phase.violator_workgroup, "ignore")],
            lambda: [self.start_calculation_violator(run, "honor", phase.violator_workgroup, "honor")],
        ]
        for index, step in enumerate(steps):
            self.sleep_until(run.t0 + index * spread / (len(steps) - 1))
            run.targets.extend(step())
            if index == 1:
                run.targets.extend(self._quiet(run))
            if index == 2 and phase.doomed:
                doomed = self.start_calculation_violator(run, "doomed", DELETE_WG, "honor")
                run.targets.append(doomed)

    # running ----------------------------------------------------------------------------------------------

    def sleep_until(self, instant: float) -> None:
        while True:
            if self.daemon is not None:
                self.daemon.poll(self.current)
            left = instant - time.time()
            if left <= 0:
                return
            time.sleep(min(0.25, left))

    def successful(self, operation: str, since: float) -> list[dict[str, Any]]:
        return [c for c in self.control.calls(since=f"{since:.3f}", operation=operation) if c["status"] == 200]

    def last_workgroup_refresh(self) -> float | None:
        calls = self.successful("ListWorkGroups", self.started_at)
        return epoch(calls[-1]["time"]) if calls else None

    def start(self) -> None:
        for name in WORKGROUPS:
            self.create_workgroup(name)
        self.started_at = time.time()
        config = daemon_config(self.directory, self.emulator.endpoint_url, self.timing)
        self.daemon = Daemon(config, self.directory / "daemon.log")
        # Ready: it listed the workgroups and a first round of sessions.
        deadline = time.time() + 60
        while not self.successful("ListSessions", self.started_at):
            if time.time() > deadline:
                raise SystemExit(f"the daemon listed nothing within 60 s; see {self.directory / 'daemon.log'}")
            self.sleep_until(time.time() + 0.25)

    def run_phase(self, phase: Phase) -> PhaseRun:
        timing = self.timing
        self.current = phase.name
        run = PhaseRun(phase, t0=time.time() + 0.2)
        print(f"[{time.strftime('%H:%M:%S')}] {phase.name}: {phase.fault}", file=sys.stderr, flush=True)
        self.start_workload(run)
        self.sleep_until(run.t0 + timing.on)
        run.on_at = time.time()
        phase.install(self, run)
        self.sleep_until(run.on_at + 0.5)
        run.targets.append(self.late_violator(run))
        self.sleep_until(run.t0 + timing.off)
        run.off_at = time.time()
        phase.clear(self, run)
        self.watch(run)
        run.end_at = time.time()
        if phase.align_to_refresh:
            refreshes = [epoch(c["time"]) for c in self.successful("ListWorkGroups", run.on_at)]
            first_cross = min(t.cross_at for t in run.targets if t.is_violator)
            run.notes["workgroups_reread_during_fault"] = any(run.on_at < r < first_cross for r in refreshes)
        return run

    def watch(self, run: PhaseRun) -> None:
        """Until every due action of the phase was taken (or its deadline passed), the phase has been quiet
        for ``quiet_after`` seconds and ``settle`` seconds have passed since clearing; at most ``cap``."""
        timing = self.timing
        patience = run.phase.patience
        cap = run.off_at + max(timing.cap, patience or 0.0)
        while True:
            self.sleep_until(time.time() + 0.5)
            now = time.time()
            if now >= cap:
                run.notes["watch_capped"] = True
                return
            if now < run.off_at + timing.settle:
                continue
            audit = self.control.calls(since=f"{run.t0:.3f}")
            stops, terminates = successful_actions(audit)
            pending, last_action = False, 0.0
            for target in run.targets:
                for due in due_actions(target, stops, terminates):
                    taken = due["taken_at"]
                    if taken is None:
                        latest = (run.off_at + patience if patience is not None
                                  else max(due["due_at"], run.off_at) + self.args.deadline + 1)
                        pending = pending or now < latest
                    else:
                        last_action = max(last_action, taken)
            if not pending and now >= last_action + timing.quiet_after:
                return

    def choose_next(self, pending: list[Phase]) -> Phase:
        """The next phase in order, except that a phase aligned to the daemon's workgroup refresh is taken as
        soon as the refresh falls within its fault (waiting for it when nothing else is left)."""
        timing = self.timing
        lead = timing.on + (timing.limit - timing.gap) / 2  # refresh halfway between fault on and 1st crossing
        typical = timing.off + timing.settle + timing.quiet_after + 2
        for phase in pending:
            if not phase.align_to_refresh:
                continue
            last = self.last_workgroup_refresh() or self.started_at
            start_at = last + WORKGROUP_REFRESH + DISCOVERY_INTERVAL / 2 - lead
            others = [p for p in pending if not p.align_to_refresh]
            if not others or start_at - time.time() < typical:
                if start_at < time.time():
                    start_at += WORKGROUP_REFRESH  # missed this one: the next
                print(f"[{time.strftime('%H:%M:%S')}] waiting {max(0.0, start_at - time.time()):.0f}s so that the "
                      f"daemon re-reads the workgroups during {phase.name}", file=sys.stderr, flush=True)
                self.sleep_until(start_at)
                return phase
        return next(p for p in pending if not p.align_to_refresh)

    def run(self, phases: list[Phase]) -> None:
        self.start()
        pending = list(phases)
        while pending:
            phase = self.choose_next(pending)
            pending.remove(phase)
            self.runs.append(self.run_phase(phase))
        self.current = "end"
        assert self.daemon is not None
        self.daemon.poll(self.current)
        self.daemon_exit_code_at_sigterm = self.daemon.stop()

    def close(self) -> None:
        self.emulator.close()


# -- judging ----------------------------------------------------------------------------------------------

def successful_actions(audit: list[dict[str, Any]]) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Arrival times of successful Stops by calculation id and Terminates by session id."""
    stops: dict[str, list[float]] = {}
    terminates: dict[str, list[float]] = {}
    for call in audit:
        if call["status"] != 200 or not isinstance(call["request"], dict):
            continue
        if call["operation"] == STOP:
            stops.setdefault(str(call["request"].get("CalculationExecutionId")), []).append(epoch(call["time"]))
        elif call["operation"] == TERMINATE:
            terminates.setdefault(str(call["request"].get("SessionId")), []).append(epoch(call["time"]))
    return stops, terminates


def due_actions(target: Target, stops: dict[str, list[float]], terminates: dict[str, list[float]]
                ) -> list[dict[str, Any]]:
    """The actions due on a violator: its Stop (or the idle session's Terminate) at the crossing, and for a
    calculation that ignores Stop the Terminate of its session stop_grace after the first Stop."""
    if not target.is_violator:
        return []
    if target.role == "idle":
        return [{"kind": "idle", "action": TERMINATE, "id": target.session_id, "due_at": target.cross_at,
                 "taken_at": min(terminates.get(target.session_id, []), default=None)}]
    first_stop = min(stops.get(target.calculation_id, []), default=None)
    kind = "reborn" if target.role == "reborn" else "stop"
    due = [{"kind": kind, "action": STOP, "id": target.calculation_id, "due_at": target.cross_at,
            "taken_at": first_stop}]
    if target.role == "ignore" and first_stop is not None:
        due.append({"kind": "escalate", "action": TERMINATE, "id": target.session_id,
                    "due_at": first_stop + STOP_GRACE,
                    "taken_at": min(terminates.get(target.session_id, []), default=None)})
    return due


def judge_phase(run: PhaseRun, audit: list[dict[str, Any]], deadline: float,
                refreshes: list[float]) -> dict[str, Any]:
    stops, terminates = successful_actions(audit)
    phase = run.phase
    actions: list[dict[str, Any]] = []
    violations: list[dict[str, Any]] = []
    for target in run.targets:
        for due in due_actions(target, stops, terminates):
            blocked = due["kind"] in phase.blocked
            # Blocked: within `deadline` of the clearing (or of falling due, if later). Not blocked: within
            # `deadline` of falling due.
            start = max(due["due_at"], run.off_at) if blocked else due["due_at"]
            if due["kind"] == "reborn":
                # A recreated workgroup is first listed when the daemon re-reads the workgroups (at most once a
                # minute, documented): when that was, for the diagnosis; the deadline is the same as for any action.
                seen = next((r for r in refreshes if r >= run.notes.get("recreated_at", run.off_at)), None)
                due["workgroups_reread_after_clearing"] = None if seen is None else round(seen - run.off_at, 3)
            due.update({"role": target.role, "blocked": blocked, "deadline_at": start + deadline})
            taken = due["taken_at"]
            due["after_clearing"] = None if taken is None else round(taken - run.off_at, 3)
            due["delay"] = None if taken is None else round(taken - start, 3)  # what the deadline bounds
            due["after_due"] = None if taken is None else round(taken - due["due_at"], 3)
            if taken is None or taken > due["deadline_at"] + TOLERANCE:
                violations.append({"type": "missed" if taken is None else "late", **due})
            actions.append(due)
    wrongful: list[dict[str, Any]] = []
    duplicates: list[dict[str, Any]] = []
    for target in run.targets:
        stop_times = stops.get(target.calculation_id, []) if target.calculation_id else []
        terminate_times = terminates.get(target.session_id, [])
        reason_stop = reason_terminate = None
        if stop_times:
            first = min(stop_times)
            if target.role not in ("honor", "ignore", "reborn", "late"):
                reason_stop = f"Stop of a {target.role} calculation"
            elif first < target.cross_at - TOLERANCE:
                reason_stop = f"Stop {target.cross_at - first:.3f}s before the limit was crossed"
            elif target.overridden and run.on_at <= first < run.off_at:
                reason_stop = f"Stop while the calculation reported {UNKNOWN_STATE}"
            if reason_stop:
                wrongful.append({"action": STOP, "id": target.calculation_id, "role": target.role, "at": first,
                                 "reason": reason_stop})
            if len(stop_times) > 1:
                duplicates.append({"action": STOP, "id": target.calculation_id, "role": target.role,
                                   "times": sorted(stop_times)})
        if terminate_times:
            first = min(terminate_times)
            first_stop = min(stops.get(target.calculation_id, []), default=None) if target.calculation_id else None
            if target.role not in ("ignore", "idle"):
                reason_terminate = f"TerminateSession of a {target.role} session"
            elif target.role == "idle" and first < target.cross_at - TOLERANCE:
                reason_terminate = f"TerminateSession {target.cross_at - first:.3f}s before max_idle was crossed"
            elif target.role == "ignore" and (first_stop is None or first < first_stop + STOP_GRACE - TOLERANCE):
                reason_terminate = "TerminateSession before stop_grace after the Stop"
            elif target.overridden and run.on_at <= first < run.off_at:
                reason_terminate = f"TerminateSession while the session reported {UNKNOWN_STATE}"
            if reason_terminate:
                wrongful.append({"action": TERMINATE, "id": target.session_id, "role": target.role, "at": first,
                                 "reason": reason_terminate})
            if len(terminate_times) > 1:
                duplicates.append({"action": TERMINATE, "id": target.session_id, "role": target.role,
                                   "times": sorted(terminate_times)})
    attempts = {op: sum(1 for c in audit if c["operation"] == op and run.t0 <= epoch(c["time"]) <= run.end_at)
                for op in (STOP, TERMINATE)}
    delays = [a["after_clearing"] for a in actions if a["after_clearing"] is not None]
    return {
        "phase": phase.name, "fault": phase.fault, "blocked": sorted(phase.blocked),
        "fault_seconds": round(run.off_at - run.on_at, 2),
        "due_actions": len(actions),
        "taken": sum(1 for a in actions if a["taken_at"] is not None),
        "max_delay": max((a["delay"] for a in actions if a["delay"] is not None), default=None),
        "max_after_clearing": max(delays) if delays else None,
        "max_after_due": max((a["after_due"] for a in actions if a["after_due"] is not None), default=None),
        "late_or_missed": len(violations),
        "wrongful": len(wrongful),
        "duplicates": len(duplicates),
        "action_attempts": attempts,
        "actions": [{k: (round(v - run.off_at, 3) if k in ("due_at", "taken_at", "deadline_at") and v is not None
                         else v) for k, v in a.items()} for a in actions],
        "violations": violations, "wrongful_detail": wrongful, "duplicate_detail": duplicates,
        "notes": run.notes,
        "times": {"t0": run.t0, "on": run.on_at, "off": run.off_at, "end": run.end_at},
        "targets": [asdict(t) for t in run.targets],
    }


def stray_actions(audit: list[dict[str, Any]], runs: list[PhaseRun]) -> list[dict[str, Any]]:
    """Successful Stop/Terminate calls on ids no phase created (there should be none)."""
    calculations = {t.calculation_id for r in runs for t in r.targets if t.calculation_id}
    sessions = {t.session_id for r in runs for t in r.targets}
    stops, terminates = successful_actions(audit)
    return ([{"action": STOP, "id": i} for i in stops if i not in calculations]
            + [{"action": TERMINATE, "id": i} for i in terminates if i not in sessions])


def evidence(ids: set[str], directory: Path, audit: list[dict[str, Any]], journal: list[dict[str, Any]],
             limit: int = 40) -> dict[str, Any]:
    """The daemon's log lines, journal events and audit entries that mention any of ``ids``."""
    log_lines = []
    log_path = directory / "daemon.log"
    if log_path.exists():
        for line in log_path.read_text(errors="replace").splitlines():
            if any(i in line for i in ids):
                log_lines.append(line)
    return {
        "daemon_log": log_lines[:limit],
        "journal": [e for e in journal if any(i in json.dumps(e) for i in ids)][:limit],
        "audit": [{k: c[k] for k in ("time", "operation", "status", "error")}
                  for c in audit if any(i in json.dumps(c["request"]) for i in ids)][:limit],
    }


def read_journal(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", "journal", "--path", str(directory / "journal.db"), "--json",
         "--limit", "100000"], cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def daemon_log_summary(directory: Path) -> dict[str, int]:
    """Counts of the daemon's log events (errors and warnings tell how it lived through the faults)."""
    counts: dict[str, int] = {}
    log_path = directory / "daemon.log"
    for line in log_path.read_text(errors="replace").splitlines() if log_path.exists() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            counts["(not json)"] = counts.get("(not json)", 0) + 1
            continue
        if record.get("level") in ("warning", "error", "critical"):
            key = f"{record.get('level')} {record.get('event')}"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


# -- report -----------------------------------------------------------------------------------------------

def table(phases: list[dict[str, Any]], exits: list[dict[str, Any]]) -> str:
    header = ("phase", "fault s", "due", "taken", "max delay", "max after clear", "max after due", "late/missed",
              "wrongful", "dup", "exits")

    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)

    rows = [tuple(fmt(v) for v in (p["phase"], p["fault_seconds"], p["due_actions"], p["taken"], p["max_delay"],
                                   p["max_after_clearing"], p["max_after_due"], p["late_or_missed"], p["wrongful"],
                                   p["duplicates"], sum(1 for e in exits if e["phase"] == p["phase"])))
            for p in phases]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True)))]
    lines += ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
              for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_PHASES)}, shorter limits")
    parser.add_argument("--phases", default=None, help="comma-separated phase names (default: all)")
    parser.add_argument("--deadline", type=float, default=5.0,
                        help="seconds after the fault clears (or the action falls due) within which it must come")
    parser.add_argument("--out", default=None, help="write the JSON results here")
    parser.add_argument("--keep", default=None, help="keep the config, journal and daemon log in this directory")
    parser.add_argument("--list", action="store_true", help="list the phases and exit")
    args = parser.parse_args()
    if args.list:
        for phase in PHASES:
            print(f"{phase.name:26} {phase.fault}")
        return 0
    names = args.phases.split(",") if args.phases else (list(QUICK_PHASES) if args.quick else None)
    by_name = {p.name: p for p in PHASES}
    unknown = [n for n in names or [] if n not in by_name]
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(unknown)}; --list shows them")
    phases = [by_name[n] for n in names] if names else list(PHASES)

    load_before = os.getloadavg()
    began = time.time()
    with tempfile.TemporaryDirectory(prefix="fault-matrix-") as tmp:
        directory = Path(args.keep) if args.keep else Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        matrix = Matrix(args, directory)
        try:
            matrix.run(phases)
            matrix.control.clear_faults()
            audit = matrix.control.calls()
            matrix.resolve_late_crossings()
        finally:
            if matrix.daemon is not None:
                matrix.daemon.stop()
            matrix.close()
        refreshes = [epoch(c["time"]) for c in audit if c["operation"] == "ListWorkGroups" and c["status"] == 200]
        assert matrix.daemon is not None
        exits = matrix.daemon.exits
        results = [judge_phase(run, audit, args.deadline, refreshes) for run in matrix.runs]
        strays = stray_actions(audit, matrix.runs)
        journal: list[dict[str, Any]] | None = None  # read only for evidence
        for result in results:
            bad_ids = {v["id"] for v in result["violations"]} | {w["id"] for w in result["wrongful_detail"]} | {
                d["id"] for d in result["duplicate_detail"]}
            if bad_ids:
                journal = journal if journal is not None else read_journal(directory)
                result["evidence"] = evidence(bad_ids, directory, audit, journal)
        log_summary = daemon_log_summary(directory)
        elapsed = time.time() - began
        verdict_ok = (not exits and not strays and matrix.daemon_exit_code_at_sigterm == 0
                      and all(r["late_or_missed"] == 0 and r["wrongful"] == 0 and r["duplicates"] == 0
                              for r in results))
        output = {
            "command": " ".join(["fault_matrix.py", *sys.argv[1:]]),
            "verdict": "pass" if verdict_ok else "fail",
            "deadline_seconds": args.deadline,
            "daemon_exits": exits,
            "daemon_exit_code_at_sigterm": matrix.daemon_exit_code_at_sigterm,
            "stray_actions": strays,
            "seconds": round(elapsed, 1),
            "machine": {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                        "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
            "config": {"timing": asdict(matrix.timing), "discovery_interval": DISCOVERY_INTERVAL,
                       "connect_timeout": CONNECT_TIMEOUT, "read_timeout": READ_TIMEOUT,
                       "max_attempts": MAX_ATTEMPTS, "retry_backoff_max": RETRY_BACKOFF_MAX,
                       "stop_grace": STOP_GRACE},
            "api_calls": len(audit),
            "daemon_log_warnings": log_summary,
            "phases": results,
            "directory": str(directory) if args.keep else None,
            "finished_at": datetime.now(UTC).isoformat(),
        }
        print(table(results, exits))
        print(f"\ndaemon exits: {len(exits)}; exit code at SIGTERM: {matrix.daemon_exit_code_at_sigterm}; "
              f"stray actions: {len(strays)}; API calls: {len(audit):,}; {elapsed:.0f}s; load "
              f"{load_before[0]:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        for result in results:
            for problem in result["violations"] + result["wrongful_detail"] + result["duplicate_detail"]:
                print(f"  {result['phase']}: {json.dumps(problem, default=str)}")
        print(f"verdict: {output['verdict'].upper()}")
        if args.out:
            Path(args.out).write_text(json.dumps(output, indent=2, default=str) + "\n")
    return 0 if verdict_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
