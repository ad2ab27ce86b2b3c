"""Secrets never reach output: planted webhook secrets (path, query, userinfo, header) appear nowhere.

``check-config`` and ``run`` on valid and invalid configs (stdout, stderr), and the daemon as an operator runs
it (a separate process) against the emulator, delivering to real webhook servers on loopback, one that
redirects in a loop and one that answers 500: its stderr JSON log (our events, with the errors of the
retried attempts), the journal (through ``athena-supervisor journal --json`` and the raw database
files) and the ``/metrics`` text. That daemon waits for real time, so it plays in the background of the run.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import yaml
from aiohttp import web

from athena_spark_emulator.testing import EmulatorHandle
from bench.zygote import Zygote
from supervisor.cli import main
from tests.background import ZYGOTES, Background, in_background
from tests.daemon_fixtures import base_config, write_config
from tests.realtime import (
    athena_with_workgroups,
    background_emulator,
    daemon_environment,
    log_events,
    parse_log,
    spawn_daemon,
    start_calculation,
    start_session,
    wait_idle,
)

PATH_SECRET = "SECRET-PATH-TOKEN-123"
QUERY_SECRET = "SECRET-QUERY-456"
PASSWORD_SECRET = "SECRET-PASS-789"
HEADER_SECRET = "SECRET-HEADER-000"
SECRETS = (PATH_SECRET, QUERY_SECRET, PASSWORD_SECRET, HEADER_SECRET)
SECRET_TAIL = f"{PATH_SECRET}?token={QUERY_SECRET}"


def assert_no_secret(where: str, text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"{where} shows {leaked}:\n{text}"


class Hooks:
    """Webhook endpoints: ``/loop/...`` redirects to itself forever (307 keeps the POST), ``/fail/...``
    answers 500."""

    def __init__(self) -> None:
        self.hits = {"loop": 0, "fail": 0}
        self.port = 0

    async def loop(self, request: web.Request) -> web.Response:
        self.hits["loop"] += 1
        raise web.HTTPTemporaryRedirect(location=str(request.rel_url))

    async def fail(self, request: web.Request) -> web.Response:
        self.hits["fail"] += 1
        return web.Response(status=500)

    def channels(self) -> list[dict[str, Any]]:
        """Two valid webhook channels carrying every planted secret."""
        return [
            {"type": "webhook", "url": f"http://user:{PASSWORD_SECRET}@127.0.0.1:{self.port}/loop/{SECRET_TAIL}",
             "retries": 2, "headers": {"X-Trace": f"Bearer {HEADER_SECRET}"}},
            {"type": "webhook", "url": f"http://127.0.0.1:{self.port}/fail/{SECRET_TAIL}", "retries": 1,
             "headers": {"Authorization": f"Bearer {HEADER_SECRET}"}},
        ]


@asynccontextmanager
async def serving_hooks() -> AsyncIterator[Hooks]:
    """:class:`Hooks` served on a free loopback port for as long as the block lasts."""
    endpoints = Hooks()
    app = web.Application()
    app.router.add_route("*", "/loop/{tail:.*}", endpoints.loop)
    app.router.add_route("*", "/fail/{tail:.*}", endpoints.fail)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    endpoints.port = runner.addresses[0][1]
    try:
        yield endpoints
    finally:
        await runner.cleanup()


# --- check-config and run on the config ----------------------------------------------------------------


def config_with(tmp_path: Path, notifications: Any, **extra: Any) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"workgroups": ["etl-*"], "journal": {"path": str(tmp_path / "j.db")},
                                    "notifications": notifications, **extra}))
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("as_json", [False, True])
def test_check_config_of_a_valid_config_masks_urls_and_headers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    hooks = Hooks()
    hooks.port = 8080
    config = config_with(tmp_path, hooks.channels(),
                         aws={"endpoint_url": f"http://user:{PASSWORD_SECRET}@127.0.0.1:4566/{PATH_SECRET}"})
    code, out, err = cli(capsys, "check-config", *(["--json"] if as_json else []), str(config))
    assert (code, err) == (0, "")
    assert_no_secret("check-config", out)
    assert "http://***@127.0.0.1:8080/***" in out and "http://127.0.0.1:8080/***" in out
    if as_json:
        channels = json.loads(out)["notifications"]
        assert [channel["headers"] for channel in channels] == [{"X-Trace": "***"}, {"Authorization": "***"}]
    else:
        assert "headers Authorization: ***" in out and "headers X-Trace: ***" in out


INVALID: list[tuple[str, Any, dict[str, Any], str]] = [
    ("scheme not http", [{"type": "webhook", "url": f"ftp://hooks.example.com/{SECRET_TAIL}"}], {},
     "notifications[0].url: not an http(s) URL; write a URL"),
    ("headers a list", [{"type": "webhook", "url": "https://hooks.example.com/",
                         "headers": [f"Bearer {HEADER_SECRET}"]}], {},
     "notifications[0].headers: wrong type; expected a mapping"),
    ("header value a list", [{"type": "webhook", "url": "https://hooks.example.com/",
                              "headers": {"X-Key": [HEADER_SECRET]}}], {},
     "notifications[0].headers.X-Key: wrong type; expected a string"),
    ("url a list", [{"type": "webhook", "url": [f"https://hooks.example.com/{SECRET_TAIL}"]}], {},
     "notifications[0].url: wrong type"),
    ("credentials twice", [{"type": "webhook", "url": f"https://user:{PASSWORD_SECRET}@hooks.example.com/{SECRET_TAIL}",
                            "headers": {"authorization": f"Bearer {HEADER_SECRET}"}}], {},
     "notifications[0].url: credentials both in the URL (user:password@) and in an Authorization header"),
    ("channel not a mapping", [f"https://user:{PASSWORD_SECRET}@hooks.example.com/{SECRET_TAIL}"], {},
     "notifications[0]: wrong type; got 'https://***@hooks.example.com/***'"),
    ("notifications a mapping", {"type": "webhook", "url": f"https://hooks.example.com/{SECRET_TAIL}",
                                 "headers": {"X-Custom": HEADER_SECRET}}, {},
     "notifications: wrong type; expected a list"),
    ("unknown key beside secrets", [{"type": "webhook", "url": f"https://hooks.example.com/{SECRET_TAIL}",
                                     "headers": {"Authorization": f"Bearer {HEADER_SECRET}"}, "retry": 1}], {},
     "notifications[0].retry: unknown key"),
    ("endpoint not http", [], {"aws": {"endpoint_url": f"ftp://user:{PASSWORD_SECRET}@h:21/{SECRET_TAIL}"}},
     "aws.endpoint_url: not an http(s) URL; got 'ftp://***@h:21/***'"),
]


@pytest.mark.parametrize(("notifications", "extra", "expected"), [case[1:] for case in INVALID],
                         ids=[case[0] for case in INVALID])
@pytest.mark.parametrize("command", ["check-config", "run"])
def test_invalid_configs_name_the_key_but_never_echo_a_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, notifications: Any, extra: dict[str, Any],
    expected: str,
) -> None:
    config = str(config_with(tmp_path, notifications, **extra))
    argv = ["check-config", config] if command == "check-config" else ["run", "--config", config]
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == ""
    assert_no_secret(command, err)
    assert expected in err, err


def test_credentials_twice_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = config_with(tmp_path, [{"type": "webhook", "url": "https://u:p@hooks.example.com/x",
                                     "headers": {"Authorization": "Bearer t"}}])
    _, _, err = cli(capsys, "check-config", str(config))
    assert "keep one: remove user:password@ from url, or remove the Authorization header" in err
    assert "u:p" not in err and "Bearer t" not in err


# --- the daemon as a process -------------------------------------------------------------------------------


def database_files(journal: Path) -> dict[str, str]:
    """The raw bytes (as text) of the journal database and its WAL/SHM files."""
    return {path.name: path.read_bytes().decode("utf-8", errors="replace")
            for path in journal.parent.glob(f"{journal.name}*")}


async def wait_for(predicate: Any, within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        await anyio.sleep(0.1)
    return value


@dataclass(frozen=True)
class Delivered:
    """What :func:`deliver_to_failing_webhooks` left: the daemon's exit code and log, its ``/metrics`` text, how often
    each webhook was hit and on which port, and the journal."""

    exit_code: int
    log: str
    metrics: str
    hits: dict[str, int]
    port: int
    journal: Path


def deliver_to_failing_webhooks(directory: Path) -> Delivered:
    """The daemon as a process, notifying of a violation through two webhooks that never succeed, until four
    notifications have failed. It waits for real time (the daemon's start, the retries' backoff), so it plays in the
    background of the run (tests/background.py), with an emulator of its own in a thread of this process; the daemon
    is a copy of the zygote the background scenarios share."""
    env = daemon_environment()
    with background_emulator(directory) as emulator:
        athena = athena_with_workgroups(emulator)
        session_id = start_session(athena, "etl-a")
        wait_idle(athena, session_id)
        start_calculation(athena, session_id, "# sim: runtime=60s dpus=2")
        with ZYGOTES.use(env, directory / "zygote.log") as zygote:
            return anyio.run(_deliver, emulator, directory, env, zygote)


async def _deliver(emulator: EmulatorHandle, directory: Path, env: dict[str, str], zygote: Zygote) -> Delivered:
    async with serving_hooks() as hooks:
        journal = directory / "journal.db"
        config = write_config(directory / "config.yaml", base_config(
            emulator, journal, notifications=hooks.channels(), log_level="debug"))
        log = directory / "daemon.log"
        daemon = spawn_daemon(config, log, env, zygote=zygote)
        try:
            # violation and stop_requested, to both channels: four messages out of attempts
            await wait_for(lambda: len([e for e in log_events(log) if e["event"] == "notification.failed"]) >= 4)
            started = next(e for e in log_events(log) if e["event"] == "supervisor.started")
            async with aiohttp.ClientSession() as http, http.get(f"{started['http']}/metrics") as response:
                metrics = await response.text()
        finally:
            daemon.send_signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(lambda: daemon.wait(20))
        return Delivered(code, log.read_text(), metrics, dict(hooks.hits), hooks.port, journal)


@pytest.mark.slow
@in_background(deliver_to_failing_webhooks)
def test_a_failing_webhook_leaks_no_secret_into_logs_journal_or_metrics(
    background: Background, capsys: pytest.CaptureFixture[str]
) -> None:
    run = background.result(deliver_to_failing_webhooks)
    assert run.exit_code == 0

    assert_no_secret("the daemon's log", run.log)
    events = parse_log(run.log)
    names = {event["event"] for event in events}
    assert {"notification.retrying", "notification.failed"} <= names
    masked = f"127.0.0.1:{run.port}/***"  # with or without ***@, as aiohttp keeps the userinfo or not
    loop_errors = [e["error"] for e in events if e["event"] == "notification.failed" and e["channel"] == "webhook-0"]
    assert loop_errors and all("TooManyRedirects" in error and masked in error for error in loop_errors)
    assert {e["error"] for e in events if e["event"] == "notification.failed" and e["channel"] == "webhook-1"} == {
        "HTTP 500"}
    assert any(masked in e["error"] for e in events if e["event"] == "notification.retrying")
    assert run.hits["loop"] > 3 and run.hits["fail"] == 4

    assert_no_secret("/metrics", run.metrics)
    assert 'channel="webhook-0",outcome="failed"' in run.metrics and "://" not in run.metrics

    code, out, err = cli(capsys, "journal", "--path", str(run.journal), "--json", "--limit", "1000")
    assert code == 0 and err == ""
    assert_no_secret("the journal", out)
    failures = [json.loads(line) for line in out.splitlines() if '"notification.failed"' in line]
    assert len(failures) == 4 and any(masked in json.dumps(failure) for failure in failures)
    assert database_files(run.journal), "the journal database exists"
    for name, raw in database_files(run.journal).items():
        assert_no_secret(name, raw)
