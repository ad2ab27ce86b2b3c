"""Event-fed discovery against polling only, on one workload: ``python bench/enforcement.py --events``.

Processes, each its own: the emulator (``athena-supervisor emulator``, pinned to core 0, throttled to ``--tps``)
publishing CloudTrail-shaped events of its write calls (``POST /_emulator/events``: ``--delay``, ``--drop-rate``)
to an SQS queue on moto's server (``moto_server``), and the daemon (``athena-supervisor run``, core 1), sampled
once a second (psutil) and reaped with ``os.wait4`` for its CPU seconds and peak RSS.

Workload (fresh for each side, the same seed):

- ``--sessions`` sessions in all. Most are BUSY for the whole run with a calculation that never crosses its
  limit (workgroups ``bench-long-*``, policy ``max_runtime: 24h``): polling must list their calculations every
  sweep (one ListCalculationExecutions each: the sweep that takes minutes at 10,000 sessions).
  ``--idle-sessions`` are IDLE in ``bench-new`` (policy ``max_runtime: --max-runtime``, 2 minutes by default).
- **New calculations arrive throughout the run** (Poisson, ``--arrival-rate`` per second, from the daemon's
  start, not after a first sweep), each in a free ``bench-new`` session, started through the emulator's
  ``POST /_emulator/call`` (as a user would call StartCalculationExecution; it does not spend the daemon's
  request budget, and publishes the event). A share (``--violator-share``) runs past the limit (a quarter of
  those ignore Stop, so TerminateSession is due ``--stop-grace`` after the Stop); the others end before it.
  Arrivals stop ``--max-runtime`` + ``--stop-grace`` + 15 s before the end, so every crossing is due in the run
  (or at ``--arrivals-until``: with dropped events, before the last backstop sweep of the run starts, so that a
  sweep can find every calculation whose event was lost).

Judged from the emulator's audit log (the daemon's own calls, ``via: api``; ms timestamps):

- **discovery**: from a calculation's SubmissionDateTime to the daemon's first knowledge of it: its first
  GetCalculationExecutionStatus (a look an event caused, or a check), or the first ListCalculationExecutions of
  its session answered after the submission (a sweep), whichever came first;
- **lag**: Stop − crossing (submission + limit), TerminateSession − (first Stop + stop_grace), for every due one;
  **missed**: due at least 2 s before the end and never sent; **wrongful**: a Stop of a calculation that never
  crossed (or before its crossing), a Terminate of a session that did not ignore a Stop (or too early);
  **duplicate**: a second Stop of a calculation;
- **API calls per second at steady state**: the daemon's calls after its first full sweep (every long session
  listed once) to the end; CPU over the same window; peak RSS over the run;
- the daemon's own counters, scraped before it stops: events received by outcome, missed events.

``--restart-at S``: the daemon is stopped (SIGTERM) S seconds after its start and started again at once on the
same journal; the lag of the crossings due in the first two minutes after the restart is reported apart.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.enforcement import (  # noqa: E402
    AWS_ENV,
    EmulatorProcess,
    ProcessStats,
    cell,
    epoch,
    http_json,
    lag_summary,
    measure,
    percentile,
    stop_process,
    tally,
)
from bench.environment import environment, urlopen  # noqa: E402
from bench.zygote import ForkedProcess, Zygote  # noqa: E402

LONG_WORKGROUPS = 4
NEW_WORKGROUP = "bench-new"
ACCOUNT = "123456789012"
REGION = "us-east-1"
DISCOVERY_INTERVAL_S = 30.0
AFTER_RESTART_S = 120.0


# -- workload -----------------------------------------------------------------------------------------

@dataclass
class Arrival:
    offset: float             # seconds after the daemon's start
    violates: bool
    ignores_stop: bool
    runtime: float
    session_id: str = ""
    calculation_id: str = ""
    submitted: float = 0.0    # epoch seconds, the emulator's SubmissionDateTime


@dataclass
class Workload:
    spec: dict[str, Any]
    arrivals: list[Arrival]
    long_sessions: set[str] = field(default_factory=set)
    new_sessions: list[str] = field(default_factory=list)


def build_workload(args: argparse.Namespace) -> Workload:
    rng = random.Random(args.seed)
    long_count = args.sessions - args.idle_sessions
    if long_count < 0:
        raise SystemExit("--idle-sessions must not exceed --sessions")
    groups: list[dict[str, Any]] = []
    for index in range(LONG_WORKGROUPS):
        count = long_count // LONG_WORKGROUPS + (1 if index < long_count % LONG_WORKGROUPS else 0)
        if count:
            groups.append({"workgroup": f"bench-long-{index}", "count": count, "description": "# sim: start=1s",
                           "started_ago": 120, "idle_timeout_minutes": 1440,
                           "calculations": [{"code": "# sim: runtime=86400s dpus=1\n# bench long",
                                             "submitted_ago": 60}]})
    groups.append({"workgroup": NEW_WORKGROUP, "count": args.idle_sessions, "description": "# sim: start=1s",
                   "started_ago": 120, "idle_timeout_minutes": 1440, "calculations": []})
    names = [f"bench-long-{i}" for i in range(LONG_WORKGROUPS)] + [NEW_WORKGROUP]
    spec = {"workgroups": [{"name": name} for name in names], "sessions": groups}
    last = args.duration - args.max_runtime - args.stop_grace - 15
    if args.arrivals_until is not None:
        last = min(last, args.arrivals_until)
    arrivals: list[Arrival] = []
    offset = 2.0
    while True:
        offset += rng.expovariate(args.arrival_rate)
        if offset > last:
            break
        violates = rng.random() < args.violator_share
        arrivals.append(Arrival(offset, violates, violates and rng.random() < 0.25,
                                runtime=3600.0 if violates else rng.uniform(0.2, 0.8) * args.max_runtime))
    return Workload(spec, arrivals)


# -- processes ----------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SqsServer:
    """moto's server (SQS), a process of its own, with one queue (``visibility_timeout`` seconds; 120 s as in
    deploy/cloudformation/events.yaml): ``moto_server``, or with ``zygote`` a copy of it running
    ``moto.server.main`` (its output in ``log``: see bench/zygote.py). Its port is picked free, then bound by the
    server: another process may take it in between (a test suite on the same machine), so a server that exits
    before it answers is started again on another port."""

    ATTEMPTS = 3

    def __init__(self, visibility_timeout: int = 120, *, zygote: Zygote | None = None,
                 log: Path | None = None) -> None:
        if zygote is not None and log is None:
            raise ValueError("a copy of a zygote writes its output to a log: give one")
        for attempt in range(1, self.ATTEMPTS + 1):
            port = free_port()
            self.endpoint_url = f"http://127.0.0.1:{port}"
            argv = ["-H", "127.0.0.1", "-p", str(port)]
            with tempfile.TemporaryFile() as stderr:  # the child keeps its own descriptor of the file
                self.process: subprocess.Popen[bytes] | ForkedProcess
                if zygote is None:
                    self.process = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), *argv],
                                                    stdout=subprocess.DEVNULL, stderr=stderr, env=environment(AWS_ENV))
                else:
                    assert log is not None
                    written = log.stat().st_size if log.exists() else 0
                    self.process = zygote.spawn(argv, log=log, env=environment(AWS_ENV), entry="moto.server:main")
                if self._answers(within=30.0):
                    break
                stop_process(self.process)
                if zygote is None:
                    stderr.seek(0)
                    error = stderr.read().decode(errors="replace")[-300:]
                else:
                    assert log is not None
                    error = log.read_bytes()[written:].decode(errors="replace")[-300:]
            if attempt == self.ATTEMPTS:
                raise RuntimeError(f"moto_server did not start on a free port ({self.ATTEMPTS} tries): {error}")
        sqs = boto3.client("sqs", endpoint_url=self.endpoint_url, region_name=REGION,  # no proxies: as urlopen
                           aws_access_key_id="bench", aws_secret_access_key="bench", config=Config(proxies={}))
        self.queue_url: str = sqs.create_queue(QueueName="athena-supervisor-events",
                                               Attributes={"VisibilityTimeout": str(visibility_timeout)})["QueueUrl"]

    def _answers(self, within: float) -> bool:
        deadline = time.time() + within
        while self.process.poll() is None:
            try:
                urlopen(f"{self.endpoint_url}/moto-api/", timeout=1).close()
                return True
            except OSError:
                if time.time() > deadline:
                    return False
                time.sleep(0.2)
        return False

    def close(self) -> None:
        stop_process(self.process)


def daemon_config(directory: Path, emulator: EmulatorProcess, sqs: SqsServer | None, args: argparse.Namespace,
                  port: int) -> Path:
    discovery: dict[str, Any] = {}
    if sqs is not None:
        discovery = {"backstop_interval": f"{args.backstop:g}s",
                     "events": {"sqs_queue_url": sqs.queue_url, "endpoint_url": sqs.endpoint_url, "region": REGION,
                                "late_after": "60s"}}
    config: dict[str, Any] = {
        "aws": {"region": REGION, "endpoint_url": emulator.endpoint_url, "account_id": ACCOUNT,
                "max_requests_per_second": round(0.95 * args.tps, 3), "max_attempts": 8},
        "workgroups": ["bench-*"],
        "mode": "enforce",
        "discovery_interval": f"{DISCOVERY_INTERVAL_S:g}s",
        "discovery": discovery,
        "log_level": "warning",
        "journal": {"path": str(directory / "journal.db")},
        "http": {"host": "127.0.0.1", "port": port},
        "escalation": {"stop_grace": f"{args.stop_grace:g}s", "terminate_grace": "60s"},
        # Hundreds of Stops within minutes: rails off (fraction 1.0), as in bench/enforcement.py.
        "safety": {"max_actions_per_minute": 100000, "circuit_breaker_fraction": 1.0},
        "policies": [
            {"name": "long", "workgroups": ["bench-long-*"], "calculation": {"max_runtime": "24h"}},
            {"name": "new", "workgroups": [NEW_WORKGROUP], "calculation": {"max_runtime": f"{args.max_runtime:g}s"}},
        ],
    }
    path = directory / "supervisor.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


class Driver(threading.Thread):
    """Starts the arrivals at their offsets from ``started`` (one at a time, in a free bench-new session)."""

    def __init__(self, emulator: EmulatorProcess, workload: Workload, started: float) -> None:
        super().__init__(name="arrivals", daemon=True)
        self.emulator, self.workload, self.started = emulator, workload, started
        self.errors: list[str] = []

    def run(self) -> None:
        free_at = dict.fromkeys(self.workload.new_sessions, 0.0)
        for arrival in self.workload.arrivals:
            delay = self.started + arrival.offset - time.time()
            if delay > 0:
                time.sleep(delay)
            now = time.time()
            session_id = next((s for s, at in free_at.items() if at <= now), None)
            if session_id is None:
                self.errors.append("no free session")
                continue
            # A violator's session is not used again (stopped, or terminated); a short one's once it ended.
            free_at[session_id] = math.inf if arrival.violates else now + arrival.runtime + 5
            on_stop = "ignore" if arrival.ignores_stop else "honor"
            code = f"# sim: runtime={arrival.runtime:.3f}s dpus=1 on_stop={on_stop} stop_latency=1s\n# bench new"
            try:
                answer = http_json(f"{self.emulator.control_url}/call", {
                    "operation": "StartCalculationExecution", "params": {"SessionId": session_id, "CodeBlock": code}},
                    method="POST", timeout=30)
            except OSError as error:
                self.errors.append(repr(error))
                continue
            arrival.session_id, arrival.calculation_id = session_id, str(answer["CalculationExecutionId"])


def scrape(port: int) -> dict[str, float]:
    """The daemon's counters this bench reports, summed over their labels but the outcome/kind."""
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return event_counters((sample.name, sample.labels, sample.value)
                          for family in text_string_to_metric_families(text) for sample in family.samples)


def event_counters(samples: Iterable[tuple[str, dict[str, str], float]]) -> dict[str, float]:
    """Of metric samples (name, labels, value), possibly of several daemons: ``events_<outcome>`` (events
    received) and ``missed_events_<kind>`` (missed events counted), each summed."""
    found: dict[str, float] = {}
    for name, labels, value in samples:
        if name == "athena_supervisor_events_received_total":
            key = f"events_{labels['outcome']}"
        elif name == "athena_supervisor_discovery_missed_events_total":
            key = f"missed_events_{labels['kind']}"
        else:
            continue
        found[key] = found.get(key, 0.0) + value
    return found


def run_daemon(command: list[str], until: float, log: Path, port: int, counters: dict[str, float]) -> ProcessStats:
    """The daemon until ``until``; its counters are scraped just before it is stopped."""

    def scrape_at_end() -> None:
        time.sleep(max(0.0, until - 3 - time.time()))
        try:
            counters.update(scrape(port))
        except OSError as error:
            counters["scrape_error"] = 1.0
            print(f"scrape failed: {error}", file=sys.stderr)

    scraper = threading.Thread(target=scrape_at_end, daemon=True)
    scraper.start()
    stats = measure(command, until, log)
    scraper.join(timeout=5)
    return stats


# -- one side ------------------------------------------------------------------------------------------

def run_side(side: str, args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    workload = build_workload(args)
    emulator = EmulatorProcess(args.tps)
    sqs = SqsServer() if side == "events" else None
    try:
        if sqs is not None:
            http_json(f"{emulator.control_url}/events", {
                "sqs_queue_url": sqs.queue_url, "endpoint_url": sqs.endpoint_url, "region": REGION,
                "delay": args.delay, "drop_rate": args.drop_rate, "seed": args.seed}, method="POST")
        created = http_json(f"{emulator.control_url}/populate", workload.spec, method="POST")
        for group, session in zip(_session_groups(workload.spec), created["sessions"], strict=True):
            (workload.new_sessions.append(session["SessionId"]) if group == NEW_WORKGROUP
             else workload.long_sessions.add(session["SessionId"]))
        port = free_port()
        command = [sys.executable, "-m", "supervisor", "run", "--config",
                   str(daemon_config(directory, emulator, sqs, args, port))]
        started = time.time()
        driver = Driver(emulator, workload, started)
        driver.start()
        counters: dict[str, float] = {}
        restarted = None
        if args.restart_at:
            first = run_daemon(command, started + args.restart_at, directory / f"{side}.log", port, counters)
            restarted = time.time()
            before = dict(counters)
            second = run_daemon(command, started + args.duration, directory / f"{side}.restarted.log", port,
                                counters)
            counters = {key: before.get(key, 0.0) + counters.get(key, 0.0) for key in before.keys() | counters.keys()}
            stats = ProcessStats(first.cpu_seconds + second.cpu_seconds, max(first.peak_rss_mib, second.peak_rss_mib),
                                 first.samples + second.samples, second.exit_code)
        else:
            stats = run_daemon(command, started + args.duration, directory / f"{side}.log", port, counters)
        ended = time.time()
        driver.join(timeout=10)
        calls = http_json(f"{emulator.control_url}/calls")["calls"]
        published = http_json(f"{emulator.control_url}/events") if sqs is not None else None
        for arrival in workload.arrivals:
            if arrival.calculation_id:
                status = http_json(f"{emulator.control_url}/call", {
                    "operation": "GetCalculationExecutionStatus",
                    "params": {"CalculationExecutionId": arrival.calculation_id}}, method="POST")["Status"]
                arrival.submitted = float(status["SubmissionDateTime"])
    finally:
        emulator.close()
        if sqs is not None:
            sqs.close()
    if args.keep:
        (directory / f"{side}.calls.json").write_text(json.dumps(calls))
    result = analyse(calls, workload, started, ended, args, restarted)
    steady_from = started + (result["first_full_sweep_seconds"] or (ended - started) / 2)
    steady = [s for s in stats.samples if s[0] >= steady_from]
    # CPU seconds are each process's own: across a restart the counter starts again, so only the differences
    # between two samples of one process count.
    busy = sum(b[1] - a[1] for a, b in itertools.pairwise(steady) if b[1] >= a[1])
    steady_core = (busy / (steady[-1][0] - steady[0][0])
                   if len(steady) >= 2 and steady[-1][0] > steady[0][0] else None)
    result.update({
        "side": side, "seconds": round(ended - started, 1), "exit_code": stats.exit_code,
        "cpu_seconds": round(stats.cpu_seconds, 2),
        "steady_core_percent": round(100 * steady_core, 1) if steady_core is not None else None,
        "peak_rss_mib": round(stats.peak_rss_mib, 1), "daemon_counters": counters,
        "published": published, "driver_errors": driver.errors[:5], "arrivals": len(workload.arrivals),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    })
    return result


def _session_groups(spec: dict[str, Any]) -> list[str]:
    """The workgroup of each session populate creates, in its order."""
    return [group["workgroup"] for group in spec["sessions"] for _ in range(group["count"])]


# -- analysis -------------------------------------------------------------------------------------------

def analyse(calls: list[dict[str, Any]], workload: Workload, started: float, ended: float,
            args: argparse.Namespace, restarted: float | None) -> dict[str, Any]:
    daemon_calls = [call for call in calls if call.get("via", "api") == "api"]
    counted = tally(daemon_calls)
    by_operation, throttled = counted.by_operation, counted.throttled
    first_get: dict[str, float] = {}
    listings: dict[str, list[float]] = {}
    stops: dict[str, list[float]] = {}
    terminates: dict[str, list[float]] = {}
    for operation, request, when in counted.answered:
        if operation == "GetCalculationExecutionStatus":
            first_get.setdefault(request.get("CalculationExecutionId", ""), when)
        elif operation == "ListCalculationExecutions":
            listings.setdefault(request.get("SessionId", ""), []).append(when)
        elif operation == "StopCalculationExecution":
            stops.setdefault(request.get("CalculationExecutionId", ""), []).append(when)
        elif operation == "TerminateSession":
            terminates.setdefault(request.get("SessionId", ""), []).append(when)
    first_listed = {session: min(times) for session, times in listings.items()}
    first_full_sweep = max((first_listed.get(s, math.inf) for s in workload.long_sessions), default=math.inf)
    arrivals = [a for a in workload.arrivals if a.calculation_id]
    discovery: list[float] = []
    slow_discovery: list[tuple[float, float]] = []  # (latency, seconds after start)
    by_sweep = 0
    unknown = 0
    for arrival in arrivals:
        listed = min((t for t in listings.get(arrival.session_id, []) if t >= arrival.submitted), default=math.inf)
        got = first_get.get(arrival.calculation_id, math.inf)
        known = min(listed, got)
        if known == math.inf:
            unknown += 1
            continue
        by_sweep += listed < got
        discovery.append(known - arrival.submitted)
        slow_discovery.append((known - arrival.submitted, arrival.submitted - started))
    tolerance = 0.002
    due_by = ended - 2.0
    lags: list[float] = []
    after_restart: list[float] = []
    missed: list[dict[str, Any]] = []
    wrongful: list[dict[str, Any]] = []
    violators = {a.calculation_id: a for a in arrivals if a.violates}
    ignoring = {a.session_id: a for a in arrivals if a.ignores_stop}

    slow_actions: list[tuple[float, float]] = []  # (lag, seconds after start it was due)

    def note(lag: float, due: float) -> None:
        lags.append(lag)
        slow_actions.append((lag, due - started))
        if restarted is not None and restarted <= due <= restarted + AFTER_RESTART_S:
            after_restart.append(lag)

    for arrival in violators.values():
        cross = arrival.submitted + args.max_runtime
        if cross > due_by:
            continue
        first_stop = min(stops.get(arrival.calculation_id, []), default=None)
        if first_stop is None:
            missed.append({"action": "stop", "calculation_id": arrival.calculation_id})
            continue
        note(first_stop - cross, cross)
        if arrival.ignores_stop:
            due = first_stop + args.stop_grace
            if due > due_by:
                continue
            first_terminate = min(terminates.get(arrival.session_id, []), default=None)
            if first_terminate is None:
                missed.append({"action": "terminate", "session_id": arrival.session_id})
            else:
                note(first_terminate - due, due)
    for calculation_id, times in stops.items():
        violator = violators.get(calculation_id)
        if violator is None or min(times) < violator.submitted + args.max_runtime - tolerance:
            wrongful.append({"action": "stop", "calculation_id": calculation_id})
    for session_id, times in terminates.items():
        violator = ignoring.get(session_id)
        first_stop = min(stops.get(violator.calculation_id, []), default=None) if violator else None
        if first_stop is None or min(times) < first_stop + args.stop_grace - tolerance:
            wrongful.append({"action": "terminate", "session_id": session_id})
    steady_from = first_full_sweep if first_full_sweep < math.inf else started + (ended - started) / 2
    steady_calls = [c for c in daemon_calls if epoch(c["time"]) >= steady_from]
    steady_by_operation: dict[str, int] = {}
    for call in steady_calls:
        steady_by_operation[call["operation"] or "?"] = steady_by_operation.get(call["operation"] or "?", 0) + 1

    def r(value: float | None) -> float | None:
        return None if value is None else round(value, 3)
    return {
        "discovery_seconds": {"n": len(discovery), "p50": r(percentile(discovery, 0.5)),
                              "p99": r(percentile(discovery, 0.99)), "max": r(max(discovery, default=None))},
        "found_by_sweep": by_sweep, "never_known": unknown,
        "lag_seconds": lag_summary(lags),
        "lag_after_restart_seconds": lag_summary(after_restart) if restarted is not None else None,
        "due_actions": len(lags) + len(missed), "missed": len(missed), "missed_detail": missed[:10],
        "wrongful": len(wrongful), "wrongful_detail": wrongful[:10],
        "duplicate_stops": sum(len(times) - 1 for times in stops.values()),
        "slowest_discovery": [{"seconds": round(a, 3), "at": round(b, 1)} for a, b in sorted(slow_discovery)[-5:]],
        "slowest_actions": [{"lag": round(a, 3), "due_at": round(b, 1)} for a, b in sorted(slow_actions)[-8:]],
        "api_calls": len(daemon_calls), "api_calls_by_operation": dict(sorted(by_operation.items())),
        "throttled_by_operation": dict(sorted(throttled.items())),
        "first_full_sweep_seconds": round(first_full_sweep - started, 1) if first_full_sweep < math.inf else None,
        "steady_seconds": round(ended - steady_from, 1),
        "steady_api_calls_per_second": round(len(steady_calls) / max(1.0, ended - steady_from), 2),
        "steady_api_calls_by_operation": dict(sorted(steady_by_operation.items())),
        "restarted_after_seconds": round(restarted - started, 1) if restarted is not None else None,
    }


# -- report ---------------------------------------------------------------------------------------------

ROWS = (
    ("arrivals", "new calculations"),
    ("discovery_seconds.p50", "discovery p50 (s)"), ("discovery_seconds.p99", "discovery p99 (s)"),
    ("discovery_seconds.max", "discovery max (s)"), ("found_by_sweep", "found by a sweep first"),
    ("never_known", "never known"),
    ("due_actions", "due actions"), ("lag_seconds.p50", "lag p50 (s)"), ("lag_seconds.p99", "lag p99 (s)"),
    ("lag_seconds.max", "lag max (s)"), ("lag_after_restart_seconds.max", "lag max, 2 min after restart (s)"),
    ("missed", "missed"), ("wrongful", "wrongful"), ("duplicate_stops", "duplicate Stops"),
    ("first_full_sweep_seconds", "first full sweep (s)"), ("steady_seconds", "steady window (s)"),
    ("steady_api_calls_per_second", "API calls/s, steady"), ("api_calls", "API calls, whole run"),
    ("steady_core_percent", "% of a core, steady"), ("cpu_seconds", "CPU (s)"), ("peak_rss_mib", "peak RSS (MiB)"),
    ("daemon_counters.events_applied", "events applied"), ("daemon_counters.events_known", "events known"),
    ("daemon_counters.events_duplicate", "events duplicate"),
    ("daemon_counters.missed_events_calculation", "missed events counted (calc.)"),
)


def pick(result: dict[str, Any], path: str) -> Any:
    value: Any = result
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def table(result: dict[str, Any]) -> str:
    sides = [side for side in ("events", "polling") if side in result]

    width = max(len(label) for _, label in ROWS)
    lines = [f"{'':{width}}" + "".join(f"  {side:>14}" for side in sides)]
    lines += [f"{label:{width}}" + "".join(f"  {cell(pick(result[side], key)):>14}" for side in sides)
              for key, label in ROWS]
    return "\n".join(lines)


def targets(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    events = result["events"]
    delay_max = max(float(part.rstrip("s")) for part in str(args.delay).split("-")) if args.delay else 0.0
    found: dict[str, Any] = {
        "discovery_p99_le_delay_plus_1s": (events["discovery_seconds"]["p99"] or math.inf) <= delay_max + 1,
        "lag_p99_le_1s": (events["lag_seconds"]["p99"] or 0) <= 1.0,
        "no_missed": events["missed"] == 0, "no_wrongful": events["wrongful"] == 0,
        "core_le_10pct_steady": (events["steady_core_percent"] or 0) <= 10,
        "rss_le_150mib": events["peak_rss_mib"] <= 150,
    }
    if "polling" in result:
        ours, theirs = events["steady_api_calls_per_second"], result["polling"]["steady_api_calls_per_second"]
        found["api_calls_5x_fewer_steady"] = ours > 0 and theirs / ours >= 5
        found["api_calls_ratio_steady"] = round(theirs / ours, 1) if ours > 0 else None
    if events.get("lag_after_restart_seconds"):
        worst = events["lag_after_restart_seconds"]["max"]
        found["after_restart_within_2s"] = worst is not None and worst <= 2.0
    return found


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        args.sessions, args.idle_sessions, args.max_runtime, args.backstop = 300, 100, 20.0, 60.0
        args.duration, args.stop_grace, args.arrival_rate = args.duration or 75.0, 3.0, 2.0
    args.duration = args.duration or 900.0
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "parameters": {key: getattr(args, key) for key in (
            "sessions", "idle_sessions", "arrival_rate", "violator_share", "max_runtime", "delay", "drop_rate",
            "backstop", "restart_at", "arrivals_until", "tps", "duration", "stop_grace", "seed")}
        | {"cpus": os.cpu_count()},
    }
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        for side in ("events",) if args.skip_polling else ("events", "polling"):
            directory = Path(args.keep) / side if args.keep else Path(tmp) / side
            directory.mkdir(parents=True, exist_ok=True)
            print(f"[{time.strftime('%H:%M:%S')}] {side}: {args.sessions} sessions, {args.duration:.0f}s",
                  file=sys.stderr, flush=True)
            result[side] = run_side(side, args, directory)
    result["targets"] = targets(result, args)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("--events (event-fed discovery against polling; bench/events.py)")
    group.add_argument("--events", action="store_true", help="run the event-fed discovery bench instead")
    group.add_argument("--idle-sessions", type=int, default=1000, help="IDLE sessions where calculations arrive")
    group.add_argument("--arrival-rate", type=float, default=1.0, help="new calculations per second")
    group.add_argument("--violator-share", type=float, default=0.3)
    group.add_argument("--max-runtime", type=float, default=120.0, help="the limit of the new calculations, s")
    group.add_argument("--delay", default="1s-5s", help="event delivery delay (the emulator's)")
    group.add_argument("--drop-rate", type=float, default=0.0, help="share of events never delivered")
    group.add_argument("--backstop", type=float, default=900.0, help="discovery.backstop_interval, s")
    group.add_argument("--restart-at", type=float, default=None, help="restart the daemon this many s in")
    group.add_argument("--skip-polling", action="store_true", help="the events side only")
    group.add_argument("--arrivals-until", type=float, default=None,
                       help="no arrival after this many s (with --drop-rate: before the last backstop sweep, so "
                            "that a sweep can find every calculation whose event was dropped)")


def main(args: argparse.Namespace) -> int:
    result = run(args)
    print(f"\n{args.sessions:,} sessions ({args.idle_sessions:,} idle), {args.arrival_rate:g} new calculations/s, "
          f"delay {args.delay}, drop {args.drop_rate:g}, backstop {args.backstop:g}s, {args.duration:.0f}s per side")
    print(table(result))
    print("targets:", json.dumps(result["targets"]))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0
