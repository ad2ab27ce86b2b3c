"""``athena-supervisor emulator`` as a user runs it: one ready line on stdout, clean exit on signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from supervisor.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def start_emulator(*options: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """``athena-supervisor emulator`` with Spark workgroups etl and ml, throttled: the process and its ready line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "emulator", "--port", "0", "--workgroup", "etl", "--workgroup", "ml",
         "--throttle-tps", "100", *options],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    try:
        ready: dict[str, Any] = json.loads(process.stdout.readline())
    except BaseException:
        stop_emulator(process, signal.SIGKILL)
        raise
    assert ready["event"] == "emulator.ready"
    assert ready["endpoint_url"].startswith("http://127.0.0.1:")
    return process, ready


def stop_emulator(process: subprocess.Popen[str], signum: signal.Signals) -> tuple[str, str]:
    """Send ``signum`` and wait for the exit (killing the process if it does not): its remaining stdout, stderr."""
    try:
        process.send_signal(signum)
        return process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def check_served_and_stopped(process: subprocess.Popen[str], ready: dict[str, Any], signum: signal.Signals,
                             account: str, region: str) -> None:
    """The ready line names ``account`` and ``region`` (the defaults), which STS and Athena serve with the
    workgroups of the options; ``signum`` stops the process cleanly."""
    try:
        assert (ready["account"], ready["region"]) == (account, region)
        credentials = {"endpoint_url": ready["endpoint_url"], "region_name": region, "aws_access_key_id": "a",
                       "aws_secret_access_key": "b"}
        assert boto3.client("sts", **credentials).get_caller_identity()["Account"] == account
        athena = boto3.client("athena", **credentials)
        groups = {g["Name"]: g for g in athena.list_work_groups()["WorkGroups"]}
        assert set(groups) == {"primary", "etl", "ml"}
        assert groups["etl"]["EngineVersion"]["EffectiveEngineVersion"] == "PySpark engine version 3"
        assert athena.get_work_group(WorkGroup="ml")["WorkGroup"]["State"] == "ENABLED"
    finally:
        stdout, stderr = stop_emulator(process, signum)
    assert process.returncode == 0
    assert stdout == ""  # exactly one line on stdout: the ready line, already read
    events = [json.loads(line)["event"] for line in stderr.splitlines()]
    assert events[-1] == "emulator.stopped"


def test_emulator_command_stops_on_sigint_with_its_account_and_region() -> None:
    # SIGTERM, the defaults and events: test_emulator_command_publishes_events_and_stops_on_sigterm (each process
    # start costs a second of CPU).
    process, ready = start_emulator("--account", "210987654321", "--region", "eu-west-1")
    check_served_and_stopped(process, ready, signal.SIGINT, "210987654321", "eu-west-1")


@pytest.mark.parametrize(("option", "value"), [("--account", "12345"), ("--account", "abcdefghijkl"),
                                               ("--region", "EU_WEST"), ("--region", "")])
def test_emulator_command_refuses_a_bad_account_or_region(option: str, value: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["emulator", option, value])
    assert exited.value.code == 2
    assert f"argument {option}: not a" in capsys.readouterr().err


def test_emulator_command_publishes_events_and_stops_on_sigterm() -> None:
    """With the default account and region; the events of a caller in another account and region name theirs."""
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        keys = {"region_name": "eu-west-1", "aws_access_key_id": "210987654321", "aws_secret_access_key": "b"}
        sqs = boto3.client("sqs", endpoint_url=f"http://{host}:{port}", **keys)
        queue_url = sqs.create_queue(QueueName="athena-events")["QueueUrl"]
        process, ready = start_emulator(
            "--events-sqs-url", queue_url, "--events-region", "eu-west-1", "--events-delay", "0.1s",
            "--events-duplicate-rate", "1", "--events-seed", "4")
        try:
            assert ready["events"] == {"sqs_queue_url": queue_url, "event_bus_name": None,
                                       "endpoint_url": f"http://{host}:{port}", "region": "eu-west-1",
                                       "delay": "0.1s", "drop_rate": 0.0, "duplicate_rate": 1.0, "seed": 4}
            athena = boto3.client("athena", endpoint_url=ready["endpoint_url"], **keys)
            athena.create_work_group(Name="reports", Configuration={"EngineVersion": {
                "SelectedEngineVersion": "PySpark engine version 3"}})
            messages = []
            for _ in range(20):  # real time: the emulator and moto are processes/threads of their own
                answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                             VisibilityTimeout=600)
                messages += answer.get("Messages", [])
                if len(messages) == 2:
                    break
            first, second = (json.loads(message["Body"]) for message in messages)
            assert first == second  # duplicated: the same event twice
            assert (first["detail"]["eventName"], first["account"], first["region"]) == (
                "CreateWorkGroup", "210987654321", "eu-west-1")
            assert first["detail"]["requestParameters"]["name"] == "reports"
        except BaseException:
            stop_emulator(process, signal.SIGTERM)
            raise
        check_served_and_stopped(process, ready, signal.SIGTERM, "123456789012", "us-east-1")
    finally:
        moto.stop()


@pytest.mark.parametrize(("options", "message"), [
    (["--events-delay", "2s"], "--events-delay needs --events-sqs-url (or --events-bus-name)"),
    (["--events-sqs-url", "http://q/1/a", "--events-delay", "5s-1s"], "--events-delay: expected a duration"),
    (["--events-sqs-url", "queue"], "--events-sqs-url: expected an http(s) URL"),
    (["--events-bus-name", "central"], "--events-endpoint-url: required with event_bus_name"),
    (["--events-sqs-url", "http://q/1/a", "--events-bus-name", "b"], "--events-sqs-url: give either"),
])
def test_emulator_command_refuses_bad_event_options(options: list[str], message: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from supervisor.cli import main

    assert main(["emulator", "--port", "0", *options]) == 2
    assert capsys.readouterr().err.startswith(message)


@pytest.mark.parametrize("option", ["--events-drop-rate", "--events-duplicate-rate"])
def test_emulator_command_refuses_a_rate_out_of_range(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["emulator", option, "1.5"])
    assert exited.value.code == 2
    assert f"argument {option}: must be a probability from 0 to 1" in capsys.readouterr().err
