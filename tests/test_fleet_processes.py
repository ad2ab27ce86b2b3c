"""A fleet as an operator runs it: 3 replicas over 6 account-regions, every part a process of its own.

The emulator (``athena-supervisor emulator``, every account-region), moto's DynamoDB (``bench/dynamodb_server.py``)
and each replica (``athena-supervisor run``, reaching each account through its role, assumed at the emulator's STS)
run as separate processes; kills are real signals and the cut from DynamoDB is a real network fault
(``tests/tcp_proxy.py``, a relay process between one replica and the table). The harness is
``bench/fleet_processes.py`` and ``bench/fleet_workload.py`` (also behind ``bench/fleet.py``). Every scenario is
judged from the emulator's audit log (0 missed, 0 wrongful, 0 duplicate: ``bench.fleet_workload.judge``), and who sent
what from each replica's own log and metrics.

The scenarios are real time and mostly wait, so they play in the background of the run (``tests/background.py``),
from its start, on two fleets at once: one where a replica is cut off from DynamoDB (and rejoins), then another is
killed in the middle of an escalation (three replica processes fewer than a fleet per scenario); one for the rolling
restart. The fleets share one emulator, each in three accounts of its own (6 account-regions), with a DynamoDB server
and table of its own (made by what ``setup-dynamodb`` runs), so that neither sees the other's replicas, leases or
calls. (One DynamoDB server for every fleet was tried: it serves one request at a time, and on a loaded machine the
replicas' writes queued there past their read timeout.) Each test asserts on its scenario's evidence.
Every wait is for what the scenario needs next (a log line, the audit log, the owners on ``/metrics``) with a timeout
that only bounds a failure; the bounds on how late something may happen say which wrong behaviour they exclude.

Leases are short (6 s, clock-skew allowance 0.5 s, connect timeout 0.5 s: a replica acts until 5 s after its last
renewal sent, renewals every 2 s), so a takeover after a kill takes 4.5-6.5 s. 3 s leases (an acting window of 2 s)
were tried first: on this shared 2-core machine a replica's event loop is sometimes starved for longer than that,
and the leases churned.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bench.fleet_processes import (
    EmulatorProcess,
    Fleet,
    Replica,
    ReplicaSettings,
    Shard,
    fleet_environment,
    fleet_shards,
    log_time,
    senders,
    wait_for,
)
from bench.fleet_workload import Violator, Workload, create_workgroups, destructive_calls, epoch, judge, wait_done
from tests.background import ZYGOTES, Background, in_background
from tests.tcp_proxy import TcpProxyProcess

pytestmark = [pytest.mark.slow, pytest.mark.fleet_processes]

SETTINGS = ReplicaSettings(lease_duration=6.0, max_clock_skew=0.5, connect_timeout=0.5, read_timeout=2.0,
                           stop_grace=12.0, discovery_interval=3.0)
# The rolling restart hands shards over without waiting for a lease to expire: a short stop_grace keeps its tail short.
ROLLING = replace(SETTINGS, stop_grace=4.0)
NAMES = ("r1", "r2", "r3")
# How a lease moves (supervisor/cluster.py): renewals every lease_duration / 3, so a holder's last renewal before a kill
# or a cut was sent up to RENEWAL before it, and its lease expires lease_duration after that renewal; another replica
# takes it once expired by its own clock (the holder stopped acting max_clock_skew + connect_timeout before), in a round
# timed on that expiry or, at the latest, in its next round (every RENEWAL).
RENEWAL = SETTINGS.lease_duration / 3
EARLIEST_TAKEOVER = SETTINGS.lease_duration - RENEWAL       # 4 s after the kill or cut
TAKEOVER_BOUND = SETTINGS.lease_duration + RENEWAL          # 8 s after it
# A TerminateSession is due at the Stop's arrival + stop_grace. The replica that resumes the escalation counts
# stop_grace from the Stop's journaled answer (a few ms after the arrival), then looks at the calculation, writes
# its fenced intent to the table and sends the call: tens of milliseconds idle; on this 2-core machine with the rest
# of the suite and other work running, up to a second and more (measured: 0.8-1.0 s at a load average of 10). What
# the bound excludes is later by EARLIEST_TAKEOVER or more, by design: a Terminate counted from the new owner's
# takeover (the Stop came before the kill or the cut), or from the *intent* of the Stop (a Stop without a journaled
# answer is taken to be in flight for 2 × (connect + read timeout) = 5 s); a second Stop is a duplicate, judged
# below. So the tolerance is what stays below that with a margin of half a second, not what load has shown so far.
TERMINATE_TOLERANCE = min(EARLIEST_TAKEOVER, 2 * (SETTINGS.connect_timeout + SETTINGS.read_timeout)) - 0.5  # 3.5 s
SETUP_TIMEOUT = 120.0   # seconds: processes starting on a loaded machine; only bounds a failure
DONE_TIMEOUT = 120.0


def start_all(fleet: Fleet, **dynamodb_urls: str) -> dict[str, set[Shard]]:
    for name in NAMES:
        fleet.start(name, dynamodb_url=dynamodb_urls.get(name), wait=False)
    for name in NAMES:
        _ = fleet.replicas[name].url
    return fleet.wait_spread(within=SETUP_TIMEOUT)


def ignoring_on(workload: Workload, shard: Shard) -> Violator:
    return next(v for v in workload.violators if v.shard == shard and v.ignores_stop)


def stop_all(fleet: Fleet) -> dict[str, int]:
    """SIGTERM to every live replica; their exit codes."""
    return {name: replica.stop().exit_code for name, replica in fleet.live().items()}


def lease_taken(replica: Replica, shard: Shard, after: float) -> list[float]:
    """When ``replica`` took the lease of ``shard`` after the instant ``after`` (epoch seconds)."""
    return [log_time(e) for e in replica.events("cluster.lease_acquired") if e["shard"] == str(shard)
            and log_time(e) > after]


@dataclass
class Evidence:
    """What a scenario leaves for its test: the workload (crossings resolved), the destructive calls of its
    account-regions, the replicas' exit codes at the end, and what else the scenario measured."""

    workload: Workload
    calls: list[dict[str, Any]]
    exit_codes: dict[str, int]
    directory: str
    facts: dict[str, Any] = field(default_factory=dict)

    def judged(self, stop_grace: float) -> dict[str, Any]:
        return judge(self.workload, self.calls, stop_grace=stop_grace, until=time.time(), due_margin=0.0)


def finished(fleet: Fleet, workload: Workload, **facts: Any) -> Evidence:
    """Stop every replica, then read the audit log: a call sent late (a duplicate) is in it by then."""
    exit_codes = stop_all(fleet)
    workload.resolve_crossings(fleet.emulator.endpoint_url)
    calls = destructive_calls(fleet.emulator.control, fleet.shards)
    return Evidence(workload, calls, exit_codes, str(fleet.directory), facts)


# -- the scenarios -----------------------------------------------------------------------------------------------

def concerning(workload: Workload, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls about a target of ``workload`` (a violator or a quiet target, by calculation or session id)."""
    targets = {v.calculation_id for v in workload.violators} | {v.session_id for v in workload.violators} | {
        target for _, target in workload.quiet_sessions} | {target for _, target in workload.quiet_calculations}
    return [call for call in calls if {v for v in call["request"].values() if isinstance(v, str)} & targets]


def cut_off_then_killed(emulator: EmulatorProcess, directory: Path) -> dict[str, tuple[str, Any]]:
    """One fleet, two scenarios in turn (three replica processes fewer than a fleet each): r1 is cut off from
    DynamoDB and rejoins once the path is back; then r2 is killed in the middle of an escalation."""
    shards = fleet_shards(6, first_account=1)
    outcomes: dict[str, tuple[str, Any]] = {}
    with Fleet(directory, shards, SETTINGS, emulator=emulator, table="fleet-cut-kill") as fleet:
        create_workgroups(fleet.emulator.control, shards)
        dynamodb = urlsplit(fleet.dynamodb.endpoint_url)
        with TcpProxyProcess((str(dynamodb.hostname), int(dynamodb.port or 80))) as proxy:
            try:
                cut, cut_facts = cut_off_from_dynamodb(fleet, proxy)
                outcomes["cut"] = ("value", cut)
            except BaseException as error:
                outcomes["cut"] = failed("cut", error, directory)
                outcomes["kill"] = ("error", RuntimeError("the kill scenario follows the cut one, which failed"))
                return outcomes
            try:
                kill, kill_facts = killed_in_the_middle_of_an_escalation(fleet, victim="r2")
            except BaseException as error:
                outcomes["kill"] = failed("kill", error, directory)
                return outcomes
            # Judged once every replica has stopped (r1 still reaching the table: it releases its leases): a call's
            # log line is written after its answer was journaled, and a late call (a duplicate) is in the audit log.
            exit_codes = stop_all(fleet)
        calls = destructive_calls(fleet.emulator.control, shards)
        cut_facts["late_senders"] = late_senders(fleet, concerning(cut, calls), cut_facts["held"], cut_facts["cut_at"])
        kill_facts["terminate_senders"] = [r.name for r, _ in senders(
            fleet.generations, "TerminateSession", kill_facts["escalated"].session_id)]
        unknown = [c for c in calls if c not in concerning(cut, calls) and c not in concerning(kill, calls)]
        for name, workload, facts in (("cut", cut, cut_facts), ("kill", kill, kill_facts)):
            workload.resolve_crossings(fleet.emulator.endpoint_url)
            facts["unknown_calls"] = unknown  # about a target of neither scenario: none may be
            outcomes[name] = ("value", Evidence(workload, concerning(workload, calls), exit_codes, str(directory),
                                                facts))
    return outcomes


def cut_off_from_dynamodb(fleet: Fleet, proxy: TcpProxyProcess) -> tuple[Workload, dict[str, Any]]:
    held = start_all(fleet, r1=proxy.endpoint_url)
    cut_off = fleet.replicas["r1"]
    workload = Workload()
    for shard in fleet.shards:
        # An escalation r1 starts on each of its shards before the cut (and the same elsewhere).
        workload.add(fleet.emulator.control, shard, [(3.0, True), (4.0, False)], quiet=1)
    escalations = [ignoring_on(workload, shard) for shard in sorted(held["r1"])]
    # The cut comes once r1 has sent, and journaled the answer of, a Stop for every crossing on its shards so far:
    # nothing in flight then (a call whose intent was journaled before the cut may still go out after it, until
    # the acting deadline). What r1 does next, the Terminates, falls due long after its acting deadline.
    stopped_before_the_cut = {v.calculation_id for v in workload.violators if v.shard in held["r1"]}
    wait_for(lambda: {e["target_id"] for e in cut_off.events("calculation.stop_requested")} >= stopped_before_the_cut,
             DONE_TIMEOUT, "r1's Stops")
    actions_before = cut_off.metric("athena_supervisor_actions_total")
    proxy.cut()
    cut_at = time.time()
    for shard in held["r1"]:
        # Crossings during the cut, before and after r1's acting deadline (3-5 s after the cut: its last renewal
        # was sent 0-2 s before it): r1 must act on neither, another replica takes both once it holds the lease.
        workload.add(fleet.emulator.control, shard, [(1.0, False), (5.5, False)], exempt=0, unwatched=0)

    passed = wait_for(lambda: len(cut_off.events("cluster.acting_deadline_passed")) >= len(held["r1"]) and
                      cut_off.events("cluster.acting_deadline_passed"), DONE_TIMEOUT, "r1's acting deadlines")
    # It says so on /metrics too (it still serves them), once its shards' activities have stopped.
    wait_for(lambda: not cut_off.owned(), DONE_TIMEOUT, "r1 to own no shard on /metrics")
    wait_done(fleet.emulator.control, workload, within=DONE_TIMEOUT)

    def owners_of_r1s_shards() -> dict[Shard, list[str]] | None:
        owners = fleet.owners()
        mine = {shard: owners[shard] for shard in held["r1"]}
        return mine if all(len(names) == 1 and names != ["r1"] for names in mine.values()) else None

    new_owners = wait_for(owners_of_r1s_shards, DONE_TIMEOUT, "r1's shards each owned by another replica")
    facts = dict(
        cut_at=cut_at, held=held["r1"], escalations=escalations, new_owners=new_owners,
        taken={shard: lease_taken(fleet.replicas[new_owners[shard][0]], shard, cut_at) for shard in held["r1"]},
        deadlines={e["shard"]: epoch(e["deadline"]) for e in passed},
        actions=(actions_before, cut_off.metric("athena_supervisor_actions_total")),
        lost=cut_off.metric("athena_supervisor_lease_changes_total", outcome="lost"),
    )
    # The path comes back: r1 finds its leases gone and rejoins with its fair share.
    proxy.restore()
    facts["rejoined"] = fleet.wait_spread(within=DONE_TIMEOUT)["r1"]
    return workload, facts


def late_senders(fleet: Fleet, calls: list[dict[str, Any]], held: set[Shard],
                 cut_at: float) -> list[tuple[dict[str, Any], list[str]]]:
    """Who sent each call on r1's shards after the cut (from the replicas' logs)."""
    found = []
    for call in calls:
        if Shard(str(call["account"]), str(call["region"])) in held and epoch(str(call["time"])) > cut_at:
            operation, request = str(call["operation"]), call["request"]
            target = request["CalculationExecutionId" if operation == "StopCalculationExecution" else "SessionId"]
            found.append((call, [r.name for r, _ in senders(fleet.generations, operation, target)]))
    return found


def killed_in_the_middle_of_an_escalation(fleet: Fleet, victim: str) -> tuple[Workload, dict[str, Any]]:
    held = fleet.wait_spread(within=DONE_TIMEOUT)
    killed = fleet.replicas[victim]
    target = min(held[victim])
    workload = Workload()
    for shard in fleet.shards:
        # An ignoring calculation crossing in 3 s (its Stop starts an escalation), an honouring one in 4 s; on the
        # victim's shards one more, crossing while nobody may act there (the takeover): taken late, never twice.
        extra = [(7.0, False)] if shard in held[victim] else []
        workload.add(fleet.emulator.control, shard, [(3.0, True), (4.0, False), *extra], quiet=1)
    escalated = ignoring_on(workload, target)
    wait_for(lambda: [e for e in killed.events("calculation.stop_requested")
                      if e["target_id"] == escalated.calculation_id], DONE_TIMEOUT, "the victim's Stop")
    killed.kill()
    killed_at = time.time()

    wait_done(fleet.emulator.control, workload, within=DONE_TIMEOUT)
    survivors = [replica for name, replica in fleet.live().items() if name != victim]
    new_owner = next(r for r in survivors if lease_taken(r, target, killed_at))
    return workload, dict(killed_at=killed_at, escalated=escalated, new_owner=new_owner.name,
                          taken_at=min(lease_taken(new_owner, target, killed_at)),
                          victim_exit=killed.usage.exit_code if killed.usage else None)


def rolling_restart_under_load(emulator: EmulatorProcess, directory: Path) -> Evidence:
    shards = fleet_shards(6, first_account=7)
    with Fleet(directory, shards, ROLLING, emulator=emulator, table="fleet-rolling") as fleet:
        create_workgroups(fleet.emulator.control, shards)
        start_all(fleet)
        workload = Workload()
        batches = 0

        def crossings_soon() -> None:
            # On every shard: one calculation crossing in 1.5 s that ignores Stop (its session is terminated
            # stop_grace later), one in 2.5 s that honours it: they fall due while the next replica restarts.
            nonlocal batches
            batches += 1
            first = int(batches == 1)  # the targets never to be touched, once
            for shard in shards:
                workload.add(fleet.emulator.control, shard, [(1.5, True), (2.5, False)], quiet=first, exempt=first,
                             unwatched=first)

        restarts = []
        for name in NAMES:
            crossings_soon()
            old = fleet.replicas[name]
            stopped = old.stop()  # SIGTERM: calls in flight finish, leases are released
            released = bool(old.events("cluster.lease_released"))
            new = fleet.start(name)
            spread = fleet.wait_spread(within=DONE_TIMEOUT)
            restarts.append({"name": name, "exit_code": stopped.exit_code, "released": released,
                             "acquired": bool(new.events("cluster.lease_acquired")), "shards": len(spread[name])})
        wait_done(fleet.emulator.control, workload, within=DONE_TIMEOUT)
        return finished(fleet, workload, restarts=restarts, batches=batches)


def failed(name: str, error: BaseException, directory: Path) -> tuple[str, Any]:
    return "error", RuntimeError(f"the {name} scenario failed (logs in {directory}):\n"
                                 + "".join(traceback.format_exception(error)))


def rolling(emulator: EmulatorProcess, directory: Path) -> dict[str, tuple[str, Any]]:
    try:
        return {"rolling": ("value", rolling_restart_under_load(emulator, directory))}
    except BaseException as error:
        return {"rolling": failed("rolling", error, directory)}


FLEETS: dict[str, Callable[[EmulatorProcess, Path], dict[str, tuple[str, Any]]]] = {
    "cut-kill": cut_off_then_killed,
    "rolling": rolling,
}


def fleet_scenarios(directory: Path) -> dict[str, tuple[str, Any]]:
    """The scenarios on two fleets at once (each with a DynamoDB server of its own), on one emulator, every process
    a copy of one zygote (bench/zygote.py: its own process, without a fresh interpreter's imports; the zygote of
    the background scenarios running meanwhile, see tests/background.py); for each
    scenario, ``("value", Evidence)`` or ``("error", RuntimeError(its traceback))``: one failing leaves the others'
    evidence."""

    def play(name: str) -> dict[str, tuple[str, Any]]:
        where = directory / name
        where.mkdir()
        return FLEETS[name](emulator, where)

    with ZYGOTES.use(fleet_environment(), directory / "zygote.log") as zygote:
        emulator = EmulatorProcess(directory / "emulator.log", zygote)
        try:
            with ThreadPoolExecutor(len(FLEETS), thread_name_prefix="fleet") as pool:
                return {name: outcome for outcomes in pool.map(play, FLEETS) for name, outcome in outcomes.items()}
        finally:
            emulator.close()


def evidence(background: Background, name: str) -> Evidence:
    kind, value = background.result(fleet_scenarios)[name]
    if kind == "error":
        raise value
    assert isinstance(value, Evidence)
    return value


def assert_judged_clean(played: Evidence, stop_grace: float) -> dict[str, Any]:
    verdict = played.judged(stop_grace)
    shown = {k: verdict[k] for k in ("counts", "missed", "wrongful", "duplicates", "lag")} | {"logs": played.directory}
    assert verdict["counts"] == {"missed": 0, "wrongful": 0, "duplicate": 0}, shown
    assert verdict["taken"] == verdict["due"] == len(played.workload.violators) + sum(
        v.ignores_stop for v in played.workload.violators), shown
    assert set(played.exit_codes.values()) <= {0}, played.exit_codes
    return verdict


def terminate_at(calls: list[dict[str, Any]], violator: Violator) -> tuple[float, float]:
    """The arrival of the violator's only Stop and only TerminateSession."""
    [stop] = [c for c in calls if c["operation"] == "StopCalculationExecution"
              and c["request"]["CalculationExecutionId"] == violator.calculation_id]
    [terminate] = [c for c in calls if c["operation"] == "TerminateSession"
                   and c["request"]["SessionId"] == violator.session_id]
    return epoch(str(stop["time"])), epoch(str(terminate["time"]))


def assert_terminated_on_time(calls: list[dict[str, Any]], violator: Violator, before: float) -> float:
    """One Stop (sent before ``before``), one TerminateSession at that Stop + stop_grace; how late it was."""
    stopped_at, terminated_at = terminate_at(calls, violator)
    assert stopped_at < before
    assert stopped_at + SETTINGS.stop_grace - 0.001 <= terminated_at <= stopped_at + SETTINGS.stop_grace + \
        TERMINATE_TOLERANCE, (terminated_at - stopped_at)
    return terminated_at - stopped_at - SETTINGS.stop_grace


# -- the tests -----------------------------------------------------------------------------------------------------

@in_background(fleet_scenarios)
def test_a_replica_killed_in_the_middle_of_an_escalation_is_taken_over_and_its_session_terminated_on_time(
    background: Background,
) -> None:
    played = evidence(background, "kill")
    facts = played.facts
    assert_judged_clean(played, SETTINGS.stop_grace)
    assert facts["unknown_calls"] == []
    killed_at, taken_at = facts["killed_at"], facts["taken_at"]
    # One Stop (the victim's, before the kill); one TerminateSession, from the new owner, at that Stop + stop_grace.
    late = assert_terminated_on_time(played.calls, facts["escalated"], before=killed_at)
    print(f"kill -9: Terminate at Stop + stop_grace + {late:.3f} s; lease taken {taken_at - killed_at:.3f} s after "
          "the kill")
    assert facts["terminate_senders"] == [facts["new_owner"]]
    # The lease moved once it had expired (it was last renewed before the kill), and not much later.
    assert killed_at < taken_at <= killed_at + TAKEOVER_BOUND, taken_at - killed_at
    assert facts["victim_exit"] == -9


@in_background(fleet_scenarios)
def test_a_replica_cut_off_from_dynamodb_stops_acting_before_its_lease_expires_and_another_takes_over(
    background: Background,
) -> None:
    played = evidence(background, "cut")
    facts = played.facts
    cut_at, held = facts["cut_at"], facts["held"]
    # r1 stopped acting at its acting deadline, 5 s (lease_duration - max_clock_skew - connect_timeout) after its
    # last renewal sent, so at most 5 s after the cut...
    deadlines = facts["deadlines"]
    assert set(deadlines) == {str(shard) for shard in held}
    bound = cut_at + SETTINGS.lease_duration - SETTINGS.acting_margin
    assert all(deadline <= bound for deadline in deadlines.values()), (deadlines, cut_at)
    # ...while another replica took the lease only once it had expired (its renewal sent + lease_duration), the
    # clock-skew allowance and a call timeout after r1's acting deadline: their windows never overlap.
    for shard in held:
        taken = facts["taken"][shard]
        expiry = deadlines[str(shard)] + SETTINGS.acting_margin
        assert taken and expiry - 0.001 <= min(taken), (shard, deadlines, taken)
    # r1 sent nothing since the cut (it had nothing in flight, and could not journal an intent): every call on its
    # shards after the cut was sent once, by another replica.
    before, after = facts["actions"]
    assert after == before
    late = [call for call, _ in facts["late_senders"]]
    assert sum(c["operation"] == "TerminateSession" for c in late) == len(facts["escalations"]), late
    assert sum(c["operation"] == "StopCalculationExecution" for c in late) >= 2 * len(held), late
    for call, names in facts["late_senders"]:
        assert len(names) == 1 and names != ["r1"], (call, names)
    for escalation in facts["escalations"]:  # resumed by the new owners at the original Stop + stop_grace
        late_by = assert_terminated_on_time(played.calls, escalation, before=cut_at)
        print(f"cut: deadlines {sorted(round(d - cut_at, 3) for d in deadlines.values())} s after the cut; "
              f"Terminate at Stop + stop_grace + {late_by:.3f} s")
    assert facts["lost"] >= len(held)
    # The path came back: r1 rejoined with its fair share.
    assert len(facts["rejoined"]) == 2
    assert_judged_clean(played, SETTINGS.stop_grace)
    assert facts["unknown_calls"] == []


@in_background(fleet_scenarios)
def test_a_rolling_restart_of_every_replica_under_load_misses_nothing_and_repeats_nothing(
    background: Background,
) -> None:
    played = evidence(background, "rolling")
    # Each replica in turn: SIGTERM (calls in flight finish, leases are released, exit 0), started again, and it
    # takes its fair share back; crossings fell due on every shard meanwhile.
    for restart in played.facts["restarts"]:
        assert restart == {"name": restart["name"], "exit_code": 0, "released": True, "acquired": True,
                           "shards": 2}, restart
    verdict = assert_judged_clean(played, ROLLING.stop_grace)
    print(f"rolling restart: {verdict['due']} due actions, lag {verdict['lag']}")
    # 3 batches of 2 crossings on each of 6 shards, one of each pair ignoring Stop: 3 × 6 × 3 due actions, every one
    # taken once although each restart moved shards twice (away, then back).
    assert played.facts["batches"] == 3
    assert verdict["due"] == 54
