"""``athena-supervisor emulator`` as a user runs it: one ready line on stdout, clean exit on signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from supervisor.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("signum", "account", "region"), [
    (signal.SIGTERM, "123456789012", "us-east-1"),  # the defaults
    (signal.SIGINT, "210987654321", "eu-west-1"),
])
def test_emulator_command_prints_ready_line_and_stops_on_signal(signum: signal.Signals, account: str,
                                                                region: str) -> None:
    options = [] if account == "123456789012" else ["--account", account, "--region", region]
    process = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "emulator", "--port", "0", "--workgroup", "etl",
         "--workgroup", "ml", "--throttle-tps", "100", *options],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert ready["event"] == "emulator.ready"
        assert ready["endpoint_url"].startswith("http://127.0.0.1:")
        assert (ready["account"], ready["region"]) == (account, region)
        credentials = {"endpoint_url": ready["endpoint_url"], "region_name": region, "aws_access_key_id": "a",
                       "aws_secret_access_key": "b"}
        assert boto3.client("sts", **credentials).get_caller_identity()["Account"] == account
        athena = boto3.client("athena", **credentials)
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


@pytest.mark.parametrize(("option", "value"), [("--account", "12345"), ("--account", "abcdefghijkl"),
                                               ("--region", "EU_WEST"), ("--region", "")])
def test_emulator_command_refuses_a_bad_account_or_region(option: str, value: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["emulator", option, value])
    assert exited.value.code == 2
    assert f"argument {option}: not a" in capsys.readouterr().err
