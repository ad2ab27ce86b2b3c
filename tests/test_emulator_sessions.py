"""Session operations over HTTP with boto3 (every response checked against botocore's output shape)."""

from __future__ import annotations

from typing import Any

import pytest

from athena_spark_emulator import ManualClock
from athena_spark_emulator.testing import EmulatorHandle

ENGINE = {"CoordinatorDpuSize": 1, "MaxConcurrentDpus": 4, "DefaultExecutorDpuSize": 1}


@pytest.fixture
def clock(emulator_clock: ManualClock) -> ManualClock:
    return emulator_clock


@pytest.fixture
def athena(manual_emulator: EmulatorHandle) -> Any:
    return manual_emulator.boto3_client()


def start(athena: Any, description: str = "# sim: start=2s terminate_latency=3s", **extra: Any) -> str:
    session_id: str = athena.start_session(WorkGroup="spark", EngineConfiguration=ENGINE,
                                           Description=description, **extra)["SessionId"]
    return session_id


def test_lifecycle_creating_idle_busy_idle_terminating_terminated(athena: Any, clock: ManualClock
                                                                  ) -> None:
    response = athena.start_session(WorkGroup="spark", EngineConfiguration=ENGINE,
                                    Description="# sim: start=2s terminate_latency=3s")
    session_id = response["SessionId"]
    assert response["State"] == "CREATING"
    clock.advance(2)
    status = athena.get_session_status(SessionId=session_id)["Status"]
    assert status["State"] == "IDLE"
    assert status["IdleSinceDateTime"].timestamp() == pytest.approx(clock.now())
    athena.start_calculation_execution(SessionId=session_id, CodeBlock="# sim: runtime=5s dpus=3")
    assert athena.get_session(SessionId=session_id)["Status"]["State"] == "BUSY"
    assert "IdleSinceDateTime" not in athena.get_session(SessionId=session_id)["Status"]
    clock.advance(5)
    assert athena.get_session(SessionId=session_id)["Status"]["State"] == "IDLE"
    assert athena.terminate_session(SessionId=session_id)["State"] == "TERMINATING"
    clock.advance(3)
    session = athena.get_session(SessionId=session_id)
    assert session["Status"]["State"] == "TERMINATED"
    assert session["Status"]["EndDateTime"].timestamp() == pytest.approx(clock.now())
    # coordinator 1 DPU for 10 s alive + 3 DPU for 5 s of calculation
    assert session["Statistics"]["DpuExecutionInMillis"] == 10_000 + 15_000
    clock.advance(100)
    assert athena.get_session(SessionId=session_id)["Statistics"]["DpuExecutionInMillis"] == 25_000


def test_get_session_reports_configuration(athena: Any) -> None:
    notebook_id = athena.create_notebook(WorkGroup="spark", Name="nb")["NotebookId"]
    session_id = athena.start_session(
        WorkGroup="spark", EngineConfiguration={**ENGINE, "AdditionalConfigs": {"NotebookId": notebook_id}},
        SessionIdleTimeoutInMinutes=7, NotebookVersion="Athena notebook version 1")["SessionId"]
    session = athena.get_session(SessionId=session_id)
    assert session["NotebookVersion"] == "Athena notebook version 1"
    assert session["WorkGroup"] == "spark"
    assert session["EngineVersion"] == "PySpark engine version 3"
    assert session["EngineConfiguration"]["MaxConcurrentDpus"] == 4
    assert session["SessionConfiguration"]["SessionIdleTimeoutInMinutes"] == 7
    assert session["SessionConfiguration"]["IdleTimeoutSeconds"] == 420


def test_idle_timeout_terminates(athena: Any, clock: ManualClock) -> None:
    session_id = start(athena, "# sim: start=0s", SessionIdleTimeoutInMinutes=1)
    clock.advance(59.9)
    assert athena.get_session_status(SessionId=session_id)["Status"]["State"] == "IDLE"
    clock.advance(0.1)
    status = athena.get_session_status(SessionId=session_id)["Status"]
    assert status["State"] == "TERMINATED"
    assert "idle timeout" in status["StateChangeReason"]


def test_terminate_on_ended_sessions_succeeds_without_effect(athena: Any, clock: ManualClock) -> None:
    session_id = start(athena, "# sim: start=0s on_terminate=stuck")
    assert athena.terminate_session(SessionId=session_id)["State"] == "TERMINATING"
    clock.advance(3600)
    assert athena.terminate_session(SessionId=session_id)["State"] == "TERMINATING"
    other = start(athena, "# sim: start=0s terminate_latency=0s")
    assert athena.terminate_session(SessionId=other)["State"] == "TERMINATED"
    assert athena.terminate_session(SessionId=other)["State"] == "TERMINATED"


def test_terminate_while_creating(athena: Any, clock: ManualClock) -> None:
    session_id = start(athena, "# sim: start=10s terminate_latency=1s")
    assert athena.terminate_session(SessionId=session_id)["State"] == "TERMINATING"
    clock.advance(1)
    assert athena.get_session_status(SessionId=session_id)["Status"]["State"] == "TERMINATED"


def test_list_sessions_newest_first_with_pagination_and_filter(athena: Any, clock: ManualClock
                                                              ) -> None:
    ids = []
    for _ in range(7):
        ids.append(start(athena, "# sim: start=0s terminate_latency=0s"))
        clock.advance(1)
    athena.terminate_session(SessionId=ids[2])
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        kwargs: dict[str, Any] = {"WorkGroup": "spark", "MaxResults": 3}
        if token:
            kwargs["NextToken"] = token
        page = athena.list_sessions(**kwargs)
        pages += 1
        assert len(page["Sessions"]) <= 3
        seen += [s["SessionId"] for s in page["Sessions"]]
        token = page.get("NextToken")
        if not token:
            break
    assert seen == [sid for sid in ids[::-1] if sid != ids[2]]  # active sessions only, as documented
    assert pages == 2
    terminated = athena.list_sessions(WorkGroup="spark", StateFilter="TERMINATED")["Sessions"]
    assert [s["SessionId"] for s in terminated] == [ids[2]]
    idle = athena.list_sessions(WorkGroup="spark", StateFilter="IDLE", MaxResults=100)["Sessions"]
    assert len(idle) == 6
    assert athena.list_sessions(WorkGroup="primary")["Sessions"] == []


def test_list_sessions_token_is_stable_when_new_sessions_arrive(athena: Any, clock: ManualClock
                                                               ) -> None:
    ids = [start(athena) for _ in range(4)]
    first = athena.list_sessions(WorkGroup="spark", MaxResults=2)
    start(athena)
    rest = athena.list_sessions(WorkGroup="spark", MaxResults=10, NextToken=first["NextToken"])
    assert [s["SessionId"] for s in first["Sessions"] + rest["Sessions"]] == ids[::-1]


def test_list_executors(athena: Any, clock: ManualClock) -> None:
    session_id = start(athena, "# sim: start=1s")
    creating = athena.list_executors(SessionId=session_id)["ExecutorsSummary"]
    assert [(e["ExecutorType"], e["ExecutorState"]) for e in creating] == [("COORDINATOR", "CREATING")]
    clock.advance(1)
    athena.start_calculation_execution(SessionId=session_id, CodeBlock="# sim: runtime=5s dpus=3")
    executors = athena.list_executors(SessionId=session_id)
    assert [e["ExecutorType"] for e in executors["ExecutorsSummary"]] == ["COORDINATOR"] + ["WORKER"] * 3
    page = athena.list_executors(SessionId=session_id, MaxResults=2)
    assert len(page["ExecutorsSummary"]) == 2
    rest = athena.list_executors(SessionId=session_id, MaxResults=2, NextToken=page["NextToken"])
    assert len(rest["ExecutorsSummary"]) == 2 and "NextToken" not in rest
    workers = athena.list_executors(SessionId=session_id, ExecutorStateFilter="REGISTERED")
    assert len(workers["ExecutorsSummary"]) == 4
    athena.terminate_session(SessionId=session_id)
    clock.advance(10)
    ended = athena.list_executors(SessionId=session_id)["ExecutorsSummary"]
    assert [(e["ExecutorType"], e["ExecutorState"]) for e in ended] == [("COORDINATOR", "TERMINATED")]


def test_start_session_idempotency_token_and_tags(athena: Any) -> None:
    token = "t" * 32
    first = start(athena, ClientRequestToken=token, Tags=[{"Key": "owner", "Value": "ana"}])
    assert start(athena, ClientRequestToken=token) == first
    assert len(athena.list_sessions(WorkGroup="spark")["Sessions"]) == 1


def test_session_fixture_without_manual_clock_runs_on_wall_time(emulator: EmulatorHandle) -> None:
    athena = emulator.boto3_client()
    athena.create_work_group(Name="wall", Configuration={
        "EngineVersion": {"SelectedEngineVersion": "PySpark engine version 3"}})
    session_id = athena.start_session(WorkGroup="wall", EngineConfiguration=ENGINE,
                                      Description="# sim: start=0s")["SessionId"]
    assert athena.get_session_status(SessionId=session_id)["Status"]["State"] == "IDLE"


def test_wall_clock_lifecycle_polled_with_a_deadline(emulator: EmulatorHandle) -> None:
    import time

    athena = emulator.boto3_client()
    emulator.populate({"workgroups": [{"name": "rt"}]})
    session_id = athena.start_session(WorkGroup="rt", EngineConfiguration={},
                                      Description="# sim: start=0.2s terminate_latency=0.2s")["SessionId"]
    calc_id = athena.start_calculation_execution(SessionId=session_id,
                                                 CodeBlock="# sim: runtime=0.3s")["CalculationExecutionId"]

    def wait_for(read: Any, wanted: str, deadline_s: float = 5.0) -> None:
        deadline = time.monotonic() + deadline_s
        while read() != wanted:
            assert time.monotonic() < deadline, f"never reached {wanted}"
            time.sleep(0.02)

    wait_for(lambda: athena.get_calculation_execution_status(
        CalculationExecutionId=calc_id)["Status"]["State"], "COMPLETED")
    wait_for(lambda: athena.get_session_status(SessionId=session_id)["Status"]["State"], "IDLE")
    athena.terminate_session(SessionId=session_id)
    wait_for(lambda: athena.get_session_status(SessionId=session_id)["Status"]["State"], "TERMINATED")


def test_raw_wire_responses_match_the_model(manual_emulator: EmulatorHandle, athena: Any) -> None:
    import json
    import urllib.request

    from athena_spark_emulator.model import load_athena_model
    from athena_spark_emulator.shapecheck import check_output

    session_id = start(athena)
    athena.start_calculation_execution(SessionId=session_id, CodeBlock="1")
    model = load_athena_model()
    for operation, body in [("GetSession", {"SessionId": session_id}),
                            ("ListSessions", {"WorkGroup": "spark"}),
                            ("ListCalculationExecutions", {"SessionId": session_id}),
                            ("ListExecutors", {"SessionId": session_id})]:
        request = urllib.request.Request(
            manual_emulator.endpoint_url + "/", data=json.dumps(body).encode(), method="POST",
            headers={"X-Amz-Target": f"AmazonAthena.{operation}",
                     "Content-Type": "application/x-amz-json-1.1"})
        with urllib.request.urlopen(request) as response:
            assert response.headers["Content-Type"] == "application/x-amz-json-1.1"
            assert response.headers["x-amzn-RequestId"]
            check_output(model.operation_model(operation), json.loads(response.read()), wire=True)


def test_created_session_accepts_work_that_waits(athena: Any, clock: ManualClock) -> None:
    session_id = start(athena, "# sim: start=1s created_for=10s")
    clock.advance(1)
    assert athena.get_session(SessionId=session_id)["Status"]["State"] == "CREATED"
    listed = athena.list_sessions(WorkGroup="spark", StateFilter="CREATED")["Sessions"]
    assert [s["SessionId"] for s in listed] == [session_id]
    calculation = athena.start_calculation_execution(SessionId=session_id, CodeBlock="# sim: runtime=5s")
    assert calculation["State"] == "QUEUED"
    coordinator = athena.list_executors(SessionId=session_id)["ExecutorsSummary"][0]
    assert coordinator["ExecutorState"] == "CREATED"
    clock.advance(10)
    assert athena.get_session(SessionId=session_id)["Status"]["State"] == "BUSY"


def test_degraded_session_runs_its_work_refuses_more_and_can_be_terminated(athena: Any, clock: ManualClock
                                                                           ) -> None:
    session_id = start(athena, "# sim: start=0s degraded_after=5s terminate_latency=1s")
    calculation_id = athena.start_calculation_execution(
        SessionId=session_id, CodeBlock="# sim: runtime=20s dpus=2")["CalculationExecutionId"]
    clock.advance(5)
    status = athena.get_session(SessionId=session_id)["Status"]
    assert (status["State"], status["StateChangeReason"]) == (
        "DEGRADED", "Session is degraded (simulated by the session pragma)")
    assert athena.get_calculation_execution_status(
        CalculationExecutionId=calculation_id)["Status"]["State"] == "RUNNING"
    executors = athena.list_executors(SessionId=session_id)["ExecutorsSummary"]
    assert [(e["ExecutorType"], e["ExecutorState"]) for e in executors] == [
        ("COORDINATOR", "FAILED"), ("WORKER", "REGISTERED"), ("WORKER", "REGISTERED")]
    with pytest.raises(athena.exceptions.InvalidRequestException, match="DEGRADED"):
        athena.start_calculation_execution(SessionId=session_id, CodeBlock="1")
    clock.advance(15)
    assert athena.get_calculation_execution_status(
        CalculationExecutionId=calculation_id)["Status"]["State"] == "COMPLETED"
    clock.advance(3600)  # far beyond the idle timeout: still DEGRADED
    assert athena.get_session_status(SessionId=session_id)["Status"]["State"] == "DEGRADED"
    assert athena.terminate_session(SessionId=session_id)["State"] == "TERMINATING"
    clock.advance(1)
    assert athena.get_session_status(SessionId=session_id)["Status"]["State"] == "TERMINATED"


def test_failed_session_fails_its_work_and_ignores_terminate(athena: Any, clock: ManualClock) -> None:
    session_id = start(athena, "# sim: start=0s fail_after=8s")
    calculation_id = athena.start_calculation_execution(
        SessionId=session_id, CodeBlock="# sim: runtime=60s")["CalculationExecutionId"]
    clock.advance(10)
    session = athena.get_session(SessionId=session_id)
    assert session["Status"]["State"] == "FAILED"
    assert session["Status"]["EndDateTime"].timestamp() == pytest.approx(clock.now() - 2)
    status = athena.get_calculation_execution(CalculationExecutionId=calculation_id)["Status"]
    assert (status["State"], status["StateChangeReason"]) == (
        "FAILED", "Calculation failed because its session failed")
    assert status["CompletionDateTime"].timestamp() == pytest.approx(clock.now() - 2)
    assert athena.terminate_session(SessionId=session_id)["State"] == "FAILED"
    assert athena.get_session(SessionId=session_id)["Status"]["State"] == "FAILED"
    with pytest.raises(athena.exceptions.InvalidRequestException):
        athena.start_calculation_execution(SessionId=session_id, CodeBlock="1")
