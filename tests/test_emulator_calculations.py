"""Calculation operations over HTTP with boto3 and a manual clock."""

from __future__ import annotations

from typing import Any

import pytest

from athena_spark_emulator import ManualClock
from athena_spark_emulator.testing import EmulatorHandle

ENGINE = {"MaxConcurrentDpus": 20}


@pytest.fixture
def clock(emulator_clock: ManualClock) -> ManualClock:
    return emulator_clock


@pytest.fixture
def athena(manual_emulator: EmulatorHandle) -> Any:
    return manual_emulator.boto3_client()


@pytest.fixture
def session_id(athena: Any) -> str:
    sid: str = athena.start_session(WorkGroup="spark", EngineConfiguration=ENGINE,
                                    Description="# sim: start=0s terminate_latency=2s")["SessionId"]
    return sid


def submit(athena: Any, session_id: str, code: str, **extra: Any) -> str:
    cid: str = athena.start_calculation_execution(SessionId=session_id, CodeBlock=code,
                                                  **extra)["CalculationExecutionId"]
    return cid


def state(athena: Any, cid: str) -> str:
    result: str = athena.get_calculation_execution_status(CalculationExecutionId=cid)["Status"]["State"]
    return result


def test_running_to_completed_with_statistics(athena: Any, session_id: str, clock: ManualClock) -> None:
    cid = submit(athena, session_id, "print(1)\n# sim: runtime=10s dpus=6\n", Description="job")
    clock.advance(4)
    calc = athena.get_calculation_execution(CalculationExecutionId=cid)
    assert calc["Status"]["State"] == "RUNNING"
    assert calc["Statistics"] == {"DpuExecutionInMillis": 24_000, "Progress": "40%"}
    assert calc["Description"] == "job" and calc["SessionId"] == session_id
    assert "CompletionDateTime" not in calc["Status"]
    clock.advance(6)
    done = athena.get_calculation_execution(CalculationExecutionId=cid)
    assert done["Status"]["State"] == "COMPLETED"
    assert done["Statistics"] == {"DpuExecutionInMillis": 60_000, "Progress": "100%"}
    assert done["Status"]["CompletionDateTime"].timestamp() == pytest.approx(clock.now())
    assert "ResultS3Uri" in done["Result"]
    status = athena.get_calculation_execution_status(CalculationExecutionId=cid)
    assert status["Statistics"]["DpuExecutionInMillis"] == 60_000


def test_outcome_failed(athena: Any, session_id: str, clock: ManualClock) -> None:
    cid = submit(athena, session_id, "# sim: runtime=1s outcome=failed")
    clock.advance(1)
    status = athena.get_calculation_execution_status(CalculationExecutionId=cid)["Status"]
    assert status["State"] == "FAILED" and status["StateChangeReason"]


def test_default_pragma_runs_ten_seconds_with_two_dpus(athena: Any, session_id: str,
                                                       clock: ManualClock) -> None:
    cid = submit(athena, session_id, "spark.range(10).count()")
    clock.advance(9.999)
    assert state(athena, cid) == "RUNNING"
    clock.advance(0.001)
    calc = athena.get_calculation_execution(CalculationExecutionId=cid)
    assert calc["Status"]["State"] == "COMPLETED"
    assert calc["Statistics"]["DpuExecutionInMillis"] == 20_000


def test_queue_one_at_a_time(athena: Any, session_id: str, clock: ManualClock) -> None:
    first = submit(athena, session_id, "# sim: runtime=5s")
    second = submit(athena, session_id, "# sim: runtime=5s")
    delayed = submit(athena, session_id, "# sim: runtime=1s queue=20s")
    assert [state(athena, c) for c in (first, second, delayed)] == ["RUNNING", "QUEUED", "QUEUED"]
    clock.advance(5)
    assert [state(athena, c) for c in (first, second, delayed)] == ["COMPLETED", "RUNNING", "QUEUED"]
    clock.advance(15)
    assert [state(athena, c) for c in (first, second, delayed)] == ["COMPLETED", "COMPLETED", "RUNNING"]
    assert athena.get_session_status(SessionId=session_id)["Status"]["State"] == "BUSY"


def test_stop_honor_canceling_then_canceled(athena: Any, session_id: str, clock: ManualClock) -> None:
    cid = submit(athena, session_id, "# sim: runtime=60s dpus=2 on_stop=honor stop_latency=2s")
    clock.advance(1)
    assert athena.stop_calculation_execution(CalculationExecutionId=cid)["State"] == "CANCELING"
    clock.advance(1.999)
    assert state(athena, cid) == "CANCELING"
    clock.advance(0.001)
    calc = athena.get_calculation_execution(CalculationExecutionId=cid)
    assert calc["Status"]["State"] == "CANCELED"
    assert calc["Statistics"]["DpuExecutionInMillis"] == 6_000
    assert athena.stop_calculation_execution(CalculationExecutionId=cid)["State"] == "CANCELED"


def test_stop_ignored_keeps_accruing(athena: Any, session_id: str, clock: ManualClock) -> None:
    cid = submit(athena, session_id, "# sim: runtime=30s dpus=4 on_stop=ignore")
    clock.advance(5)
    assert athena.stop_calculation_execution(CalculationExecutionId=cid)["State"] == "CANCELING"
    clock.advance(20)
    calc = athena.get_calculation_execution(CalculationExecutionId=cid)
    assert calc["Status"]["State"] == "CANCELING"
    assert calc["Statistics"]["DpuExecutionInMillis"] == 100_000
    clock.advance(5)
    assert state(athena, cid) == "COMPLETED"


def test_stop_on_queued_calculation(athena: Any, session_id: str, clock: ManualClock) -> None:
    running = submit(athena, session_id, "# sim: runtime=10s")
    queued = submit(athena, session_id, "# sim: runtime=10s stop_latency=0s")
    assert athena.stop_calculation_execution(CalculationExecutionId=queued)["State"] == "CANCELED"
    clock.advance(10)
    assert state(athena, running) == "COMPLETED"
    assert athena.get_calculation_execution(
        CalculationExecutionId=queued)["Statistics"]["DpuExecutionInMillis"] == 0


def test_stop_on_completed_calculation_has_no_effect(athena: Any, session_id: str,
                                                     clock: ManualClock) -> None:
    cid = submit(athena, session_id, "# sim: runtime=1s")
    clock.advance(2)
    assert athena.stop_calculation_execution(CalculationExecutionId=cid)["State"] == "COMPLETED"


def test_terminate_session_fails_running_calculations(athena: Any, session_id: str,
                                                      clock: ManualClock) -> None:
    running = submit(athena, session_id, "# sim: runtime=600s dpus=4 on_stop=ignore")
    queued = submit(athena, session_id, "# sim: runtime=1s")
    clock.advance(10)
    assert athena.terminate_session(SessionId=session_id)["State"] == "TERMINATING"
    assert state(athena, running) == "RUNNING"
    clock.advance(2)
    assert [state(athena, c) for c in (running, queued)] == ["FAILED", "FAILED"]
    calc = athena.get_calculation_execution(CalculationExecutionId=running)
    assert calc["Statistics"]["DpuExecutionInMillis"] == 4 * 12_000
    assert calc["Status"]["CompletionDateTime"].timestamp() == pytest.approx(clock.now())


def test_code_and_list_with_pagination_and_filter(athena: Any, session_id: str,
                                                  clock: ManualClock) -> None:
    ids = []
    for index in range(5):
        ids.append(submit(athena, session_id, f"# sim: runtime=1s\nprint({index})"))
        clock.advance(0.5)
    code = athena.get_calculation_execution_code(CalculationExecutionId=ids[3])["CodeBlock"]
    assert code == "# sim: runtime=1s\nprint(3)"
    first = athena.list_calculation_executions(SessionId=session_id, MaxResults=2)
    rest = athena.list_calculation_executions(SessionId=session_id, MaxResults=10,
                                              NextToken=first["NextToken"])
    assert [c["CalculationExecutionId"] for c in first["Calculations"] + rest["Calculations"]] == ids[::-1]
    assert "NextToken" not in rest
    completed = athena.list_calculation_executions(SessionId=session_id, StateFilter="COMPLETED")
    assert {c["CalculationExecutionId"] for c in completed["Calculations"]} == set(ids[:2])


def test_code_in_calculation_configuration_and_idempotency(athena: Any, session_id: str) -> None:
    token = "x" * 40
    cid = athena.start_calculation_execution(
        SessionId=session_id, CalculationConfiguration={"CodeBlock": "# sim: runtime=3s"},
        ClientRequestToken=token)["CalculationExecutionId"]
    again = athena.start_calculation_execution(SessionId=session_id, CodeBlock="other",
                                               ClientRequestToken=token)
    assert again["CalculationExecutionId"] == cid
    code = athena.get_calculation_execution_code(CalculationExecutionId=cid)["CodeBlock"]
    assert code == "# sim: runtime=3s"
