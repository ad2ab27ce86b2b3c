"""Spark Connect operations of Apache Spark version 3.5 sessions: GetSessionEndpoint (the endpoint and token a
Spark Connect client connects with) and GetResourceDashboard (the live Spark UI, or the History Server once the
session ended). Both are placeholders: nothing listens at the URLs."""

from __future__ import annotations

import secrets
from typing import Any

from athena_spark_emulator.context import Context, Handler
from athena_spark_emulator.errors import invalid_request, not_found
from athena_spark_emulator.records import SPARK_CONNECT_ENGINE, SessionRecord
from athena_spark_emulator.sessions import ENDED, require_session

SESSION_TOKEN_LIFETIME = 3600.0  # GetSessionEndpoint's AuthToken


def get_session_endpoint(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    record = require_session(ctx, body["SessionId"])
    if record.engine != SPARK_CONNECT_ENGINE:
        raise invalid_request(f"Session {record.id} runs {record.engine}: Spark Connect endpoints are available "
                              f"from {SPARK_CONNECT_ENGINE} onward.")
    state = ctx.store.session_state(record.id, now)
    if state in ENDED or state == "TERMINATING":
        raise invalid_request(f"Session {record.id} is {state}; it has no endpoint.")
    if state == "CREATING":
        raise invalid_request(f"Session {record.id} is CREATING; its endpoint is not ready yet.")
    return {
        "EndpointUrl": f"https://{record.id}.spark-connect.{ctx.region}.athena-emulator.invalid",
        "AuthToken": secrets.token_urlsafe(24),
        "AuthTokenExpirationTime": now + SESSION_TOKEN_LIFETIME,
    }


def session_arn(ctx: Context, record: SessionRecord) -> str:
    """The ARN GetResourceDashboard takes for a session (the emulator's form; see docs/emulator.md)."""
    return f"{ctx.workgroup_arn(record.workgroup)}/session/{record.id}"


def get_resource_dashboard(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    arn = body["ResourceARN"]
    prefix = f"arn:aws:athena:{ctx.region}:{ctx.account_id}:"
    _, marker, session_id = arn.rpartition("/session/")
    record = ctx.store.sessions.get(session_id) if arn.startswith(prefix) and marker else None
    if record is None:
        raise not_found(f"Resource {arn} is not found.", arn)
    if record.engine != SPARK_CONNECT_ENGINE:
        raise invalid_request(f"Session {record.id} runs {record.engine}: the Spark UI and History Server are "
                              f"available from {SPARK_CONNECT_ENGINE} onward.")
    state = ctx.store.session_state(record.id, now)
    ui = "history" if state in ENDED else "live"
    return {"Url": f"https://{record.id}.spark-ui.{ctx.region}.athena-emulator.invalid/{ui}/"
                   f"?token={secrets.token_urlsafe(16)}"}


HANDLERS: dict[str, Handler] = {
    "GetSessionEndpoint": get_session_endpoint,
    "GetResourceDashboard": get_resource_dashboard,
}
