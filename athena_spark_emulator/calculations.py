"""Calculation operations: Start/Get/GetStatus/GetCode/List/StopCalculationExecution.

Only ``PySpark engine version 3`` sessions have calculations: on an ``Apache Spark version 3.5`` session,
StartCalculationExecution and ListCalculationExecutions answer InvalidRequestException (Athena documents them
as not supported there, without an error code), and its calculation ids do not exist.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from athena_spark_emulator.context import Context, Handler, drop_none
from athena_spark_emulator.errors import invalid_request, not_found
from athena_spark_emulator.pragma import PragmaError, parse_calculation_pragma
from athena_spark_emulator.records import SPARK_ENGINE, CalculationRecord, SessionRecord
from athena_spark_emulator.sessions import require_session
from athena_spark_emulator.timeline import CalculationView

TERMINAL = ("CANCELED", "COMPLETED", "FAILED")
ACCEPTING = ("CREATING", "CREATED", "IDLE", "BUSY")


def require_calculation(ctx: Context, calculation_id: str) -> CalculationRecord:
    record = ctx.store.calculations.get(calculation_id)
    if record is None:
        raise not_found(f"Calculation {calculation_id} is not found.", calculation_id)
    return record


def calculation_session(ctx: Context, session_id: str, operation: str) -> SessionRecord:
    """The session a calculation call names; refused when its engine has no calculation API."""
    session = require_session(ctx, session_id)
    if not session.has_calculations:
        raise invalid_request(
            f"{operation} is not supported for session {session.id}: it runs {session.engine}, which has no "
            f"calculation API (only {SPARK_ENGINE}); run work through Spark Connect (GetSessionEndpoint)")
    return session


def start_calculation_execution(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    store = ctx.store
    session = calculation_session(ctx, body["SessionId"], "StartCalculationExecution")
    existing = store.token_target("StartCalculationExecution", body.get("ClientRequestToken"))
    if existing is not None:
        return {"CalculationExecutionId": existing, "State": store.calculation_view(existing, now).state}
    code = body.get("CodeBlock")
    if code is None:
        code = body.get("CalculationConfiguration", {}).get("CodeBlock")
    if code is None:
        raise invalid_request("CodeBlock: either CodeBlock or CalculationConfiguration.CodeBlock is required")
    try:
        pragma = parse_calculation_pragma(code)
    except PragmaError as error:
        raise invalid_request(f"CodeBlock: invalid pragma key {error.key!r}: {error}") from None
    state = store.session_state(session.id, now)
    if state not in ACCEPTING:
        raise invalid_request(f"Session {session.id} is {state} and cannot accept calculations.")
    record = store.add_calculation(session_id=session.id, description=body.get("Description"), code=code,
                                   pragma=pragma, submitted_at=now)
    store.remember_token("StartCalculationExecution", body.get("ClientRequestToken"), record.id)
    return {"CalculationExecutionId": record.id, "State": store.calculation_view(record.id, now).state}


def reported(ctx: Context, calculation_id: str, view: CalculationView) -> CalculationView:
    """The calculation as Get*/List* answers report it: its lifecycle with any injected state override."""
    state = ctx.states.calculation_state(calculation_id, view.state)
    return view if state == view.state else replace(view, state=state)


def render_status(view: CalculationView) -> dict[str, Any]:
    return drop_none({"SubmissionDateTime": view.submitted, "CompletionDateTime": view.completed,
                      "State": view.state, "StateChangeReason": view.reason})


def _statistics(view: CalculationView) -> dict[str, Any]:
    return {"DpuExecutionInMillis": view.dpu_millis, "Progress": view.progress}


def get_calculation_execution(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    record = require_calculation(ctx, body["CalculationExecutionId"])
    real = ctx.store.calculation_view(record.id, now)
    view = reported(ctx, record.id, real)
    base = f"s3://athena-emulator-{ctx.account_id}/{ctx.store.sessions[record.session_id].workgroup}/" \
           f"{record.session_id}/{record.id}"
    result = None
    if real.state in TERMINAL:
        result = {"StdOutS3Uri": f"{base}/stdout.txt", "StdErrorS3Uri": f"{base}/stderr.txt",
                  "ResultS3Uri": f"{base}/result.json", "ResultType": "application/json"}
    return drop_none({
        "CalculationExecutionId": record.id, "SessionId": record.session_id,
        "Description": record.description, "WorkingDirectory": f"{base}/",
        "Status": render_status(view), "Statistics": _statistics(view), "Result": result,
    })


def get_calculation_execution_status(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    record = require_calculation(ctx, body["CalculationExecutionId"])
    view = reported(ctx, record.id, ctx.store.calculation_view(record.id, now))
    return {"Status": render_status(view), "Statistics": _statistics(view)}


def get_calculation_execution_code(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    return {"CodeBlock": require_calculation(ctx, body["CalculationExecutionId"]).code}


def list_calculation_executions(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    store = ctx.store
    session = calculation_session(ctx, body["SessionId"], "ListCalculationExecutions")
    wanted = body.get("StateFilter")
    views: dict[str, CalculationView] = {}

    def keep(calculation_id: str) -> bool:
        view = views[calculation_id] = reported(ctx, calculation_id, store.calculation_view(calculation_id, now))
        return wanted is None or view.state == wanted

    ids, token = store.calculation_index(session.id).page(body.get("NextToken"), body.get("MaxResults", 100),
                                                          keep)
    summaries = [drop_none({"CalculationExecutionId": cid, "Description": store.calculations[cid].description,
                            "Status": render_status(views[cid])}) for cid in ids]
    return drop_none({"Calculations": summaries, "NextToken": token})


def stop_calculation_execution(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    store = ctx.store
    record = require_calculation(ctx, body["CalculationExecutionId"])
    state = store.calculation_view(record.id, now).state
    if state in TERMINAL or record.stop_requested_at is not None:
        return {"State": state}
    store.request_stop(record.id, now)
    return {"State": store.calculation_view(record.id, now).state}


HANDLERS: dict[str, Handler] = {
    "StartCalculationExecution": start_calculation_execution,
    "GetCalculationExecution": get_calculation_execution,
    "GetCalculationExecutionStatus": get_calculation_execution_status,
    "GetCalculationExecutionCode": get_calculation_execution_code,
    "ListCalculationExecutions": list_calculation_executions,
    "StopCalculationExecution": stop_calculation_execution,
}
