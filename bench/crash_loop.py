"""Crash loop: SIGKILL the daemon again and again on one journal, and judge from the emulator's audit log
that no due action was missed, no target was hit wrongly and no Stop/Terminate reached AWS twice.

1. Start the emulator as its own process (``athena-supervisor emulator --port 0``), with server latency on
   StopCalculationExecution and TerminateSession (``--latency``, below the daemon's read timeout): the
   emulator processes such a call after the latency even when the client has gone.
2. Through the Athena API (boto3): workgroups ``crash-calc`` (policy ``max_runtime``, action stop),
   ``crash-idle`` (policy ``max_idle``, action terminate) and ``other-calc`` (not watched). Violators are
   spread over ``--horizon`` seconds: calculations that cross ``max_runtime`` (a share ignore Stop, so they
   need TerminateSession ``stop_grace`` after it; a share honour it slowly, CANCELED 2 s before stop_grace
   runs out, so their sessions must live) and sessions that cross ``max_idle``. Quiet targets must
   never be touched: calculations that complete before the limit, BUSY sessions in ``crash-idle``, an exempt
   session and an unwatched workgroup with long calculations.
3. Run ``athena-supervisor run --config FILE`` and SIGKILL it ``--kills`` times: at a random moment, or
   right after an intent is journaled (new ``*.intent`` rows, polled read-only from the journal), restarting
   it at once each time with the same config and journal. Each daemon, as the emulator, is a copy of a zygote
   that imported the daemon once (``bench/zygote.py``): its own process, up in a fraction of a second instead of
   after ~1.3 s of CPU spent importing.
4. Let a last daemon run until everything due is done (every action in the audit log, no open escalation in
   the journal), SIGTERM it, then judge:

   - **missed**: a due action never taken (Stop of a violator; TerminateSession of an ignoring violator's
     session or of an idle session);
   - **wrongful**: any Stop/Terminate (or UpdateWorkGroup) on a target that never crossed, a Stop before the
     crossing, a TerminateSession before the crossing (idle) or before the first Stop + stop_grace;
   - **duplicate**: a second StopCalculationExecution received for a calculation, or a second
     TerminateSession for a session (``terminate_grace`` is long, so the documented retries of a failed
     escalation never happen here). Each is attributed from the journal: several calls for one intent (a
     gateway retry of an attempt) or a resend after ``intent.unanswered``.

Crossing instants come from the emulator afterwards (SubmissionDateTime + max_runtime, StartDateTime +
session start + max_idle); call instants are arrival times in the audit log (milliseconds, truncated, hence
a 1 ms tolerance). Timings are never asserted: only outcomes are judged.

Usage:
    python bench/crash_loop.py --kills 120 --out bench/results/crash-loop.json
    python bench/crash_loop.py --quick              # the bounded loop of tests/test_crash_loop.py
    python bench/crash_loop.py --keep /tmp/crash    # keep config, journal, logs and the audit log
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.enforcement import epoch  # noqa: E402
from bench.environment import environment  # noqa: E402
from bench.fleet_processes import EmulatorProcess  # noqa: E402
from bench.zygote import ForkedProcess, SharedZygote, Zygote  # noqa: E402

SPARK = {"SelectedEngineVersion": "PySpark engine version 3"}
AWS_ENV = {"AWS_ACCESS_KEY_ID": "crash", "AWS_SECRET_ACCESS_KEY": "crash", "AWS_DEFAULT_REGION": "us-east-1"}
CALC_WG, IDLE_WG, UNWATCHED_WG = "crash-calc", "crash-idle", "other-calc"
SESSION_START = 0.3               # seconds CREATING → IDLE of every session (pragma start=)
STOP_LATENCY = 0.5                # CANCELING → CANCELED of a calculation that honours Stop at once
SLOW_STOP_MARGIN = 2.0            # a slow one is CANCELED this long before stop_grace runs out
TOLERANCE = 0.001                 # audit-log times are truncated to milliseconds
DESTRUCTIVE = ("StopCalculationExecution", "TerminateSession", "UpdateWorkGroup")
REFUSED = frozenset({"TooManyRequestsException", "AccessDeniedException"})  # never reached the service
STATUS_LOOKS = ("GetCalculationExecutionStatus", "GetCalculationExecution", "GetSessionStatus", "GetSession")


@dataclass(frozen=True)
class LoopConfig:
    """Everything that shapes one crash loop (the workload plan and the kill choices follow ``seed``)."""

    seed: int = 1
    kills: int = 120
    intent_share: float = 0.5          # share of kills right after an intent (the rest at a random moment)
    random_kill_after: tuple[float, float] = (0.3, 5.0)   # seconds after the spawn
    intent_wait: float = 15.0          # longest wait for an intent before killing anyway
    intent_kill_delay: tuple[float, float] = (0.0, 0.2)   # seconds from seeing the intent to the SIGKILL
    # Server latency of StopCalculationExecution and TerminateSession, below the read timeout. A restarted
    # daemon takes about 2 s to look at anything on a loaded 2-core machine: 3 s of latency lets it look
    # while the previous process's call is still being processed.
    latency: float = 3.0
    connect_timeout: float = 1.0
    read_timeout: float = 5.0
    stop_grace: float = 6.0
    terminate_grace: float = 300.0
    max_runtime: float = 5.0
    max_idle: float = 4.0
    horizon: float = 360.0             # crossings are spread over this many seconds
    calc_violators: int = 110
    ignore_share: float = 0.4
    slow_share: float = 0.3            # share of the violators that honour Stop slowly (stop_grace − 2 s)
    idle_violators: int = 40
    quiet_calcs: int = 40
    busy_sessions: int = 4
    discovery_interval: str = "1s"
    settle_timeout: float = 120.0

    @classmethod
    def quick(cls, seed: int = 7) -> LoopConfig:
        """The bounded loop of the test suite: 5 kills, about 25 s on a 2-core machine."""
        return cls(seed=seed, kills=5, horizon=6.0, calc_violators=7, idle_violators=2, quiet_calcs=4,
                   busy_sessions=2, random_kill_after=(0.3, 3.0), intent_wait=20.0, settle_timeout=60.0,
                   latency=2.0, read_timeout=3.0, stop_grace=4.0, max_runtime=3.0, max_idle=3.0)

    @property
    def in_flight_window(self) -> float:
        return self.connect_timeout + self.read_timeout


# -- workload -------------------------------------------------------------------------------------------

@dataclass
class Target:
    """One planned session or calculation and what it must (not) get."""

    kind: str                  # calc_violator | quiet_calc | exempt_calc | unwatched_calc | idle_violator | busy
    at: float                  # offset (s) after t0 when the harness submits/starts it
    ignores_stop: bool = False
    stop_latency: float = STOP_LATENCY
    session_id: str = ""
    calculation_id: str = ""
    crossing: float | None = None   # epoch seconds, from the emulator after the run
    error: str | None = None


def plan_workload(config: LoopConfig, rng: random.Random) -> list[Target]:
    """Violators whose crossings fall uniformly over the horizon, quiet calculations in between."""
    lead = config.max_runtime + 1.0    # the first crossing comes after the first daemon is up
    targets: list[Target] = []
    kinds = rng.sample(range(config.calc_violators), config.calc_violators)
    ignoring = set(kinds[:round(config.calc_violators * config.ignore_share)])
    slow = set(kinds[len(ignoring):len(ignoring) + round(config.calc_violators * config.slow_share)])
    for index in range(config.calc_violators):
        crossing = lead + rng.uniform(0, config.horizon)
        # A slow one is CANCELED within stop_grace of the Stop being processed: its session must not be
        # terminated, so TerminateSession there means the grace was not counted from the Stop.
        stop_latency = config.stop_grace - SLOW_STOP_MARGIN if index in slow else STOP_LATENCY
        targets.append(Target("calc_violator", crossing - config.max_runtime, ignores_stop=index in ignoring,
                              stop_latency=stop_latency))
    for _ in range(config.idle_violators):
        crossing = lead + rng.uniform(0, config.horizon)
        targets.append(Target("idle_violator", crossing - config.max_idle - SESSION_START))
    for _ in range(config.quiet_calcs):
        targets.append(Target("quiet_calc", rng.uniform(0, lead + config.horizon)))
    targets.append(Target("exempt_calc", 0.0))
    targets.append(Target("unwatched_calc", 0.0))
    targets.extend(Target("busy", 0.0) for _ in range(config.busy_sessions))
    return sorted(targets, key=lambda target: target.at)


def calc_code(target: Target, config: LoopConfig) -> str:
    if target.kind == "quiet_calc":   # completes well before max_runtime
        pragma = f"runtime={config.max_runtime / 2:g}s"
    else:
        on_stop = "ignore" if target.ignores_stop else "honor"
        pragma = f"runtime=3600s on_stop={on_stop} stop_latency={target.stop_latency:g}s"
    return f"# sim: {pragma} dpus=2\nspark.range(10).count()"


class Workload:
    """Creates the workload through the Athena API: sessions up front, calculations and idle sessions on
    schedule (a thread, so that the kill loop never waits on it)."""

    def __init__(self, endpoint_url: str, config: LoopConfig, targets: list[Target]) -> None:
        self.config = config
        self.targets = targets
        self.athena = boto3.client(
            "athena", endpoint_url=endpoint_url, region_name="us-east-1",
            aws_access_key_id="crash", aws_secret_access_key="crash",
            # No proxies (loopback): looking for them iterates os.environ, racing pytest in the suite's background.
            config=Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30,
                          proxies={}),
        )
        self.t0 = 0.0
        self.finished = threading.Event()
        self._thread: threading.Thread | None = None

    def prepare(self) -> None:
        """Workgroups, and a ready session for every calculation (each its own, so a TerminateSession of an
        ignoring violator never touches anything else)."""
        for name in (CALC_WG, IDLE_WG, UNWATCHED_WG):
            self.athena.create_work_group(Name=name, Configuration={"EngineVersion": SPARK})
        for target in self.targets:
            if target.kind == "idle_violator":
                continue
            workgroup = {"busy": IDLE_WG, "unwatched_calc": UNWATCHED_WG}.get(target.kind, CALC_WG)
            exempt = "[supervisor:exempt] " if target.kind == "exempt_calc" else ""
            target.session_id = self._start_session(workgroup, f"{exempt}crash loop {target.kind}")
        for target in self.targets:
            if target.kind in ("busy", "exempt_calc", "unwatched_calc"):  # long-running from the start
                code = "# sim: runtime=3600s dpus=2\nspark.range(10).count()"
                target.calculation_id = self._start_calculation(target.session_id, code)

    def _start_session(self, workgroup: str, description: str) -> str:
        session_id: str = self.athena.start_session(
            WorkGroup=workgroup, Description=f"{description}\n# sim: start={SESSION_START:g}s",
            EngineConfiguration={"CoordinatorDpuSize": 1, "MaxConcurrentDpus": 20, "DefaultExecutorDpuSize": 1},
        )["SessionId"]
        return session_id

    def _start_calculation(self, session_id: str, code: str) -> str:
        calculation_id: str = self.athena.start_calculation_execution(
            SessionId=session_id, CodeBlock=code)["CalculationExecutionId"]
        return calculation_id

    def start(self) -> None:
        self.t0 = time.time()
        self._thread = threading.Thread(target=self._play, name="workload", daemon=True)
        self._thread.start()

    def _play(self) -> None:
        try:
            for target in self.targets:
                if target.kind in ("busy", "exempt_calc", "unwatched_calc"):
                    continue
                delay = self.t0 + target.at - time.time()
                if delay > 0:
                    time.sleep(delay)
                try:
                    if target.kind == "idle_violator":
                        target.session_id = self._start_session(IDLE_WG, "crash loop idle violator")
                    else:
                        target.calculation_id = self._start_calculation(target.session_id,
                                                                        calc_code(target, self.config))
                except Exception as error:  # judged: a target that was never created is reported
                    target.error = repr(error)
        finally:
            self.finished.set()

    def resolve_crossings(self) -> None:
        """The exact crossing instants, from the emulator's own timestamps."""
        for target in self.targets:
            if target.error is not None:
                continue
            if target.kind == "calc_violator":
                status = self.athena.get_calculation_execution(CalculationExecutionId=target.calculation_id)
                submitted = status["Status"]["SubmissionDateTime"].timestamp()
                target.crossing = submitted + self.config.max_runtime
            elif target.kind == "idle_violator":
                started = self.athena.get_session(SessionId=target.session_id)["Status"]["StartDateTime"]
                target.crossing = started.timestamp() + SESSION_START + self.config.max_idle

    @property
    def last_offset(self) -> float:
        return max((target.at for target in self.targets), default=0.0)


# -- processes ------------------------------------------------------------------------------------------

def daemon_config(directory: Path, endpoint_url: str, config: LoopConfig) -> Path:
    path = directory / "supervisor.yaml"
    path.write_text(json.dumps({  # JSON is YAML
        # account_id set: without it the daemon asks STS at AWS's own endpoint, not endpoint_url (see
        # bench/README.md, "Crash loop"), and enforces nothing in workgroups whose tags it cannot read.
        "aws": {"region": "us-east-1", "endpoint_url": endpoint_url, "account_id": "123456789012",
                "max_requests_per_second": 100,
                "connect_timeout": f"{config.connect_timeout:g}s", "read_timeout": f"{config.read_timeout:g}s"},
        "workgroups": ["crash-*"],
        "mode": "enforce",
        "discovery_interval": config.discovery_interval,
        "log_level": "info",
        "journal": {"path": str(directory / "journal.db")},
        "http": {"host": "127.0.0.1", "port": 0},
        "escalation": {"stop_grace": f"{config.stop_grace:g}s", "terminate_grace": f"{config.terminate_grace:g}s"},
        # Dozens of actions a minute, on purpose: the rails are not what this loop tests.
        "safety": {"max_actions_per_minute": 10000, "circuit_breaker_fraction": 1.0},
        "policies": [
            {"name": "runtime", "workgroups": [CALC_WG], "calculation": {"max_runtime": f"{config.max_runtime:g}s"},
             "action": "stop"},
            {"name": "idle", "workgroups": [IDLE_WG], "session": {"max_idle": f"{config.max_idle:g}s"},
             "action": "terminate"},
        ],
    }, indent=2))
    return path


@dataclass
class Life:
    """One daemon process, from spawn to SIGKILL (or SIGTERM at the end)."""

    number: int
    mode: str                     # random | after_intent | intent_timeout | final
    spawned: float
    ended: float = 0.0
    exit_code: int | None = None
    intent: dict[str, Any] | None = None   # the journal row whose intent triggered the kill
    left_behind: str | None = None         # after_intent kills: what became of that call (restart_figures)

    @property
    def seconds(self) -> float:
        return round(self.ended - self.spawned, 3)


def daemon_environment() -> dict[str, str]:
    """The environment of the zygote and of the daemons it forks."""
    return environment(AWS_ENV, {"PYTHONPATH": str(ROOT)})


class Daemon:
    """Starts ``athena-supervisor run`` on the loop's config, a new process each time, a copy of ``zygote``."""

    def __init__(self, config_path: Path, directory: Path, zygote: Zygote) -> None:
        self.config_path = config_path
        self.directory = directory
        self.env = daemon_environment()
        self.zygote = zygote

    def log_path(self, number: int) -> Path:
        return self.directory / f"daemon-{number:03d}.log"

    def spawn(self, number: int) -> ForkedProcess:
        return self.zygote.spawn(["run", "--config", str(self.config_path)], log=self.log_path(number), env=self.env)


class Journal:
    """The daemon's journal, read-only, while it runs (WAL lets a reader in beside the writer)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self.last_seq = 0

    def _connection(self) -> sqlite3.Connection | None:
        if self._db is None and self.path.exists():
            try:
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                           check_same_thread=False)
                self._db.row_factory = sqlite3.Row
            except sqlite3.Error:
                self._db = None
        return self._db

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        db = self._connection()
        if db is None:
            return []
        try:
            return [dict(row) for row in db.execute(sql, params).fetchall()]
        except sqlite3.OperationalError:   # no tables yet, or busy: ask again at the next poll
            return []

    def new_intents(self) -> list[dict[str, Any]]:
        """``*.intent`` rows journaled since the last call."""
        rows = self.query("SELECT seq, time, event, target_id, session_id FROM events WHERE seq > ? ORDER BY seq",
                          (self.last_seq,))
        if rows:
            self.last_seq = rows[-1]["seq"]
        return [row for row in rows if row["event"].endswith(".intent")]

    def skip_to_end(self) -> None:
        rows = self.query("SELECT max(seq) AS seq FROM events")
        if rows and rows[0]["seq"] is not None:
            self.last_seq = rows[0]["seq"]

    def open_escalations(self) -> int:
        rows = self.query("SELECT count(*) AS n FROM escalations WHERE phase != 'done'")
        return int(rows[0]["n"]) if rows else -1

    def events(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM events ORDER BY seq")

    def escalations(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM escalations")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def sigkill(process: ForkedProcess) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    return process.wait(30)


# -- the loop -------------------------------------------------------------------------------------------

def kill_loop(config: LoopConfig, rng: random.Random, daemon: Daemon, journal: Journal,
              progress: TextIO) -> list[Life]:
    lives: list[Life] = []
    for number in range(config.kills):
        wants_intent = rng.random() < config.intent_share
        random_after = rng.uniform(*config.random_kill_after)
        intent_delay = rng.uniform(*config.intent_kill_delay)
        journal.skip_to_end()
        process = daemon.spawn(number)
        life = Life(number, "after_intent" if wants_intent else "random", time.time())
        deadline = life.spawned + (config.intent_wait if wants_intent else random_after)
        while process.poll() is None and time.time() < deadline:
            if wants_intent:
                intents = journal.new_intents()
                if intents:
                    life.intent = intents[0]
                    time.sleep(intent_delay)
                    break
                time.sleep(0.005)
            else:
                time.sleep(min(0.05, max(0.0, deadline - time.time())))
        if wants_intent and life.intent is None:
            life.mode = "intent_timeout"
        exited_by_itself = process.poll() is not None
        code = sigkill(process)
        life.ended = time.time()
        life.exit_code = code if exited_by_itself else None
        lives.append(life)
        print(f"kill {number + 1:3d}/{config.kills}: {life.mode:<14} after {life.seconds:6.2f}s"
              + (f"  {life.intent['event']} {life.intent['target_id']}" if life.intent else "")
              + (f"  EXITED BY ITSELF with {code}" if exited_by_itself else ""), file=progress, flush=True)
    return lives


def all_due_taken(workload: Workload, calls: list[dict[str, Any]]) -> bool:
    stops = {c["request"].get("CalculationExecutionId") for c in calls if c["operation"] == DESTRUCTIVE[0]}
    terminates = {c["request"].get("SessionId") for c in calls if c["operation"] == DESTRUCTIVE[1]}
    for target in workload.targets:
        if target.error is not None:
            continue
        if target.kind == "calc_violator" and (
                target.calculation_id not in stops or (target.ignores_stop and target.session_id not in terminates)):
            return False
        if target.kind == "idle_violator" and target.session_id not in terminates:
            return False
    return True


def settle(config: LoopConfig, workload: Workload, daemon: Daemon, journal: Journal,
           emulator: EmulatorProcess, number: int) -> Life:
    """A last daemon runs until every due action was taken and every escalation is closed; then SIGTERM."""
    process = daemon.spawn(number)
    life = Life(number, "final", time.time())
    deadline = time.time() + config.settle_timeout + max(0.0, workload.t0 + workload.last_offset - time.time())
    log = daemon.log_path(number)
    while process.poll() is None and time.time() < deadline:
        time.sleep(0.5)
        if not workload.finished.is_set() or time.time() < workload.t0 + workload.last_offset + config.max_runtime:
            continue
        # Not before it is up, even when the lives before took every action: a SIGTERM during its start (before its
        # handler is installed) would end it with -15, not with the graceful exit 0 judged below.
        if '"supervisor.started"' not in log.read_text(encoding="utf-8", errors="replace"):
            continue
        calls = [*emulator.control.calls(operation="StopCalculationExecution"),
                 *emulator.control.calls(operation="TerminateSession")]
        if journal.open_escalations() == 0 and all_due_taken(workload, calls):
            break
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        life.exit_code = process.wait(30)
    except subprocess.TimeoutExpired:
        life.exit_code = sigkill(process)
    life.ended = time.time()
    return life


# -- judging --------------------------------------------------------------------------------------------

def received(call: dict[str, Any]) -> bool:
    """The call reached the service (it may have taken effect)."""
    return call["error"] not in REFUSED


def judge(config: LoopConfig, workload: Workload, calls: list[dict[str, Any]], events: list[dict[str, Any]],
          lives: list[Life], ended: float) -> dict[str, Any]:
    by_calc: dict[str, list[dict[str, Any]]] = defaultdict(list)
    by_session: dict[str, list[dict[str, Any]]] = defaultdict(list)
    wrongful: list[dict[str, Any]] = []
    for call in calls:
        if call["operation"] == "StopCalculationExecution" and received(call):
            by_calc[call["request"].get("CalculationExecutionId", "")].append(call)
        elif call["operation"] == "TerminateSession" and received(call):
            by_session[call["request"].get("SessionId", "")].append(call)
        elif call["operation"] == "UpdateWorkGroup":
            wrongful.append({"why": "UpdateWorkGroup: no budget is configured", "call": call})

    calc_targets = {t.calculation_id: t for t in workload.targets if t.calculation_id}
    ignoring_sessions = {t.session_id: t for t in workload.targets if t.kind == "calc_violator" and t.ignores_stop}
    honouring_sessions = {t.session_id: t for t in workload.targets
                          if t.kind == "calc_violator" and not t.ignores_stop}
    idle_sessions = {t.session_id: t for t in workload.targets if t.kind == "idle_violator"}
    missed: list[dict[str, Any]] = []
    due = 0
    for target in workload.targets:
        if target.error is not None:
            missed.append({"why": "the harness could not create it", "target": asdict(target)})
            continue
        if target.kind == "calc_violator":
            assert target.crossing is not None
            due += 1
            stops = by_calc.get(target.calculation_id)
            if not stops:
                missed.append({"why": "Stop never sent", "target": asdict(target)})
            elif target.ignores_stop:
                due += 1
                if not by_session.get(target.session_id):
                    missed.append({"why": "TerminateSession never sent after an ignored Stop",
                                   "target": asdict(target)})
        elif target.kind == "idle_violator":
            due += 1
            if not by_session.get(target.session_id):
                missed.append({"why": "TerminateSession of an idle session never sent", "target": asdict(target)})

    for calculation_id, stops in by_calc.items():
        target = calc_targets.get(calculation_id)
        first = epoch(stops[0]["time"])
        if target is None or target.kind != "calc_violator":
            wrongful.append({"why": f"Stop of a {target.kind if target else 'unknown'} calculation",
                             "calls": stops})
        elif target.crossing is not None and first < target.crossing - TOLERANCE:
            wrongful.append({"why": "Stop before the crossing", "early_by": round(target.crossing - first, 3),
                             "calls": stops, "target": asdict(target)})
    slack: list[float] = []
    for session_id, terminates in by_session.items():
        first = epoch(terminates[0]["time"])
        if session_id in idle_sessions:
            crossing = idle_sessions[session_id].crossing
            if crossing is not None and first < crossing - TOLERANCE:
                wrongful.append({"why": "TerminateSession before max_idle", "early_by": round(crossing - first, 3),
                                 "calls": terminates})
        elif session_id in ignoring_sessions:
            target = ignoring_sessions[session_id]
            stops = by_calc.get(target.calculation_id)
            if not stops:
                wrongful.append({"why": "TerminateSession without a Stop first", "calls": terminates})
                continue
            allowed = epoch(stops[0]["time"]) + config.stop_grace
            slack.append(first - allowed)
            if first < allowed - TOLERANCE:
                wrongful.append({"why": "TerminateSession before the Stop + stop_grace",
                                 "early_by": round(allowed - first, 3), "calls": terminates, "stop": stops[0]})
        elif session_id in honouring_sessions:
            target = honouring_sessions[session_id]
            wrongful.append({"why": "TerminateSession of a session whose calculation honoured the Stop within "
                                    "stop_grace (CANCELED stop_latency after the Stop was processed)",
                             "calls": terminates, "stops": by_calc.get(target.calculation_id),
                             "target": asdict(target)})
        else:
            wrongful.append({"why": "TerminateSession of a session that never had to end", "calls": terminates})

    duplicates = [duplicate_evidence("StopCalculationExecution", cid, stops, events, lives)
                  for cid, stops in by_calc.items() if len(stops) > 1]
    duplicates += [duplicate_evidence("TerminateSession", sid, terminates, events, lives)
                   for sid, terminates in by_session.items() if len(terminates) > 1]

    modes = Counter(life.mode for life in lives if life.mode != "final")
    counts = {"missed": len(missed), "wrongful": len(wrongful), "duplicate": len(duplicates)}
    return {
        "counts": counts,
        "kills": {"total": sum(modes.values()), **dict(sorted(modes.items()))},
        "due_actions": due,
        "actions": {op: sum(1 for c in calls if c["operation"] == op and received(c)) for op in DESTRUCTIVE[:2]},
        "targets": dict(sorted(Counter(t.kind for t in workload.targets).items())),
        "ignoring_violators": sum(1 for t in workload.targets if t.kind == "calc_violator" and t.ignores_stop),
        "slow_honouring_violators": sum(1 for t in workload.targets if t.kind == "calc_violator"
                                        and not t.ignores_stop and t.stop_latency > STOP_LATENCY),
        "restarts": restart_figures(config, calls, events, lives),
        "terminate_after_stop_grace_min_slack_seconds": round(min(slack), 3) if slack else None,
        "api_calls": len(calls),
        "daemon_exits": [asdict(life) for life in lives if life.exit_code not in (None, 0)],
        "lives": [asdict(life) for life in lives],
        "missed": missed, "wrongful": wrongful, "duplicates": duplicates,
        "judged_at": ended,
    }


def life_at(lives: list[Life], stamp: str) -> int | None:
    """The daemon process that was running at a journal instant."""
    moment = datetime.fromisoformat(stamp).timestamp()
    return next((life.number for life in lives if life.spawned <= moment <= life.ended), None)


def duplicate_evidence(operation: str, target_id: str, calls: list[dict[str, Any]],
                       events: list[dict[str, Any]], lives: list[Life]) -> dict[str, Any]:
    """Where a repeated call came from: several calls for one journaled intent are a gateway retry (attempts
    of one call); a second intent after ``intent.unanswered`` is a resend, by the next process (a restart) or
    by the same one (a call that failed ambiguously, e.g. timed out)."""
    prefix = "stop" if operation == "StopCalculationExecution" else "terminate"
    column = "target_id" if prefix == "stop" else "session_id"
    phases = ("stop_pending",) if prefix == "stop" else ("terminate_pending", "escalation_failed")
    mine = (f"{prefix}.intent", f"{prefix}.sent", f"{prefix}.error")
    about = [e for e in events if e[column] == target_id and (
        e["event"] in mine or (e["event"] == "intent.unanswered" and e["phase"] in phases)
        or e["event"].startswith("verify."))]
    intents = sum(1 for e in about if e["event"] == f"{prefix}.intent")
    unanswered = sum(1 for e in about if e["event"] == "intent.unanswered")
    source = "unattributed"
    if len(calls) > intents:
        source = "gateway retry: more calls than journaled intents"
    elif unanswered:
        intent_lives, resend_lives = [], []
        for event in about:
            if event["event"] == f"{prefix}.intent":
                intent_lives.append(life_at(lives, event["time"]))
            elif event["event"] == "intent.unanswered" and intent_lives:
                resend_lives.append((intent_lives[-1], life_at(lives, event["time"])))
        restarted = any(first != second for first, second in resend_lives)
        source = ("resent after intent.unanswered, by the next process (restart)" if restarted
                  else "resent after intent.unanswered, by the same process")
    return {"operation": operation, "target": target_id, "calls": calls, "journal": about, "source": source}


def restart_figures(config: LoopConfig, calls: list[dict[str, Any]], events: list[dict[str, Any]],
                    lives: list[Life]) -> dict[str, Any]:
    """What each kill right after an intent left behind: the call never sent, still in flight when the next
    daemon first looked at the target (the case that used to be sent twice), or already processed."""
    outcome: Counter[str] = Counter()
    looks = [c for c in calls if c["operation"] in STATUS_LOOKS]
    for index, life in enumerate(lives):
        if life.intent is None or index + 1 >= len(lives):
            continue
        stop = life.intent["event"] == "stop.intent"
        operation = "StopCalculationExecution" if stop else "TerminateSession"
        key, target = ("CalculationExecutionId", life.intent["target_id"]) if stop else (
            "SessionId", life.intent["session_id"])
        intent_at = datetime.fromisoformat(life.intent["time"]).timestamp()
        sent = [c for c in calls if c["operation"] == operation and c["request"].get(key) == target
                and intent_at - TOLERANCE <= epoch(c["time"]) <= life.ended + 0.5]
        if not sent:
            life.left_behind = "call_not_sent_before_kill"
        else:
            processed = epoch(sent[0]["time"]) + config.latency
            after = [epoch(c["time"]) for c in looks if c["request"].get(key) == target
                     and epoch(c["time"]) >= lives[index + 1].spawned]
            life.left_behind = ("next_daemon_looked_while_call_in_flight" if after and after[0] < processed
                                else "call_processed_before_next_look")
        outcome[life.left_behind] += 1
    return {
        "resumed_intents": dict(sorted(outcome.items())),
        "intent_unanswered_resends": sum(1 for e in events if e["event"] == "intent.unanswered"),
        "intents": dict(sorted(Counter(e["event"] for e in events if e["event"].endswith(".intent")).items())),
        "escalations_resumed": 0,   # filled from the logs by run_crash_loop
    }


# -- driver ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def work_directory(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
    else:
        with tempfile.TemporaryDirectory(prefix="crash-loop-") as directory:
            yield Path(directory)


def count_log_events(directory: Path, name: str) -> int:
    count = 0
    for log in sorted(directory.glob("daemon-*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if f'"{name}"' in line:
                with contextlib.suppress(json.JSONDecodeError):
                    count += json.loads(line).get("event") == name
    return count


def run_crash_loop(config: LoopConfig, *, keep: Path | None = None, progress: TextIO | None = None,
                   zygotes: SharedZygote | None = None) -> dict[str, Any]:
    """Run one crash loop and return its summary (``counts`` holds missed/wrongful/duplicate); a line per kill
    goes to ``progress`` (default stderr). Its processes are copies of a zygote of its own, or of ``zygotes``'."""
    started = time.time()
    rng = random.Random(config.seed)
    with work_directory(keep) as directory, \
            (zygotes or SharedZygote()).use(daemon_environment(), directory / "zygote.log") as zygote:
        emulator = EmulatorProcess(directory / "emulator.log", zygote, control_timeout=120)
        journal = Journal(directory / "journal.db")
        try:
            for operation in ("StopCalculationExecution", "TerminateSession"):
                emulator.control.set_faults(operation, latency=f"{config.latency:g}s")
            workload = Workload(emulator.endpoint_url, config, plan_workload(config, rng))
            workload.prepare()
            daemon = Daemon(daemon_config(directory, emulator.endpoint_url, config), directory, zygote)
            workload.start()
            lives = kill_loop(config, rng, daemon, journal, sys.stderr if progress is None else progress)
            lives.append(settle(config, workload, daemon, journal, emulator, len(lives)))
            ended = time.time()
            phases = {"setup": round(workload.t0 - started, 1), "kill_loop": round(lives[-1].spawned - workload.t0, 1),
                      "settle": round(ended - lives[-1].spawned, 1)}
            emulator.control.clear_faults()
            calls = emulator.control.calls()
            workload.resolve_crossings()
            events = journal.events()
            summary = judge(config, workload, calls, events, lives, ended)
            summary["restarts"]["escalations_resumed"] = count_log_events(directory, "escalation.resumed")
            summary["open_escalations_at_end"] = journal.open_escalations()
            summary["final_exit_code"] = lives[-1].exit_code
            summary["final_daemon_seconds"] = lives[-1].seconds
            summary["phase_seconds"] = phases
            if keep is not None:
                (directory / "calls.json").write_text(json.dumps(calls, indent=1))
        finally:
            journal.close()
            emulator.close()
    summary["parameters"] = asdict(config)
    summary["wall_seconds"] = round(time.time() - started, 1)
    summary["ok"] = not any(summary["counts"].values()) and summary["final_exit_code"] == 0 \
        and not summary["daemon_exits"] and summary["open_escalations_at_end"] == 0
    return summary


def report(summary: dict[str, Any]) -> str:
    counts, actions, restarts = summary["counts"], summary["actions"], summary["restarts"]
    lines = [
        f"kills               {summary['kills']}",
        f"targets             {summary['targets']} ({summary['ignoring_violators']} ignore Stop, "
        f"{summary['slow_honouring_violators']} honour it slowly)",
        f"due actions         {summary['due_actions']}",
        f"actions received    {actions}",
        f"missed              {counts['missed']}",
        f"wrongful            {counts['wrongful']}",
        f"duplicate           {counts['duplicate']}",
        f"resumed intents     {restarts['resumed_intents']}",
        f"escalations resumed {restarts['escalations_resumed']}",
        f"intent.unanswered   {restarts['intent_unanswered_resends']}",
        f"intents journaled   {restarts['intents']}",
        f"Terminate − (Stop + stop_grace), min: {summary['terminate_after_stop_grace_min_slack_seconds']} s",
        f"API calls           {summary['api_calls']}",
        f"final daemon        exit {summary['final_exit_code']}, {summary['final_daemon_seconds']} s; "
        f"open escalations {summary['open_escalations_at_end']}",
        f"wall time           {summary['wall_seconds']} s {summary['phase_seconds']}",
    ]
    for name in ("missed", "wrongful"):
        for item in summary[name]:
            lines.append(f"{name}: {json.dumps(item, default=str)}")
    for item in summary["duplicates"]:
        lines.append(f"duplicate: {item['operation']} {item['target']} at {[c['time'] for c in item['calls']]} "
                     f"({item['source']}); journal: {[e['event'] for e in item['journal']]}")
    for life in summary["daemon_exits"]:
        lines.append(f"daemon exited by itself: {life}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="the bounded loop of the test suite (5 kills)")
    parser.add_argument("--kills", type=int, help="SIGKILLs before the last daemon settles everything")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--latency", type=float, help="seconds of server latency on Stop/Terminate")
    parser.add_argument("--connect-timeout", type=float, help="the daemon's aws.connect_timeout (s)")
    parser.add_argument("--read-timeout", type=float, help="the daemon's aws.read_timeout (s)")
    parser.add_argument("--horizon", type=float, help="seconds over which crossings are spread")
    parser.add_argument("--calc-violators", type=int)
    parser.add_argument("--idle-violators", type=int)
    parser.add_argument("--quiet-calcs", type=int)
    parser.add_argument("--intent-share", type=float, help="share of kills right after an intent")
    parser.add_argument("--keep", type=Path, help="keep config, journal, logs and the audit log here")
    parser.add_argument("--out", type=Path, help="write the summary as JSON")
    args = parser.parse_args(argv)
    config = LoopConfig.quick() if args.quick else LoopConfig()
    names = ("kills", "seed", "latency", "connect_timeout", "read_timeout", "horizon", "calc_violators",
             "idle_violators", "quiet_calcs", "intent_share")
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    config = replace(config, **overrides)
    summary = run_crash_loop(config, keep=args.keep)
    print(report(summary))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
