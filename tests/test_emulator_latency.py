"""Per-operation latency: it delays the processing (a state change happens after it), it runs on the
clock's own ``sleep`` when the clock has one (virtual time), and a client that gives up does not cancel it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from botocore.exceptions import ReadTimeoutError

from athena_spark_emulator import Emulator, ManualClock
from athena_spark_emulator.audit import iso_millis
from athena_spark_emulator.clock import sleeper
from supervisor.clock import ManualClock as DaemonClock
from tests.virtual_fixtures import _test_client_session  # one session (and model loader) for the tests' clients
from tests.virtual_time import virtual_time

ENGINE = {"CoordinatorDpuSize": 1, "MaxConcurrentDpus": 4, "DefaultExecutorDpuSize": 1}


class SharedClock:
    """The daemon's manual clock as the emulator sees it: epoch seconds, and ``sleep`` in virtual time."""

    def __init__(self, clock: DaemonClock) -> None:
        self._clock = clock
        self.sleepers = 0

    def now(self) -> float:
        return self._clock.now().timestamp()

    async def sleep(self, seconds: float) -> None:
        self.sleepers += 1
        try:
            await self._clock.sleep_until(self._clock.now() + timedelta(seconds=seconds))
        finally:
            self.sleepers -= 1


def test_latency_waits_on_the_clock_sleep_when_there_is_one() -> None:
    shared = SharedClock(DaemonClock())
    assert sleeper(shared) == shared.sleep
    assert sleeper(ManualClock()) is asyncio.sleep  # no sleep: real time, as before


async def test_latency_in_virtual_time_delays_the_state_change() -> None:
    virtual = DaemonClock(datetime(2026, 1, 1, tzinfo=UTC))
    shared = SharedClock(virtual)
    async with Emulator(clock=shared, workgroups=("spark",)) as emu, _test_client_session().create_client(
        "athena", endpoint_url=emu.endpoint_url, region_name="us-east-1", aws_access_key_id="a",
        aws_secret_access_key="b", config=AioConfig(retries={"total_max_attempts": 1}, read_timeout=30),
    ) as athena, virtual_time(virtual) as vt:
        session_id = (await athena.start_session(WorkGroup="spark", EngineConfiguration=ENGINE,
                                                 Description="# sim: start=0s"))["SessionId"]
        calculation_id = (await athena.start_calculation_execution(
            SessionId=session_id, CodeBlock="# sim: runtime=600s stop_latency=1s"))["CalculationExecutionId"]
        emu.backend.set_faults("StopCalculationExecution", latency="30s")
        sent = shared.now()
        stop = asyncio.create_task(athena.stop_calculation_execution(CalculationExecutionId=calculation_id))
        await vt.settle()  # the request has arrived and waits out its latency on the clock
        assert shared.sleepers == 1
        await vt.run_for(29)
        status = await athena.get_calculation_execution_status(CalculationExecutionId=calculation_id)
        assert status["Status"]["State"] == "RUNNING"  # other operations have no latency; no stop yet
        assert not stop.done()
        await vt.run_for(1)
        assert stop.done() and stop.result()["State"] == "CANCELING"
        virtual.advance(1)
        status = await athena.get_calculation_execution_status(CalculationExecutionId=calculation_id)
        assert status["Status"]["State"] == "CANCELED"
        assert status["Status"]["CompletionDateTime"].timestamp() == pytest.approx(sent + 31)
        (call,) = emu.backend.audit.entries(operation="StopCalculationExecution")
        assert (call["time"], call["status"]) == (iso_millis(sent), 200)  # logged at arrival


async def test_a_client_that_times_out_does_not_cancel_its_stop() -> None:
    virtual = DaemonClock(datetime(2026, 1, 1, tzinfo=UTC))
    shared = SharedClock(virtual)

    def client(endpoint_url: str, read_timeout: float) -> Any:
        return _test_client_session().create_client(
            "athena", endpoint_url=endpoint_url, region_name="us-east-1", aws_access_key_id="a",
            aws_secret_access_key="b", config=AioConfig(retries={"total_max_attempts": 1}, read_timeout=read_timeout),
        )

    async with Emulator(clock=shared, workgroups=("spark",)) as emu, client(emu.endpoint_url, 30) as athena, \
            client(emu.endpoint_url, 0.3) as impatient, virtual_time(virtual) as vt:
        session_id = (await athena.start_session(WorkGroup="spark", EngineConfiguration=ENGINE,
                                                 Description="# sim: start=0s"))["SessionId"]
        calculation_id = (await athena.start_calculation_execution(
            SessionId=session_id, CodeBlock="# sim: runtime=600s stop_latency=0s"))["CalculationExecutionId"]
        emu.backend.set_faults("StopCalculationExecution", latency="1s")
        sent = shared.now()
        # Nothing runs the clock while the client waits: it gives up (its read timeout is real time) while the
        # emulator still waits out the latency, then the latency's second passes.
        with pytest.raises(ReadTimeoutError):
            await impatient.stop_calculation_execution(CalculationExecutionId=calculation_id)
        assert shared.sleepers == 1
        await vt.run_for(1)
        assert [(c["time"], c["status"], c["error"]) for c in emu.backend.audit.entries(
            operation="StopCalculationExecution")] == [(iso_millis(sent), 200, None)]
        status = await athena.get_calculation_execution_status(CalculationExecutionId=calculation_id)
        assert status["Status"]["State"] == "CANCELED"
        assert status["Status"]["CompletionDateTime"].timestamp() == pytest.approx(sent + 1)
