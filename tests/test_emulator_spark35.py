"""Apache Spark version 3.5 (Spark Connect) workgroups and sessions over HTTP with boto3; every response is
checked against botocore's output shape. Lifecycles come from Spark Connect job keys in the session pragma."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from athena_spark_emulator import ManualClock
from athena_spark_emulator.pragma import PragmaError, parse_session_pragma
from athena_spark_emulator.records import SPARK_CONNECT_ENGINE, SessionRecord
from athena_spark_emulator.testing import EmulatorHandle
from athena_spark_emulator.timeline import plan_session, session_view

CONNECT = {"EngineVersion": {"SelectedEngineVersion": SPARK_CONNECT_ENGINE}}
PYSPARK_ENGINE = {"CoordinatorDpuSize": 1, "MaxConcurrentDpus": 4, "DefaultExecutorDpuSize": 1}
DEFAULTS = [{"Name": "spark-defaults", "Properties": {"spark.sql.shuffle.partitions": "8"}}]


@pytest.fixture
def clock(emulator_clock: ManualClock) -> ManualClock:
    return emulator_clock


@pytest.fixture
def athena(manual_emulator: EmulatorHandle) -> Any:
    client = manual_emulator.boto3_client()
    client.create_work_group(Name="connect", Configuration=CONNECT)
    return client


def error_of(call: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    return str(caught.value.response["Error"]["Code"]), str(caught.value.response["Error"]["Message"])


def start(athena: Any, description: str = "# sim: start=0s", **extra: Any) -> str:
    session_id: str = athena.start_session(WorkGroup="connect", EngineConfiguration=extra.pop(
        "EngineConfiguration", {"Classifications": DEFAULTS}), Description=description, **extra)["SessionId"]
    return session_id


def test_workgroup_engine_is_listed_and_cannot_change_between_spark_versions(athena: Any) -> None:
    engine = athena.get_work_group(WorkGroup="connect")["WorkGroup"]["Configuration"]["EngineVersion"]
    assert engine == {"SelectedEngineVersion": SPARK_CONNECT_ENGINE, "EffectiveEngineVersion": SPARK_CONNECT_ENGINE}
    listed = {w["Name"]: w["EngineVersion"]["EffectiveEngineVersion"] for w in athena.list_work_groups()["WorkGroups"]}
    assert listed["connect"] == SPARK_CONNECT_ENGINE and listed["spark"] == "PySpark engine version 3"
    code, message = error_of(athena.update_work_group, WorkGroup="spark", ConfigurationUpdates=CONNECT)
    assert code == "InvalidRequestException" and "cannot be upgraded" in message
    code, _ = error_of(athena.update_work_group, WorkGroup="connect", ConfigurationUpdates={
        "EngineVersion": {"SelectedEngineVersion": "PySpark engine version 3"}})
    assert code == "InvalidRequestException"
    code, message = error_of(athena.create_work_group, Name="x", Configuration={
        "EngineVersion": {"SelectedEngineVersion": "Apache Spark version 9"}})
    assert code == "InvalidRequestException" and "unknown engine" in message


@pytest.mark.parametrize("member", ["CoordinatorDpuSize", "DefaultExecutorDpuSize", "SparkProperties"])
def test_start_session_refuses_what_spark_connect_does_not_take(athena: Any, member: str) -> None:
    value: Any = {"spark.executor.memory": "4g"} if member == "SparkProperties" else 1
    code, message = error_of(athena.start_session, WorkGroup="connect", EngineConfiguration={member: value})
    assert code == "InvalidRequestException"
    assert f"EngineConfiguration.{member} is not supported by {SPARK_CONNECT_ENGINE}" in message
    code, message = error_of(athena.start_session, WorkGroup="connect", EngineConfiguration={},
                             NotebookVersion="Athena notebook version 1")
    assert code == "InvalidRequestException" and "no notebooks" in message


def test_session_names_its_engine_and_classifications(athena: Any) -> None:
    session_id = start(athena, EngineConfiguration={"MaxConcurrentDpus": 40, "Classifications": DEFAULTS})
    session = athena.get_session(SessionId=session_id)
    assert session["EngineVersion"] == SPARK_CONNECT_ENGINE
    assert session["EngineConfiguration"] == {"MaxConcurrentDpus": 40, "Classifications": DEFAULTS}
    assert "NotebookVersion" not in session
    summary = athena.list_sessions(WorkGroup="connect")["Sessions"][0]
    assert summary["EngineVersion"]["EffectiveEngineVersion"] == SPARK_CONNECT_ENGINE
    assert "NotebookVersion" not in summary
    pyspark = athena.start_session(WorkGroup="spark", EngineConfiguration=PYSPARK_ENGINE)["SessionId"]
    assert athena.get_session(SessionId=pyspark)["EngineVersion"] == "PySpark engine version 3"


def test_spark_connect_jobs_keep_the_session_busy_and_accrue(athena: Any, clock: ManualClock) -> None:
    session_id = start(athena, "# sim: start=1s busy=90s dpus=20 every=5m")
    started = clock.now()
    assert athena.get_session_status(SessionId=session_id)["Status"]["State"] == "CREATING"
    clock.advance(1)  # ready: the first job starts at once
    status = athena.get_session_status(SessionId=session_id)["Status"]
    assert status["State"] == "BUSY" and status["LastModifiedDateTime"].timestamp() == started + 1
    assert "IdleSinceDateTime" not in status
    clock.advance(90)
    status = athena.get_session_status(SessionId=session_id)["Status"]
    assert status["State"] == "IDLE" and status["IdleSinceDateTime"].timestamp() == started + 91
    clock.advance(210)  # the next job, 5 minutes after the first
    status = athena.get_session_status(SessionId=session_id)["Status"]
    assert status["State"] == "BUSY" and status["LastModifiedDateTime"].timestamp() == started + 301
    clock.advance(30)
    # coordinator 1 DPU for 331 s + 20 DPUs for 90 s and 30 s of jobs
    assert athena.get_session(SessionId=session_id)["Statistics"]["DpuExecutionInMillis"] == 331_000 + 20 * 120_000
    workers = athena.list_executors(SessionId=session_id, ExecutorStateFilter="REGISTERED")["ExecutorsSummary"]
    assert len(workers) == 21  # the coordinator and one 1-DPU worker per DPU of the running job
    clock.advance(3 * 3600)  # the gap between jobs (3.5 min) is shorter than the idle timeout (20 min)
    assert athena.get_session_status(SessionId=session_id)["Status"]["State"] in ("BUSY", "IDLE")


def test_a_runaway_job_runs_until_terminated(athena: Any, clock: ManualClock) -> None:
    session_id = start(athena, "# sim: start=0s busy=forever dpus=8 terminate_latency=2s")
    clock.advance(600)
    status = athena.get_session_status(SessionId=session_id)["Status"]
    assert status["State"] == "BUSY" and status["LastModifiedDateTime"].timestamp() == clock.now() - 600
    assert athena.terminate_session(SessionId=session_id)["State"] == "TERMINATING"
    clock.advance(2)
    session = athena.get_session(SessionId=session_id)
    assert session["Status"]["State"] == "TERMINATED"
    assert session["Statistics"]["DpuExecutionInMillis"] == 602_000 * 9
    clock.advance(60)
    assert athena.get_session(SessionId=session_id)["Statistics"]["DpuExecutionInMillis"] == 602_000 * 9


def test_calculation_operations_are_not_supported_on_spark_connect_sessions(athena: Any) -> None:
    session_id = start(athena)
    for call, kwargs in ((athena.start_calculation_execution, {"CodeBlock": "print(1)"}),
                         (athena.list_calculation_executions, {})):
        code, message = error_of(call, SessionId=session_id, **kwargs)
        assert code == "InvalidRequestException"
        assert f"runs {SPARK_CONNECT_ENGINE}, which has no calculation API" in message
    code, _ = error_of(athena.list_calculation_executions, SessionId="no-such-session")
    assert code == "ResourceNotFoundException"


def test_job_keys_only_describe_spark_connect_sessions(athena: Any) -> None:
    code, message = error_of(athena.start_session, WorkGroup="spark", EngineConfiguration=PYSPARK_ENGINE,
                             Description="# sim: busy=10s")
    assert code == "InvalidRequestException" and "Spark Connect jobs are for" in message
    code, message = error_of(athena.start_session, WorkGroup="connect", EngineConfiguration={},
                             Description="# sim: busy=10m every=5m")
    assert code == "InvalidRequestException" and "'every'" in message
    with pytest.raises(PragmaError, match="set busy= too"):
        parse_session_pragma("# sim: dpus=4")


def test_session_endpoint_and_dashboard(athena: Any, clock: ManualClock, manual_emulator: EmulatorHandle) -> None:
    session_id = start(athena, "# sim: start=2s terminate_latency=1s")
    code, message = error_of(athena.get_session_endpoint, SessionId=session_id)
    assert code == "InvalidRequestException" and "CREATING" in message
    clock.advance(2)
    endpoint = athena.get_session_endpoint(SessionId=session_id)
    assert endpoint["EndpointUrl"].startswith(f"https://{session_id}.") and endpoint["AuthToken"]
    assert endpoint["AuthTokenExpirationTime"].timestamp() == clock.now() + 3600
    arn = f"arn:aws:athena:us-east-1:{manual_emulator.account_id}:workgroup/connect/session/{session_id}"
    assert "/live/" in athena.get_resource_dashboard(ResourceARN=arn)["Url"]
    athena.terminate_session(SessionId=session_id)
    clock.advance(1)
    assert "/history/" in athena.get_resource_dashboard(ResourceARN=arn)["Url"]
    code, _ = error_of(athena.get_session_endpoint, SessionId=session_id)
    assert code == "InvalidRequestException"
    pyspark = athena.start_session(WorkGroup="spark", EngineConfiguration=PYSPARK_ENGINE)["SessionId"]
    code, message = error_of(athena.get_session_endpoint, SessionId=pyspark)
    assert code == "InvalidRequestException" and "from Apache Spark version 3.5 onward" in message
    code, _ = error_of(athena.get_resource_dashboard,
                       ResourceARN=arn.replace("connect", "spark").replace(session_id, pyspark))
    assert code == "InvalidRequestException"
    code, _ = error_of(athena.get_resource_dashboard, ResourceARN=arn.replace(session_id, "nope"))
    assert code == "ResourceNotFoundException"


def test_populate_spark_connect_sessions(manual_emulator: EmulatorHandle, athena: Any) -> None:
    created = manual_emulator.populate({
        "workgroups": [{"name": "connect-b", "engine": "spark-3.5"}],
        "sessions": [{"workgroup": "connect-b", "count": 2, "description": "# sim: start=0s busy=forever",
                      "started_ago": "30s"}]})
    session_id = created["sessions"][0]["SessionId"]
    status = athena.get_session_status(SessionId=session_id)["Status"]
    assert status["State"] == "BUSY"
    with pytest.raises(Exception, match="has no calculations"):
        manual_emulator.populate({"sessions": [{"workgroup": "connect-b", "calculations": [{"code": ""}]}]})


def _record(description: str, *, idle: int = 20, terminate_at: float | None = None) -> SessionRecord:
    return SessionRecord(id="s", seq=1, workgroup="wg", description=description, engine_configuration={},
                         request={}, idle_timeout_minutes=idle, pragma=parse_session_pragma(description),
                         created_at=0.0, tags={}, terminate_requested_at=terminate_at, engine=SPARK_CONNECT_ENGINE)


def _state(record: SessionRecord, t: float) -> str:
    return session_view(record, [], plan_session(record, []), t).state


def test_job_timeline_idle_timeout_busy_after_and_stuck_termination() -> None:
    one = _record("# sim: start=0s busy=30s busy_after=10s", idle=1)
    assert [_state(one, t) for t in (5, 10, 39.9, 40, 99.9, 100)] == [
        "IDLE", "BUSY", "BUSY", "IDLE", "IDLE", "TERMINATED"]
    sparse = _record("# sim: start=0s busy=10s every=5m", idle=1)
    assert [_state(sparse, t) for t in (5, 69.9, 70, 300)] == ["BUSY", "IDLE", "TERMINATED", "TERMINATED"]
    late = _record("# sim: start=0s busy=10s busy_after=2m", idle=1)
    assert [_state(late, t) for t in (59.9, 60, 120)] == ["IDLE", "TERMINATED", "TERMINATED"]
    stuck = _record("# sim: start=0s busy=forever on_terminate=stuck", terminate_at=50.0)
    assert [_state(stuck, t) for t in (49, 50, 10_000)] == ["BUSY", "TERMINATING", "TERMINATING"]
    stopped = _record("# sim: start=0s busy=10s every=20s terminate_latency=1s", terminate_at=45.0)
    plan = plan_session(stopped, [])
    assert plan.jobs is not None and plan.jobs.started(1000) == 3  # jobs at 0, 20, 40; none after the request
    assert session_view(stopped, [], plan, 1000).dpu_millis == 46_000 + 2 * 26_000  # the last job cut at 46 s
