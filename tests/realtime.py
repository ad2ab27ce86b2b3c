"""Helpers for the tests that still run on real time against a threaded emulator: real daemon processes (kill -9,
signals, secrets in a real process's output) and the command line itself. Scenario tests in this process use
``virtual_fixtures`` instead.

They use a sync boto3 client: call them where no event loop runs (a background scenario's thread, a sync test).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from athena_spark_emulator.testing import EmulatorHandle
from athena_spark_emulator.thread import EmulatorThread
from bench.environment import environment
from bench.zygote import ForkedProcess, Zygote
from tests.daemon_fixtures import SPARK_ENGINE

REPO = Path(__file__).resolve().parents[1]


def daemon_environment() -> dict[str, str]:
    """The environment of a daemon process: this process's, now (a background scenario takes it at its start: a test
    may change ``os.environ`` while it runs)."""
    return environment({"PYTHONPATH": str(REPO)})


def spawn_daemon(config: Path, log: Path, env: dict[str, str], *, zygote: Zygote) -> ForkedProcess:
    """``athena-supervisor run --config CONFIG`` as a process of its own, its output appended to ``log``: a copy of
    ``zygote`` (bench/zygote.py: its own process, the daemon's modules already imported; the background scenarios
    pass the one they share, ``tests.background.ZYGOTES``, used from their own threads)."""
    return zygote.spawn(["run", "--config", str(config)], log=log, env=env)


def parse_log(text: str) -> list[dict[str, Any]]:
    """The JSON events of a daemon's log (lines that are not JSON left out)."""
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def log_events(log: Path) -> list[dict[str, Any]]:
    return parse_log(log.read_text())


def start_session(client: Any, workgroup: str, description: str = "# sim: start=0.1s") -> str:
    session_id: str = client.start_session(
        WorkGroup=workgroup, Description=description,
        EngineConfiguration={"CoordinatorDpuSize": 1, "MaxConcurrentDpus": 20, "DefaultExecutorDpuSize": 1},
    )["SessionId"]
    return session_id


def wait_idle(client: Any, session_id: str) -> None:
    deadline = time.monotonic() + 5
    while client.get_session_status(SessionId=session_id)["Status"]["State"] != "IDLE":
        assert time.monotonic() < deadline, "session never became IDLE"
        time.sleep(0.02)


def start_calculation(client: Any, session_id: str, pragma: str) -> str:
    calculation_id: str = client.start_calculation_execution(
        SessionId=session_id, CodeBlock=f"{pragma}\nspark.range(10).count()"
    )["CalculationExecutionId"]
    return calculation_id


def calls_of(emulator: EmulatorHandle, operation: str, **request: str) -> list[dict[str, Any]]:
    return [
        call for call in emulator.calls(operation=operation)
        if call["status"] == 200 and all(call["request"].get(k) == v for k, v in request.items())
    ]


def call_time(call: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(call["time"].replace("Z", "+00:00"))


def athena_with_workgroups(emulator: EmulatorHandle) -> Any:
    """A boto3 Athena client on ``emulator`` with Spark workgroups etl-a, etl-exempt (tagged exempt), adhoc."""
    client = emulator.boto3_client()
    for name in ("etl-a", "etl-exempt", "adhoc"):
        client.create_work_group(Name=name, Configuration={"EngineVersion": SPARK_ENGINE})
    client.tag_resource(ResourceARN="arn:aws:athena:us-east-1:123456789012:workgroup/etl-exempt",
                        Tags=[{"Key": "athena-supervisor/exempt", "Value": "true"}])
    return client


@contextmanager
def background_emulator(directory: Path) -> Iterator[EmulatorHandle]:
    """An emulator in a thread for a scenario played in the background of the run (tests/background.py), logging to
    ``directory/emulator.log``: on this process's stdout its lines would land in the captured output of whatever test
    runs meanwhile."""
    with (directory / "emulator.log").open("w", encoding="utf-8") as stream:
        logger = structlog.wrap_logger(structlog.WriteLogger(stream), processors=[
            structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer()])
        thread = EmulatorThread(logger=logger)
        thread.start()
        try:
            yield EmulatorHandle(thread)
        finally:
            thread.stop()
