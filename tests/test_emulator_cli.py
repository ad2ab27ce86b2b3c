"""``athena-supervisor emulator`` as a user runs it: one ready line on stdout, clean exit on signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_emulator_command_prints_ready_line_and_stops_on_signal(signum: signal.Signals) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "emulator", "--port", "0", "--workgroup", "etl",
         "--workgroup", "ml", "--throttle-tps", "100"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert ready["event"] == "emulator.ready"
        assert ready["endpoint_url"].startswith("http://127.0.0.1:")
        athena = boto3.client("athena", endpoint_url=ready["endpoint_url"], region_name="us-east-1",
                              aws_access_key_id="a", aws_secret_access_key="b")
        groups = {g["Name"]: g for g in athena.list_work_groups()["WorkGroups"]}
        assert set(groups) == {"primary", "etl", "ml"}
        assert groups["etl"]["EngineVersion"]["EffectiveEngineVersion"] == "PySpark engine version 3"
        assert athena.get_work_group(WorkGroup="ml")["WorkGroup"]["State"] == "ENABLED"
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert stdout == ""  # exactly one line on stdout: the ready line, already read
    events = [json.loads(line)["event"] for line in stderr.splitlines()]
    assert events[-1] == "emulator.stopped"
