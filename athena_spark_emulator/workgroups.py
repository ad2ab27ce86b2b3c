"""Workgroup operations: Create/Get/List/Delete/UpdateWorkGroup and tagging by workgroup ARN."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import replace
from typing import Any

from athena_spark_emulator.context import Context, Handler, drop_none
from athena_spark_emulator.errors import invalid_request, not_found
from athena_spark_emulator.model import load_athena_model
from athena_spark_emulator.records import SPARK_CONNECT_ENGINE, SPARK_ENGINE, SPARK_ENGINES, SQL_ENGINE, WorkGroupRecord
from athena_spark_emulator.store import sorted_names
from athena_spark_emulator.validation import prune_to_shape

PRIMARY = "primary"
_ARN_PREFIX = "arn:aws:athena:"


ENGINES = ("AUTO", SQL_ENGINE, *SPARK_ENGINES)
# WorkGroupConfiguration members Athena ignores on write (read-only, or newer than what it stores): never echoed,
# even where a newer botocore model has them.
IGNORED_ON_WRITE = ("SystemTableStatuses",)


def stored_configuration(configuration: dict[str, Any]) -> dict[str, Any]:
    """What Athena keeps of a written WorkGroupConfiguration: the members of the model's shape, none of those it
    ignores on write."""
    shape = load_athena_model().shape_for("WorkGroupConfiguration")
    kept: dict[str, Any] = prune_to_shape(shape, configuration)
    for member in IGNORED_ON_WRITE:
        kept.pop(member, None)
    return kept


def identity_center_application_arn(ctx: Context, record: WorkGroupRecord) -> str | None:
    """The IAM Identity Center application Athena creates for a workgroup with Identity Center enabled."""
    identity = record.configuration.get("IdentityCenterConfiguration") or {}
    instance = str(identity.get("IdentityCenterInstanceArn") or "")
    if not identity.get("EnableIdentityCenter") or "/" not in instance:
        return None
    digest = hashlib.sha256(f"{ctx.account_id}:{ctx.region}:{record.name}".encode()).hexdigest()[:16]
    partition = instance.split(":", 2)[1]
    return f"arn:{partition}:sso::{ctx.account_id}:application/{instance.rsplit('/', 1)[1]}/apl-{digest}"


def spark_configuration(engine: str = SPARK_ENGINE) -> dict[str, Any]:
    return {"EngineVersion": {"SelectedEngineVersion": engine, "EffectiveEngineVersion": engine}}


def _requested_engine(configuration: dict[str, Any] | None, where: str) -> str | None:
    engine = (configuration or {}).get("EngineVersion", {}).get("SelectedEngineVersion")
    if engine not in (None, *ENGINES):
        raise invalid_request(f"{where}.EngineVersion.SelectedEngineVersion: unknown engine {engine!r} "
                              f"(known: {', '.join(ENGINES)})")
    return str(engine) if engine is not None else None


def new_workgroup(name: str, *, created_at: float, configuration: dict[str, Any] | None = None,
                  description: str | None = None, state: str = "ENABLED",
                  tags: dict[str, str] | None = None) -> WorkGroupRecord:
    """Build a workgroup record; the engine version defaults to SQL (``AUTO``)."""
    config = copy.deepcopy(configuration or {})
    engine = config.setdefault("EngineVersion", {})
    selected = engine.get("SelectedEngineVersion") or "AUTO"
    engine["SelectedEngineVersion"] = selected
    engine["EffectiveEngineVersion"] = SQL_ENGINE if selected == "AUTO" else selected
    return WorkGroupRecord(name=name, state=state, description=description, created_at=created_at,
                           configuration=config, tags=dict(tags or {}))


def _tags_from_list(tags: list[dict[str, Any]] | None) -> dict[str, str]:
    return {str(tag["Key"]): str(tag.get("Value", "")) for tag in tags or [] if "Key" in tag}


def require_workgroup(ctx: Context, name: str) -> WorkGroupRecord:
    record = ctx.store.workgroups.get(name)
    if record is None:
        raise invalid_request(f"WorkGroup {name} is not found.")
    return record


def create_work_group(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    name = body["Name"]
    if name in ctx.store.workgroups:
        raise invalid_request(f"WorkGroup {name} is already created")
    _requested_engine(body.get("Configuration"), "Configuration")
    ctx.store.put_workgroup(new_workgroup(
        name, created_at=now, configuration=stored_configuration(body.get("Configuration") or {}),
        description=body.get("Description"), tags=_tags_from_list(body.get("Tags")),
    ))
    return {}


def get_work_group(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    record = require_workgroup(ctx, body["WorkGroup"])
    return {"WorkGroup": drop_none({
        "Name": record.name, "State": record.state, "Configuration": copy.deepcopy(record.configuration),
        "Description": record.description, "CreationTime": record.created_at,
        "IdentityCenterApplicationArn": identity_center_application_arn(ctx, record),
    })}


def list_work_groups(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    limit = body.get("MaxResults", 50)
    names = sorted_names(list(ctx.store.workgroups), body.get("NextToken"))
    page = names[:limit]
    summaries = []
    for name in page:
        record = ctx.store.workgroups[name]
        summaries.append(drop_none({
            "Name": name, "State": record.state, "Description": record.description,
            "CreationTime": record.created_at,
            "EngineVersion": copy.deepcopy(record.configuration.get("EngineVersion")),
            "IdentityCenterApplicationArn": identity_center_application_arn(ctx, record),
        }))
    return drop_none({"WorkGroups": summaries, "NextToken": page[-1] if len(names) > limit else None})


def delete_work_group(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    name = body["WorkGroup"]
    require_workgroup(ctx, name)
    if name == PRIMARY:
        raise invalid_request("WorkGroup primary cannot be deleted")
    store = ctx.store
    live = [sid for sid in store.workgroup_sessions(name).ids()
            if store.session_state(sid, now) not in ("TERMINATED", "FAILED")]
    if live and not body.get("RecursiveDeleteOption"):
        raise invalid_request(f"WorkGroup {name} has {len(live)} active sessions; set RecursiveDeleteOption")
    for sid in live:
        if store.sessions[sid].terminate_requested_at is None:
            store.request_terminate(sid, now)
    store.delete_workgroup(name)
    return {}


def _merge_updates(config: dict[str, Any], updates: dict[str, Any]) -> None:
    for key, value in updates.items():
        if key.startswith("Remove") and value:
            target = key.removeprefix("Remove")
            config.pop(target, None)
        elif key.startswith("Remove"):
            continue
        elif key.endswith("Updates") and isinstance(value, dict):
            _merge_updates(config.setdefault(key.removesuffix("Updates"), {}), value)
        else:
            config[key] = copy.deepcopy(value)


def update_work_group(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    record = require_workgroup(ctx, body["WorkGroup"])
    engine = _requested_engine(body.get("ConfigurationUpdates"), "ConfigurationUpdates")
    if record.is_spark and engine is not None and engine != record.engine:
        raise invalid_request(
            f"WorkGroup {record.name} runs {record.engine} and cannot change to {engine}: a workgroup cannot be "
            f"upgraded from {SPARK_ENGINE} to {SPARK_CONNECT_ENGINE} (create a new workgroup)")
    configuration = copy.deepcopy(record.configuration)
    _merge_updates(configuration, body.get("ConfigurationUpdates", {}))
    updated = new_workgroup(
        record.name, created_at=record.created_at, configuration=stored_configuration(configuration),
        description=body.get("Description", record.description), state=body.get("State", record.state),
        tags=record.tags,
    )
    ctx.store.put_workgroup(updated)
    return {}


def _workgroup_for_arn(ctx: Context, arn: str) -> WorkGroupRecord:
    prefix = f"{_ARN_PREFIX}{ctx.region}:{ctx.account_id}:workgroup/"
    record = ctx.store.workgroups.get(arn.removeprefix(prefix)) if arn.startswith(prefix) else None
    if record is None:
        raise not_found(f"Resource {arn} is not found.", arn)
    return record


def tag_resource(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    record = _workgroup_for_arn(ctx, body["ResourceARN"])
    ctx.store.put_workgroup(replace(record, tags={**record.tags, **_tags_from_list(body["Tags"])}))
    return {}


def untag_resource(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    record = _workgroup_for_arn(ctx, body["ResourceARN"])
    removed = set(body["TagKeys"])
    ctx.store.put_workgroup(replace(record, tags={k: v for k, v in record.tags.items() if k not in removed}))
    return {}


def list_tags_for_resource(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    record = _workgroup_for_arn(ctx, body["ResourceARN"])
    items = [{"Key": key, "Value": value} for key, value in record.tags.items()]
    limit = body.get("MaxResults") or max(len(items), 1)
    token = body.get("NextToken")
    start = 0
    if token:
        if not token.isdigit():
            raise invalid_request("NextToken is invalid or expired")
        start = int(token)
    page = items[start:start + limit]
    more = start + limit < len(items)
    return drop_none({"Tags": page, "NextToken": str(start + limit) if more else None})


HANDLERS: dict[str, Handler] = {
    "CreateWorkGroup": create_work_group,
    "GetWorkGroup": get_work_group,
    "ListWorkGroups": list_work_groups,
    "DeleteWorkGroup": delete_work_group,
    "UpdateWorkGroup": update_work_group,
    "TagResource": tag_resource,
    "UntagResource": untag_resource,
    "ListTagsForResource": list_tags_for_resource,
}
