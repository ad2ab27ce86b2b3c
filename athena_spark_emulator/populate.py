"""``POST /_emulator/populate``: create many workgroups, sessions and calculations in one call.

Work can be placed in the past (``started_ago``, ``submitted_ago``) so a test or benchmark can schedule
limit crossings at precise future times. Populate bypasses throttling, faults and the audit log, and does
not check whether a session would still accept a calculation at its submission time.
"""

from __future__ import annotations

from typing import Any

from athena_spark_emulator.durations import parse_duration
from athena_spark_emulator.pragma import PragmaError, parse_calculation_pragma, parse_session_pragma
from athena_spark_emulator.records import SPARK_CONNECT_ENGINE, SPARK_ENGINE
from athena_spark_emulator.sessions import engine_configuration
from athena_spark_emulator.store import DEFAULT_IDLE_TIMEOUT_MINUTES, Store
from athena_spark_emulator.workgroups import new_workgroup, spark_configuration

MAX_COUNT = 100_000
ENGINES = {"spark": SPARK_ENGINE, "spark-3.5": SPARK_CONNECT_ENGINE, "sql": None}


class PopulateError(ValueError):
    """A malformed populate spec; the message names the offending path."""


def _keys(item: Any, path: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise PopulateError(f"{path}: expected an object")
    unknown = set(item) - allowed
    if unknown:
        raise PopulateError(f"{path}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")
    return item


def _duration(item: dict[str, Any], key: str, path: str) -> float:
    try:
        return parse_duration(item.get(key, 0))
    except ValueError as error:
        raise PopulateError(f"{path}.{key}: {error}") from None


def _count(item: dict[str, Any], path: str) -> int:
    count = item.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COUNT:
        raise PopulateError(f"{path}.count: expected an integer between 0 and {MAX_COUNT}")
    return count


def _tags(item: dict[str, Any], path: str) -> dict[str, str]:
    tags = item.get("tags", {})
    if not isinstance(tags, dict):
        raise PopulateError(f"{path}.tags: expected an object of strings")
    return {str(key): str(value) for key, value in tags.items()}


def _workgroups(store: Store, specs: list[Any], now: float) -> list[str]:
    names = []
    for index, raw in enumerate(specs):
        path = f"workgroups[{index}]"
        spec = _keys(raw, path, {"name", "tags", "engine", "state", "description"})
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise PopulateError(f"{path}.name: required string")
        engine = spec.get("engine", "spark")
        if engine not in ENGINES:
            raise PopulateError(f"{path}.engine: expected spark (PySpark engine version 3), spark-3.5 (Apache "
                                "Spark version 3.5) or sql")
        state = spec.get("state", "ENABLED")
        if state not in ("ENABLED", "DISABLED"):
            raise PopulateError(f"{path}.state: expected ENABLED or DISABLED")
        existing = store.workgroups.get(name)
        tags = {**(existing.tags if existing else {}), **_tags(spec, path)}
        spark_engine = ENGINES[engine]
        configuration = spark_configuration(spark_engine) if spark_engine is not None else None
        if existing is not None:
            configuration = existing.configuration
        store.put_workgroup(new_workgroup(
            name, created_at=existing.created_at if existing else now, configuration=configuration,
            description=spec.get("description"), state=state, tags=tags,
        ))
        names.append(name)
    return names


def _session_group(store: Store, raw: Any, path: str, now: float) -> list[dict[str, Any]]:
    spec = _keys(raw, path, {"workgroup", "count", "description", "started_ago", "idle_timeout_minutes",
                             "max_concurrent_dpus", "tags", "calculations"})
    workgroup = spec.get("workgroup")
    if workgroup not in store.workgroups:
        raise PopulateError(f"{path}.workgroup: unknown workgroup {workgroup!r}")
    description = spec.get("description")
    engine = store.workgroups[workgroup].engine
    try:
        pragma = parse_session_pragma(description)
    except PragmaError as error:
        raise PopulateError(f"{path}.description: pragma key {error.key!r}: {error}") from None
    if pragma.job_keys and engine != SPARK_CONNECT_ENGINE:
        raise PopulateError(f"{path}.description: pragma key {pragma.job_keys[0]!r}: Spark Connect jobs are for "
                            f"{SPARK_CONNECT_ENGINE} workgroups")
    if spec.get("calculations") and engine != SPARK_ENGINE:
        raise PopulateError(f"{path}.calculations: workgroup {workgroup} runs {engine}, which has no calculations")
    created_at = now - _duration(spec, "started_ago", path)
    idle = spec.get("idle_timeout_minutes", DEFAULT_IDLE_TIMEOUT_MINUTES)
    dpus = spec.get("max_concurrent_dpus", 20)
    calculations = []
    for index, raw_calc in enumerate(spec.get("calculations", [])):
        cpath = f"{path}.calculations[{index}]"
        calc = _keys(raw_calc, cpath, {"code", "description", "submitted_ago", "count"})
        code = calc.get("code", "")
        try:
            calc_pragma = parse_calculation_pragma(code)
        except PragmaError as error:
            raise PopulateError(f"{cpath}.code: pragma key {error.key!r}: {error}") from None
        calculations.append((calc.get("description"), code, calc_pragma,
                             now - _duration(calc, "submitted_ago", cpath), _count(calc, cpath)))
    created = []
    for _ in range(_count(spec, path)):
        session = store.add_session(
            workgroup=workgroup, description=description,
            engine_configuration=engine_configuration({"MaxConcurrentDpus": dpus}, engine), request={},
            idle_timeout_minutes=idle, pragma=pragma, created_at=created_at, tags=_tags(spec, path), engine=engine,
        )
        ids = [
            store.add_calculation(session_id=session.id, description=desc, code=code, pragma=calc_pragma,
                                  submitted_at=submitted).id
            for desc, code, calc_pragma, submitted, count in calculations for _ in range(count)
        ]
        created.append({"SessionId": session.id, "WorkGroup": workgroup, "CalculationExecutionIds": ids})
    return created


def populate(store: Store, spec: Any, now: float) -> dict[str, Any]:
    """Apply a populate spec; return the created workgroup names and session/calculation ids.

    Raises:
        PopulateError: the spec is malformed (nothing is created by the failing group onwards).
    """
    body = _keys(spec, "populate", {"workgroups", "sessions"})
    names = _workgroups(store, list(body.get("workgroups", [])), now)
    created: list[dict[str, Any]] = []
    for index, raw in enumerate(body.get("sessions", [])):
        created.extend(_session_group(store, raw, f"sessions[{index}]", now))
    return {"workgroups": names, "sessions": created}
