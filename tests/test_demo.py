"""``athena-supervisor demo`` as a user runs it: a process of its own, its narration, its summary and exit status."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bench.environment import environment, urlopen
from supervisor.cli import main
from supervisor.config import load_settings
from supervisor.demo import scenario
from tests.background import ZYGOTES, Background, in_background

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
PACKAGED = REPO / "supervisor" / "resources" / "demo.yaml"
DOCUMENTED = REPO / "config" / "demo.yaml"
METRICS_LINE = re.compile(r"^\s*metrics\s+(http://127\.0\.0\.1:\d+/metrics)")


def test_documented_demo_config_is_the_packaged_one() -> None:
    assert DOCUMENTED.read_bytes() == PACKAGED.read_bytes(), (
        "config/demo.yaml must stay identical to supervisor/resources/demo.yaml (the copy `pip install .` ships)"
    )


def test_demo_config_builds_the_scripted_workload() -> None:
    story = scenario.build(load_settings(PACKAGED, environ={}))
    assert [part.expect for part in story.parts].count("exempt") == 2
    assert story.settle_within < 60


def test_a_config_without_the_limits_the_story_needs_is_refused(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    config = yaml.safe_load(PACKAGED.read_text())
    config["policies"] = [p for p in config["policies"] if p["name"] != "demo-idle"]
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["demo", "--config", str(path)]) == 2
    assert "'demo-notebooks' needs session.max_idle" in capsys.readouterr().err
    config["policies"] = [p for p in yaml.safe_load(PACKAGED.read_text())["policies"] if p["name"] != "demo-connect"]
    path.write_text(yaml.safe_dump(config))
    assert main(["demo", "--config", str(path)]) == 2
    assert "'demo-connect' (Apache Spark version 3.5) needs session.max_busy" in capsys.readouterr().err


@dataclass(frozen=True, slots=True)
class DemoRun:
    exit_code: int
    output: str
    stderr: str
    metrics_body: str  # /metrics, read while the demo ran
    seconds: float
    journal: Path


def play_demo(directory: Path) -> DemoRun:
    """``athena-supervisor demo`` in a process of its own, to the end: a copy of the zygote the background scenarios
    share (bench/zygote.py: the command's own process, its modules already imported), its stdout and stderr in two
    files, its narration read from the first as it is written."""
    env = environment({"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})
    journal = directory / "journal.db"
    out, err = directory / "demo.out", directory / "demo.err"
    with ZYGOTES.use(env, directory / "zygote.log") as zygote:
        process = zygote.spawn(["demo", "--journal", str(journal)], log=out, stderr=err, env=env)
        watchdog = threading.Timer(110, process.kill)
        watchdog.start()
        started = time.monotonic()
        metrics_body = ""
        read = 0
        try:
            while True:
                exited = process.poll() is not None  # before the read: what it wrote before it exited is read
                with out.open("rb") as stream:
                    stream.seek(read)
                    written = stream.read()
                whole = written[:written.rfind(b"\n") + 1]
                read += len(whole)
                for line in whole.decode().splitlines():
                    match = METRICS_LINE.match(line)
                    if match and not metrics_body:
                        with urlopen(match.group(1), timeout=10) as response:
                            metrics_body = response.read().decode()
                if exited:
                    break
                time.sleep(0.05)
            exit_code = process.wait()
        finally:
            watchdog.cancel()
    output = out.read_text()
    return DemoRun(exit_code, output.removesuffix("\n"), err.read_text(), metrics_body, time.monotonic() - started,
                   journal)


@in_background(play_demo)
def test_demo_plays_the_story_and_exits_0(background: Background) -> None:
    run = background.result(play_demo)
    output, journal = run.output, run.journal
    assert run.exit_code == 0, f"exit {run.exit_code}\n{output}\n{run.stderr}"
    assert run.seconds < 100
    assert "athena_supervisor_aws_api_calls_total" in run.metrics_body

    summary = output[output.index("Summary:"):]
    rows = {line.split()[2]: line for line in summary.splitlines()[2:] if line.startswith("  calc ")
            or line.startswith("  session ")}
    assert "stopped" in rows["honours-stop"] and "max_runtime" in rows["honours-stop"]
    assert "stop ignored -> session terminated" in rows["ignores-stop"]
    assert " terminated " in rows["idle"] and "max_idle" in rows["idle"]
    assert " terminated " in rows["runaway-job"] and "max_busy" in rows["runaway-job"]
    assert "stopped" in rows["expensive"] and "max_cost_usd" in rows["expensive"]
    for name in ("short", "exempt-session", "exempt-workgroup"):
        assert "left alone" in rows[name]
    assert "Demo OK" in output
    assert f"athena-supervisor journal --path {journal}" in output
    assert journal.exists()


def test_the_packaged_demo_config_is_declared_as_package_data() -> None:
    import fnmatch
    import tomllib

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["supervisor"]
    assert any(fnmatch.fnmatch("resources/demo.yaml", pattern) for pattern in patterns)
