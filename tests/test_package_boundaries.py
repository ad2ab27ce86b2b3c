"""The daemon and the emulator are separate packages: the daemon never loads the emulator (or pytest), the
emulator never imports ``supervisor``, and an installation without the emulator explains itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from athena_spark_emulator.durations import parse_duration as emulator_duration
from supervisor.durations import parse_duration as config_duration

REPO = Path(__file__).resolve().parents[1]
EMULATOR = REPO / "athena_spark_emulator"

NOTHING_FROM_EMULATOR_OR_PYTEST = (
    "import sys; "
    "loaded = sorted(m for m in sys.modules if m.startswith('athena_spark_emulator') or m == 'pytest' "
    "or m.startswith('_pytest')); "
    "assert not loaded, loaded"
)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_the_daemon_does_not_load_the_emulator_and_its_commands_needing_it_explain_its_absence() -> None:
    """One interpreter for both (each costs a second of CPU in imports). First the imports: if nothing is loaded
    after every one, none of them loaded it. Then, as in the production image, the package cannot be imported
    (``sys.modules[name] = None`` blocks it; nothing of it was loaded, so this is as if it had never been there)."""
    imports = ("import supervisor.service; import supervisor.cli; supervisor.cli.build_parser(); "
               "import supervisor.commands.demo, supervisor.commands.emulator")
    absent = ("sys.modules['athena_spark_emulator'] = None; from supervisor.cli import main; "
              "codes = [main(['demo']), main(['emulator', '--port', '0'])]; print(codes)")
    result = run_python(f"{imports}; {NOTHING_FROM_EMULATOR_OR_PYTEST}; {absent}")
    assert result.stdout.strip() == "[2, 2]", result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    for command, line in zip(("demo", "emulator"), lines, strict=True):
        assert line.startswith(f"athena-supervisor {command}: the emulator package 'athena_spark_emulator' is not")
        assert "run it from a source checkout: pip install -e ." in line


def test_the_emulator_does_not_load_the_supervisor() -> None:
    code = ("import sys, athena_spark_emulator, athena_spark_emulator.testing, athena_spark_emulator.control; "
            "loaded = sorted(m for m in sys.modules if m == 'supervisor' or m.startswith('supervisor.')); "
            "assert not loaded, loaded")
    result = run_python(code)
    assert result.returncode == 0, result.stderr


def test_no_emulator_module_imports_supervisor() -> None:
    """A static check too, so a lazy import inside a function cannot slip through."""
    offenders = []
    for path in sorted(EMULATOR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders += [f"{path.name}: {name}" for name in names if name.split(".")[0] == "supervisor"]
    assert offenders == []
    assert len(list(EMULATOR.rglob("*.py"))) > 20  # the scan saw the package


@pytest.mark.parametrize("text", ["45s", "15m", "2h", "1d", "1.5s", "500ms", "1h30m", "1d2h3m4s5ms", "0.25h", "0s",
                                  " 30s "])
def test_emulator_durations_follow_the_configuration_grammar(text: str) -> None:
    assert emulator_duration(text) == pytest.approx(config_duration(text).total_seconds())


@pytest.mark.parametrize("text", ["30m1h", "1h1h", "1 h", "5x", "s", "-1s", ""])
def test_emulator_durations_reject_what_the_configuration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        config_duration(text)
    with pytest.raises(ValueError):
        emulator_duration(text)
