"""The throughput benchmark still runs (tiny sizes; the real numbers are in docs/emulator.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_throughput_bench_smoke() -> None:
    result = subprocess.run(
        [sys.executable, "bench/emulator_throughput.py", "--sessions", "40", "--workgroups", "2",
         "--duration", "0.5", "--concurrency", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )
    report = json.loads(result.stdout)
    assert report["sessions"] == 40 and report["calculations"] == 80
    assert report["requests"] > 0
    assert all(":" not in key for key in report["by_operation"])  # every call answered 200
