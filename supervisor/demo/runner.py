"""Runs the demo: the emulator and the daemon in this event loop, the scripted workload, the verdict.

Order matters: the workgroups are created (and tagged) before the daemon starts, as they would exist
before a supervisor is deployed; the daemon lists workgroups at start and then every few minutes.
"""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import anyio

from athena_spark_emulator import ControlClient, Emulator
from supervisor.config import Settings
from supervisor.core.escalation import Escalation
from supervisor.core.model import SPARK_CONNECT_ENGINE, TargetKey
from supervisor.demo.narration import Narrator, short_id
from supervisor.demo.report import format_footer, format_summary, outcome_of
from supervisor.demo.scenario import ENGINES, EXEMPT_WORKGROUP, WORKGROUPS, Part, Scenario
from supervisor.demo.workload import Athena, athena_client
from supervisor.durations import format_duration
from supervisor.service import RunningService, running_service
from supervisor.storage import Storage

DEFAULT_ACCOUNT_ID = "123456789012"
POLL_INTERVAL = 0.5
SLACK = 30.0  # seconds granted beyond the scenario's own estimate before an expectation counts as failed
ADDRESS_IN_USE = (errno.EADDRINUSE, 10048)  # 10048: WSAEADDRINUSE


@dataclass(slots=True)
class Launched:
    """A scripted part once started, and what has been said about it."""

    part: Part
    session_id: str
    calculation_id: str | None = None
    submitted_at: datetime | None = None
    settled: bool = False
    problem: str | None = None
    said: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Observation:
    session_state: str
    calculation: dict[str, Any] | None
    calculation_escalation: Escalation | None
    session_escalation: Escalation | None

    @property
    def calculation_state(self) -> str | None:
        return str(self.calculation["Status"]["State"]) if self.calculation else None


def demo_settings(settings: Settings, *, endpoint_url: str, account_id: str, journal: Path, port: int) -> Settings:
    """``settings`` pointed at the emulator, with the demo's journal and HTTP port."""
    aws = settings.aws.model_copy(update={"endpoint_url": endpoint_url, "account_id": account_id})
    return settings.model_copy(update={
        "aws": aws,
        "journal": settings.journal.model_copy(update={"path": journal}),
        "http": settings.http.model_copy(update={"port": port}),
    })


@asynccontextmanager
async def start_service(settings: Settings, narrator: Narrator) -> AsyncIterator[tuple[RunningService, int | None]]:
    """Run the daemon; when the configured HTTP port is taken, on a free port. Yields (service, busy port)."""
    async with contextlib.AsyncExitStack() as stack:
        busy: int | None = None
        try:
            service = await stack.enter_async_context(running_service(settings, events=narrator))
        except OSError as error:
            if error.errno not in ADDRESS_IN_USE or settings.http.port == 0:
                raise
            busy = settings.http.port
            free = settings.model_copy(update={"http": settings.http.model_copy(update={"port": 0})})
            service = await stack.enter_async_context(running_service(free, events=narrator))
        yield service, busy


async def run_demo(
    settings: Settings, scenario: Scenario, *, out: TextIO, journal_path: Path, config_name: str,
    credentials_note: str | None = None,
) -> int:
    """Play the demo; 0 when every scripted part ended as expected, 1 otherwise."""
    narrator = Narrator(out, stop_grace=scenario.limits.stop_grace, terminate_grace=scenario.limits.terminate_grace)
    account_id = settings.aws.account_id or DEFAULT_ACCOUNT_ID
    began = time.monotonic()
    async with (
        Emulator(port=0, region=settings.aws.region, account_id=account_id) as emulator,
        athena_client(emulator.endpoint_url, region=settings.aws.region, account_id=account_id) as athena,
    ):
        await create_workgroups(athena, scenario)
        effective = demo_settings(settings, endpoint_url=emulator.endpoint_url, account_id=account_id,
                                  journal=journal_path, port=settings.http.port)
        async with start_service(effective, narrator) as (service, busy_port):
            print_header(narrator, scenario, emulator.endpoint_url, service.http_url, busy_port, journal_path,
                         config_name, credentials_note)
            narrator.start_clock()
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(narrator.run, service.storage)
                launched = await launch(athena, scenario, narrator)
                deadline = time.monotonic() + scenario.settle_within + SLACK
                await watch(athena, service.storage, scenario, launched, narrator, deadline)
                await narrator.drain()
                task_group.cancel_scope.cancel()
            calls = await anyio.to_thread.run_sync(ControlClient(emulator.control_url).calls)
            check_audit(launched, calls)
            outcomes = [await outcome_of(item, scenario, service.storage, athena) for item in launched]
            supervisor_calls = api_calls_by_operation(service)
    narrator.line()
    for line in format_summary(outcomes):
        narrator.line(line)
    narrator.line()
    failures = [item for item in launched if item.problem]
    for line in format_footer(calls, supervisor_calls, journal_path, time.monotonic() - began, outcomes, failures):
        narrator.line(line)
    return 1 if failures else 0


async def create_workgroups(athena: Athena, scenario: Scenario) -> None:
    for name in WORKGROUPS:
        tags = {scenario.limits.exempt_tag: "true"} if name == EXEMPT_WORKGROUP else None
        if name in ENGINES:
            await athena.create_spark_workgroup(name, tags=tags, engine=ENGINES[name])
        else:
            await athena.create_spark_workgroup(name, tags=tags)


def print_header(
    narrator: Narrator, scenario: Scenario, endpoint_url: str, http_url: str, busy_port: int | None,
    journal_path: Path, config_name: str, credentials_note: str | None,
) -> None:
    limits = scenario.limits
    say = narrator.line
    say("athena-supervisor demo: the supervisor daemon against a local Athena for Apache Spark emulator.")
    say("No AWS account is used; everything runs in this process, on loopback.")
    say()
    say(f"  emulator  {endpoint_url}  (the Athena API; point any AWS SDK at it)")
    port_note = f"  (port {busy_port} was taken)" if busy_port else ""
    say(f"  metrics   {http_url}/metrics{port_note}  <- open it while the demo runs")
    say(f"  journal   {journal_path}")
    say(f"  config    {config_name}")
    if credentials_note:
        say(f"  note      {credentials_note}")
    say()
    say("Policies the supervisor enforces:")
    say(f"  demo-etl*       a calculation may run {format_duration(limits.max_runtime)}; then "
        f"StopCalculationExecution, and TerminateSession if it still runs {format_duration(limits.stop_grace)} later")
    say(f"  demo-notebooks  a session may stay idle {format_duration(limits.max_idle)}; then TerminateSession")
    say(f"  demo-ml         a calculation may use ${limits.max_cost_usd:g} of DPU time "
        f"(at ${limits.dpu_hour_usd:g}/DPU-hour); then StopCalculationExecution")
    say(f"  demo-connect    ({SPARK_CONNECT_ENGINE}: Spark Connect, no calculations) a session may stay BUSY "
        f"{format_duration(limits.max_busy)} without a break; then TerminateSession")
    say(f"  exempt          sessions with [supervisor:exempt] in their description; workgroups tagged "
        f"{limits.exempt_tag}=true ({EXEMPT_WORKGROUP})")
    say()
    say("What happens (seconds since the workload started):")


async def launch(athena: Athena, scenario: Scenario, narrator: Narrator) -> list[Launched]:
    """Start every session, wait until they are IDLE, then submit the calculations."""
    workgroups = sorted({part.workgroup for part in scenario.parts})
    narrator.say(f"a user starts {len(scenario.parts)} Spark sessions in {', '.join(workgroups)}")
    launched = [Launched(part, await athena.start_session(part.workgroup, part.session_description,
                                                          spark_connect=part.engine == SPARK_CONNECT_ENGINE))
                for part in scenario.parts]
    for item in launched:
        narrator.names[item.session_id] = item.part.name
    async with anyio.create_task_group() as task_group:
        for item in launched:
            task_group.start_soon(athena.wait_ready, item.session_id)
    narrator.say("the sessions are ready; the user submits the calculations (Spark Connect runs its own job):")
    for item in launched:
        if item.part.code is not None:
            item.calculation_id = await athena.start_calculation(item.session_id, item.part.code)
            narrator.names[item.calculation_id] = item.part.name
            status = await athena.calculation(item.calculation_id)
            item.submitted_at = status["Status"]["SubmissionDateTime"]
            what = f"calc {short_id(item.calculation_id)}"
        else:
            what = f"session {short_id(item.session_id)}"
        narrator.say(f"{item.part.workgroup:<17} {what:<13} {item.part.name:<17} {item.part.story}", indent=True)
    return launched


async def observe(athena: Athena, journal: Storage, item: Launched, scenario: Scenario) -> Observation:
    """The journal's view of a part, plus the API's once it can tell something new (keeps the polling light)."""
    calculation_escalation = (
        await journal.escalation_for(TargetKey.calculation(item.calculation_id))
        if item.calculation_id else None
    )
    session_escalation = await journal.escalation_for(TargetKey.session(item.session_id))
    expect = item.part.expect
    if expect in ("stopped", "escalated"):
        ask = calculation_escalation is not None and calculation_escalation.is_done
    elif expect == "terminated":
        ask = session_escalation is not None and session_escalation.is_done
    elif expect == "exempt":
        ask = _running_for(item) >= scenario.left_alone_after
    else:
        ask = True
    calculation = await athena.calculation(item.calculation_id) if ask and item.calculation_id else None
    session_state = await athena.session_state(item.session_id) if ask and expect != "stopped" else ""
    return Observation(session_state, calculation, calculation_escalation, session_escalation)


async def watch(
    athena: Athena, journal: Storage, scenario: Scenario, launched: list[Launched], narrator: Narrator,
    deadline: float,
) -> None:
    """Poll until every part has settled (or failed), or until ``deadline`` (monotonic seconds)."""
    while True:
        pending = [item for item in launched if not item.settled and item.problem is None]
        if not pending:
            return
        for item in pending:
            observation = await observe(athena, journal, item, scenario)
            comment(item, observation, scenario, narrator)
            judge(item, observation, scenario)
        if time.monotonic() > deadline:
            for item in launched:
                if not item.settled and item.problem is None:
                    item.problem = f"{item.part.name}: did not reach its expected end ({item.part.expect}) in time"
            return
        await anyio.sleep(POLL_INTERVAL)


def _running_for(item: Launched) -> float:
    return (datetime.now(UTC) - item.submitted_at).total_seconds() if item.submitted_at else 0.0


def comment(item: Launched, seen: Observation, scenario: Scenario, narrator: Narrator) -> None:
    """Say what the user sees happen to a part, once per thing."""
    state = seen.calculation_state
    label = narrator.label("calculation", item.calculation_id or "")
    limit = format_duration(scenario.limits.max_runtime)
    if state == "CANCELED" and "canceled" not in item.said:
        item.said.add("canceled")
        escalation = seen.calculation_escalation
        completed = seen.calculation["Status"].get("CompletionDateTime") if seen.calculation else None
        if escalation and escalation.stop_sent_at and completed:
            took = (completed - escalation.stop_sent_at).total_seconds()
            narrator.say(f"OK       {label} is CANCELED {max(took, 0):.2f} s after the stop: it took effect")
        else:
            narrator.say(f"OK       {label} is CANCELED")
    elif state == "COMPLETED" and item.part.expect == "completed" and "completed" not in item.said:
        item.said.add("completed")
        narrator.say(f"OK       {label} COMPLETED on its own, within max_runtime {limit}: nothing to do")
    elif (item.part.expect == "exempt" and state == "RUNNING" and "spared" not in item.said
          and _running_for(item) >= scenario.left_alone_after and seen.calculation_escalation is None):
        item.said.add("spared")
        narrator.say(f"SPARED   {label} has run {_running_for(item):.1f} s, past max_runtime {limit}, and is "
                     f"left alone: {item.part.why_left_alone}")


def judge(item: Launched, seen: Observation, scenario: Scenario) -> None:
    """Mark ``item`` settled when it reached its expected end state, or record why it cannot."""
    calc, session = seen.calculation_escalation, seen.session_escalation
    expect = item.part.expect
    name = item.part.name
    if expect in ("completed", "exempt"):
        if calc is not None or session is not None:
            item.problem = f"{name}: should have been left alone, but the supervisor acted on it"
        elif expect == "completed":
            item.settled = seen.calculation_state == "COMPLETED"
            if seen.calculation_state in ("CANCELED", "FAILED"):
                item.problem = f"{name}: expected COMPLETED, got {seen.calculation_state}"
        else:
            item.settled = seen.calculation_state == "RUNNING" and _running_for(item) >= scenario.left_alone_after
        return
    if expect == "stopped":
        if session is not None:
            item.problem = f"{name}: only the calculation should have been stopped, but its session was acted on"
        elif calc is not None and calc.is_done:
            if calc.outcome == "stopped" and seen.calculation_state == "CANCELED":
                item.settled = True
            else:
                item.problem = f"{name}: expected the stop to take effect; outcome {calc.outcome}"
        return
    if expect == "escalated":
        if calc is not None and calc.is_done:
            if calc.outcome == "terminated" and calc.stop_sent_at and calc.terminate_sent_at:
                item.settled = seen.session_state == "TERMINATED"
            else:
                item.problem = f"{name}: expected Stop then TerminateSession; outcome {calc.outcome}"
        return
    if session is not None and session.is_done:  # expect == "terminated"
        if session.outcome == "terminated" and session.verdict.rule == item.part.rule:
            item.settled = seen.session_state == "TERMINATED"
        else:
            item.problem = (f"{name}: expected termination for {item.part.rule}; got {session.outcome} "
                            f"({session.verdict.rule})")


def check_audit(launched: list[Launched], calls: list[dict[str, Any]]) -> None:
    """Cross-check with the emulator's audit log: nothing destructive reached what should be spared, and no
    calculation call was made about a Spark Connect session (it has no calculations)."""
    def named(operation: str, member: str) -> set[Any]:
        return {call["request"].get(member) for call in calls if call["operation"] == operation}

    stopped = named("StopCalculationExecution", "CalculationExecutionId")
    terminated = named("TerminateSession", "SessionId")
    about_calculations = {call["request"].get("SessionId") for call in calls
                          if "Calculation" in str(call["operation"])}
    for item in launched:
        if item.problem:
            continue
        if item.part.engine == SPARK_CONNECT_ENGINE and item.session_id in about_calculations:
            item.problem = f"{item.part.name}: the audit log shows a calculation call about a Spark Connect session"
        if item.part.expect in ("completed", "exempt") and (
            item.calculation_id in stopped or item.session_id in terminated
        ):
            item.problem = f"{item.part.name}: the audit log shows a Stop/Terminate call for it"
        elif item.part.expect == "stopped" and item.session_id in terminated:
            item.problem = f"{item.part.name}: the audit log shows its session was terminated"


def api_calls_by_operation(service: RunningService) -> dict[str, int]:
    """The daemon's own count of the Athena calls it made (all outcomes), by operation."""
    counts: dict[str, int] = {}
    for family in service.metrics.registry.collect():
        if family.name != "athena_supervisor_aws_api_calls":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                operation = sample.labels["operation"]
                counts[operation] = counts.get(operation, 0) + int(sample.value)
    return counts
