"""deploy/systemd/athena-supervisor.service: the hardening directives, the ExecStart command line, and
(where the machine has systemd-analyze) ``systemd-analyze verify`` and its offline security score."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "deploy" / "systemd" / "athena-supervisor.service"
CONFIG_PATH = "/etc/athena-supervisor/config.yaml"
STATE_DIR = "/var/lib/athena-supervisor"
MAX_EXPOSURE = 2.0  # systemd-analyze security: 0 (locked down) .. 10 (exposed); "OK" is below 5

Unit = dict[str, list[tuple[str, str]]]


def parse_unit(text: str) -> Unit:
    """Sections of (key, value) pairs in file order; keys may repeat, as systemd allows."""
    sections: Unit = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith(("#", ";"))):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"directive outside a section: {line}"
        key, equals, value = line.partition("=")
        assert equals, f"not a key=value line: {line}"
        current.append((key.strip(), value.strip()))
    return sections


@pytest.fixture(scope="module")
def unit() -> Unit:
    return parse_unit(UNIT.read_text(encoding="utf-8"))


def values(unit: Unit, section: str, key: str) -> list[str]:
    return [value for name, value in unit[section] if name == key]


def value(unit: Unit, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key}: expected exactly one, got {found}"
    return found[0]


def test_exec_start_runs_the_daemon_on_the_config(unit: Unit) -> None:
    argv = shlex.split(value(unit, "Service", "ExecStart"))
    assert argv[0].startswith("/") and Path(argv[0]).name == "athena-supervisor"
    assert argv[1:] == ["run", "--config", CONFIG_PATH]


def test_stops_gracefully_and_restarts_on_failure(unit: Unit) -> None:
    assert value(unit, "Service", "KillSignal") == "SIGTERM"
    assert re.fullmatch(r"\d+s", value(unit, "Service", "TimeoutStopSec"))
    assert int(value(unit, "Service", "TimeoutStopSec")[:-1]) >= 30
    assert value(unit, "Service", "Restart") == "on-failure"
    assert values(unit, "Install", "WantedBy") == ["multi-user.target"]


def test_runs_as_an_unprivileged_user_with_its_own_state_directory(unit: Unit) -> None:
    dynamic, user = values(unit, "Service", "DynamicUser"), values(unit, "Service", "User")
    assert dynamic == ["yes"] or user not in ([], [""], ["root"], ["0"])
    assert value(unit, "Service", "StateDirectory") == Path(STATE_DIR).name
    assert value(unit, "Service", "CapabilityBoundingSet") == ""
    assert value(unit, "Service", "NoNewPrivileges") == "yes"


@pytest.mark.parametrize(("key", "expected"), [
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectControlGroups", "yes"),
    ("RestrictNamespaces", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("LockPersonality", "yes"),
    ("SystemCallArchitectures", "native"),
])
def test_hardening_directive(unit: Unit, key: str, expected: str) -> None:
    assert value(unit, "Service", key) == expected


def test_network_and_system_calls_are_restricted(unit: Unit) -> None:
    families = set(value(unit, "Service", "RestrictAddressFamilies").split())
    assert {"AF_INET", "AF_INET6"} <= families <= {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"}
    filters = values(unit, "Service", "SystemCallFilter")
    assert filters[0] == "@system-service"
    assert all(later.startswith("~") for later in filters[1:]), "later filters may only deny more"


def test_memory_is_bounded(unit: Unit) -> None:
    assert re.fullmatch(r"\d+[KMG]", value(unit, "Service", "MemoryMax"))


def test_config_and_state_paths_agree_with_the_image(unit: Unit) -> None:
    image_config = yaml.safe_load((REPO / "deploy" / "docker" / "config.yaml").read_text(encoding="utf-8"))
    assert image_config["journal"]["path"].startswith(STATE_DIR + "/")
    assert value(unit, "Service", "ConfigurationDirectory") == Path(CONFIG_PATH).parent.name


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed (optional: install systemd to run this check)")
    return path


def runnable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointed at an existing binary: verify checks that it is executable."""
    text = UNIT.read_text(encoding="utf-8")
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={sys.executable}", text, flags=re.MULTILINE)
    copy = tmp_path / UNIT.name
    copy.write_text(text, encoding="utf-8")
    return copy


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    result = subprocess.run([systemd_analyze(), "verify", str(runnable_copy(tmp_path))],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "athena-supervisor.service" not in result.stderr, result.stderr  # warnings name the unit


def test_systemd_analyze_security_exposure(tmp_path: Path) -> None:
    tool = systemd_analyze()
    result = subprocess.run([tool, "security", "--offline=yes", "--no-pager", str(runnable_copy(tmp_path))],
                            capture_output=True, text=True, timeout=60, check=False)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    if match is None:
        pytest.skip(f"this systemd-analyze cannot score units offline: {result.stderr.strip()[:200]}")
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_reload_sends_sighup(unit: Unit) -> None:
    assert shlex.split(value(unit, "Service", "ExecReload")) == ["/bin/kill", "-HUP", "$MAINPID"]
