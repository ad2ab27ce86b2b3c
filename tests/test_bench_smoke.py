"""The enforcement benchmark still runs end to end (``--quick --skip-naive``: tiny sizes, the supervisor side
only, no timing assertions; the real figures, and the naive poller's, are in bench/README.md).

It runs in the background of the suite (tests/background.py), for 25 s rather than ``--quick``'s 15: crossings
come from 10 s on, so a daemon slow to start on a loaded machine still sees them, at no cost in wall time. It runs
through the command's ``main`` in this process (its report and progress lines in strings, not on this process's
stdout and stderr), its emulator and daemon copies of the zygote the other background scenarios share: three fresh
interpreters fewer (the bench's, the emulator's, the daemon's; ~1.3 s of CPU each). So the daemon's CPU seconds and
peak RSS this run reports are a copy's (see bench/enforcement.py's ``main``), which no assertion here compares."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from tests.background import ZYGOTES, Background, in_background

pytestmark = pytest.mark.slow


def enforcement_bench_quick(directory: Path) -> dict[str, Any]:
    from bench.enforcement import main  # only in the process that plays the scenario

    out = directory / "results.json"
    report, progress = io.StringIO(), io.StringIO()
    code = main(["--quick", "--duration", "25", "--skip-naive", "--keep", str(directory / "keep"), "--out", str(out)],
                out=report, progress=progress, zygotes=ZYGOTES)
    assert code == 0, report.getvalue() + progress.getvalue()
    result: dict[str, Any] = json.loads(out.read_text())
    return result


@in_background(enforcement_bench_quick)
def test_enforcement_bench_quick(background: Background) -> None:
    result = background.result(enforcement_bench_quick)
    assert set(result) >= {"parameters", "supervisor", "targets"}
    run = result["supervisor"]
    assert run["exit_code"] == 0, run["log"]
    assert run["api_calls"] > 0 and run["cpu_seconds"] > 0 and run["peak_rss_mib"] > 0
    assert run["due_actions"] > 0
    for key in ("lag_seconds", "censored_lag_seconds", "missed", "wrongful", "api_calls_by_operation",
                "first_full_sweep_seconds", "steady_core_percent"):
        assert key in run
