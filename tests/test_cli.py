from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from supervisor.cli import COMMAND_MODULES, build_parser, command_name, main

REPO = Path(__file__).resolve().parents[1]


def test_every_subcommand_is_registered() -> None:
    parser = build_parser()
    help_text = parser.format_help()
    assert "emulator" in help_text


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_a_command_parsed_alone_is_the_command_among_all(module: str) -> None:
    """``main`` builds the parser of the command it is given only (the others' imports are slow)."""
    command = command_name(module)
    alone = _commands(build_parser(command))
    assert list(alone) == [command]
    assert alone[command].format_help() == _commands(build_parser())[command].format_help()


def test_version_flag_prints_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "athena-supervisor" in capsys.readouterr().out


# --- bad input: one line on stderr, exit 2, no traceback ---------------------------------------------


def refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run ``argv``; assert exit 2 with exactly one line on stderr and nothing on stdout; return that line."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code  # type: ignore[assignment]
    captured = capsys.readouterr()
    assert code == 2, captured
    assert "Traceback" not in captured.err
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


@pytest.fixture
def not_a_journal(tmp_path: Path) -> Path:
    path = tmp_path / "notes.db"
    path.write_text("not a database\n" * 100)
    return path


@pytest.fixture
def aws_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = tmp_path / "aws-config"
    config.write_text("[profile ops]\nregion = eu-west-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    return config


def config_file(tmp_path: Path, **sections: Any) -> str:
    data: dict[str, Any] = {"journal": {"path": str(tmp_path / "journal.db")}, "http": {"port": 0}}
    data.update(sections)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_argparse_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert refused(capsys, ["nosuch"]).startswith("athena-supervisor: argument COMMAND: invalid choice: 'nosuch'")
    assert refused(capsys, []) == ("athena-supervisor: the following arguments are required: COMMAND; see "
                                   "'athena-supervisor --help'")
    assert refused(capsys, ["journal", "--limit", "many"]) == (
        "athena-supervisor journal: argument --limit: invalid int value: 'many'; see 'athena-supervisor journal "
        "--help'")


def test_run_refuses_an_unknown_region(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(capsys, ["run", "--config", config_file(tmp_path, aws={"region": "eu-wset-1"})])
    assert line.startswith("aws.region 'eu-wset-1': not an AWS region with Athena")
    assert "did you mean 'eu-west-1'?" in line


def test_run_refuses_a_missing_journal_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = tmp_path / "state" / "journal.db"
    line = refused(capsys, ["run", "--config", config_file(tmp_path, journal={"path": str(journal)})])
    assert line.startswith(f"journal {journal}: directory {journal.parent} does not exist; create it")
    assert not journal.parent.exists()


def test_run_refuses_a_file_that_is_not_a_journal(tmp_path: Path, not_a_journal: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(capsys, ["run", "--config", config_file(tmp_path, journal={"path": str(not_a_journal)})])
    assert line.startswith(f"journal {not_a_journal}: not an SQLite database (file is not a database)")


def test_run_refuses_a_port_in_use(tmp_path: Path, busy_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(capsys, ["run", "--config", config_file(tmp_path, http={"port": busy_port})])
    assert line.startswith(f"http.port {busy_port}: 127.0.0.1:{busy_port} is already in use")


def test_run_refuses_an_unresolvable_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(capsys, ["run", "--config", config_file(tmp_path, http={"host": "nowhere.invalid"})])
    assert line.startswith("http.host 'nowhere.invalid': cannot resolve")


def test_run_refuses_an_unknown_profile(tmp_path: Path, aws_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(capsys, ["run", "--config", config_file(tmp_path, aws={"profile": "opps"})])
    assert line.startswith(f"aws.profile 'opps': no such profile in {aws_config} ")
    assert "did you mean 'ops'?" in line


def test_run_lists_every_startup_problem_one_per_line(tmp_path: Path, busy_port: int,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = config_file(tmp_path, aws={"region": "mars-1"}, http={"port": busy_port})
    assert main(["run", "--config", config]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == ["aws.region", "http.port"]


def test_check_config_refuses_an_unknown_region(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = config_file(tmp_path, aws={"region": "us-east1"})
    assert refused(capsys, ["check-config", config]).startswith(f"{config}: aws.region 'us-east1': not an AWS region")


def test_journal_refuses_a_file_that_is_not_a_journal(not_a_journal: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert refused(capsys, ["journal", "--path", str(not_a_journal)]) == (
        f"journal {not_a_journal}: not an SQLite database (file is not a database); set --path to the daemon's "
        "journal, or to a new file name to start a new journal")


def test_journal_refuses_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert refused(capsys, ["journal", "--path", str(tmp_path)]).startswith(
        f"journal {tmp_path}: is a directory, not a file; set --path to a file in it")


def test_journal_config_names_journal_path(tmp_path: Path, not_a_journal: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    config = config_file(tmp_path, journal={"path": str(not_a_journal)})
    assert "set journal.path to the daemon's journal" in refused(capsys, ["journal", "--config", config])


def test_emulator_refuses_a_port_in_use(busy_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert refused(capsys, ["emulator", "--port", str(busy_port)]).startswith(
        f"--port {busy_port}: 127.0.0.1:{busy_port} is already in use")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--port", "70000"], "athena-supervisor emulator: argument --port: port 70000 out of range: use 0-65535"),
        (["--port", "http"], "athena-supervisor emulator: argument --port: not a port number: 'http'"),
        (["--throttle-tps", "0"], "athena-supervisor emulator: argument --throttle-tps: must be a number greater "
                                  "than 0, got '0'"),
        (["--host", "nowhere.invalid", "--port", "0"], "--host 'nowhere.invalid': cannot resolve"),
    ],
)
def test_emulator_refuses_bad_arguments(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert refused(capsys, ["emulator", *argv]).startswith(expected)


def test_demo_refuses_a_journal_in_a_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = tmp_path / "nowhere" / "demo.db"
    assert refused(capsys, ["demo", "--journal", str(journal)]).startswith(
        f"journal {journal}: directory {journal.parent} does not exist; create it (mkdir -p {journal.parent}) or "
        "set --journal")


@pytest.mark.parametrize("command", [["explain", "--session", "s-1"], ["budgets"]])
def test_commands_that_call_aws_refuse_an_unknown_profile(command: list[str], tmp_path: Path, aws_config: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    budget = {"name": "b", "period": "daily", "limit_usd": 1, "thresholds": [{"at_percent": 100, "action": "notify"}]}
    config = config_file(tmp_path, aws={"profile": "nobody-has-this", "endpoint_url": "http://127.0.0.1:9"},
                         budgets=[budget])
    assert refused(capsys, [command[0], "--config", config, *command[1:]]).startswith(
        "aws.profile 'nobody-has-this': no such profile in ")


@pytest.mark.parametrize("command", [["explain", "--session", "s-1"], ["budgets"]])
def test_commands_that_read_the_journal_refuse_a_file_that_is_not_one(
    command: list[str], tmp_path: Path, not_a_journal: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    budget = {"name": "b", "period": "daily", "limit_usd": 1, "thresholds": [{"at_percent": 100, "action": "notify"}]}
    config = config_file(tmp_path, aws={"endpoint_url": "http://127.0.0.1:9"}, journal={"path": str(not_a_journal)},
                         budgets=[budget])
    assert refused(capsys, [command[0], "--config", config, *command[1:]]).startswith(
        f"journal {not_a_journal}: not an SQLite database")


# --- a closed pipe -----------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [[], ["--json"]])
def test_a_reader_that_stops_reading_ends_the_command_quietly(options: list[str], tmp_path: Path) -> None:
    # With aws.endpoint_url, check-config accepts the region without loading botocore (half of the process's
    # second of CPU); what it prints does not matter here (config/example.yaml: tests/test_check_config.py).
    config = config_file(tmp_path, aws={"region": "us-east-1", "endpoint_url": "http://127.0.0.1:4566"},
                         workgroups=["etl-*"])
    process = subprocess.Popen([sys.executable, "-m", "supervisor", "check-config", config, *options],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # like `| head -0`: the reader is gone before the first write
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(60) == 1
    assert stderr == ""


def test_broken_pipe_inside_a_task_group_is_quiet_too(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(_: object) -> int:
        raise ExceptionGroup("tasks", [BrokenPipeError(32, "Broken pipe")])

    monkeypatch.setattr("supervisor.commands.check_config.run", fail)
    assert main(["check-config", "x.yaml"]) == 1


def test_other_errors_still_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(_: object) -> int:
        raise ExceptionGroup("tasks", [BrokenPipeError(32, "Broken pipe"), ValueError("a bug")])

    monkeypatch.setattr("supervisor.commands.check_config.run", fail)
    with pytest.raises(ExceptionGroup):
        main(["check-config", "x.yaml"])


def test_every_emulator_option_is_explained_and_the_demo_says_how_long_it_takes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["emulator", "--help"], ["demo", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
    text = " ".join(capsys.readouterr().out.split())
    assert "--host H address to listen on (default 127.0.0.1" in text
    assert "--port P TCP port to listen on; 0 picks a free port (default 4566)" in text
    assert "about 15 seconds" in text and "20 seconds" not in text
