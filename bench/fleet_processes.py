"""The processes of a fleet run: the emulator, moto's DynamoDB and the replicas, each a real process.

- the emulator: ``athena-supervisor emulator --port 0`` (every account-region; ``--throttle-tps`` per
  account-region), its ready line read from its log;
- DynamoDB: ``bench/dynamodb_server.py`` (moto's server app, one request at a time; see its docstring), likewise;
- the table: ``athena-supervisor setup-dynamodb --config FILE``, as an operator creates it;
- each replica: ``athena-supervisor run --config FILE`` with ``cluster.replica_id`` = its name, its log in a
  file of its own, its ``/metrics`` URL read from its ``supervisor.started`` line. ``kill()`` is SIGKILL,
  ``stop()`` SIGTERM; both wait for the process to be reaped, for its exit code, CPU seconds and peak RSS.

Every one of them runs as a copy of a zygote (``bench/zygote.py``): each its own process, forked from one that
imported the daemon once, instead of a fresh interpreter spending ~1.3 s of CPU on imports each time (the DynamoDB
server still imports moto, ~0.4 s); the CPU seconds of a replica therefore count from its fork, not from an
interpreter's start. Several fleets (and the emulator they share) may share one zygote.

Account-regions (shards) are reached as the daemon reaches member accounts: ``accounts[].role_arn`` assumed
through the emulator's STS, so each shard's calls are served by its own account and region in the emulator.

:class:`Fleet` starts and always stops all of it; several fleets, each in accounts of its own, may share one emulator
(as the process tests do). The workload and the judging are in :mod:`bench.fleet_workload`.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from athena_spark_emulator import ControlClient  # noqa: E402
from bench.enforcement import stop_process  # noqa: E402
from bench.environment import environment, urlopen  # noqa: E402
from bench.zygote import ForkedProcess, Usage, Zygote  # noqa: E402

# The replicas' own credentials: any will do for the emulator's STS and for moto ("fleet" names no account,
# so the emulator serves the daemon's own calls, AssumeRole included, in its default account).
AWS_ENV = {"AWS_ACCESS_KEY_ID": "fleet", "AWS_SECRET_ACCESS_KEY": "fleet", "AWS_DEFAULT_REGION": "us-east-1"}
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")
TABLE = "athena-supervisor-fleet"
WATCHED = "fleet-calc"          # the watched workgroup of every shard (policy ``runtime``)
UNWATCHED = "other-calc"        # a Spark workgroup outside ``workgroups``: never acted on
RUNTIME_LIMIT = 1800.0          # seconds: the policy's max_runtime (crossings are placed with submitted_ago)
# With events: violators are started by a user's call when they are due to start, in idle sessions of this watched
# workgroup (policy ``announced``), and the replicas learn of them from the call's CloudTrail event, not a sweep.
ANNOUNCED = "fleet-new"
STARTUP_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True, order=True)
class Shard:
    """One account-region."""

    account: str
    region: str

    def __str__(self) -> str:
        return f"{self.account}/{self.region}"

    @property
    def role_arn(self) -> str:
        return f"arn:aws:iam::{self.account}:role/athena-supervisor"


def fleet_shards(count: int, regions_per_account: int = 2, *, first_account: int = 1) -> list[Shard]:
    """``count`` account-regions: accounts 111111111111, 222222222222, ... (from ``first_account`` of them: 4 is
    444444444444) with ``regions_per_account`` each."""
    accounts = [str(digit) * 12 for digit in range(first_account, 10)]
    shards = [Shard(account, region) for account in accounts for region in REGIONS[:regions_per_account]]
    if count > len(shards):
        raise ValueError(f"at most {len(shards)} account-regions with {regions_per_account} regions per account")
    return shards[:count]


@dataclass(frozen=True, slots=True)
class EventQueue:
    """The SQS queue the emulator publishes its CloudTrail events to, which every replica drains."""

    sqs_queue_url: str
    endpoint_url: str
    region: str = "us-east-1"


@dataclass(frozen=True, slots=True)
class ReplicaSettings:
    """What shapes every replica's config (seconds unless said otherwise)."""

    lease_duration: float = 3.0
    max_clock_skew: float = 0.5
    connect_timeout: float = 0.5
    read_timeout: float = 2.0
    max_attempts: int = 3
    max_requests_per_second: float = 100.0     # per account-region
    discovery_interval: float = 1.0
    stop_grace: float = 8.0
    terminate_grace: float = 120.0             # long: a retried TerminateSession would be a duplicate
    log_level: str = "info"
    events: EventQueue | None = None           # event-fed discovery (``discovery.events``); sweeps as a backstop
    backstop_interval: float = 900.0           # ``discovery.backstop_interval``, with events
    announced_limit: float = 30.0              # with events: the max_runtime of the announced violators' policy

    @property
    def acting_margin(self) -> float:
        """How long before its lease could expire a holder stops acting (``max_clock_skew + connect_timeout``)."""
        return self.max_clock_skew + self.connect_timeout


def replica_config(name: str, shards: list[Shard], settings: ReplicaSettings, *, emulator_url: str,
                   dynamodb_url: str, table: str = TABLE) -> dict[str, Any]:
    """The configuration of replica ``name`` (JSON is YAML)."""
    accounts: dict[str, list[str]] = {}
    for shard in shards:
        accounts.setdefault(shard.account, []).append(shard.region)
    policies: list[dict[str, Any]] = [{"name": "runtime", "workgroups": [WATCHED],
                                       "calculation": {"max_runtime": f"{RUNTIME_LIMIT:g}s"}, "action": "stop"}]
    discovery: dict[str, Any] = {}
    if settings.events is not None:
        queue = settings.events
        discovery = {"backstop_interval": f"{settings.backstop_interval:g}s",
                     "events": {"sqs_queue_url": queue.sqs_queue_url, "endpoint_url": queue.endpoint_url,
                                "region": queue.region, "late_after": "60s"}}
        policies.append({"name": "announced", "workgroups": [ANNOUNCED],
                         "calculation": {"max_runtime": f"{settings.announced_limit:g}s"}, "action": "stop"})
    return {
        "aws": {"region": "us-east-1", "endpoint_url": emulator_url, "max_attempts": settings.max_attempts,
                "max_requests_per_second": settings.max_requests_per_second,
                "connect_timeout": f"{settings.connect_timeout:g}s", "read_timeout": f"{settings.read_timeout:g}s"},
        "accounts": [{"account_id": account, "role_arn": Shard(account, regions[0]).role_arn, "regions": regions}
                     for account, regions in accounts.items()],
        "workgroups": ["fleet-*"],
        "mode": "enforce",
        "discovery_interval": f"{settings.discovery_interval:g}s",
        **({"discovery": discovery} if discovery else {}),
        "log_level": settings.log_level,
        "journal": {"backend": "dynamodb", "table": table, "region": "us-east-1", "endpoint_url": dynamodb_url},
        "cluster": {"lease_duration": f"{settings.lease_duration:g}s",
                    "max_clock_skew": f"{settings.max_clock_skew:g}s", "replica_id": name},
        "http": {"host": "127.0.0.1", "port": 0},
        "escalation": {"stop_grace": f"{settings.stop_grace:g}s", "terminate_grace": f"{settings.terminate_grace:g}s"},
        # Many targets stopped within a minute, on purpose: the rails are not what this harness measures.
        "safety": {"max_actions_per_minute": 100000, "circuit_breaker_fraction": 1.0},
        "policies": policies,
    }


def fleet_environment() -> dict[str, str]:
    """The environment of a fleet run's processes (and of their zygote)."""
    return environment(AWS_ENV, {"PYTHONPATH": str(ROOT)})


class EmulatorProcess:
    """``athena-supervisor emulator --port 0`` (``throttle_tps``: per account-region), a copy of ``zygote``; its
    control client waits up to ``control_timeout`` seconds for an answer."""

    def __init__(self, log: Path, zygote: Zygote, throttle_tps: float | None = None, *,
                 control_timeout: float = 300.0) -> None:
        argv = ["emulator", "--port", "0"]
        if throttle_tps is not None:
            argv += ["--throttle-tps", f"{throttle_tps:g}"]
        self.zygote = zygote
        self.process, ready = zygote.start_server(argv, log=log, env=fleet_environment(), ready="emulator.ready")
        self.endpoint_url: str = ready["endpoint_url"]
        self.control = ControlClient(ready["control_url"], timeout=control_timeout)

    def close(self) -> None:
        stop_process(self.process)


class DynamoDbProcess:
    """``bench/dynamodb_server.py``: moto's DynamoDB, one request at a time, counting requests by operation; a copy
    of ``zygote`` (of the moto servers' zygote it forks: see bench/zygote.py)."""

    def __init__(self, log: Path, zygote: Zygote) -> None:
        self.log = log
        self.process, ready = zygote.start_server(["--port", "0", "--slow-log", "0.5"], log=log,
                                                  env=fleet_environment(), ready="dynamodb.ready",
                                                  entry="bench.dynamodb_server:main")
        self.endpoint_url: str = ready["endpoint_url"]

    def stats(self) -> dict[str, dict[str, Any]]:
        """``calls``: requests served so far by operation (every replica's, killed ones' included);
        ``busy_seconds``: the time spent serving them, by operation."""
        with urlopen(f"{self.endpoint_url}/_bench/calls", timeout=30) as response:
            stats: dict[str, dict[str, Any]] = json.loads(response.read())
        return stats

    def calls(self) -> dict[str, int]:
        return {operation: int(count) for operation, count in self.stats()["calls"].items()}

    def queueing(self) -> dict[str, Any]:
        """From its slow-request log: how many requests waited 0.5 s or more for their turn, and the longest wait."""
        waits = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError, KeyError, TypeError):
                waits.append(float(json.loads(line)["waited"]))
        return {"waited_0_5s_or_more": sum(wait >= 0.5 for wait in waits),
                "longest_wait_seconds": max(waits, default=0.0)}

    def close(self) -> None:
        stop_process(self.process)


@dataclass
class Replica:
    """One ``athena-supervisor run`` process (a generation of replica ``name``: a restart is a new Replica)."""

    name: str
    config: Path
    log: Path
    process: ForkedProcess
    started_at: float
    usage: Usage | None = None
    ended_at: float | None = None
    _url: str | None = field(default=None, repr=False)
    _read: int = field(default=0, repr=False)                                   # bytes of the log parsed so far
    _events: list[dict[str, Any]] = field(default_factory=list, repr=False)     # its JSON lines, in order

    @classmethod
    def spawn(cls, name: str, config: Path, log: Path, zygote: Zygote) -> Replica:
        """``athena-supervisor run --config CONFIG``, as a copy of ``zygote`` (bench/zygote.py: its own process,
        the daemon's modules already imported)."""
        process = zygote.spawn(["run", "--config", str(config)], log=log, env=fleet_environment())
        return cls(name, config, log, process, time.time())

    @property
    def alive(self) -> bool:
        return self.usage is None and self.process.poll() is None

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The log lines of this process (JSON objects), optionally only the event ``name``.

        Each call parses only what was written since the last one (whole lines), so that polling a log costs the
        same whatever its length (not thread-safe: one caller per replica)."""
        with self.log.open("rb") as stream:
            stream.seek(self._read)
            data = stream.read()
        complete = data.rfind(b"\n") + 1
        self._read += complete
        for line in data[:complete].decode(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                event = json.loads(line)
                if isinstance(event, dict):
                    self._events.append(event)
        return [event for event in self._events if name is None or event.get("event") == name]

    @property
    def url(self) -> str:
        """The ``/metrics`` base URL (from the ``supervisor.started`` line; waits for it)."""
        if self._url is None:
            started = wait_for(lambda: self.events("supervisor.started") or self._exited(), STARTUP_TIMEOUT,
                               f"replica {self.name} to start")
            self._url = str(started[0]["http"])
        return self._url

    def _exited(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"replica {self.name} exited with {self.process.returncode}; log: {self.log}")

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        """Every sample of its ``/metrics``: (name, labels, value)."""
        with urlopen(f"{self.url}/metrics", timeout=10) as response:
            text = response.read().decode()
        return [(sample.name, dict(sample.labels), sample.value)
                for family in text_string_to_metric_families(text) for sample in family.samples]

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples ``name`` whose labels include ``labels``."""
        return sum(value for sample, found, value in self.metrics()
                   if sample == name and all(found.get(k) == v for k, v in labels.items()))

    def owned(self) -> set[Shard]:
        """The shards whose ``shard_owned`` gauge is 1 (it holds the lease and may act)."""
        return {Shard(labels["account"], labels["region"]) for sample, labels, value in self.metrics()
                if sample == "athena_supervisor_shard_owned" and value == 1}

    def ready(self) -> bool:
        try:
            with urlopen(f"{self.url}/readyz", timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def cpu_seconds(self) -> float:
        """CPU seconds used so far (user + system), while it runs."""
        if self.usage is not None:
            return self.usage.cpu_seconds
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def kill(self) -> Usage:
        """SIGKILL, then reap."""
        return self._end(signal.SIGKILL)

    def stop(self, timeout: float = 30.0) -> Usage:
        """SIGTERM (in-flight calls finish, leases are released), then reap; SIGKILL after ``timeout``."""
        return self._end(signal.SIGTERM, timeout)

    def _end(self, signum: int, timeout: float = 30.0) -> Usage:
        if self.usage is not None:
            return self.usage
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.ended_at = time.time()
        self.usage = self.process.usage
        assert self.usage is not None
        return self.usage


def wait_for(predicate: Callable[[], Any], within: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {within:g} s for {what}")
        time.sleep(interval)
    return value


def log_time(event: dict[str, Any]) -> float:
    """The epoch instant of a log line (structlog's ISO ``timestamp``, UTC)."""
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


class Fleet:
    """An emulator, a DynamoDB server, the table, and the replicas started since, all under ``directory``.

    Args:
        shards: the account-regions every replica's config lists.
        settings: the replicas' settings.
        throttle_tps: the emulator's throttle per account-region (None: unthrottled), for an emulator of its own.
        emulator: an emulator shared with other fleets (each in accounts of its own), left running at the end. The
            DynamoDB server is always the fleet's own: it serves one request at a time, and three fleets' replicas
            queued behind each other there past their read timeouts on a loaded machine.
        zygote: the zygote its processes are copies of, left running at the end; by default the shared
            emulator's, else the fleet's own.
        table: the DynamoDB table of its replicas, made by ``athena-supervisor setup-dynamodb`` as an operator
            makes it (a copy of the zygote). Not in this process: its clients would look for proxies by iterating
            ``os.environ``, which in the test suite's background threads races pytest deleting a variable.
    """

    def __init__(self, directory: Path, shards: list[Shard], settings: ReplicaSettings, *,
                 throttle_tps: float | None = None, emulator: EmulatorProcess | None = None, table: str = TABLE,
                 zygote: Zygote | None = None) -> None:
        self.directory = directory
        self.shards = shards
        self.settings = settings
        self.throttle_tps = throttle_tps
        self.table = table
        self.replicas: dict[str, Replica] = {}       # the current process of each name
        self.generations: list[Replica] = []          # every process started, in order
        self._stack = contextlib.ExitStack()
        if emulator is not None:
            self.emulator = emulator
        if (shared := zygote or (emulator.zygote if emulator is not None else None)) is not None:
            self.zygote = shared

    def __enter__(self) -> Fleet:
        try:
            if not hasattr(self, "zygote"):
                self.zygote = self._stack.enter_context(Zygote(fleet_environment(), self.directory / "zygote.log"))
            if not hasattr(self, "emulator"):
                self.emulator = EmulatorProcess(self.directory / "emulator.log", self.zygote, self.throttle_tps)
                self._stack.callback(self.emulator.close)
            self.dynamodb = DynamoDbProcess(self.directory / "dynamodb.log", self.zygote)
            self._stack.callback(self.dynamodb.close)
            self._stack.callback(self._stop_all)
            self.create_table()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def config(self, name: str, *, dynamodb_url: str | None = None,
               settings: ReplicaSettings | None = None) -> dict[str, Any]:
        return replica_config(name, self.shards, settings or self.settings, emulator_url=self.emulator.endpoint_url,
                              dynamodb_url=dynamodb_url or self.dynamodb.endpoint_url, table=self.table)

    def write_config(self, name: str, *, dynamodb_url: str | None = None,
                     settings: ReplicaSettings | None = None) -> Path:
        path = self.directory / f"{name}.yaml"
        path.write_text(json.dumps(self.config(name, dynamodb_url=dynamodb_url, settings=settings), indent=2))
        return path

    def create_table(self) -> None:
        """The replicas' table, made with a replica's config."""
        log = self.directory / "setup-dynamodb.log"
        command = self.zygote.spawn(["setup-dynamodb", "--config", str(self.write_config("setup"))], log=log,
                                    env=fleet_environment())
        if (code := command.wait(120)) != 0:
            raise RuntimeError(f"setup-dynamodb failed ({code}): {log.read_text(errors='replace')}")

    def start(self, name: str, *, dynamodb_url: str | None = None, wait: bool = True) -> Replica:
        """Start replica ``name`` (again: a new process with the same replica id, config and a new log)."""
        generation = sum(1 for replica in self.generations if replica.name == name)
        config = self.directory / f"{name}.yaml"
        if generation == 0 or dynamodb_url is not None:  # a restart keeps its config
            config = self.write_config(name, dynamodb_url=dynamodb_url)
        log = self.directory / f"{name}-{generation}.log"
        log.unlink(missing_ok=True)
        replica = Replica.spawn(name, config, log, self.zygote)
        self.replicas[name] = replica
        self.generations.append(replica)
        if wait:
            _ = replica.url
        return replica

    def live(self) -> dict[str, Replica]:
        return {name: replica for name, replica in self.replicas.items() if replica.alive}

    def owners(self) -> dict[Shard, list[str]]:
        """Which live replicas say they may act on each shard now."""
        found: dict[Shard, list[str]] = {shard: [] for shard in self.shards}
        for name, replica in self.live().items():
            for shard in replica.owned():
                found.setdefault(shard, []).append(name)
        return found

    def spread(self) -> dict[str, set[Shard]] | None:
        """Each live replica's shards when every shard has exactly one owner and the live replicas hold fair
        shares (as even as possible); else None."""
        owners = self.owners()
        if any(len(names) != 1 for names in owners.values()):
            return None
        held: dict[str, set[Shard]] = {name: set() for name in self.live()}
        for shard, [name] in owners.items():
            held[name].add(shard)
        sizes = [len(shards) for shards in held.values()]
        return held if sizes and max(sizes) - min(sizes) <= 1 else None

    def logged_spread(self) -> bool:
        """Whether the live replicas' logs say what :meth:`spread` needs: each shard acquired by one of them (and
        not since released, lost or past its acting deadline), in fair shares. Reading the logs costs next to
        nothing; a look at every replica's ``/metrics`` costs ~15 ms of CPU in it and in this process."""
        held: dict[str, set[str]] = {}
        for name, replica in self.live().items():
            mine = held[name] = set()
            for event in replica.events():
                if event.get("event") == "cluster.lease_acquired":
                    mine.add(str(event.get("shard")))
                elif event.get("event") in LEASE_ENDED:
                    mine.discard(str(event.get("shard")))
        sizes = [len(shards) for shards in held.values()]
        everyone = [shard for shards in held.values() for shard in shards]
        return (bool(sizes) and max(sizes) - min(sizes) <= 1 and len(everyone) == len(set(everyone))
                and set(everyone) == {str(shard) for shard in self.shards})

    def wait_spread(self, within: float = 60.0) -> dict[str, set[Shard]]:
        """:meth:`spread` once it holds. ``/metrics`` (the replicas' own word) are read when their logs say the
        shards are spread, and every ``SPREAD_LOOK`` seconds whatever the logs say (so a change the logs miss is
        seen too, later)."""
        looked = -math.inf

        def spread() -> dict[str, set[Shard]] | None:
            nonlocal looked
            if not self.logged_spread() and time.monotonic() - looked < SPREAD_LOOK:
                return None
            looked = time.monotonic()
            return self.spread()

        result: dict[str, set[Shard]] = wait_for(spread, within, "every shard owned once, evenly", 0.2)
        return result

    def _stop_all(self) -> None:
        for replica in self.replicas.values():
            replica.stop()



LEASE_ENDED = frozenset({"cluster.lease_released", "cluster.lease_lost", "cluster.acting_deadline_passed"})
SPREAD_LOOK = 2.0  # seconds: how often Fleet.wait_spread reads /metrics when the logs say nothing is spread yet

SENT_LOGS = {"StopCalculationExecution": ("calculation.stop_requested", "target_id"),
             "TerminateSession": ("session.terminate_requested", "session_id")}


def senders(replicas: list[Replica], operation: str, target: str) -> list[tuple[Replica, dict[str, Any]]]:
    """Which replica processes logged sending ``operation`` (answered) for ``target`` (a calculation id for Stop,
    a session id for Terminate), with the log line: the audit log says what the service received, not from whom."""
    event, key = SENT_LOGS[operation]
    return [(replica, line) for replica in replicas for line in replica.events(event) if line.get(key) == target]
