"""Fleet bench: 1, 2 and 3 replicas over many account-regions, judged from the emulator's audit log.

For each fleet size, on fresh processes (``bench/fleet_processes.py``: the emulator throttled to ``--tps`` per
account-region, moto's DynamoDB, the table made by ``setup-dynamodb``, the replicas as ``athena-supervisor run``;
with ``--events`` moto's SQS server; each a copy of one zygote per size, ``bench/zygote.py``, or of the zygote
the test suite's background scenarios share, for ``main(zygotes=...)``):

1. **Quiet load**: every account-region gets ``--sessions`` sessions (busy, each with a calculation that crosses
   nothing during the run; one exempt, one in an unwatched workgroup). The replicas start, spread the shards and
   sweep them; the run waits until every shard has been swept once by its owner ("first full sweep").
2. **Violators**: then each account-region gets ``--violations`` calculations crossing ``max_runtime`` at
   instants spread over ``--window`` seconds, starting ``--lead`` seconds later (a sweep must list them first; a
   quarter ignore Stop, so TerminateSession is due ``stop_grace`` after the Stop), and one *probe* crossing 0.5 s
   after the kill below.
3. **Kill -9** (2 replicas and more): in the middle of the window, the replica holding the most shards is
   SIGKILLed. Its shards' probes are held until another replica takes the shard: **takeover** = the first
   destructive call on a killed replica's shard after the kill − the kill (the slowest of its shards), next to
   the lease takeover from the survivors' logs. Actions due on those shards between the kill and the takeover
   are "held by the takeover": reported apart, not in the lag figures. With ``--events`` so are those due until
   the queue's visibility timeout (``--event-visibility``) after the kill: the messages the killed replica had
   received and not yet deleted come back only then, to the new owner, and the run lasts long enough for them.
4. The run ends ``stop_grace`` + 10 s after the last crossing (or after the takeover, if later); every replica gets
   SIGTERM. The audit log is judged
   (``bench.fleet_workload.judge``: due, missed, wrongful, duplicate, lag = received − due).

With ``--events`` the replicas discover by event (``discovery.events``: one SQS queue on moto's server, a process of
its own, that the emulator publishes each write call's CloudTrail event to, ``--event-delay`` late; sweeps every
``--backstop-interval``): the violators sit in idle sessions of the workgroup ``fleet-new`` (policy
``max_runtime: --announced-limit``, 30 s) and each one's calculation is started by a user's call
(``POST /_emulator/call``) that long before its crossing, so its event (or a backstop sweep) is the only way a
replica learns of it; the probes of the takeover too. The busy sessions are found by each shard's first sweep.

Figures per size: lag p50/p99/max, missed/wrongful/duplicate, takeover, DynamoDB calls per action and per second
(server-side counts, every replica's, killed ones' included; "at rest" over the first sweep, "steady" over the
violator window), Athena API calls, CPU seconds and % of a core per replica over the steady window (before the
kill) and over its life, peak RSS (``wait4``).

Usage:
    python bench/fleet.py                    # the issue's size: 12 × 1,000 sessions, 1, 2, 3 replicas (does not fit
                                             # on a 2-core machine: see bench/README.md)
    python bench/fleet.py --shards 12 --sessions 100 --violations 6 --out bench/results/fleet-12x100.json
    python bench/fleet.py --quick            # 2 replicas over 2 × 6 sessions, ~25 s (tests/test_fleet_bench.py)
    python bench/fleet.py --events           # the issue's size with event-fed discovery (fits: see bench/README.md)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from athena_spark_emulator.durations import parse_duration  # noqa: E402
from bench.enforcement import cell  # noqa: E402
from bench.fleet_processes import (  # noqa: E402
    EventQueue,
    Fleet,
    Replica,
    ReplicaSettings,
    fleet_environment,
    fleet_shards,
    log_time,
    wait_for,
)
from bench.fleet_workload import (  # noqa: E402
    Action,
    Announcer,
    Workload,
    create_workgroups,
    destructive_calls,
    epoch,
    judge,
    percentiles,
)
from bench.zygote import SharedZygote, Zygote  # noqa: E402

DYNAMODB_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem")
PROBE_AFTER_KILL = 0.5


@dataclass(frozen=True)
class BenchConfig:
    replicas: tuple[int, ...] = (1, 2, 3)
    shards: int = 12
    sessions: int = 1000           # per account-region
    tps: float = 50.0              # per account-region: the emulator's throttle; the replicas' limiter 0.95 ×
    violations: int = 20           # per account-region, crossing over the window
    window: float = 60.0           # seconds over which the crossings fall
    lead: float = 50.0             # seconds from populating the violators to the first crossing (≥ a sweep)
    discovery_interval: float = 30.0
    lease_duration: float = 15.0          # the default, and deploy/kubernetes-fleet's
    stop_grace: float = 5.0
    tail: float = 10.0             # seconds the run goes on after the last action fell due
    first_sweep_timeout: float = 600.0
    seed: int = 1
    events: bool = False           # event-fed discovery: violators announced by their CloudTrail event (SQS)
    event_delay: str = "1s-5s"     # the emulator's delivery delay of each event
    backstop_interval: float = 900.0
    announced_limit: float = 30.0  # with events: the violators' max_runtime (each is started that long before)
    # With events: the queue's visibility timeout. Messages a killed replica had received and not yet deleted (those
    # of its last seconds: deletes follow each watch-list save, every 5 s) come back after it, to the new owner.
    event_visibility: int = 30

    @classmethod
    def quick(cls) -> BenchConfig:
        """The smoke run of the test suite: one fleet of 2 replicas (so a kill and a takeover) over 2 tiny shards,
        every step of a run and every figure, none of them meaningful (the process tests judge the behaviour)."""
        return cls(replicas=(2,), shards=2, sessions=6, violations=2, window=2.0, lead=3.0, tail=1.0,
                   discovery_interval=1.0, lease_duration=6.0, stop_grace=2.0, first_sweep_timeout=120.0)

    def settings(self, events: EventQueue | None = None) -> ReplicaSettings:
        # Timeouts and clock-skew allowance as in deploy/kubernetes-fleet/configmap.yaml.
        return ReplicaSettings(events=events, backstop_interval=self.backstop_interval,
                               announced_limit=self.announced_limit,
                               lease_duration=self.lease_duration, max_clock_skew=1.0, connect_timeout=1.0,
                               read_timeout=3.0, max_attempts=4, max_requests_per_second=round(0.95 * self.tps, 3),
                               discovery_interval=self.discovery_interval, stop_grace=self.stop_grace,
                               terminate_grace=300.0, log_level="info")


def settled_event_counters(control: Any, delay: str) -> dict[str, Any]:
    """The emulator's event counters once no event still waits out its delivery delay: a Stop or Terminate sent in
    the run's last seconds is published up to the largest ``delay`` after it (``1s-5s``: 5 s), so counters read at
    once may show it pending rather than published. Waits that long at most (and a second more), then reads them
    as they are."""
    deadline = time.monotonic() + parse_duration(delay.rpartition("-")[2]) + 1.0
    while True:
        counters: dict[str, Any] = control.events()["counters"]
        if not counters.get("pending") or time.monotonic() >= deadline:
            return counters
        time.sleep(0.1)


@contextlib.contextmanager
def directory(keep: Path | None, name: str) -> Iterator[Path]:
    if keep is not None:
        path = keep / name
        path.mkdir(parents=True, exist_ok=True)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
            yield Path(tmp)


def first_sweep_done(fleet: Fleet, since: float) -> bool:
    """Every shard has an owner that completed a sweep of it after ``since``."""
    owners = fleet.owners()
    if any(len(names) != 1 for names in owners.values()):
        return False
    for shard, [name] in owners.items():
        swept = fleet.replicas[name].metric("athena_supervisor_last_discovery_timestamp_seconds",
                                            account=shard.account, region=shard.region)
        if swept < since:
            return False
    return True


SAVES_SETTLED = 5.0  # seconds without a transaction at rest: every shard's watch list saved


def watch_lists_saved(fleet: Fleet) -> Callable[[], bool]:
    """A predicate: true once the DynamoDB server has served no TransactWriteItems for :data:`SAVES_SETTLED`
    seconds. At rest (before any violator) the only transactions are the watch-list saves of the first sweeps:
    12 × 1,000 targets are 120 transactions of 99 writes, which moto serves at 0.5-1.3 s each, one at a time, for
    a minute or two after the sweeps (DynamoDB: tens of milliseconds each, side by side). The violators come after,
    so the steady window measures enforcement, not the stand-in catching up."""
    last: list[float] = [-1.0, time.monotonic()]

    def settled() -> bool:
        count = float(fleet.dynamodb.calls().get("TransactWriteItems", 0))
        if count != last[0]:
            last[:] = [count, time.monotonic()]
        return time.monotonic() - last[1] >= SAVES_SETTLED

    return settled


TIMED = ("GetCalculationExecutionStatus", "TransactWriteItems", "StopCalculationExecution", "UpdateItem", "Query",
         "ListCalculationExecutions")


def call_seconds(replicas: list[Replica]) -> dict[str, dict[str, float]]:
    """The live replicas' own view of their calls (``aws_api_call_seconds``, summed over them): per operation of
    :data:`TIMED`, the attempts, their mean and the bucket bound under which 99 % of them fell."""
    buckets: dict[str, dict[float, float]] = {}
    totals: dict[str, list[float]] = {}
    for replica in replicas:
        for name, labels, value in replica.metrics():
            operation = labels.get("operation", "")
            if operation not in TIMED:
                continue
            if name == "athena_supervisor_aws_api_call_seconds_bucket":
                bound = float(labels["le"])
                buckets.setdefault(operation, {})[bound] = buckets.get(operation, {}).get(bound, 0.0) + value
            elif name in ("athena_supervisor_aws_api_call_seconds_sum", "athena_supervisor_aws_api_call_seconds_count"):
                total = totals.setdefault(operation, [0.0, 0.0])
                total[name.endswith("_count")] += value
    found = {}
    for operation, (seconds, count) in totals.items():
        if not count:
            continue
        p99 = next((bound for bound, cumulative in sorted(buckets[operation].items()) if cumulative >= 0.99 * count),
                   math.inf)
        found[operation] = {"attempts": int(count), "mean": round(seconds / count, 4), "p99_under": p99}
    return found


def received_events(replicas: list[Replica]) -> dict[str, float]:
    """The live replicas' ``events_received_total`` by outcome and ``discovery_missed_events_total`` (as
    ``missed``), summed over them (the killed replica's are lost with it)."""
    from bench.events import event_counters

    counted = event_counters(sample for replica in replicas for sample in replica.metrics())
    found = {key.removeprefix("events_"): value for key, value in counted.items() if key.startswith("events_")}
    missed = [value for key, value in counted.items() if key.startswith("missed_events_")]
    return found | ({"missed": sum(missed)} if missed else {})


def cpu_snapshot(replicas: dict[str, Replica]) -> dict[str, float]:
    return {name: replica.cpu_seconds() for name, replica in replicas.items() if replica.alive}


def dynamodb_delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {op: after.get(op, 0) - before.get(op, 0) for op in sorted(set(after) | set(before))
            if after.get(op, 0) - before.get(op, 0)}


@contextlib.contextmanager
def event_queue(config: BenchConfig, zygote: Zygote, log: Path) -> Iterator[EventQueue | None]:
    """With ``events``: moto's SQS server (a process of its own, a copy of ``zygote``, its output in ``log``) and
    its queue; else None."""
    if not config.events:
        yield None
        return
    from bench.events import SqsServer

    server = SqsServer(visibility_timeout=config.event_visibility, zygote=zygote, log=log)
    try:
        yield EventQueue(server.queue_url, server.endpoint_url)
    finally:
        server.close()


def run_size(config: BenchConfig, replicas: int, keep: Path | None, *, progress: TextIO,
             zygotes: SharedZygote) -> dict[str, Any]:
    """One fleet size: its processes are copies of a zygote ``zygotes`` gives, its progress lines go to
    ``progress``."""
    rng = random.Random(config.seed)
    shards = fleet_shards(config.shards)
    names = [f"r{index + 1}" for index in range(replicas)]
    began = time.time()
    with directory(keep, f"replicas-{replicas}") as where, \
            zygotes.use(fleet_environment(), where / "zygote.log") as zygote, \
            event_queue(config, zygote, where / "sqs.log") as queue, \
            Fleet(where, shards, config.settings(queue), throttle_tps=config.tps, zygote=zygote) as fleet:
        control = fleet.emulator.control
        create_workgroups(control, shards, announced=queue is not None)
        if queue is not None:
            control.set_events(sqs_queue_url=queue.sqs_queue_url, endpoint_url=queue.endpoint_url,
                               region=queue.region, delay=config.event_delay, seed=config.seed)
        workload = Workload()
        for shard in shards:
            workload.add(control, shard, [], quiet=max(0, config.sessions - config.violations - 3))
        log(f"{replicas} replica(s): {config.shards} account-regions × {config.sessions} sessions populated", progress)
        started = time.time()
        start_calls = fleet.dynamodb.calls()
        for name in names:
            fleet.start(name, wait=False)
        for name in names:
            _ = fleet.replicas[name].url
        fleet.wait_spread(within=120)
        wait_for(lambda: first_sweep_done(fleet, started), config.first_sweep_timeout, "a first sweep of every shard",
                 interval=1.0)
        first_sweep = time.time() - started
        log(f"first full sweep after {first_sweep:.1f} s", progress)
        wait_for(watch_lists_saved(fleet), config.first_sweep_timeout, "the watch lists saved", interval=1.0)
        saved = time.time() - started
        log(f"watch lists saved after {saved:.1f} s", progress)

        # The violators, and the probes of the takeover.
        populated = time.time()
        kill_at = populated + config.lead + config.window / 2 if replicas > 1 else None
        announced = []
        for shard in shards:
            offsets = [config.lead + config.window * (index + rng.random()) / config.violations
                       for index in range(config.violations)]
            plan = [(offset, index % 4 == 3) for index, offset in enumerate(offsets)]
            if kill_at is not None:
                plan.append((kill_at + PROBE_AFTER_KILL - populated, False))
            if queue is None:
                workload.add(control, shard, plan, quiet=0, exempt=0, unwatched=0)
            else:
                announced += workload.add_announced(control, shard, plan, limit=config.announced_limit)
        announcer = Announcer(control, announced)
        announcer.start()
        rest_calls = fleet.dynamodb.calls()
        rest_seconds = time.time() - started
        rest_dynamodb = dynamodb_delta(rest_calls, start_calls)
        steady_cpu_from, steady_from, steady_dynamodb = cpu_snapshot(fleet.replicas), time.time(), rest_calls
        last_crossing = populated + config.lead + config.window
        # After a kill with events, long enough for the killed replica's undeleted messages to come back and be
        # acted on (they are reported with the actions held by the takeover, not in the lag).
        in_flight = config.event_visibility + 5 if queue is not None else 0
        end_at = max(last_crossing, (kill_at or 0) + config.lease_duration + 2, (kill_at or 0) + in_flight) + \
            config.stop_grace + config.tail

        killed: dict[str, Any] | None = None
        if kill_at is not None:
            time.sleep(max(0.0, kill_at - time.time()))
            held = {name: replica.owned() for name, replica in fleet.live().items()}
            victim = max(sorted(held), key=lambda name: len(held[name]))
            steady_cpu_to, steady_to = cpu_snapshot(fleet.replicas), time.time()
            steady_dynamodb_to = fleet.dynamodb.calls()
            fleet.replicas[victim].kill()
            killed_at = time.time()
            takeover_cpu_from = cpu_snapshot(fleet.live())
            killed = {"replica": victim, "shards": sorted(str(s) for s in held[victim]), "at": killed_at}
            log(f"kill -9 {victim} (holding {len(held[victim])} shards)", progress)
        time.sleep(max(0.0, end_at - time.time()))
        if kill_at is None:
            steady_cpu_to, steady_to = cpu_snapshot(fleet.replicas), time.time()
            steady_dynamodb_to = fleet.dynamodb.calls()
        ended = time.time()
        takeover_cpu = None
        if killed is not None:
            survivors = cpu_snapshot(fleet.live())
            takeover_cpu = {name: round(100 * (survivors[name] - takeover_cpu_from[name]) / (ended - killed["at"]), 1)
                            for name in survivors if name in takeover_cpu_from}
        end_stats = fleet.dynamodb.stats()
        queueing = fleet.dynamodb.queueing()
        end_calls = {operation: int(count) for operation, count in end_stats["calls"].items()}
        athena_calls = control.state()["calls"]
        # Backstop sweeps that fell in the steady window: each shard sweeps in its own slot of the backstop
        # interval, so whether a slot falls in a run's 80 s window is chance, and a sweep of 1,000 sessions is most
        # of a replica's CPU while it lasts. Counted from the audit log: shards with a ListSessions in the window.
        swept_in_window = sorted({f"{call['account']}/{call['region']}"
                                  for call in control.calls(operation="ListSessions")
                                  if steady_from <= epoch(call["time"]) <= steady_to})
        lease_acquired = [(replica.name, event) for replica in fleet.generations if replica.alive
                          for event in replica.events("cluster.lease_acquired")]
        calls_timed = call_seconds(list(fleet.live().values()))
        event_outcomes = received_events(list(fleet.live().values())) if queue is not None else None
        for replica in fleet.live().values():
            replica.stop()
        usage = {replica.name: asdict(replica.usage) | {"seconds": round((replica.ended_at or ended) -
                                                                          replica.started_at, 1)}
                 for replica in fleet.generations if replica.usage is not None}
        calls = destructive_calls(control)
        announcer.join(timeout=5)
        events = settled_event_counters(control, config.event_delay) if queue is not None else None
        workload.resolve_crossings(fleet.emulator.endpoint_url)
    verdict = judge(workload, calls, stop_grace=config.stop_grace, until=ended)
    actions: list[Action] = verdict.pop("actions")
    takeover = None
    held_actions: list[Action] = []
    if killed is not None:
        victim_shards = set(killed["shards"])
        firsts = {}
        for shard in victim_shards:
            after = [a.at for a in actions if a.shard == shard and a.at is not None and a.at > killed["at"]]
            firsts[shard] = round(min(after) - killed["at"], 3) if after else None
        leases = {}
        for _name, event in lease_acquired:
            if event.get("shard") in victim_shards and log_time(event) > killed["at"]:
                leases.setdefault(event["shard"], round(log_time(event) - killed["at"], 3))
        takeover_end = max((v for v in firsts.values() if v is not None), default=0.0) + killed["at"]
        if config.events:  # and messages the killed replica held come back after the queue's visibility timeout
            takeover_end = max(takeover_end, killed["at"] + config.event_visibility)
        # Due before the first new owner acted (with events: or before the killed replica's messages came back),
        # and not taken by the killed replica: waiting for the takeover.
        held_actions = [a for a in actions if a.shard in victim_shards and a.due_at <= takeover_end
                        and (a.at is None or a.at > killed["at"])]
        takeover = {"killed": killed["replica"], "shards": sorted(victim_shards),
                    "first_action_seconds": firsts, "lease_acquired_seconds": leases,
                    "max_first_action_seconds": max((v for v in firsts.values() if v is not None), default=None),
                    "bound_seconds": config.lease_duration + 2,
                    "held_actions_lag": percentiles([a.lag for a in held_actions if a.lag is not None])}
    steady = [a for a in actions if a not in held_actions]
    steady_seconds = steady_to - steady_from
    taken = verdict["taken"]
    run_dynamodb = dynamodb_delta(end_calls, rest_calls)
    steady_dynamodb_delta = dynamodb_delta(steady_dynamodb_to, steady_dynamodb)
    per_replica_steady = {name: round(100 * (steady_cpu_to[name] - steady_cpu_from[name]) / steady_seconds, 1)
                          for name in steady_cpu_to if name in steady_cpu_from}
    return {
        "replicas": replicas,
        "account_regions": config.shards,
        "sessions": workload.sessions,
        "calculations": workload.calculations,
        "first_full_sweep_seconds": round(first_sweep, 1),
        "watch_lists_saved_seconds": round(saved, 1),
        "counts": verdict["counts"],
        "due": verdict["due"],
        "taken": taken,
        "lag_seconds": percentiles([a.lag for a in steady if a.lag is not None]),
        "lag_by_kind": {kind: percentiles([a.lag for a in steady if a.kind == kind and a.lag is not None])
                        for kind in ("stop", "terminate")},
        "takeover": takeover,
        # Where the tail of the lag falls: the five latest steady actions, with when each was due (seconds from
        # the start of the steady phase, and from the kill).
        "slowest_actions": [
            {"shard": a.shard, "kind": a.kind, "lag": round(a.lag, 3),
             "due_after_start": round(a.due_at - steady_from, 1),
             "due_after_kill": None if killed is None else round(a.due_at - killed["at"], 1)}
            for a in sorted((a for a in steady if a.lag is not None), key=lambda a: a.lag or 0.0, reverse=True)[:5]],
        "missed": verdict["missed"], "wrongful": verdict["wrongful"], "duplicates": verdict["duplicates"],
        "dynamodb": {
            "at_rest_per_second": round(sum(rest_dynamodb.values()) / rest_seconds, 1),
            "at_rest_by_operation": rest_dynamodb,
            "steady_per_second": round(sum(steady_dynamodb_delta.values()) / steady_seconds, 1),
            "steady_writes_per_second": round(sum(v for k, v in steady_dynamodb_delta.items()
                                                  if k in DYNAMODB_WRITES) / steady_seconds, 1),
            "steady_by_operation": steady_dynamodb_delta,
            "per_action": round(sum(run_dynamodb.values()) / taken, 1) if taken else None,
            "run_by_operation": run_dynamodb,
            "total": sum(end_calls.values()),
            # moto's time per request (one at a time): what a Stop waits for its claim and intent here
            "server_ms_per_request": {op: round(1000 * end_stats["busy_seconds"][op] / count, 1)
                                      for op, count in end_calls.items() if count},
            "server_queueing": queueing,
        },
        "athena_calls": athena_calls,
        "shards_swept_in_steady_window": swept_in_window,
        "events": None if events is None else {"emulator": events, "announce_errors": announcer.errors,
                                                "replicas": event_outcomes},
        # as the live replicas saw them at the end (the killed one's are lost with it)
        "call_seconds": calls_timed,
        "cpu": {
            "steady_window_seconds": round(steady_seconds, 1),
            "steady_percent_of_a_core": per_replica_steady,
            "steady_percent_mean": round(sum(per_replica_steady.values()) / len(per_replica_steady), 1)
            if per_replica_steady else None,
            "steady_percent_total": round(sum(per_replica_steady.values()), 1),
            # the survivors, from the kill to the end of the run (taking over the killed replica's shards)
            "after_kill_percent_of_a_core": takeover_cpu,
        },
        "replica_processes": usage,
        "peak_rss_mib_max": max((u["peak_rss_mib"] for u in usage.values()), default=None),
        "seconds": round(time.time() - began, 1),
    }


def log(message: str, progress: TextIO) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=progress, flush=True)


def table(results: list[dict[str, Any]]) -> str:
    rows: list[tuple[str, list[Any]]] = [
        ("account-regions × sessions", [f"{r['account_regions']} × {r['sessions'] // r['account_regions']}"
                                        for r in results]),
        ("first full sweep (s)", [r["first_full_sweep_seconds"] for r in results]),
        ("  watch lists saved (s)", [r.get("watch_lists_saved_seconds") for r in results]),
        ("due actions", [r["due"] for r in results]),
        ("missed / wrongful / duplicate", [f"{r['counts']['missed']} / {r['counts']['wrongful']} / "
                                           f"{r['counts']['duplicate']}" for r in results]),
        ("lag p50 (s)", [r["lag_seconds"]["p50"] for r in results]),
        ("lag p99 (s)", [r["lag_seconds"]["p99"] for r in results]),
        ("lag max (s)", [r["lag_seconds"]["max"] for r in results]),
        ("takeover after kill -9 (s)", [(r["takeover"] or {}).get("max_first_action_seconds") for r in results]),
        ("  lease taken after (s, max)", [max((r["takeover"] or {}).get("lease_acquired_seconds", {}).values(),
                                              default=None) for r in results]),
        ("  held actions lag max (s)", [((r["takeover"] or {}).get("held_actions_lag") or {}).get("max")
                                        for r in results]),
        ("DynamoDB calls per action", [r["dynamodb"]["per_action"] for r in results]),
        ("DynamoDB calls/s at rest", [r["dynamodb"]["at_rest_per_second"] for r in results]),
        ("DynamoDB calls/s steady", [r["dynamodb"]["steady_per_second"] for r in results]),
        ("  of which writes/s", [r["dynamodb"]["steady_writes_per_second"] for r in results]),
        ("moto: waits ≥ 0.5 s / longest (s)", [f"{r['dynamodb']['server_queueing']['waited_0_5s_or_more']} / "
                                               f"{r['dynamodb']['server_queueing']['longest_wait_seconds']:.1f}"
                                               for r in results]),
        ("Athena API calls", [r["athena_calls"] for r in results]),
        ("  shards swept in the steady window", [len(r.get("shards_swept_in_steady_window") or []) for r in results]),
        *([("events applied / handed back", [event_counts(r, "applied", "not_owned") for r in results]),
           ("  missed by events (backstop)", [event_counts(r, "missed") for r in results])]
          if any(r.get("events") for r in results) else []),
        ("call mean / p99 under (ms): look", [timed(r, "GetCalculationExecutionStatus") for r in results]),
        ("  claim, intent (DynamoDB)", [timed(r, "TransactWriteItems") for r in results]),
        ("  Stop", [timed(r, "StopCalculationExecution") for r in results]),
        ("CPU % of a core per replica", [r["cpu"]["steady_percent_mean"] for r in results]),
        ("CPU % of a core, all replicas", [r["cpu"]["steady_percent_total"] for r in results]),
        ("  survivors after the kill (max)", [max((r["cpu"].get("after_kill_percent_of_a_core") or {}).values(),
                                                  default=None) for r in results]),
        ("peak RSS per replica (MiB, max)", [r["peak_rss_mib_max"] for r in results]),
        ("wall time (s)", [r["seconds"] for r in results]),
    ]
    width = max(len(label) for label, _ in rows)
    head = f"{'replicas':{width}}  " + "  ".join(f"{r['replicas']:>14}" for r in results)
    return "\n".join([head] + [f"{label:{width}}  " + "  ".join(f"{cell(v):>14}" for v in values)
                               for label, values in rows])


def event_counts(result: dict[str, Any], *outcomes: str) -> str | None:
    received = (result.get("events") or {}).get("replicas")
    if received is None:
        return None
    return " / ".join(f"{received.get(outcome, 0):,.0f}" for outcome in outcomes)


def timed(result: dict[str, Any], operation: str) -> str | None:
    found = result.get("call_seconds", {}).get(operation)
    if not found:
        return None
    return f"{1000 * found['mean']:.0f} / {1000 * found['p99_under']:.0f}"


def targets(result: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, bool | None]:
    smaller = [r for r in results if r["replicas"] < result["replicas"]]
    cpu = result["cpu"]["steady_percent_mean"]
    takeover = (result["takeover"] or {}).get("max_first_action_seconds")
    p99 = result["lag_seconds"]["p99"]
    return {
        "lag_p99_le_1s": p99 is not None and p99 <= 1.0,
        "no_missed_wrongful_duplicate": not any(result["counts"].values()),
        "takeover_le_lease_plus_2s": None if result["takeover"] is None else
        takeover is not None and takeover <= result["takeover"]["bound_seconds"],
        "cpu_per_replica_below_smaller_fleets": None if not smaller or cpu is None else
        all(cpu < r["cpu"]["steady_percent_mean"] for r in smaller),
    }


def main(argv: list[str] | None = None, *, out: TextIO | None = None, progress: TextIO | None = None,
         zygotes: SharedZygote | None = None) -> int:
    """The command: the report to ``out`` (default stdout), progress lines to ``progress`` (default stderr); each
    fleet size's processes are copies of a zygote of its own, or of ``zygotes``' (shared with other harnesses)."""
    out = sys.stdout if out is None else out
    progress = sys.stderr if progress is None else progress
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--replicas", help="fleet sizes, e.g. 1,2,3")
    parser.add_argument("--shards", type=int, help="account-regions (default 12)")
    parser.add_argument("--sessions", type=int, help="sessions per account-region (default 1000)")
    parser.add_argument("--tps", type=float, help="requests/s per account-region (default 50)")
    parser.add_argument("--violations", type=int, help="crossings per account-region (default 20)")
    parser.add_argument("--window", type=float, help="seconds over which crossings fall (default 60)")
    parser.add_argument("--lead", type=float, help="seconds from the violators' populate to the first crossing")
    parser.add_argument("--discovery-interval", type=float, help="the replicas' discovery_interval (default 30)")
    parser.add_argument("--lease-duration", type=float, help="cluster.lease_duration (default 15)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--events", action="store_true",
                        help="event-fed discovery: violators announced by CloudTrail events on an SQS queue")
    parser.add_argument("--event-delay", help="the emulator's event delivery delay (default 1s-5s)")
    parser.add_argument("--backstop-interval", type=float, help="discovery.backstop_interval with --events (900)")
    parser.add_argument("--event-visibility", type=int,
                        help="with --events: the queue's visibility timeout, seconds (30; the template's is 120)")
    parser.add_argument("--announced-limit", type=float,
                        help="with --events: the violators' max_runtime, each started that long before (30)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 replicas, 2 × 6 sessions, ~25 s")
    parser.add_argument("--keep", type=Path, help="keep configs, logs and DynamoDB/emulator logs here")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args(argv)
    config = BenchConfig.quick() if args.quick else BenchConfig()
    overrides: dict[str, Any] = {name: getattr(args, name) for name in (
        "shards", "sessions", "tps", "violations", "window", "lead", "discovery_interval", "lease_duration", "seed",
        "events", "event_delay", "backstop_interval", "announced_limit", "event_visibility")
        if getattr(args, name) is not None}
    if args.replicas:
        overrides["replicas"] = tuple(int(n) for n in args.replicas.split(","))
    config = replace(config, **overrides)
    results = []
    for size in config.replicas:
        result = run_size(config, size, args.keep, progress=progress, zygotes=zygotes or SharedZygote())
        results.append(result)
        log(f"{size} replica(s) done: {result['counts']}, lag {result['lag_seconds']}", progress)
    for result in results:
        result["targets"] = targets(result, results)
    summary = {"command": " ".join(["bench/fleet.py", *(argv if argv is not None else sys.argv[1:])]),
               "parameters": asdict(config) | {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg()},
               "results": results}
    print(table(results), file=out)
    print("targets:", json.dumps({r["replicas"]: r["targets"] for r in results}), file=out)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    ok = all(not any(r["counts"].values()) for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
