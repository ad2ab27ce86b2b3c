"""Session operations: Start/Get/GetStatus/List/TerminateSession, ListExecutors, GetSessionEndpoint."""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any

from athena_spark_emulator.context import Context, Handler, drop_none
from athena_spark_emulator.errors import invalid_request, not_found
from athena_spark_emulator.pragma import PragmaError, SessionPragma, parse_session_pragma
from athena_spark_emulator.records import SPARK_ENGINE, SessionRecord
from athena_spark_emulator.store import DEFAULT_IDLE_TIMEOUT_MINUTES
from athena_spark_emulator.timeline import SessionView

DEFAULT_NOTEBOOK_VERSION = "Athena notebook version 1"
ENDED = ("TERMINATED", "FAILED")
NO_EFFECT_ON_TERMINATE = ("TERMINATING", "TERMINATED", "FAILED")


def engine_configuration(requested: dict[str, Any] | None) -> dict[str, Any]:
    """The effective engine configuration: Athena's defaults for members that were not given."""
    config: dict[str, Any] = {"CoordinatorDpuSize": 1, "MaxConcurrentDpus": 20, "DefaultExecutorDpuSize": 1}
    config.update(requested or {})
    return config


def session_pragma(description: str | None) -> SessionPragma:
    try:
        return parse_session_pragma(description)
    except PragmaError as error:
        raise invalid_request(f"Description: invalid pragma key {error.key!r}: {error}") from None


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
    description = body.get("Description")
    pragma = session_pragma(description)
    tags = dict(workgroup.tags) if body.get("CopyWorkGroupTags") else {}
    tags.update({str(tag["Key"]): str(tag.get("Value", "")) for tag in body.get("Tags", []) if "Key" in tag})
    record = store.add_session(
        workgroup=name, description=description,
        engine_configuration=engine_configuration(body.get("EngineConfiguration")),
        request={key: body[key] for key in ("NotebookVersion", "ExecutionRole", "MonitoringConfiguration")
                 if key in body},
        idle_timeout_minutes=body.get("SessionIdleTimeoutInMinutes", DEFAULT_IDLE_TIMEOUT_MINUTES),
        pragma=pragma, created_at=now, tags=tags,
    )
    store.remember_token("StartSession", body.get("ClientRequestToken"), record.id)
    return {"SessionId": record.id, "State": store.session_state(record.id, now)}


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
        "EngineVersion": SPARK_ENGINE,
        "EngineConfiguration": record.engine_configuration,
        "NotebookVersion": record.request.get("NotebookVersion", DEFAULT_NOTEBOOK_VERSION),
        "MonitoringConfiguration": record.request.get("MonitoringConfiguration"),
        "SessionConfiguration": drop_none({
            "ExecutionRole": execution_role,
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
        return wanted is None or view.state == wanted

    ids, token = store.workgroup_sessions(name).page(body.get("NextToken"), body.get("MaxResults", 100), keep)
    summaries = []
    for session_id in ids:
        record = store.sessions[session_id]
        summaries.append(drop_none({
            "SessionId": session_id,
            "Description": record.description,
            "EngineVersion": {"SelectedEngineVersion": SPARK_ENGINE, "EffectiveEngineVersion": SPARK_ENGINE},
            "NotebookVersion": record.request.get("NotebookVersion", DEFAULT_NOTEBOOK_VERSION),
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


def get_session_endpoint(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    record = require_session(ctx, body["SessionId"])
    state = ctx.store.session_state(record.id, now)
    if state in ENDED or state == "TERMINATING":
        raise invalid_request(f"Session {record.id} is {state}; it has no endpoint.")
    return {
        "EndpointUrl": f"https://{record.id}.spark.{ctx.region}.athena-emulator.invalid",
        "AuthToken": secrets.token_urlsafe(24),
        "AuthTokenExpirationTime": now + 3600.0,
    }


HANDLERS: dict[str, Handler] = {
    "StartSession": start_session,
    "GetSession": get_session,
    "GetSessionStatus": get_session_status,
    "ListSessions": list_sessions,
    "TerminateSession": terminate_session,
    "ListExecutors": list_executors,
    "GetSessionEndpoint": get_session_endpoint,
}
