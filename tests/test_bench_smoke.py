"""The enforcement benchmark still runs end to end (``--quick --skip-naive``: tiny sizes, the supervisor side
only, no timing assertions; the real figures, and the naive poller's, are in bench/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_enforcement_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    subprocess.run(
        [sys.executable, "bench/enforcement.py", "--quick", "--skip-naive", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=90, check=True,
    )
    result = json.loads(out.read_text())
    assert set(result) >= {"parameters", "supervisor", "targets"}
    run = result["supervisor"]
    assert run["exit_code"] == 0, run["log"]
    assert run["api_calls"] > 0 and run["cpu_seconds"] > 0 and run["peak_rss_mib"] > 0
    assert run["due_actions"] > 0
    for key in ("lag_seconds", "censored_lag_seconds", "missed", "wrongful", "api_calls_by_operation",
                "first_full_sweep_seconds", "steady_core_percent"):
        assert key in run
