"""The workload of a fleet run, and judging it from the emulator's audit log.

**Workload** (per account-region, through the emulator's control API ``populate``, so crossings fall at known
instants): the watched workgroup ``fleet-calc`` has the policy ``max_runtime: 1800s`` (action stop), and

- *violators*: one session each with one calculation submitted ``1800 s − offset`` ago, so it crosses the limit
  ``offset`` seconds after the populate. Some ignore StopCalculationExecution (``on_stop=ignore``): their session
  must be terminated ``stop_grace`` after the Stop. The others are CANCELED 1 s after the Stop (``stop_latency``
  below every ``stop_grace`` used), so their sessions must be left alone;
- *quiet* targets, which must never be touched: busy sessions whose calculation was submitted a minute ago (it
  crosses only after 29 minutes, past any run), an exempt session (``[supervisor:exempt]``) and a session in the
  unwatched workgroup ``other-calc``, each with a calculation that crossed the limit long ago.

Exact crossing instants come from the emulator afterwards (``SubmissionDateTime`` + 1800 s, read with
GetCalculationExecutionStatus in the violator's account and region).

**Judging** (:func:`judge`, audit-log arrival times, milliseconds, hence a 1 ms tolerance):

- **due**: each violator's Stop at its crossing; for one that ignores Stop, the TerminateSession of its session at
  its first Stop + ``stop_grace``. An action due later than ``until − due_margin`` is not due yet (not missed).
- **missed**: a due action never received; **lag**: received − due.
- **wrongful**: a Stop of a calculation that is not a violator, or before its crossing; a TerminateSession of a
  session without an ignoring violator, or before that violator's first Stop + ``stop_grace``; any other
  destructive call (UpdateWorkGroup).
- **duplicate**: a second StopCalculationExecution of one calculation, or a second TerminateSession of one
  session, received by the service (throttled or denied attempts never reached it and do not count).
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import boto3
from botocore.config import Config

from athena_spark_emulator import ControlClient
from bench.fleet_processes import ANNOUNCED, RUNTIME_LIMIT, UNWATCHED, WATCHED, Shard

STOP_LATENCY = 1.0       # an honouring violator is CANCELED this long after the Stop
TOLERANCE = 0.001        # audit-log times are truncated to milliseconds
DESTRUCTIVE = ("StopCalculationExecution", "TerminateSession", "UpdateWorkGroup")
REFUSED = frozenset({"TooManyRequestsException", "AccessDeniedException", "ExpiredTokenException",
                     "UnrecognizedClientException"})  # answered before the service: nothing was done
SPARK = {"SelectedEngineVersion": "PySpark engine version 3"}


@dataclass
class Violator:
    """A calculation that crosses ``max_runtime`` ``offset`` seconds after it was populated."""

    shard: Shard
    offset: float
    ignores_stop: bool
    populated_at: float = 0.0         # epoch seconds, just before the populate (the crossing is ~offset later)
    session_id: str = ""
    calculation_id: str = ""
    crossing: float | None = None     # epoch seconds, from the emulator after the run
    limit: float = RUNTIME_LIMIT      # its policy's max_runtime (announced ones: started `limit` before the crossing)

    @property
    def planned_crossing(self) -> float:
        return self.populated_at + self.offset


@dataclass
class Workload:
    """Everything populated so far, by account-region."""

    violators: list[Violator] = field(default_factory=list)
    quiet_sessions: dict[tuple[Shard, str], str] = field(default_factory=dict)      # → kind
    quiet_calculations: dict[tuple[Shard, str], str] = field(default_factory=dict)  # → kind
    sessions: int = 0
    calculations: int = 0
    shards: set[Shard] = field(default_factory=set)                               # every one populated


    def add(self, control: ControlClient, shard: Shard, violators: list[tuple[float, bool]], *, quiet: int = 0,
            exempt: int = 1, unwatched: int = 1) -> list[Violator]:
        """Populate ``shard`` now: ``violators`` as (seconds until the crossing, ignores Stop), ``quiet`` busy
        sessions, ``exempt`` exempt and ``unwatched`` unwatched sessions whose calculations crossed long ago."""
        now = time.time()
        planned = [Violator(shard, offset, ignores, now) for offset, ignores in violators]
        groups: list[dict[str, Any]] = []
        for violator in planned:
            if not 0 <= violator.offset < RUNTIME_LIMIT:
                raise ValueError(f"a crossing must fall within {RUNTIME_LIMIT:g} s of the populate")
            submitted_ago = round(RUNTIME_LIMIT - violator.offset, 3)
            on_stop = "ignore" if violator.ignores_stop else "honor"
            groups.append({"workgroup": WATCHED, "description": "# sim: start=1s", "started_ago": submitted_ago + 5,
                           "calculations": [{"code": f"# sim: runtime=7200s dpus=2 on_stop={on_stop} "
                                                     f"stop_latency={STOP_LATENCY:g}s\n# fleet violator",
                                             "submitted_ago": submitted_ago}]})
        crossed_long_ago = [{"code": "# sim: runtime=7200s dpus=2\n# fleet quiet: crossed", "submitted_ago": 3000}]
        kinds: list[str] = []
        if quiet:
            calculation = {"code": "# sim: runtime=3600s dpus=1\n# fleet quiet", "submitted_ago": 60}
            groups.append({"workgroup": WATCHED, "count": quiet, "description": "# sim: start=1s", "started_ago": 120,
                           "calculations": [calculation]})
            kinds += ["busy"] * quiet
        if exempt:
            groups.append({"workgroup": WATCHED, "count": exempt, "started_ago": 3100, "calculations": crossed_long_ago,
                           "description": "[supervisor:exempt] fleet\n# sim: start=1s"})
            kinds += ["exempt"] * exempt
        if unwatched:
            groups.append({"workgroup": UNWATCHED, "count": unwatched, "started_ago": 3100,
                           "description": "# sim: start=1s", "calculations": crossed_long_ago})
            kinds += ["unwatched"] * unwatched
        created = control.populate({"sessions": groups}, account=shard.account, region=shard.region)["sessions"]
        for violator, session in zip(planned, created, strict=False):
            violator.session_id = session["SessionId"]
            violator.calculation_id = session["CalculationExecutionIds"][0]
        for kind, session in zip(kinds, created[len(planned):], strict=True):
            self.quiet_sessions[(shard, session["SessionId"])] = kind
            for calculation_id in session["CalculationExecutionIds"]:
                self.quiet_calculations[(shard, calculation_id)] = kind
        self.violators += planned
        self.shards.add(shard)
        self.sessions += len(created)
        self.calculations += sum(len(session["CalculationExecutionIds"]) for session in created)
        return planned

    def add_announced(self, control: ControlClient, shard: Shard, violators: list[tuple[float, bool]], *,
                      limit: float) -> list[Violator]:
        """Populate ``shard`` now with one idle session in :data:`ANNOUNCED` per violator; each violator's
        calculation is started later, ``limit`` (the policy's max_runtime there) before its crossing, by
        :class:`Announcer` (a user's call, whose CloudTrail event announces it), so only its event or a sweep can
        make it known."""
        now = time.time()
        planned = [Violator(shard, offset, ignores, now, limit=limit) for offset, ignores in violators]
        for violator in planned:
            if violator.offset < limit:
                raise ValueError(f"an announced crossing must fall {limit:g} s or more after the populate")
        if not planned:
            return planned
        created = control.populate({"sessions": [{"workgroup": ANNOUNCED, "count": len(planned), "started_ago": 120,
                                                  "description": "# sim: start=1s", "calculations": []}]},
                                   account=shard.account, region=shard.region)["sessions"]
        for violator, session in zip(planned, created, strict=True):
            violator.session_id = session["SessionId"]
        self.violators += planned
        self.shards.add(shard)
        self.sessions += len(created)
        self.calculations += len(planned)
        return planned

    def resolve_crossings(self, endpoint_url: str) -> None:
        """Each violator's exact crossing: its SubmissionDateTime (from the emulator) + ``max_runtime``."""
        clients: dict[Shard, Any] = {}
        for violator in self.violators:
            if not violator.calculation_id:  # an announced one whose start failed (Announcer.errors): missed
                violator.crossing = violator.planned_crossing
                continue
            shard = violator.shard
            if shard not in clients:
                clients[shard] = athena_client(endpoint_url, shard)
            status = clients[shard].get_calculation_execution_status(CalculationExecutionId=violator.calculation_id)
            violator.crossing = status["Status"]["SubmissionDateTime"].timestamp() + violator.limit


def athena_client(endpoint_url: str, shard: Shard) -> Any:
    """boto3 Athena in ``shard``'s account (a 12-digit access key id names it) and region. Without proxies (the
    emulator is on loopback): botocore would look for them by iterating ``os.environ``, which the test suite's
    background scenarios do in a thread while pytest deletes a variable (``bench/environment.py``)."""
    return boto3.client("athena", endpoint_url=endpoint_url, region_name=shard.region,
                        aws_access_key_id=shard.account, aws_secret_access_key="fleet",
                        config=Config(retries={"mode": "standard", "max_attempts": 10}, read_timeout=60, proxies={}))


class Announcer(threading.Thread):
    """Starts each announced violator's calculation (:meth:`Workload.add_announced`) its ``limit`` before its
    planned crossing, through the emulator's ``POST /_emulator/call`` (as its user would call
    StartCalculationExecution: not throttled, and its CloudTrail event is published). ``errors``: calls that
    failed (their violators keep no calculation id: judged missed)."""

    def __init__(self, control: ControlClient, violators: list[Violator]) -> None:
        super().__init__(name="announcer", daemon=True)
        self.control = control
        self.violators = sorted(violators, key=lambda v: v.planned_crossing)
        self.errors: list[str] = []

    def run(self) -> None:
        for violator in self.violators:
            time.sleep(max(0.0, violator.planned_crossing - violator.limit - time.time()))
            on_stop = "ignore" if violator.ignores_stop else "honor"
            code = f"# sim: runtime=7200s dpus=2 on_stop={on_stop} stop_latency={STOP_LATENCY:g}s\n# fleet announced"
            try:
                answer = self.control.call("StartCalculationExecution",
                                           {"SessionId": violator.session_id, "CodeBlock": code},
                                           account=violator.shard.account, region=violator.shard.region)
            except Exception as error:  # reported with the run, never raised in this thread
                self.errors.append(f"{violator.shard} {violator.session_id}: {error!r}")
                continue
            violator.calculation_id = str(answer["CalculationExecutionId"])


def create_workgroups(control: ControlClient, shards: list[Shard], *, announced: bool = False) -> None:
    names = [WATCHED, UNWATCHED, *([ANNOUNCED] if announced else [])]
    for shard in shards:
        control.populate({"workgroups": [{"name": name} for name in names]}, account=shard.account,
                         region=shard.region)


# -- judging ----------------------------------------------------------------------------------------------

def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def received(call: dict[str, Any]) -> bool:
    """The call reached the service (it may have taken effect)."""
    return call.get("error") not in REFUSED


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    ordered = sorted(values)

    def at(fraction: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)], 3)

    return {"count": len(ordered), "p50": at(0.5), "p99": at(0.99), "max": at(1.0)}


@dataclass(frozen=True)
class Action:
    """A due action as judged: when it was due and when (if ever) the service received it."""

    shard: str
    kind: str                 # stop | terminate
    target: str               # calculation id (stop) or session id (terminate)
    due_at: float
    at: float | None

    @property
    def lag(self) -> float | None:
        return None if self.at is None else self.at - self.due_at


def judge(workload: Workload, calls: list[dict[str, Any]], *, stop_grace: float, until: float,
          due_margin: float = 2.0) -> dict[str, Any]:
    """Judge the destructive calls of the audit log (``calls``: at least every Stop, Terminate and UpdateWorkGroup
    of the run, any account-region) against the workload. ``until``: when the run was judged (epoch)."""
    stops: dict[tuple[str, str], list[float]] = defaultdict(list)
    terminates: dict[tuple[str, str], list[float]] = defaultdict(list)
    wrongful: list[dict[str, Any]] = []
    for call in calls:
        if call["operation"] not in DESTRUCTIVE or not received(call):
            continue
        shard = f"{call['account']}/{call['region']}"
        if call["operation"] == "StopCalculationExecution":
            stops[(shard, call["request"].get("CalculationExecutionId", ""))].append(epoch(call["time"]))
        elif call["operation"] == "TerminateSession":
            terminates[(shard, call["request"].get("SessionId", ""))].append(epoch(call["time"]))
        else:
            wrongful.append({"why": "UpdateWorkGroup: no budget is configured", "call": call})

    actions: list[Action] = []
    violators = {(str(v.shard), v.calculation_id): v for v in workload.violators}
    ignoring = {(str(v.shard), v.session_id): v for v in workload.violators if v.ignores_stop}
    for violator in workload.violators:
        assert violator.crossing is not None, "resolve_crossings() first"
        shard = str(violator.shard)
        first_stop = min(stops.get((shard, violator.calculation_id), []), default=None)
        if violator.crossing <= until - due_margin or first_stop is not None:
            actions.append(Action(shard, "stop", violator.calculation_id, violator.crossing, first_stop))
        if violator.ignores_stop and first_stop is not None:
            due = first_stop + stop_grace
            first_terminate = min(terminates.get((shard, violator.session_id), []), default=None)
            if due <= until - due_margin or first_terminate is not None:
                actions.append(Action(shard, "terminate", violator.session_id, due, first_terminate))

    for (shard, calculation_id), times in stops.items():
        violator = violators.get((shard, calculation_id))
        if violator is None:
            wrongful.append({"why": "Stop of a calculation that never crossed its limit (a quiet one)",
                             "shard": shard, "calculation": calculation_id, "times": times})
        elif violator.crossing is not None and min(times) < violator.crossing - TOLERANCE:
            wrongful.append({"why": "Stop before the crossing", "shard": shard, "calculation": calculation_id,
                             "times": times, "crossing": violator.crossing})
    for (shard, session_id), times in terminates.items():
        violator = ignoring.get((shard, session_id))
        if violator is None:
            wrongful.append({"why": "TerminateSession of a session that never had to end", "shard": shard,
                             "session": session_id, "times": times})
            continue
        first_stop = min(stops.get((shard, violator.calculation_id), []), default=None)
        if first_stop is None or min(times) < first_stop + stop_grace - TOLERANCE:
            wrongful.append({"why": "TerminateSession before the first Stop + stop_grace", "shard": shard,
                             "session": session_id, "times": times, "stop": first_stop})

    duplicates = [{"operation": "StopCalculationExecution", "shard": shard, "target": target, "times": times}
                  for (shard, target), times in stops.items() if len(times) > 1]
    duplicates += [{"operation": "TerminateSession", "shard": shard, "target": target, "times": times}
                   for (shard, target), times in terminates.items() if len(times) > 1]
    missed = [asdict(action) for action in actions if action.at is None]
    lags = [action.lag for action in actions if action.lag is not None]
    return {
        "counts": {"missed": len(missed), "wrongful": len(wrongful), "duplicate": len(duplicates)},
        "due": len(actions),
        "taken": len(actions) - len(missed),
        "lag": percentiles(lags),
        "actions": actions,
        "missed": missed,
        "wrongful": wrongful,
        "duplicates": duplicates,
    }


def destructive_calls(control: ControlClient, shards: Iterable[Shard] | None = None) -> list[dict[str, Any]]:
    """Every destructive call in the audit log (of ``shards``, or all account-regions), oldest first."""
    found = [call for operation in DESTRUCTIVE for call in control.calls(operation=operation)]
    if shards is not None:
        scopes = {str(shard) for shard in shards}
        found = [call for call in found if f"{call['account']}/{call['region']}" in scopes]
    return sorted(found, key=lambda call: str(call["time"]))


def missing_actions(workload: Workload, calls: list[dict[str, Any]]) -> list[str]:
    """What the audit log does not show yet for the workload to be done: a Stop of every violator, a Terminate of
    every ignoring violator's session (whenever they fall due)."""
    stopped = {(f"{c['account']}/{c['region']}", c["request"].get("CalculationExecutionId")) for c in calls
               if c["operation"] == "StopCalculationExecution" and received(c)}
    terminated = {(f"{c['account']}/{c['region']}", c["request"].get("SessionId")) for c in calls
                  if c["operation"] == "TerminateSession" and received(c)}
    missing = [f"stop {v.shard} {v.calculation_id}" for v in workload.violators
               if (str(v.shard), v.calculation_id) not in stopped]
    missing += [f"terminate {v.shard} {v.session_id}" for v in workload.violators
                if v.ignores_stop and (str(v.shard), v.session_id) not in terminated]
    return missing


def wait_done(control: ControlClient, workload: Workload, within: float, interval: float = 0.5) -> list[dict[str, Any]]:
    """Wait until every action of the workload is in the audit log; the destructive calls of its account-regions
    then (those of other account-regions the emulator serves, another fleet's, are not its business).

    Raises:
        TimeoutError: naming what is still missing.
    """
    deadline = time.monotonic() + within
    while True:
        calls = destructive_calls(control, workload.shards)
        missing = missing_actions(workload, calls)
        if not missing:
            return calls
        if time.monotonic() > deadline:
            raise TimeoutError(f"after {within:g} s still missing: {missing}")
        time.sleep(interval)
