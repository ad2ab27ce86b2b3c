"""The demo's scripted workload, derived from the demo configuration's limits (pure: no I/O).

Each :class:`Part` is one session (and at most one calculation) a user starts, with the end state the
supervisor must bring it to. Runtimes, DPUs and deadlines follow the policies, so a copy of
``config/demo.yaml`` with other limits plays the same story on another time scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from supervisor.config import Settings
from supervisor.core.model import EXEMPT_DESCRIPTION_MARKER, PYSPARK_ENGINE, SPARK_CONNECT_ENGINE
from supervisor.durations import format_duration

ETL = "demo-etl"
EXEMPT_WORKGROUP = "demo-etl-finance"
NOTEBOOKS = "demo-notebooks"
ML = "demo-ml"
CONNECT = "demo-connect"  # Apache Spark version 3.5: Spark Connect, no calculations
WORKGROUPS = (ETL, EXEMPT_WORKGROUP, NOTEBOOKS, ML, CONNECT)
ENGINES = {CONNECT: SPARK_CONNECT_ENGINE}  # the others run PySpark engine version 3

SESSION_START = 1.0  # seconds CREATING -> IDLE in the emulator
STOP_LATENCY = 1.0  # seconds from StopCalculationExecution to CANCELED when a calculation honours it
COST_CROSSING_AFTER = 8.0  # the ML calculation gets enough DPUs to cross its cost limit after about this long
CODE = "df = spark.read.parquet('s3://demo-bucket/events/')\ndf.groupBy('day').count().collect()"

Expectation = Literal["stopped", "escalated", "terminated", "completed", "exempt"]


class DemoConfigError(ValueError):
    """The configuration lacks a limit the scripted workload needs; the message says which."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits the story is built on, read from the configuration."""

    max_runtime: timedelta
    max_idle: timedelta
    max_busy: timedelta
    max_cost_usd: float
    dpu_hour_usd: float
    stop_grace: timedelta
    terminate_grace: timedelta
    discovery_interval: timedelta
    exempt_tag: str


@dataclass(frozen=True, slots=True)
class Part:
    """One scripted session (with at most one calculation) and what must become of it."""

    name: str
    workgroup: str
    story: str  # what the user does, in words
    session_description: str
    code: str | None  # the calculation's CodeBlock, None for a session left idle
    expect: Expectation
    why_left_alone: str | None = None
    rule: str = "max_idle"  # the limit that terminates a session part

    @property
    def engine(self) -> str:
        return ENGINES.get(self.workgroup, PYSPARK_ENGINE)


@dataclass(frozen=True, slots=True)
class Scenario:
    limits: Limits
    parts: tuple[Part, ...]
    ml_dpus: int
    settle_within: float  # seconds from the first submission until every part should have settled
    left_alone_after: float  # seconds after submission by which an exempt calculation would have been acted on


def _seconds(value: float) -> str:
    return f"{value:g}s"


def read_limits(settings: Settings) -> Limits:
    """The limits the demo needs; :class:`DemoConfigError` names the first missing one."""
    problems = []
    for workgroup in WORKGROUPS:
        if not settings.watches(workgroup):
            problems.append(f"workgroups: must match {workgroup!r} (e.g. [\"demo-*\"])")
    etl = settings.policy_for(ETL)
    notebooks = settings.policy_for(NOTEBOOKS)
    ml = settings.policy_for(ML)
    connect = settings.policy_for(CONNECT, SPARK_CONNECT_ENGINE)
    runtime = etl.calculation.max_runtime if etl and etl.calculation and etl.action == "stop" else None
    idle = notebooks.session.max_idle if notebooks and notebooks.session and notebooks.action != "notify" else None
    busy = connect.session.max_busy if connect and connect.session and connect.action != "notify" else None
    cost = ml.calculation.max_cost_usd if ml and ml.calculation and ml.action == "stop" else None
    if runtime is None:
        problems.append(f"policies: the first policy matching {ETL!r} needs calculation.max_runtime and action stop")
    if idle is None:
        problems.append(f"policies: the first policy matching {NOTEBOOKS!r} needs session.max_idle "
                        "and action stop or terminate")
    if cost is None:
        problems.append(f"policies: the first policy matching {ML!r} needs calculation.max_cost_usd and action stop")
    if busy is None:
        problems.append(f"policies: the first policy matching {CONNECT!r} ({SPARK_CONNECT_ENGINE}) needs "
                        "session.max_busy and action stop or terminate")
    for name, policy in ((ETL, etl), (NOTEBOOKS, notebooks), (ML, ml), (CONNECT, connect)):
        if policy is not None and settings.mode_for(policy) != "enforce":
            problems.append(f"policies: {policy.name} (for {name!r}) must be in enforce mode for the demo")
    if problems:
        raise DemoConfigError("; ".join(problems))
    assert runtime is not None and idle is not None and cost is not None and busy is not None
    return Limits(
        max_runtime=runtime, max_idle=idle, max_busy=busy, max_cost_usd=cost,
        dpu_hour_usd=settings.pricing.price_for(settings.aws.region),
        stop_grace=settings.escalation.stop_grace, terminate_grace=settings.escalation.terminate_grace,
        discovery_interval=settings.discovery_interval,
        exempt_tag=settings.safety.exempt_tag or "athena-supervisor/exempt",
    )


def build(settings: Settings) -> Scenario:
    """The workload for ``settings`` (see :func:`read_limits` for what it must contain)."""
    limits = read_limits(settings)
    runtime = limits.max_runtime.total_seconds()
    long_run = max(60.0, 10 * runtime)
    session = f"# sim: start={_seconds(SESSION_START)} terminate_latency=1s"
    dpu_seconds = limits.max_cost_usd / limits.dpu_hour_usd * 3600
    ml_dpus = max(1, math.ceil(dpu_seconds / COST_CROSSING_AFTER))
    cost_crossing = dpu_seconds / ml_dpus
    limit_text = format_duration(limits.max_runtime)
    parts = (
        Part("honours-stop", ETL, f"a 4-DPU calculation that would run {_seconds(long_run)} and honours a stop",
             f"{session}\nnightly ETL",
             f"# sim: runtime={_seconds(long_run)} dpus=4 on_stop=honor stop_latency={_seconds(STOP_LATENCY)}\n{CODE}",
             "stopped"),
        Part("ignores-stop", ETL, f"a calculation that ignores StopCalculationExecution (runs {_seconds(long_run)})",
             f"{session}\nbackfill", f"# sim: runtime={_seconds(long_run)} dpus=4 on_stop=ignore\n{CODE}",
             "escalated"),
        Part("idle", NOTEBOOKS, "a notebook session nobody uses (stays IDLE)", f"{session}\nexploration", None,
             "terminated"),
        Part("runaway-job", CONNECT, "a Spark Connect client's 8-DPU job that never ends (the session stays BUSY)",
             f"# sim: start={_seconds(SESSION_START)} busy=forever dpus=8 terminate_latency=1s\ninteractive analysis",
             None, "terminated", rule="max_busy"),
        Part("expensive", ML, f"a {ml_dpus}-DPU training calculation",
             f"{session}\nfeature training", f"# sim: runtime={_seconds(long_run)} dpus={ml_dpus}\n{CODE}",
             "stopped"),
        Part("short", ETL, f"a short calculation ({_seconds(runtime / 2)}, within the {limit_text} limit)",
             f"{session}\nhourly rollup", f"# sim: runtime={_seconds(runtime / 2)} dpus=2\n{CODE}", "completed",
             why_left_alone=f"finished within max_runtime {limit_text}"),
        Part("exempt-session", ETL, f"a long calculation in a session marked {EXEMPT_DESCRIPTION_MARKER}",
             f"{session}\n{EXEMPT_DESCRIPTION_MARKER} month-end close, do not interrupt",
             f"# sim: runtime={_seconds(long_run)} dpus=2\n{CODE}", "exempt",
             why_left_alone=f"session exempt: {EXEMPT_DESCRIPTION_MARKER} in its description"),
        Part("exempt-workgroup", EXEMPT_WORKGROUP, "a long calculation in a workgroup tagged exempt",
             f"{session}\nquarterly report", f"# sim: runtime={_seconds(long_run)} dpus=2\n{CODE}", "exempt",
             why_left_alone=f"workgroup tagged {limits.exempt_tag}=true"),
    )
    discovery = limits.discovery_interval.total_seconds()
    escalation = runtime + limits.stop_grace.total_seconds() + 2 * STOP_LATENCY + 2
    settle = max(escalation, limits.max_idle.total_seconds() + 3, limits.max_busy.total_seconds() + 3,
                 cost_crossing + STOP_LATENCY + 2, runtime + 1)
    return Scenario(limits=limits, parts=parts, ml_dpus=ml_dpus, settle_within=settle + discovery,
                    left_alone_after=runtime + 2 * discovery)
