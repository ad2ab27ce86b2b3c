"""Notebook operations (PySpark engine version 3 workgroups only): Create/Import/Export/Update/Delete notebooks,
their metadata, the sessions started for a notebook and presigned notebook URLs.

Notebooks are ``ipynb`` payloads kept in memory; nothing renders or runs them. Athena documents no notebook API for
Apache Spark version 3.5, nor for SQL workgroups: both answer InvalidRequestException. These operations have no
ResourceNotFoundException in the model but ListNotebookSessions and CreatePresignedNotebookUrl: an unknown notebook
answers InvalidRequestException elsewhere.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import replace
from typing import Any

from athena_spark_emulator.context import Context, Handler, drop_none
from athena_spark_emulator.errors import invalid_request, not_found
from athena_spark_emulator.records import SPARK_ENGINE, NotebookRecord, SessionRecord, WorkGroupRecord
from athena_spark_emulator.sessions import ENDED, NOT_LISTED_BY_DEFAULT, require_session

EMPTY_NOTEBOOK = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
NOTEBOOK_PAGE = 50
NOTEBOOK_SESSIONS_PAGE = 10  # NotebookSessionsList holds at most 10 items
PRESIGNED_URL_LIFETIME = 600  # "must be called every 10 minutes to refresh the authentication token"


def notebook_workgroup(ctx: Context, name: str) -> WorkGroupRecord:
    record = ctx.store.workgroups.get(name)
    if record is None:
        raise invalid_request(f"WorkGroup {name} is not found.")
    if not record.has_calculations:
        raise invalid_request(f"WorkGroup {name} runs {record.engine}: notebooks are available only in {SPARK_ENGINE} "
                              "workgroups")
    return record


def require_notebook(ctx: Context, notebook_id: str) -> NotebookRecord:
    record = ctx.store.notebooks.get(notebook_id)
    if record is None:
        raise invalid_request(f"Notebook {notebook_id} is not found.")
    return record


def _check_name_free(ctx: Context, workgroup: str, name: str, but: str | None = None) -> None:
    if any(n.workgroup == workgroup and n.name == name and n.id != but for n in ctx.store.notebooks.values()):
        raise invalid_request(f"A notebook named {name} already exists in workgroup {workgroup}.")


def _add(ctx: Context, body: dict[str, Any], payload: str, operation: str, now: float) -> dict[str, Any]:
    store = ctx.store
    existing = store.token_target(operation, body.get("ClientRequestToken"))
    if existing is not None:
        return {"NotebookId": existing}
    workgroup = notebook_workgroup(ctx, body["WorkGroup"])
    _check_name_free(ctx, workgroup.name, body["Name"])
    record = NotebookRecord(str(uuid.uuid4()), body["Name"], workgroup.name, now, now, payload)
    store.notebooks[record.id] = record
    store.remember_token(operation, body.get("ClientRequestToken"), record.id)
    return {"NotebookId": record.id}


def create_notebook(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    return _add(ctx, body, EMPTY_NOTEBOOK, "CreateNotebook", now)


def import_notebook(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    payload, location = body.get("Payload"), body.get("NotebookS3LocationUri")
    if (payload is None) == (location is None):
        raise invalid_request("Specify either Payload or NotebookS3LocationUri, not both nor neither.")
    # An S3 import is not fetched (the emulator has no S3): the notebook starts empty.
    return _add(ctx, body, payload if payload is not None else EMPTY_NOTEBOOK, "ImportNotebook", now)


def _metadata(record: NotebookRecord) -> dict[str, Any]:
    return {"NotebookId": record.id, "Name": record.name, "WorkGroup": record.workgroup,
            "CreationTime": record.created_at, "Type": "IPYNB", "LastModifiedTime": record.modified_at}


def export_notebook(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    record = require_notebook(ctx, body["NotebookId"])
    return {"NotebookMetadata": _metadata(record), "Payload": record.payload}


def get_notebook_metadata(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    return {"NotebookMetadata": _metadata(require_notebook(ctx, body["NotebookId"]))}


def _page(items: list[Any], token: str | None, limit: int) -> tuple[list[Any], str | None]:
    if token and not token.isdigit():
        raise invalid_request("NextToken is invalid or expired")
    start = int(token or 0)
    return items[start:start + limit], str(start + limit) if start + limit < len(items) else None


def list_notebook_metadata(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    workgroup = notebook_workgroup(ctx, body["WorkGroup"])
    wanted = (body.get("Filters") or {}).get("Name")
    notebooks = sorted((n for n in ctx.store.notebooks.values()
                        if n.workgroup == workgroup.name and (wanted is None or wanted in n.name)),
                       key=lambda n: (n.created_at, n.name))
    page, token = _page(notebooks, body.get("NextToken"), body.get("MaxResults", NOTEBOOK_PAGE))
    return drop_none({"NotebookMetadataList": [_metadata(n) for n in page], "NextToken": token})


def _notebook_sessions(ctx: Context, record: NotebookRecord, now: float) -> list[SessionRecord]:
    """The active sessions started for the notebook (``AdditionalConfigs.NotebookId``), newest first."""
    store = ctx.store
    sessions = [store.sessions[sid] for sid in reversed(store.workgroup_sessions(record.workgroup).ids())]
    return [s for s in sessions if (s.engine_configuration.get("AdditionalConfigs") or {}).get("NotebookId")
            == record.id and store.session_state(s.id, now) not in NOT_LISTED_BY_DEFAULT]


def list_notebook_sessions(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    record = ctx.store.notebooks.get(body["NotebookId"])
    if record is None:
        raise not_found(f"Notebook {body['NotebookId']} is not found.", body["NotebookId"])
    limit = min(body.get("MaxResults", NOTEBOOK_SESSIONS_PAGE), NOTEBOOK_SESSIONS_PAGE)
    page, token = _page(_notebook_sessions(ctx, record, now), body.get("NextToken"), limit)
    return drop_none({"NotebookSessionsList": [{"SessionId": s.id, "CreationTime": s.created_at} for s in page],
                      "NextToken": token})


def update_notebook(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    record = require_notebook(ctx, body["NotebookId"])
    active = {s.id for s in _notebook_sessions(ctx, record, now)}
    session_id = body.get("SessionId")
    if active and session_id is None:
        raise invalid_request(f"Notebook {record.id} has an active session: SessionId is required.")
    if session_id is not None and session_id not in active:
        raise invalid_request(f"Session {session_id} is not an active session of notebook {record.id}.")
    ctx.store.notebooks[record.id] = replace(record, payload=body["Payload"], modified_at=now)
    return {}


def update_notebook_metadata(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    record = require_notebook(ctx, body["NotebookId"])
    _check_name_free(ctx, record.workgroup, body["Name"], but=record.id)
    ctx.store.notebooks[record.id] = replace(record, name=body["Name"], modified_at=now)
    return {}


def delete_notebook(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    record = require_notebook(ctx, body["NotebookId"])
    del ctx.store.notebooks[record.id]
    return {}


def create_presigned_notebook_url(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    session = require_session(ctx, body["SessionId"])
    if not session.has_calculations:
        raise invalid_request(f"Session {session.id} runs {session.engine}, which has no notebooks.")
    state = ctx.store.session_state(session.id, now)
    if state in ENDED or state == "TERMINATING":
        raise invalid_request(f"Session {session.id} is {state}; its notebook cannot be opened.")
    return {"NotebookUrl": f"https://{session.id}.notebook.{ctx.region}.athena-emulator.invalid/lab",
            "AuthToken": secrets.token_urlsafe(24), "AuthTokenExpirationTime": int(now) + PRESIGNED_URL_LIFETIME}


HANDLERS: dict[str, Handler] = {
    "CreateNotebook": create_notebook,
    "ImportNotebook": import_notebook,
    "ExportNotebook": export_notebook,
    "GetNotebookMetadata": get_notebook_metadata,
    "ListNotebookMetadata": list_notebook_metadata,
    "ListNotebookSessions": list_notebook_sessions,
    "UpdateNotebook": update_notebook,
    "UpdateNotebookMetadata": update_notebook_metadata,
    "DeleteNotebook": delete_notebook,
    "CreatePresignedNotebookUrl": create_presigned_notebook_url,
}
