"""Session operations: Start/Get/GetStatus/List/TerminateSession, ListExecutors.

A session runs the engine of its workgroup: ``PySpark engine version 3`` (calculations, notebooks) or
``Apache Spark version 3.5`` (Spark Connect, see :mod:`athena_spark_emulator.spark_connect`; its work is
scripted by Spark Connect job keys in its Description pragma).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from athena_spark_emulator.context import Context, Handler, drop_none
from athena_spark_emulator.errors import invalid_request, not_found
from athena_spark_emulator.pragma import PragmaError, SessionPragma, parse_session_pragma
from athena_spark_emulator.records import SPARK_CONNECT_ENGINE, SPARK_ENGINE, SessionRecord, WorkGroupRecord
from athena_spark_emulator.store import DEFAULT_IDLE_TIMEOUT_MINUTES
from athena_spark_emulator.timeline import SessionView

DEFAULT_NOTEBOOK_VERSION = "Athena notebook version 1"
ENDED = ("TERMINATED", "FAILED")
NO_EFFECT_ON_TERMINATE = ("TERMINATING", "TERMINATED", "FAILED")
# ListSessions without a StateFilter: "the sessions ... in an active state like CREATING, CREATED, IDLE, or BUSY"
# (DEGRADED too: it still holds its resources; and a state no SDK knows, injected as a fault). Sessions ending or
# ended are listed only with a StateFilter.
NOT_LISTED_BY_DEFAULT = frozenset({"TERMINATING", "TERMINATED", "FAILED"})


# EngineConfiguration members Apache Spark version 3.5 refuses (it takes Classifications, e.g. spark-defaults).
NOT_ON_SPARK_CONNECT = ("CoordinatorDpuSize", "DefaultExecutorDpuSize", "SparkProperties")


def engine_configuration(requested: dict[str, Any] | None, engine: str = SPARK_ENGINE) -> dict[str, Any]:
    """The effective engine configuration: Athena's defaults for members that were not given."""
    config: dict[str, Any] = {"MaxConcurrentDpus": 20}
    if engine == SPARK_ENGINE:
        config.update({"CoordinatorDpuSize": 1, "DefaultExecutorDpuSize": 1})
    config.update(requested or {})
    return config


def session_pragma(description: str | None, engine: str = SPARK_ENGINE) -> SessionPragma:
    try:
        pragma = parse_session_pragma(description)
    except PragmaError as error:
        raise invalid_request(f"Description: invalid pragma key {error.key!r}: {error}") from None
    if pragma.job_keys and engine != SPARK_CONNECT_ENGINE:
        key = pragma.job_keys[0]
        raise invalid_request(
            f"Description: invalid pragma key {key!r}: Spark Connect jobs are for {SPARK_CONNECT_ENGINE} sessions; "
            f"a {engine} session is kept busy by its calculations (CodeBlock pragmas)")
    return pragma


def check_engine_configuration(workgroup: WorkGroupRecord, body: dict[str, Any]) -> None:
    """What the workgroup's engine refuses at StartSession."""
    if workgroup.engine != SPARK_CONNECT_ENGINE:
        return
    requested = body.get("EngineConfiguration") or {}
    for member in NOT_ON_SPARK_CONNECT:
        if member in requested:
            raise invalid_request(
                f"EngineConfiguration.{member} is not supported by {SPARK_CONNECT_ENGINE} (workgroup "
                f"{workgroup.name}); set Spark properties in EngineConfiguration.Classifications "
                "(Name spark-defaults) instead")
    if "NotebookVersion" in body:
        raise invalid_request(f"NotebookVersion: {SPARK_CONNECT_ENGINE} (workgroup {workgroup.name}) has no "
                              "notebooks; connect with Spark Connect (GetSessionEndpoint)")


def check_notebook_session(ctx: Context, workgroup: WorkGroupRecord, body: dict[str, Any]) -> None:
    """StartSession with a NotebookVersion must name one of the workgroup's notebooks in AdditionalConfigs."""
    version = body.get("NotebookVersion")
    if version is None:
        return
    if version != "Athena notebook version 1":
        raise invalid_request(f"NotebookVersion {version!r} is not valid; the only notebook version is Athena "
                              "notebook version 1")
    notebook_id = ((body.get("EngineConfiguration") or {}).get("AdditionalConfigs") or {}).get("NotebookId")
    if notebook_id is None:
        raise invalid_request("NotebookVersion needs the notebook's id in EngineConfiguration.AdditionalConfigs "
                              "(key NotebookId)")
    notebook = ctx.store.notebooks.get(notebook_id)
    if notebook is None or notebook.workgroup != workgroup.name:
        raise invalid_request(f"Notebook {notebook_id} is not found in workgroup {workgroup.name}.")


def require_session(ctx: Context, session_id: str) -> SessionRecord:
    record = ctx.store.sessions.get(session_id)
    if record is None:
        raise not_found(f"Session {session_id} is not found.", session_id)
    return record


def start_session(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    store = ctx.store
    existing = store.token_target("StartSession", body.get("ClientRequestToken"))
    if existing is not None:
        return {"SessionId": existing, "State": store.session_state(existing, now)}
    name = body["WorkGroup"]
    workgroup = store.workgroups.get(name)
    if workgroup is None:
        raise not_found(f"WorkGroup {name} is not found.", ctx.workgroup_arn(name))
    if not workgroup.is_spark:
        raise invalid_request(f"WorkGroup {name} is not Spark-enabled (engine {workgroup.engine})")
    if workgroup.state != "ENABLED":
        raise invalid_request(f"WorkGroup {name} is disabled.")
    check_engine_configuration(workgroup, body)
    check_notebook_session(ctx, workgroup, body)
    description = body.get("Description")
    pragma = session_pragma(description, workgroup.engine)
    tags = dict(workgroup.tags) if body.get("CopyWorkGroupTags") else {}
    tags.update({str(tag["Key"]): str(tag.get("Value", "")) for tag in body.get("Tags", []) if "Key" in tag})
    record = store.add_session(
        workgroup=name, description=description,
        engine_configuration=engine_configuration(body.get("EngineConfiguration"), workgroup.engine),
        request=session_request(workgroup, body),
        idle_timeout_minutes=body.get("SessionIdleTimeoutInMinutes", DEFAULT_IDLE_TIMEOUT_MINUTES),
        pragma=pragma, created_at=now, tags=tags, engine=workgroup.engine,
    )
    store.remember_token("StartSession", body.get("ClientRequestToken"), record.id)
    return {"SessionId": record.id, "State": store.session_state(record.id, now)}


def notebook_version(record: SessionRecord) -> str | None:
    """Only PySpark engine version 3 sessions run a notebook engine."""
    return record.request.get("NotebookVersion", DEFAULT_NOTEBOOK_VERSION) if record.has_calculations else None


def session_request(workgroup: WorkGroupRecord, body: dict[str, Any]) -> dict[str, Any]:
    """What a session keeps of its StartSession request, with what it takes from its workgroup at that instant:
    the workgroup's MonitoringConfiguration unless the request has one, and the encryption of its results."""
    request: dict[str, Any] = {key: body[key] for key in ("NotebookVersion", "ExecutionRole", "MonitoringConfiguration")
                               if key in body}
    configuration = workgroup.configuration
    if "MonitoringConfiguration" not in request and configuration.get("MonitoringConfiguration"):
        request["MonitoringConfiguration"] = configuration["MonitoringConfiguration"]
    encryption = (configuration.get("ResultConfiguration") or {}).get("EncryptionConfiguration")
    if encryption:
        request["EncryptionConfiguration"] = encryption
    return request


def reported_view(ctx: Context, session_id: str, now: float) -> SessionView:
    """The session as Get*/List* answers report it: its lifecycle with any injected state override."""
    view = ctx.store.session_view(session_id, now)
    state = ctx.states.session_state(session_id, view.state)
    return view if state == view.state else replace(view, state=state)


def render_status(view: SessionView) -> dict[str, Any]:
    return drop_none({
        "StartDateTime": view.start, "LastModifiedDateTime": view.last_modified, "EndDateTime": view.end,
        "IdleSinceDateTime": view.idle_since, "State": view.state, "StateChangeReason": view.reason,
    })


def get_session(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    record = require_session(ctx, body["SessionId"])
    view = reported_view(ctx, record.id, now)
    workgroup = ctx.store.workgroups.get(record.workgroup)
    execution_role = record.request.get("ExecutionRole") or (
        workgroup.configuration.get("ExecutionRole") if workgroup is not None else None)
    return drop_none({
        "SessionId": record.id,
        "Description": record.description,
        "WorkGroup": record.workgroup,
        "EngineVersion": record.engine,
        "EngineConfiguration": record.engine_configuration,
        "NotebookVersion": notebook_version(record),
        "MonitoringConfiguration": record.request.get("MonitoringConfiguration"),
        "SessionConfiguration": drop_none({
            "ExecutionRole": execution_role,
            "EncryptionConfiguration": record.request.get("EncryptionConfiguration"),
            "WorkingDirectory": f"s3://athena-emulator-{ctx.account_id}/{record.workgroup}/{record.id}/",
            "IdleTimeoutSeconds": record.idle_timeout_minutes * 60,
            "SessionIdleTimeoutInMinutes": record.idle_timeout_minutes,
        }),
        "Status": render_status(view),
        "Statistics": {"DpuExecutionInMillis": view.dpu_millis},
    })


def get_session_status(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    record = require_session(ctx, body["SessionId"])
    return {"SessionId": record.id, "Status": render_status(reported_view(ctx, record.id, now))}


def list_sessions(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    store = ctx.store
    name = body["WorkGroup"]
    if name not in store.workgroups:
        raise not_found(f"WorkGroup {name} is not found.", ctx.workgroup_arn(name))
    wanted = body.get("StateFilter")
    views: dict[str, SessionView] = {}

    def keep(session_id: str) -> bool:
        view = views[session_id] = reported_view(ctx, session_id, now)
        return view.state not in NOT_LISTED_BY_DEFAULT if wanted is None else view.state == wanted

    ids, token = store.workgroup_sessions(name).page(body.get("NextToken"), body.get("MaxResults", 100), keep)
    summaries = []
    for session_id in ids:
        record = store.sessions[session_id]
        summaries.append(drop_none({
            "SessionId": session_id,
            "Description": record.description,
            "EngineVersion": {"SelectedEngineVersion": record.engine, "EffectiveEngineVersion": record.engine},
            "NotebookVersion": notebook_version(record),
            "Status": render_status(views[session_id]),
        }))
    return drop_none({"Sessions": summaries, "NextToken": token})


def terminate_session(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    record = require_session(ctx, body["SessionId"])
    state = ctx.store.session_state(record.id, now)
    if state in NO_EFFECT_ON_TERMINATE:
        return {"State": state}
    ctx.store.request_terminate(record.id, now)
    return {"State": ctx.store.session_state(record.id, now)}


def _executor_state(session_state: str) -> str:
    """The coordinator's state; a DEGRADED session is one with no healthy coordinator."""
    return {"CREATING": "CREATING", "CREATED": "CREATED", "TERMINATING": "TERMINATING",
            "TERMINATED": "TERMINATED", "DEGRADED": "FAILED", "FAILED": "FAILED"}.get(session_state, "REGISTERED")


def list_executors(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    store = ctx.store
    record = require_session(ctx, body["SessionId"])
    view = store.session_view(record.id, now)
    executors: list[dict[str, Any]] = [drop_none({
        "ExecutorId": f"{record.id}-coordinator", "ExecutorType": "COORDINATOR",
        "StartDateTime": int(record.created_at * 1000),
        "TerminationDateTime": int(view.end * 1000) if view.end is not None else None,
        "ExecutorState": _executor_state(view.state), "ExecutorSize": record.coordinator_dpus,
    })]
    plan = store.plan(record.id)
    job = plan.jobs.last_job(now) if plan.jobs is not None else None
    if job is not None and now < job[1]:
        for index in range(plan.jobs.dpus if plan.jobs is not None else 0):
            executors.append({
                "ExecutorId": f"{record.id}-job-{int(job[0] * 1000)}-worker-{index + 1}", "ExecutorType": "WORKER",
                "StartDateTime": int(job[0] * 1000), "ExecutorState": "REGISTERED", "ExecutorSize": 1,
            })
    for calc_id, cplan in plan.calculations.items():
        if cplan.run_start is None or not cplan.run_start <= now < cplan.run_end:
            continue
        for index in range(store.calculations[calc_id].pragma.dpus):
            executors.append({
                "ExecutorId": f"{calc_id}-worker-{index + 1}", "ExecutorType": "WORKER",
                "StartDateTime": int(cplan.run_start * 1000), "ExecutorState": "REGISTERED",
                "ExecutorSize": 1,
            })
    wanted = body.get("ExecutorStateFilter")
    if wanted:
        executors = [executor for executor in executors if executor["ExecutorState"] == wanted]
    token = body.get("NextToken")
    if token and not token.isdigit():
        raise invalid_request("NextToken is invalid or expired")
    start, limit = int(token or 0), body.get("MaxResults", 100)
    more = start + limit < len(executors)
    return drop_none({"SessionId": record.id, "ExecutorsSummary": executors[start:start + limit],
                      "NextToken": str(start + limit) if more else None})


HANDLERS: dict[str, Handler] = {
    "StartSession": start_session,
    "GetSession": get_session,
    "GetSessionStatus": get_session_status,
    "ListSessions": list_sessions,
    "TerminateSession": terminate_session,
    "ListExecutors": list_executors,
}
