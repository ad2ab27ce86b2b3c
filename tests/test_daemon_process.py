"""The daemon as an operator runs it: a separate process, signals, a kill in the middle of an escalation.

The kill and the reloads wait for real processes in real time (a daemon's start, the Stop, the restart, stop_grace,
SIGHUP), a few seconds with a core idle, so they play in the background of the run (tests/background.py)."""

from __future__ import annotations

import io
import json
import signal
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from athena_spark_emulator.testing import EmulatorHandle
from bench.environment import urlopen
from supervisor.cli import main
from supervisor.commands.check_config import check_config
from supervisor.gateway import DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT
from supervisor.storage.sqlite import SqliteStorage
from tests.background import ZYGOTES, Background, in_background
from tests.daemon_fixtures import SPARK_ENGINE, base_config, write_config
from tests.realtime import (
    background_emulator,
    call_time,
    calls_of,
    daemon_environment,
    log_events,
    spawn_daemon,
    start_calculation,
    start_session,
    wait_idle,
)

# Gateway.in_flight_window with the default timeouts (base_config sets none).
IN_FLIGHT_WINDOW = 2 * (DEFAULT_CONNECT_TIMEOUT + DEFAULT_READ_TIMEOUT)
pytestmark = pytest.mark.slow


def wait_until(predicate: Any, within: float = 15.0) -> Any:
    deadline = time.monotonic() + within
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return value


def journal_times(path: Path, target_id: str) -> dict[str, datetime]:
    """The instant of each journal event about ``target_id`` (the first of each name)."""
    storage = SqliteStorage(path)
    try:
        times: dict[str, datetime] = {}
        for entry in reversed(storage.journal.recent_events(50, target_id=target_id)):
            times.setdefault(entry.event, entry.time)
        return times
    finally:
        storage.close_now()


def journal_events(path: Path, target_id: str) -> list[str]:
    storage = SqliteStorage(path)
    journal = storage.journal
    try:
        return [e.event for e in reversed(journal.recent_events(50, target_id=target_id))]
    finally:
        storage.close_now()


@dataclass(frozen=True)
class KilledMidEscalation:
    """What :func:`kill_mid_escalation` saw: the audit log's calls, the journal and the second daemon's log."""

    session_id: str
    calculation_id: str
    terminates_before_restart: list[dict[str, Any]]
    stops: list[dict[str, Any]]
    terminates: list[dict[str, Any]]
    second_exit_code: int
    journaled_at: dict[str, datetime]
    journal: list[str]
    log: list[dict[str, Any]]


def kill_mid_escalation(directory: Path) -> KilledMidEscalation:
    """A daemon SIGKILLed between the Stop of a calculation that ignores it and the Terminate due ``stop_grace``
    later, then started again on the same journal. Real processes and real time (the kill), so it plays in the
    background of the run (tests/background.py), with an emulator of its own in a thread of this process; both
    daemons are copies of the zygote the background scenarios share."""
    env = daemon_environment()
    with ZYGOTES.use(env, directory / "zygote.log") as zygote, background_emulator(directory) as emulator:
        athena = emulator.boto3_client()
        athena.create_work_group(Name="etl-a", Configuration={"EngineVersion": SPARK_ENGINE})
        session_id = start_session(athena, "etl-a")
        wait_idle(athena, session_id)
        calculation_id = start_calculation(athena, session_id, "# sim: runtime=120s on_stop=ignore")
        journal_path = directory / "journal.db"
        config = write_config(directory / "config.yaml", base_config(
            emulator, journal_path, escalation={"stop_grace": "4s", "terminate_grace": "2s"},
            policies=[{"name": "etl-limits", "workgroups": ["etl-*"], "calculation": {"max_runtime": "1s"}}],
        ))
        log = directory / "daemon.log"
        first = spawn_daemon(config, log, env, zygote=zygote)
        try:
            wait_until(lambda: calls_of(emulator, "StopCalculationExecution", CalculationExecutionId=calculation_id))
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        terminates_before_restart = calls_of(emulator, "TerminateSession")

        second = spawn_daemon(config, log, env, zygote=zygote)
        try:
            wait_until(lambda: calls_of(emulator, "TerminateSession", SessionId=session_id), within=60)
            wait_until(lambda: "verify.done" in journal_events(journal_path, calculation_id), within=30)
        finally:
            second.send_signal(signal.SIGTERM)
            second_exit_code = second.wait(15)
        return KilledMidEscalation(
            session_id, calculation_id, terminates_before_restart,
            stops=calls_of(emulator, "StopCalculationExecution"),
            terminates=calls_of(emulator, "TerminateSession", SessionId=session_id),
            second_exit_code=second_exit_code, journaled_at=journal_times(journal_path, calculation_id),
            journal=journal_events(journal_path, calculation_id), log=log_events(log))


@in_background(kill_mid_escalation)
def test_killed_mid_escalation_the_restarted_daemon_finishes_it_without_repeating_the_stop(
    background: Background,
) -> None:
    run = background.result(kill_mid_escalation)
    assert not run.terminates_before_restart, "killed before the stop grace ran out"
    assert run.second_exit_code == 0
    assert len(run.stops) == 1, "the restarted daemon must not send the Stop again"
    # stop_grace counts from the original Stop as journaled: its answer, or (killed before the answer was
    # journaled) its intent, a little before the emulator received it. The audit log keeps milliseconds.
    stop_at = run.journaled_at.get("stop.sent", run.journaled_at["stop.intent"])
    terminated_at = call_time(run.terminates[0])
    assert terminated_at > stop_at + timedelta(seconds=4) - timedelta(milliseconds=1), (terminated_at, stop_at)
    # The Stop shows (CANCELING): the restart need not wait out the in-flight window of a call it cannot see.
    waited = terminated_at - call_time(run.stops[0])
    assert waited < IN_FLIGHT_WINDOW, f"Terminate came {waited} after the Stop: the restart waited out the window"
    assert len(run.terminates) == 1
    resumed = [e for e in run.log if e.get("event") == "escalation.resumed"]
    assert [e["target_id"] for e in resumed] == [run.calculation_id]

    events = run.journal
    assert events[:2] == ["decision", "stop.intent"]
    assert events.count("stop.intent") == 1
    assert "terminate.sent" in events
    assert events[-1] == "verify.done"


# The two refusals below run ``main`` in this process (``python -m supervisor`` is ``raise SystemExit(main())``, and
# the scenarios above run that entry point and check its exit code): a refusal needs no process of its own, which
# would spend ~0.75 s of CPU importing the daemon to print one line.


def test_run_rejects_a_bad_config_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("mode: enforce\npolicies:\n  - name: p\n    calculation: {max_runtime: 30 minutes}\n")
    assert main(["run", "--config", str(config)]) == 2
    assert "policies[0].calculation.max_runtime: not a duration; got '30 minutes'" in capsys.readouterr().err


@dataclass(frozen=True)
class Reloaded:
    """What :func:`reload_on_sighup` saw: ``/status`` before and after each reload, the reload events, whether the
    daemon still ran after the bad file, its exit code and log, and its config file (the bad one at the end)."""

    config: Path
    journal: Path
    first: dict[str, Any]            # /status["config"] before any reload
    reloaded: dict[str, Any]         # the config.reloaded event
    after_reload: dict[str, Any]     # /status after it
    failed: dict[str, Any]           # the config.reload_failed event
    alive_after_bad_file: bool
    after_bad_file: list[dict[str, Any]]  # /status twice after it
    exit_code: int
    log: list[dict[str, Any]]


def reload_on_sighup(directory: Path) -> Reloaded:
    """The daemon as a process (a copy of the zygote the background scenarios share), sent SIGHUP after a valid
    change to its config file, then after a bad one, then SIGTERM. Real time (a process's start, its reloads), so it
    plays in the background of the run, with an emulator of its own in a thread of this process."""
    env = daemon_environment()
    with ZYGOTES.use(env, directory / "zygote.log") as zygote, background_emulator(directory) as emulator:
        journal = directory / "journal.db"
        settings = base_config(emulator, journal)
        config = write_config(directory / "config.yaml", settings)
        log = directory / "daemon.log"
        daemon = spawn_daemon(config, log, env, zygote=zygote)

        def status() -> dict[str, Any]:
            with urlopen(f"{url}/status", timeout=5) as response:
                body: dict[str, Any] = json.loads(response.read())
                return body

        def reloads(event: str) -> list[dict[str, Any]]:
            return [e for e in log_events(log) if e.get("event") == event]

        try:
            started = wait_until(lambda: [e for e in log_events(log) if e.get("event") == "supervisor.started"])
            wait_until(lambda: calls_of(emulator, "ListWorkGroups"))
            url = started[0]["http"]
            first = status()["config"]
            write_config(config, {**settings, "mode": "dry-run"})
            daemon.send_signal(signal.SIGHUP)
            (reloaded,) = wait_until(lambda: reloads("config.reloaded"))
            after_reload = status()
            config.write_text("mode: [not, a, mode]\n")
            daemon.send_signal(signal.SIGHUP)
            (failed,) = wait_until(lambda: reloads("config.reload_failed"))
            alive = daemon.poll() is None
            after_bad_file = [status(), status()]
        finally:
            daemon.send_signal(signal.SIGTERM)
        exit_code = daemon.wait(15)
        return Reloaded(config, journal, first, reloaded, after_reload, failed, alive, after_bad_file, exit_code,
                        log_events(log))


@in_background(reload_on_sighup)
def test_sighup_reloads_the_config_and_a_bad_file_keeps_the_running_one(background: Background) -> None:
    run = background.result(reload_on_sighup)
    reloaded, failed = run.reloaded, run.failed
    assert (reloaded["trigger"], reloaded["changed"], reloaded["needs_restart"]) == ("SIGHUP", ["mode"], [])
    now = run.after_reload
    assert now["mode"] == "dry-run" and now["config"]["digest"] != run.first["digest"]
    assert now["config"]["last_reload"]["outcome"] == "success"
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(run.config), out=out, err=err) == 2
    assert failed["problems"] == err.getvalue().splitlines(), "the messages check-config prints"
    assert failed["problems"][0].startswith(f"{run.config}: mode: not an accepted value")
    assert run.alive_after_bad_file, "a bad file must not end the daemon"
    for status in run.after_bad_file:
        assert status["mode"] == "dry-run" and status["config"]["digest"] == now["config"]["digest"]
    assert run.exit_code == 0
    names = [e.get("event") for e in run.log]
    assert names[-2:] == ["supervisor.stopping", "supervisor.stopped"]
    assert journal_kinds(run.journal) == ["config.reloaded", "config.reload_failed"]


def journal_kinds(path: Path) -> list[str]:
    storage = SqliteStorage(path)
    try:
        return [e.event for e in reversed(storage.journal.recent_events(50)) if e.event.startswith("config.")]
    finally:
        storage.close_now()


def test_run_refuses_a_missing_journal_directory_in_one_line(emulator: EmulatorHandle, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    journal = tmp_path / "not-created" / "journal.db"
    config = write_config(tmp_path / "config.yaml", base_config(emulator, journal))
    assert main(["run", "--config", str(config)]) == 2
    result = capsys.readouterr()
    assert result.err.splitlines() == [
        f"journal {journal}: directory {journal.parent} does not exist; create it (mkdir -p {journal.parent}) or "
        "set journal.path to a file in an existing directory"]
    assert result.out == ""
    assert not journal.parent.exists()
    assert not calls_of(emulator, "ListWorkGroups"), "refused before any call"
