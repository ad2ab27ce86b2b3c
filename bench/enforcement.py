"""Enforcement lag of the supervisor against the naive poller, side by side, from the emulator's audit log.

For each side, on a fresh emulator (its own subprocess, pinned to core 0, throttled to ``--tps``):

1. populate ``--sessions`` sessions and ``--calculations`` live calculations across several workgroups
   through the control API. ``--violations`` calculations (in the ``bench-rt-*`` workgroups) cross the
   runtime limit and ``--violations``/4 (in ``bench-dpu-0``) cross the DPU-hours limit, at instants spread
   over the run after a warm-up; a quarter of each ignore Stop, so they must be escalated to
   TerminateSession ``--stop-grace`` after the Stop. Everything else never crosses: any action on it is
   wrongful.
2. run the process under test as a subprocess (pinned to core 1): ``python -m supervisor run --config
   <generated yaml>``, then ``bench/baseline_naive.py``. The driver only samples it once a second (psutil)
   and reaps it with ``os.wait4`` for its CPU seconds and peak RSS.
3. read the audit log (every call, ms timestamps), then the exact SubmissionDateTime of each violating
   calculation, and compute lag (crossing → Stop, Stop + stop_grace → TerminateSession), missed and wrongful
   actions, calls by operation.

Usage:
    python bench/enforcement.py --sessions 1000 --out results.json
    python bench/enforcement.py --sessions 10000 --calculations 20000 --violations 200 --tps 50
    python bench/enforcement.py --quick            # ≤ 1 minute smoke run (the test suite runs this)
    python bench/enforcement.py --series 100,1000,10000 --out-dir bench/results
    python bench/enforcement.py --sessions 1000 --budgets --skip-naive   # sweep cadence with budgets on
    python bench/enforcement.py --events --sessions 10000 --out bench/results/events-10000.json  # bench/events.py

``--budgets`` adds a daily budget over every bench workgroup (limit 1,000,000 USD, one ``notify`` threshold,
so it never acts): the daemon then also accounts spend (GetSession per active session). ``--skip-naive``
runs the supervisor side only. Each side also reports its sweep cadence from the audit log: a sweep lists
every workgroup's IDLE sessions once, so the first-page ``ListSessions StateFilter=IDLE`` calls mark sweep
starts, and the last ``ListCalculationExecutions`` before the next start ends its listing; accounting passes
likewise start with ``ListSessions StateFilter=TERMINATED``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.environment import environment, urlopen  # noqa: E402
from bench.zygote import ForkedProcess, SharedZygote, Zygote  # noqa: E402

RUNTIME_LIMIT_S = 1800.0          # policy max_runtime of the bench-rt-* workgroups
DPU_LIMIT_HOURS = 2.0             # policy max_dpu_hours of bench-dpu-0
VIOLATOR_DPUS = 8                 # a DPU violator crosses 2 DPU-hours after 900 s of running
DPU_CROSS_AFTER_S = DPU_LIMIT_HOURS * 3600 / VIOLATOR_DPUS
RUNTIME_WORKGROUPS = 4
DPU_SHARE = 0.05                  # share of the quiet sessions in the DPU workgroup (they need Gets)
DISCOVERY_INTERVAL_S = 30.0       # the daemon's discovery_interval
BUDGET_LIMIT_USD = 1_000_000.0    # --budgets: a daily budget over every bench workgroup that never acts
AWS_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
HEADERS = {
    "Content-Type": "application/x-amz-json-1.1",
    "Authorization": "AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/athena/aws4_request, "
                     "SignedHeaders=host;x-amz-date;x-amz-target, Signature=0",
    "X-Amz-Date": "20260101T000000Z",
}


# -- workload -----------------------------------------------------------------------------------------

@dataclass
class Violator:
    kind: str                 # "runtime" | "dpu"
    ignores_stop: bool
    cross_offset: float       # seconds after populate when the limit is crossed
    workgroup: str
    session_id: str = ""
    calculation_id: str = ""
    cross_at: float = 0.0     # epoch seconds, from the calculation's real SubmissionDateTime


@dataclass
class Workload:
    spec: dict[str, Any]
    violators: list[Violator]
    sessions: int
    calculations: int
    warmup: float
    window: tuple[float, float]
    quiet_sessions: set[str] = field(default_factory=set)


def estimate_first_sweep(sessions: int, dpu_calcs: int, tps: float) -> float:
    """Calls of the daemon's first sweep (a ListCalculationExecutions per BUSY session, ListSessions pages,
    a Get per running DPU-workgroup calculation) at its budget of 0.95 × tps."""
    listing_pages = (RUNTIME_WORKGROUPS + 1) * 5 + sessions / 100
    return (sessions + dpu_calcs + listing_pages) / (0.95 * tps)


def build_workload(sessions: int, calculations: int, violations: int, tps: float, duration: float,
                   stop_grace: float, seed: int, progress: TextIO | None = None) -> Workload:
    if not sessions <= calculations <= 2 * sessions:
        raise SystemExit("--calculations must be between --sessions and 2 × --sessions (one runs, one queues)")
    rng = random.Random(seed)
    dpu_violations = max(1, violations // 4)
    violator_count = violations + dpu_violations
    if violator_count > sessions // 2:
        raise SystemExit("too many violations for the number of sessions")
    quiet = sessions - violator_count
    quiet_dpu = round(quiet * DPU_SHARE)
    warmup = estimate_first_sweep(sessions, dpu_violations + quiet_dpu, tps) + 5
    last = duration - stop_grace - 4
    if last - warmup < 10:
        print(f"note: duration {duration:.0f}s leaves no window after the estimated first sweep "
              f"({warmup:.0f}s); crossings start at 40% of the run", file=progress or sys.stderr)
        warmup = duration * 0.4
    offsets = sorted(warmup + (last - warmup) * (i + rng.random()) / violator_count
                     for i in range(violator_count))
    rng.shuffle(offsets)
    violators = []
    for index in range(violator_count):
        kind = "runtime" if index < violations else "dpu"
        ordinal = index if kind == "runtime" else index - violations
        workgroup = f"bench-rt-{ordinal % RUNTIME_WORKGROUPS}" if kind == "runtime" else "bench-dpu-0"
        violators.append(Violator(kind, ordinal % 4 == 3, offsets[index], workgroup))
    second_calcs = calculations - sessions  # sessions with a second (queued) calculation
    groups: list[dict[str, Any]] = []
    for index, violator in enumerate(violators):
        cross_after = RUNTIME_LIMIT_S if violator.kind == "runtime" else DPU_CROSS_AFTER_S
        submitted_ago = cross_after - violator.cross_offset
        dpus = 2 if violator.kind == "runtime" else VIOLATOR_DPUS
        on_stop = "ignore" if violator.ignores_stop else "honor"
        calcs = [{"code": f"# sim: runtime=7200s dpus={dpus} on_stop={on_stop} stop_latency=1s\n"
                          f"# bench violator {index} {violator.kind}",
                  "submitted_ago": round(submitted_ago, 3)}]
        if index < second_calcs:
            calcs.append({"code": "# sim: runtime=3600s dpus=1\n# bench queued behind a violator",
                          "submitted_ago": 20})
        groups.append({"workgroup": violator.workgroup, "count": 1, "description": "# sim: start=1s",
                       "started_ago": round(submitted_ago + 10, 3), "calculations": calcs})
    second_left = max(0, second_calcs - violator_count)
    quiet_groups = [("bench-dpu-0", quiet_dpu)] + [
        (f"bench-rt-{i}", (quiet - quiet_dpu) // RUNTIME_WORKGROUPS + (1 if i < (quiet - quiet_dpu)
                                                                         % RUNTIME_WORKGROUPS else 0))
        for i in range(RUNTIME_WORKGROUPS)]
    for workgroup, count in quiet_groups:
        with_second = min(count, math.ceil(second_left * count / max(1, quiet))) if second_left else 0
        dpus = 1 if workgroup.startswith("bench-dpu") else 2
        first = {"code": f"# sim: runtime=3600s dpus={dpus}\n# bench quiet", "submitted_ago": 60}
        second = {"code": "# sim: runtime=600s dpus=1\n# bench quiet queued", "submitted_ago": 30}
        for group_count, calcs in ((with_second, [first, second]), (count - with_second, [first])):
            if group_count:
                groups.append({"workgroup": workgroup, "count": group_count, "description": "# sim: start=1s",
                               "started_ago": 120, "calculations": calcs})
    names = [f"bench-rt-{i}" for i in range(RUNTIME_WORKGROUPS)] + ["bench-dpu-0"]
    spec = {"workgroups": [{"name": name, "tags": {"team": name}} for name in names], "sessions": groups}
    return Workload(spec, violators, sessions, calculations, warmup, (warmup, last))


# -- processes ----------------------------------------------------------------------------------------

def pinned(command: list[str], core: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core), *command]
    return command


def http_json(url: str, body: Any = None, method: str = "GET", timeout: float = 600) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


class EmulatorProcess:
    """``athena-supervisor emulator``: a fresh process pinned to core 0, or with ``zygote`` a copy of it (its output
    in ``log``; not pinned)."""

    def __init__(self, tps: float, *, zygote: Zygote | None = None, log: Path | None = None) -> None:
        argv = ["emulator", "--port", "0", "--throttle-tps", str(tps)]
        env = environment({"PYTHONPATH": str(ROOT)})
        self.process: subprocess.Popen[str] | ForkedProcess
        if zygote is not None:
            if log is None:
                raise ValueError("a copy of a zygote writes its output to a log: give one")
            self.process, ready = zygote.start_server(argv, log=log, env=env, ready="emulator.ready")
        else:
            self.process = subprocess.Popen(pinned([sys.executable, "-m", "supervisor", *argv], 0), cwd=ROOT,
                                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
            assert self.process.stdout is not None
            ready = json.loads(self.process.stdout.readline())
        self.endpoint_url: str = ready["endpoint_url"]
        self.control_url: str = ready["control_url"]

    def athena(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(self.endpoint_url, data=json.dumps(body).encode(), method="POST",
                                         headers={**HEADERS, "X-Amz-Target": f"AmazonAthena.{operation}"})
        with urlopen(request, timeout=30) as response:
            result: dict[str, Any] = json.loads(response.read())
        return result

    def close(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen[Any] | ForkedProcess) -> None:
    """SIGTERM, then SIGKILL a process (or a zygote's copy) that has not exited 15 s later."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class ProcessStats:
    cpu_seconds: float
    peak_rss_mib: float
    samples: list[tuple[float, float, float]]   # (time, cpu seconds, rss MiB)
    exit_code: int


def measure(command: list[str], until: float, log_path: Path, profile: Path | None = None, *,
            zygote: Zygote | None = None) -> ProcessStats:
    """Run ``command`` until the epoch instant ``until``, sampling CPU and RSS once a second; SIGTERM it and
    reap it with wait4 for its own CPU time and peak RSS.

    With ``zygote``, ``command`` is the daemon's arguments (``["run", "--config", ...]``) and the process a copy of
    the zygote, not pinned, its figures what the zygote reaped: CPU since the fork, a peak RSS that counts the pages
    it shares with the zygote (see bench/zygote.py)."""
    env = environment(AWS_ENV, {"PYTHONPATH": str(ROOT)})
    process: subprocess.Popen[bytes] | ForkedProcess
    if zygote is not None:
        process = zygote.spawn(command, log=log_path, env=env)
    else:
        with open(log_path, "w") as log:
            process = subprocess.Popen(pinned(command, 1), cwd=ROOT, stdout=log, stderr=log, env=env)
    spy = None
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if profile is not None and py_spy:
        spy = subprocess.Popen([py_spy, "record", "--pid", str(process.pid), "--rate", "50", "--format",
                                "speedscope", "--output", str(profile), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    handle = psutil.Process(process.pid)
    samples: list[tuple[float, float, float]] = []
    while time.time() < until and process.poll() is None:
        try:
            times = handle.cpu_times()
            samples.append((time.time(), times.user + times.system, handle.memory_info().rss / 2**20))
        except psutil.Error:
            break
        time.sleep(min(1.0, max(0.0, until - time.time())))
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    if isinstance(process, ForkedProcess):  # the zygote reaps its copies
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.usage is not None
        cpu_seconds, peak_rss_mib, exit_code = process.usage.cpu_seconds, process.usage.peak_rss_mib, \
            process.usage.exit_code
    else:
        # The naive poller may sit in a botocore retry backoff (up to 20 s): give it 10 s, then SIGKILL.
        deadline = time.time() + 10
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                process.kill()
                _, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.1)
        process.returncode = exit_code = os.waitstatus_to_exitcode(status)
        cpu_seconds, peak_rss_mib = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024
    if spy is not None:
        spy.wait(timeout=60)
    return ProcessStats(cpu_seconds, peak_rss_mib, samples, exit_code)


def daemon_config(directory: Path, endpoint_url: str, tps: float, stop_grace: float,
                  budgets: bool = False) -> Path:
    path = directory / "supervisor.yaml"
    config: dict[str, Any] = {
        "aws": {"region": "us-east-1", "endpoint_url": endpoint_url, "account_id": "123456789012",
                "max_requests_per_second": round(0.95 * tps, 3), "max_attempts": 8},
        "workgroups": ["bench-*"],
        "mode": "enforce",
        "discovery_interval": f"{DISCOVERY_INTERVAL_S:g}s",
        "log_level": "warning",
        "journal": {"path": str(directory / "journal.db")},
        "http": {"host": "127.0.0.1", "port": 0},
        "escalation": {"stop_grace": f"{stop_grace:g}s", "terminate_grace": "60s"},
        # The bench stops hundreds of targets within seconds: rails off (fraction 1.0), said in the README.
        "safety": {"max_actions_per_minute": 100000, "circuit_breaker_fraction": 1.0},
        "policies": [
            {"name": "runtime", "workgroups": ["bench-rt-*"],
             "calculation": {"max_runtime": f"{RUNTIME_LIMIT_S:g}s"}, "action": "stop"},
            {"name": "dpu", "workgroups": ["bench-dpu-*"],
             "calculation": {"max_dpu_hours": DPU_LIMIT_HOURS}, "action": "stop"},
        ],
    }
    if budgets:  # counted (GetSession per active session every pass), never acted on
        config["budgets"] = [{"name": "bench-daily", "workgroups": ["bench-*"], "period": "daily",
                              "limit_usd": BUDGET_LIMIT_USD, "thresholds": [{"at_percent": 50, "action": "notify"}]}]
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def naive_command(endpoint_url: str, stop_grace: float, interval: float) -> list[str]:
    return [sys.executable, str(ROOT / "bench" / "baseline_naive.py"), "--endpoint-url", endpoint_url,
            "--interval", f"{interval:g}", "--stop-grace", f"{stop_grace:g}",
            "--limit", f"bench-rt-*:max_runtime={RUNTIME_LIMIT_S:g}",
            "--limit", f"bench-dpu-*:max_dpu_hours={DPU_LIMIT_HOURS:g}"]


# -- analysis -----------------------------------------------------------------------------------------

def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def lag_summary(values: list[float]) -> dict[str, float | None]:
    def r(value: float | None) -> float | None:
        return None if value is None else round(value, 3)
    return {"n": len(values), "p50": r(percentile(values, 0.5)), "p99": r(percentile(values, 0.99)),
            "max": r(max(values) if values else None)}


def cadence(calls: list[dict[str, Any]], marker_state: str, body_operation: str) -> dict[str, Any]:
    """Passes (discovery sweeps or accounting passes) seen from the audit log.

    A pass lists every workgroup with ``StateFilter`` ``marker_state`` once: its first-page (no NextToken)
    answered ``ListSessions`` calls mark it, and a marker of a workgroup already marked in the current pass
    starts the next one. ``interval`` is start to start; ``busy`` is start to the pass's last answered
    ``body_operation`` (ListCalculationExecutions for sweeps, GetSession for accounting), for passes followed
    by another (the last one may have been cut by the end of the run).
    """
    starts: list[float] = []
    current: set[str] = set()
    body: list[float] = []
    for call in calls:
        if call["status"] != 200:
            continue
        request = call["request"] if isinstance(call["request"], dict) else {}
        if call["operation"] == body_operation:
            body.append(epoch(call["time"]))
        elif (call["operation"] == "ListSessions" and request.get("StateFilter") == marker_state
              and not request.get("NextToken")):
            workgroup = request.get("WorkGroup", "")
            if not starts or workgroup in current:
                starts.append(epoch(call["time"]))
                current = set()
            current.add(workgroup)
    intervals = [b - a for a, b in itertools.pairwise(starts)]
    busy = []
    for a, b in itertools.pairwise(starts):
        inside = [t for t in body if a <= t < b]
        if inside:
            busy.append(max(inside) - a)

    def r(value: float | None) -> float | None:
        return None if value is None else round(value, 1)
    return {"passes": len(starts), "interval_median": r(percentile(intervals, 0.5)),
            "interval_max": r(max(intervals) if intervals else None),
            "busy_median": r(percentile(busy, 0.5)), "busy_max": r(max(busy) if busy else None),
            "starts": [round(t, 3) for t in starts]}


@dataclass
class Tally:
    """An audit log counted: calls and throttled calls by operation, and the answered ones (status 200) as
    (operation, request, epoch seconds), oldest first."""

    by_operation: dict[str, int] = field(default_factory=dict)
    throttled: dict[str, int] = field(default_factory=dict)
    answered: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)


def tally(calls: list[dict[str, Any]]) -> Tally:
    counted = Tally()
    for call in calls:
        operation = call["operation"] or "?"
        counted.by_operation[operation] = counted.by_operation.get(operation, 0) + 1
        if call["error"] == "TooManyRequestsException":
            counted.throttled[operation] = counted.throttled.get(operation, 0) + 1
        if call["status"] == 200:
            request = call["request"] if isinstance(call["request"], dict) else {}
            counted.answered.append((operation, request, epoch(call["time"])))
    return counted


def cell(value: Any) -> str:
    """A figure as the benches' tables show it: ``-`` for none, 3 decimals below 10, thousands separated."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def analyse(calls: list[dict[str, Any]], workload: Workload, started: float, ended: float,
            stop_grace: float) -> dict[str, Any]:
    counted = tally(calls)
    by_operation, throttled = counted.by_operation, counted.throttled
    stops: dict[str, list[float]] = {}
    terminates: dict[str, list[float]] = {}
    listed_sessions: dict[str, float] = {}
    get_session_counts: dict[str, int] = {}
    for operation, request, when in counted.answered:
        if operation == "StopCalculationExecution":
            stops.setdefault(request.get("CalculationExecutionId", ""), []).append(when)
        elif operation == "TerminateSession":
            terminates.setdefault(request.get("SessionId", ""), []).append(when)
        elif operation == "ListCalculationExecutions":
            listed_sessions.setdefault(request.get("SessionId", ""), when)
        elif operation == "GetSession":
            session_id = request.get("SessionId", "")
            get_session_counts[session_id] = get_session_counts.get(session_id, 0) + 1
    tolerance = 0.002  # audit times are truncated to the millisecond
    due_by = ended - 2.0
    violator_calcs = {v.calculation_id: v for v in workload.violators}
    ignoring_sessions = {v.session_id: v for v in workload.violators if v.ignores_stop}
    lags = {"stop": [], "terminate": []}  # type: dict[str, list[float]]
    acted_at: list[tuple[str, float, float]] = []  # (action, epoch of the call, lag)
    censored: list[float] = []
    missed: list[dict[str, Any]] = []
    wrongful: list[dict[str, Any]] = []
    not_yet_due = 0
    for violator in workload.violators:
        first_stop = min(stops.get(violator.calculation_id, []), default=None)
        first_terminate = min(terminates.get(violator.session_id, []), default=None)
        acted = min((t for t in (first_stop, first_terminate) if t is not None), default=None)
        if violator.cross_at > due_by:
            not_yet_due += 1
            continue
        if acted is None:
            missed.append({"action": "stop", "calculation_id": violator.calculation_id, "kind": violator.kind})
            censored.append(ended - violator.cross_at)
        else:
            lags["stop"].append(acted - violator.cross_at)
            acted_at.append(("stop", acted, acted - violator.cross_at))
            censored.append(acted - violator.cross_at)
        if violator.ignores_stop and first_stop is not None:
            terminate_due = first_stop + stop_grace
            if terminate_due > due_by:
                not_yet_due += 1
            elif first_terminate is None:
                missed.append({"action": "terminate", "session_id": violator.session_id, "kind": violator.kind})
                censored.append(ended - terminate_due)
            else:
                lags["terminate"].append(first_terminate - terminate_due)
                acted_at.append(("terminate", first_terminate, first_terminate - terminate_due))
                censored.append(first_terminate - terminate_due)
    for calculation_id, times in stops.items():
        violator = violator_calcs.get(calculation_id)
        if violator is None or min(times) < violator.cross_at - tolerance:
            wrongful.append({"action": "stop", "calculation_id": calculation_id,
                             "early_by": round(violator.cross_at - min(times), 3) if violator else None})
    for session_id, times in terminates.items():
        violator = ignoring_sessions.get(session_id)
        first_stop = min(stops.get(violator.calculation_id, []), default=None) if violator else None
        if violator is None or first_stop is None or min(times) < first_stop + stop_grace - tolerance:
            wrongful.append({"action": "terminate", "session_id": session_id})
    all_sessions = {v.session_id for v in workload.violators} | workload.quiet_sessions
    first_sweep = max((listed_sessions.get(s, math.inf) for s in all_sessions), default=math.inf)
    return {
        "lag_seconds": lag_summary(lags["stop"] + lags["terminate"]),
        "stop_lag_seconds": lag_summary(lags["stop"]),
        "terminate_lag_seconds": lag_summary(lags["terminate"]),
        "slowest_actions": [{"action": a, "at": round(t, 3), "lag": round(lag, 3)}
                            for a, t, lag in sorted(acted_at, key=lambda x: -x[2])[:5]],
        # missed actions counted as (end of run − due): a lower bound of the lag they would have had
        "censored_lag_seconds": lag_summary(censored),
        "due_actions": len(censored),
        "not_yet_due": not_yet_due,
        "missed": len(missed),
        "missed_detail": missed[:20],
        "wrongful": len(wrongful),
        "wrongful_detail": wrongful[:20],
        "repeat_stops": sum(len(t) - 1 for t in stops.values()),
        "api_calls": sum(by_operation.values()),
        "api_calls_by_operation": dict(sorted(by_operation.items())),
        "throttled_by_operation": dict(sorted(throttled.items())),
        "api_calls_per_second": round(sum(by_operation.values()) / (ended - started), 2),
        "first_full_sweep_seconds": round(first_sweep - started, 1) if first_sweep < math.inf else None,
        "sessions_listed_fraction": round(sum(1 for s in all_sessions if s in listed_sessions)
                                          / max(1, len(all_sessions)), 3),
        "sweeps": cadence(calls, "IDLE", "ListCalculationExecutions"),
        "accounting": cadence(calls, "TERMINATED", "GetSession"),
        "get_session_sessions": len(get_session_counts),
        "get_session_per_session_median": percentile(list(get_session_counts.values()), 0.5),
    }


def resolve_ground_truth(emulator: EmulatorProcess, workload: Workload) -> None:
    """The exact crossing instants, from each violating calculation's SubmissionDateTime (read after the
    audit log was taken and with throttling cleared, so these reads are not counted)."""
    http_json(f"{emulator.control_url}/faults", method="DELETE")
    for violator in workload.violators:
        status = emulator.athena("GetCalculationExecutionStatus",
                                 {"CalculationExecutionId": violator.calculation_id})["Status"]
        submitted = float(status["SubmissionDateTime"])
        # the violator is its session's first calculation, submitted after the session was ready: it runs
        # (and accrues) from submission
        violator.cross_at = submitted + (RUNTIME_LIMIT_S if violator.kind == "runtime" else DPU_CROSS_AFTER_S)


# -- one side -----------------------------------------------------------------------------------------

def run_side(side: str, args: argparse.Namespace, workload: Workload, directory: Path, *,
             zygote: Zygote | None = None) -> dict[str, Any]:
    """One side's run; with ``zygote``, the emulator and the supervisor are copies of it (the naive poller, a
    script of its own, is always a fresh process)."""
    emulator = EmulatorProcess(args.tps, zygote=zygote, log=directory / f"{side}.emulator.log")
    try:
        began = time.perf_counter()
        created = http_json(f"{emulator.control_url}/populate", workload.spec, method="POST")
        populate_seconds = time.perf_counter() - began
        populated_at = time.time()
        for violator, session in zip(workload.violators, created["sessions"], strict=False):
            violator.session_id = session["SessionId"]
            violator.calculation_id = session["CalculationExecutionIds"][0]
        workload.quiet_sessions = {s["SessionId"] for s in created["sessions"][len(workload.violators):]}
        copy_of = None
        if side == "supervisor":
            command = ["run", "--config", str(daemon_config(directory, emulator.endpoint_url, args.tps,
                                                             args.stop_grace, budgets=args.budgets))]
            if zygote is None:
                command = [sys.executable, "-m", "supervisor", *command]
            else:
                copy_of = zygote
        else:
            command = naive_command(emulator.endpoint_url, args.stop_grace, args.naive_interval)
        started = time.time()
        until = populated_at + args.duration
        profile = directory / f"{side}.speedscope.json" if args.profile and side == "supervisor" else None
        stats = measure(command, until, directory / f"{side}.log", profile, zygote=copy_of)
        ended = time.time()
        calls = http_json(f"{emulator.control_url}/calls")["calls"]
        resolve_ground_truth(emulator, workload)
    finally:
        emulator.close()
    if args.keep:  # the audit log, for looking at one run in detail
        (directory / f"{side}.calls.json").write_text(json.dumps(calls))
    result = analyse(calls, workload, started, ended, args.stop_grace)
    seconds = ended - started
    steady_from = started + (result["first_full_sweep_seconds"] or seconds / 2)
    steady = [s for s in stats.samples if s[0] >= steady_from]
    steady_core = ((steady[-1][1] - steady[0][1]) / (steady[-1][0] - steady[0][0])
                   if len(steady) >= 2 and steady[-1][0] > steady[0][0] else None)
    result.update({
        "side": side, "seconds": round(seconds, 1), "populate_seconds": round(populate_seconds, 2),
        "exit_code": stats.exit_code, "cpu_seconds": round(stats.cpu_seconds, 2),
        "core_percent": round(100 * stats.cpu_seconds / seconds, 1),
        "steady_core_percent": round(100 * steady_core, 1) if steady_core is not None else None,
        "peak_rss_mib": round(stats.peak_rss_mib, 1),
        "log": str(directory / f"{side}.log"),
    })
    if profile is not None:
        result["profile"] = str(profile)
    return result


# -- report -------------------------------------------------------------------------------------------

def ratio(naive: float | None, ours: float | None) -> float | None:
    if naive is None or ours is None:
        return None
    return round(naive / ours, 1) if ours > 0 else math.inf


def table(result: dict[str, Any]) -> str:
    """Both sides side by side; with --skip-naive the naive column stays empty ("-")."""
    sup = result["supervisor"]
    naive = result.get("naive") or {
        "lag_seconds": {}, "censored_lag_seconds": {}, "api_calls_by_operation": {}, "throttled_by_operation": {},
        "sweeps": {}, "accounting": {}}

    rows: list[tuple[str, Any, Any, Any]] = []
    for key, label in (("lag_seconds", "lag"), ("censored_lag_seconds", "lag incl. missed")):
        for stat in ("p50", "p99", "max"):
            rows.append((f"{label} {stat} (s)", sup[key][stat], naive[key].get(stat),
                         ratio(naive[key].get(stat), sup[key][stat])))
    for key, label in (("due_actions", "due actions"), ("missed", "missed"), ("wrongful", "wrongful"),
                       ("first_full_sweep_seconds", "first full sweep (s)"), ("api_calls", "API calls"),
                       ("cpu_seconds", "CPU (s)"), ("core_percent", "% of a core"),
                       ("steady_core_percent", "% core, steady"), ("peak_rss_mib", "peak RSS (MiB)")):
        naive_value, ours = naive.get(key), sup.get(key)
        shown_ratio = ratio(naive_value, ours) if key in ("api_calls", "cpu_seconds", "peak_rss_mib") else ""
        rows.append((label, ours, naive_value, shown_ratio))
    for key, label, busy in (("sweeps", "sweep", "listing"), ("accounting", "accounting pass", "span")):
        for stat, shown in (("passes", "s" if key == "sweeps" else "es"), ("interval_median", " interval p50 (s)"),
                            ("interval_max", " interval max (s)"), ("busy_median", f" {busy} p50 (s)"),
                            ("busy_max", f" {busy} max (s)")):
            if key == "accounting" and not sup[key]["passes"] and not naive[key].get("passes"):
                continue
            rows.append((f"{label}{shown}", sup[key][stat], naive[key].get(stat), ""))
    operations = sorted(set(sup["api_calls_by_operation"]) | set(naive["api_calls_by_operation"]))
    for operation in operations:
        ours = sup["api_calls_by_operation"].get(operation, 0)
        theirs = naive["api_calls_by_operation"].get(operation, 0)
        ours_t, theirs_t = sup["throttled_by_operation"].get(operation, 0), naive["throttled_by_operation"].get(
            operation, 0)
        rows.append((f"  {operation}", f"{ours:,}" + (f" ({ours_t:,} thr)" if ours_t else ""),
                     f"{theirs:,}" + (f" ({theirs_t:,} thr)" if theirs_t else ""), ""))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':{width}}  {'supervisor':>20}  {'naive':>20}  {'naive/sup':>9}"]
    lines += [f"{label:{width}}  {cell(a):>20}  {cell(b):>20}  {cell(c):>9}" for label, a, b, c in rows]
    return "\n".join(lines)


def default_duration(sessions: int, tps: float, stop_grace: float) -> float:
    """Long enough for the daemon's first sweep plus a window of crossings, and ≥ 2 naive intervals."""
    dpu_calcs = round(sessions * DPU_SHARE)
    return max(150.0, math.ceil(estimate_first_sweep(sessions, dpu_calcs, tps) + 5 + stop_grace + 4 + 30))


def run(args: argparse.Namespace, *, command: str | None = None, progress: TextIO | None = None,
        zygote: Zygote | None = None) -> dict[str, Any]:
    """Both sides (or the supervisor's only); ``command``, the command line to report (default this process's)."""
    progress = sys.stderr if progress is None else progress
    calculations = args.calculations if args.calculations is not None else 2 * args.sessions
    violations = args.violations if args.violations is not None else max(8, args.sessions // 50)
    duration = args.duration or default_duration(args.sessions, args.tps, args.stop_grace)
    args.duration = duration
    workload = build_workload(args.sessions, calculations, violations, args.tps, duration, args.stop_grace,
                              args.seed, progress)
    result: dict[str, Any] = {
        "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "parameters": {"sessions": args.sessions, "calculations": calculations, "violations": violations,
                       "dpu_violations": sum(v.kind == "dpu" for v in workload.violators),
                       "ignore_stop": sum(v.ignores_stop for v in workload.violators),
                       "tps": args.tps, "duration": duration, "stop_grace": args.stop_grace,
                       "naive_interval": args.naive_interval, "seed": args.seed, "budgets": args.budgets,
                       "discovery_interval": DISCOVERY_INTERVAL_S,
                       "crossing_window_seconds": [round(w, 1) for w in workload.window],
                       "cpus": os.cpu_count()},
    }
    with tempfile.TemporaryDirectory(prefix="bench-enforcement-") as tmp:
        keep = Path(args.keep) if args.keep else None
        for side in ("supervisor",) if args.skip_naive else ("supervisor", "naive"):
            directory = keep or Path(tmp)
            directory.mkdir(parents=True, exist_ok=True)
            print(f"[{time.strftime('%H:%M:%S')}] {side}: {args.sessions} sessions, {calculations} calculations, "
                  f"{duration:.0f}s", file=progress, flush=True)
            result[side] = run_side(side, args, workload, directory, zygote=zygote)
    sup = result["supervisor"]
    naive = result.get("naive") or {"censored_lag_seconds": {}}
    result["ratios"] = {
        "lag_p50": ratio(naive["censored_lag_seconds"].get("p50"), sup["censored_lag_seconds"]["p50"]),
        "lag_p99": ratio(naive["censored_lag_seconds"].get("p99"), sup["censored_lag_seconds"]["p99"]),
        "lag_max": ratio(naive["censored_lag_seconds"].get("max"), sup["censored_lag_seconds"]["max"]),
        "api_calls": ratio(naive.get("api_calls"), sup["api_calls"]),
        "cpu_seconds": ratio(naive.get("cpu_seconds"), sup["cpu_seconds"]),
        "peak_rss": ratio(naive.get("peak_rss_mib"), sup["peak_rss_mib"]),
    }
    p99 = sup["censored_lag_seconds"]["p99"]
    result["targets"] = {
        "lag_p99_le_1s": p99 is not None and p99 <= 1.0,
        "lag_p99_100x_naive": (result["ratios"]["lag_p99"] or 0) >= 100 if "naive" in result else None,
        "api_calls_le_naive": sup["api_calls"] <= naive["api_calls"] if "api_calls" in naive else None,
        "no_missed": sup["missed"] == 0,
        "no_wrongful": sup["wrongful"] == 0,
        "rss_le_150mib": sup["peak_rss_mib"] <= 150,
        "steady_core_le_10pct": (sup["steady_core_percent"] or 0) <= 10,
    }
    return result


def main(argv: list[str] | None = None, *, out: TextIO | None = None, progress: TextIO | None = None,
         zygotes: SharedZygote | None = None) -> int:
    """The command: its report to ``out`` (default stdout), progress lines to ``progress`` (default stderr).

    Its processes are fresh interpreters, as users run them: the published figures (the daemon's CPU seconds and
    peak RSS) are a fresh process's. With ``zygotes`` (the test suite's smoke run, tests/test_bench_smoke.py) the
    emulator and the supervisor are copies of a zygote it gives instead (bench/zygote.py), which spares each the
    interpreter's imports: that run's figures are a copy's, not comparable with the published ones."""
    out = sys.stdout if out is None else out
    progress = sys.stderr if progress is None else progress
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--calculations", type=int, default=None, help="live calculations (default 2 × sessions)")
    parser.add_argument("--violations", type=int, default=None,
                        help="runtime crossings (default max(8, sessions/50)); plus a quarter as many DPU ones")
    parser.add_argument("--tps", type=float, default=50.0, help="emulator throttle, requests/s")
    parser.add_argument("--duration", type=float, default=None, help="seconds per side (default: by size)")
    parser.add_argument("--stop-grace", type=float, default=5.0)
    parser.add_argument("--naive-interval", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the JSON here")
    parser.add_argument("--keep", default=None,
                        help="keep configs, journals, logs and the audit log (<side>.calls.json) in this directory")
    parser.add_argument("--profile", action="store_true", help="py-spy the supervisor (speedscope, in --keep)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 50 sessions, 15 s per side (or --duration)")
    parser.add_argument("--skip-naive", action="store_true", help="run the supervisor side only")
    parser.add_argument("--budgets", action="store_true",
                        help="a daily budget over every bench workgroup (notify only, never reached): accounting on")
    parser.add_argument("--series", default=None, help="comma-separated session counts, e.g. 100,1000,10000")
    parser.add_argument("--out-dir", default=None, help="with --series: one results-<N>.json each")
    from bench import events  # the event-fed discovery bench shares this command line

    events.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.events:
        return events.main(args)
    if args.quick:
        args.sessions, args.stop_grace, args.naive_interval = 50, 3.0, 10.0
        args.duration = args.duration or 15.0
    command = None if argv is None else " ".join(["enforcement.py", *argv])
    with contextlib.ExitStack() as stack:
        zygote = None
        if zygotes is not None:
            where = Path(args.keep) if args.keep else Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="bench-enforcement-zygote-")))
            where.mkdir(parents=True, exist_ok=True)
            zygote = stack.enter_context(zygotes.use(environment({"PYTHONPATH": str(ROOT)}), where / "zygote.log"))
        sizes = [int(s) for s in args.series.split(",")] if args.series else [args.sessions]
        for size in sizes:
            args.sessions = size
            if args.series:
                args.duration = None
                args.calculations = args.violations = None
            result = run(args, command=command, progress=progress, zygote=zygote)
            print(f"\n{size:,} sessions, {result['parameters']['calculations']:,} calculations, "
                  f"{args.tps:g} requests/s, {result['parameters']['duration']:.0f}s per side", file=out)
            print(table(result), file=out)
            print("targets:", json.dumps(result["targets"]), file=out)
            print(f"[{time.strftime('%H:%M:%S')}] done", file=progress, flush=True)
            path = args.out
            if args.out_dir:
                Path(args.out_dir).mkdir(parents=True, exist_ok=True)
                path = str(Path(args.out_dir) / f"results-{size}.json")
            if path:
                Path(path).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
