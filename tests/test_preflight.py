"""``athena-supervisor preflight`` through the real CLI against the emulator (a thread; the command calls AWS
on the system clock): every line, and exit 0 only when no check failed."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from athena_spark_emulator.testing import EmulatorHandle
from supervisor.cli import main
from supervisor.config import load_settings
from supervisor.metrics import sum_samples
from supervisor.preflight import PREFLIGHT_ATTEMPTS, Preflight
from tests.daemon_fixtures import SPARK_ENGINE

ACCOUNT = "123456789012"


@pytest.fixture
def athena(emulator: EmulatorHandle) -> Any:
    client = emulator.boto3_client()
    for name in ("etl-a", "etl-b", "etl-exempt", "adhoc"):
        client.create_work_group(Name=name, Configuration={"EngineVersion": SPARK_ENGINE})
    client.tag_resource(ResourceARN=f"arn:aws:athena:us-east-1:{ACCOUNT}:workgroup/etl-exempt",
                        Tags=[{"Key": "athena-supervisor/exempt", "Value": "true"}])
    return client


def config(tmp_path: Path, emulator: EmulatorHandle | None, **sections: Any) -> str:
    data: dict[str, Any] = {"aws": {"region": "us-east-1", "connect_timeout": "1s", "read_timeout": "2s"},
                            "workgroups": ["etl-*"], "journal": {"path": str(tmp_path / "journal.db")},
                            "http": {"port": 0}, "policies": [{"name": "p", "calculation": {"max_runtime": "1h"}}]}
    if emulator is not None:
        data["aws"]["endpoint_url"] = emulator.endpoint_url
    for key, value in sections.items():
        data[key] = {**data[key], **value} if isinstance(data.get(key), dict) else value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def attempts(path: str, **labels: str) -> float:
    """The AWS call attempts (with ``labels``, e.g. ``operation``) the checks of the config at ``path`` make: the
    checks run again, here, to read the count from their metrics."""

    async def count() -> float:
        checker = Preflight(load_settings(path, environ={}))
        _ = [check async for check in checker.run()]
        return sum_samples(checker.metrics.registry, "athena_supervisor_aws_api_calls_total", **labels)

    return anyio.run(count)


def preflight(capsys: pytest.CaptureFixture[str], path: str, *extra: str) -> tuple[int, dict[str, tuple[str, str]],
                                                                                  str]:
    code = main(["preflight", "--config", path, *extra])
    out = capsys.readouterr().out
    lines = out.splitlines()
    lines = lines[next(index for index, line in enumerate(lines) if line.split() == ["CHECK", "RESULT", "DETAIL"]):]
    rows = {}
    for line in lines[1:lines.index("")]:
        name, rest = line.split("  ", 1)
        result, _, detail = rest.strip().partition("  ")
        rows[name.strip()] = (result, detail.strip())
    return code, rows, lines[-1]


def test_a_sound_deployment_passes_every_check(emulator: EmulatorHandle, athena: Any, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, rows, last = preflight(capsys, config(tmp_path, emulator))
    assert code == 0 and last == f"all {len(rows)} checks passed (some skipped: see above)"
    assert rows["region"] == ("ok", "us-east-1")
    assert rows["credentials"] == ("ok", f"arn:aws:iam::{ACCOUNT}:user/athena-emulator (account {ACCOUNT})")
    assert rows["ListWorkGroups"] == ("ok", "5 workgroups, 4 Spark, 3 in scope: etl-a, etl-b, etl-exempt")
    assert rows["tags of etl-a"] == ("ok", "readable") and rows["sessions of etl-b"] == ("ok", "ListSessions answered")
    assert rows["tags of etl-exempt"] == ("ok", "tagged athena-supervisor/exempt=true: exempt, not watched")
    assert rows["destructive calls"][0] == "skipped" and "deploy/iam/policy.json" in rows["destructive calls"][1]
    assert rows["journal"] == ("ok", f"{tmp_path / 'journal.db'}: opens, takes a write, known schema (created at the "
                                     "first start)")
    assert rows["http address"][0] == "ok"
    # Each read the daemon needs, once: one ListWorkGroups, and per watched workgroup its tags and sessions.
    operations = [call["operation"] for call in emulator.calls() if call["operation"] not in (
        "CreateWorkGroup", "TagResource", None)]
    assert sorted(operations) == sorted(["GetCallerIdentity", "GetCallerIdentity", "ListWorkGroups",
                                         *["ListTagsForResource"] * 3, *["ListSessions"] * 2])
    assert "sessions of etl-exempt" not in rows, "the daemon lists nothing in an exempt workgroup"


def test_a_region_typo_is_named_at_once_and_nothing_is_called(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = config(tmp_path, None, aws={"region": "eu-wst-1"})
    code, rows, last = preflight(capsys, path)
    assert attempts(path) == 0, "named before any call, so at once"
    assert code == 1 and last.startswith("1 of ") and last.endswith("checks failed: region")
    assert rows["region"][0] == "failed" and "did you mean 'eu-west-1'?" in rows["region"][1]
    assert rows["AWS reads"] == ("skipped", "the region is wrong: nothing was called")


def test_missing_permissions_are_named_per_read(emulator: EmulatorHandle, athena: Any, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    emulator.add_error("AccessDeniedException", operation="ListTagsForResource")
    emulator.add_error("AccessDeniedException", operation="ListSessions", workgroup="etl-b")
    code, rows, last = preflight(capsys, config(tmp_path, emulator))
    assert code == 1
    assert rows["tags of etl-a"][0] == "failed"
    assert rows["tags of etl-a"][1].startswith("ListTagsForResource: AccessDeniedException: ")
    assert "not enforced (tags_unknown)" in rows["tags of etl-a"][1]
    assert rows["sessions of etl-a"] == ("ok", "ListSessions answered")
    assert rows["sessions of etl-b"][0] == "failed" and "python -m supervisor.iam --config FILE" in rows[
        "sessions of etl-b"][1]
    assert "tags of etl-a" in last and "sessions of etl-b" in last


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def test_an_unreachable_endpoint_a_missing_journal_directory_and_a_busy_port_fail(
    tmp_path: Path, busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, None, aws={"endpoint_url": "http://127.0.0.1:9"},
                  journal={"path": str(tmp_path / "missing" / "j.db")}, http={"port": busy_port})
    code, rows, _ = preflight(capsys, path)
    assert attempts(path) == attempts(path, operation="GetCallerIdentity") == PREFLIGHT_ATTEMPTS, (
        "two attempts, not the daemon's retries")
    assert code == 1
    assert rows["credentials"][0] == "failed" and rows["credentials"][1].startswith("GetCallerIdentity: ")
    assert rows["journal"][0] == "failed" and "does not exist; create it" in rows["journal"][1]
    assert rows["http address"][0] == "failed" and "is already in use" in rows["http address"][1]
    assert "ListWorkGroups" not in rows


class _Hooks(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append(body)
        self.send_response(200 if self.path == "/ok" else 500)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def hooks() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hooks.received = []
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_notification_channels_get_a_test_event_only_when_asked(emulator: EmulatorHandle, athena: Any,
                                                                tmp_path: Path, hooks: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    channels = [{"type": "webhook", "url": f"{hooks}/ok", "events": ["escalation_failed"]},
                {"type": "webhook", "url": f"{hooks}/broken", "retries": 0}]
    path = config(tmp_path, emulator, notifications=channels)
    code, rows, _ = preflight(capsys, path)
    assert code == 0 and _Hooks.received == []
    assert rows["notification webhook-0"][0] == "skipped" and "--notify-test" in rows["notification webhook-0"][1]
    code, rows, last = preflight(capsys, path, "--notify-test")
    assert code == 1 and last.endswith("checks failed: notification webhook-1")
    assert rows["notification webhook-0"] == ("ok", "a test event was delivered")
    assert rows["notification webhook-1"] == ("failed", "HTTP 500")
    assert [body["event"] for body in _Hooks.received] == ["test", "test"]
    assert _Hooks.received[0]["text"].startswith("athena-supervisor preflight: a test event; nothing was done")


def test_a_member_role_that_cannot_be_assumed_fails_its_shard(emulator: EmulatorHandle, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    role = "arn:aws:iam::222222222222:role/athena-supervisor"
    emulator.set_role(role, deny=True)
    path = config(tmp_path, emulator, accounts=[{"account_id": "222222222222", "role_arn": role}])
    code, rows, _ = preflight(capsys, path)
    assert code == 1
    (name,) = [name for name in rows if name.startswith("role")]
    assert name == "role [222222222222/us-east-1]" and rows[name][0] == "failed"
    assert rows[name][1].startswith(f"{role}: AssumeRole: AccessDenied")
