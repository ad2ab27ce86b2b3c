"""Which engine a workgroup and a session run, as the daemon reads it from the API (pure, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime

from supervisor.athena import workgroup_snapshot
from supervisor.core.inventory import Inventory
from supervisor.core.model import (
    PYSPARK_ENGINE,
    SPARK_CONNECT_ENGINE,
    SessionSnapshot,
    engine_name,
    runs_calculations,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_engine_names_from_every_shape_the_api_uses() -> None:
    assert engine_name(SPARK_CONNECT_ENGINE) == SPARK_CONNECT_ENGINE  # GetSession
    assert engine_name({"SelectedEngineVersion": "AUTO", "EffectiveEngineVersion": "Athena engine version 3"}) \
        == "Athena engine version 3"  # ListWorkGroups, ListSessions
    assert engine_name({"SelectedEngineVersion": PYSPARK_ENGINE}) == PYSPARK_ENGINE
    assert engine_name(None) == "" and engine_name({}) == ""


def test_only_pyspark_3_runs_calculations() -> None:
    assert runs_calculations(PYSPARK_ENGINE)
    assert runs_calculations("")  # not reported: every session before 3.5 was PySpark 3
    assert not runs_calculations(SPARK_CONNECT_ENGINE)
    assert not runs_calculations("Apache Spark version 4.0")


def test_a_session_engine_comes_from_its_answers_else_its_workgroup() -> None:
    inventory = Inventory()
    summary = {"Name": "connect", "State": "ENABLED",
               "EngineVersion": {"SelectedEngineVersion": SPARK_CONNECT_ENGINE,
                                 "EffectiveEngineVersion": SPARK_CONNECT_ENGINE}}
    inventory.workgroups["connect"] = workgroup_snapshot(summary, {})
    assert inventory.workgroups["connect"].is_spark and inventory.workgroups["connect"].engine == SPARK_CONNECT_ENGINE
    status_only = SessionSnapshot.from_api("connect", {"SessionId": "s", "Status": {"State": "BUSY"}}, NOW)
    assert status_only.engine == "" and inventory.engine_of(status_only) == SPARK_CONNECT_ENGINE
    listed = SessionSnapshot.from_api("other", {"SessionId": "s", "Status": {"State": "BUSY"}, "EngineVersion": {
        "SelectedEngineVersion": PYSPARK_ENGINE, "EffectiveEngineVersion": PYSPARK_ENGINE}}, NOW)
    inventory.put_session(listed)
    inventory.put_session(status_only)  # a later GetSessionStatus keeps the engine the listing named
    assert inventory.sessions["s"].engine == PYSPARK_ENGINE
