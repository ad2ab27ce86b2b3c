"""The enforcement benchmark still runs end to end (``--quick --skip-naive``: tiny sizes, the supervisor side
only, no timing assertions; the real figures, and the naive poller's, are in bench/README.md).

It runs in the background of the suite (tests/background.py), for 25 s rather than ``--quick``'s 15: crossings
come from 10 s on, so a daemon slow to start on a loaded machine still sees them, at no cost in wall time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.background import Background, in_background

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def enforcement_bench_quick(directory: Path) -> dict[str, Any]:
    out = directory / "results.json"
    subprocess.run(
        [sys.executable, "bench/enforcement.py", "--quick", "--duration", "25", "--skip-naive", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=90, check=True,
    )
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
