"""The throughput benchmark still runs (tiny sizes; the real numbers are in docs/emulator.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_throughput_bench_smoke() -> None:
    # Load for 0.2 s: some 400 requests on a quiet machine, dozens of each of the four operations, enough to see every
    # one answered; each further tenth of a second costs ~0.2 s of CPU (the command: 2.8 s at 0.5 s, 2.2 s at 0.2 s).
    result = subprocess.run(
        [sys.executable, "bench/emulator_throughput.py", "--sessions", "40", "--workgroups", "2",
         "--duration", "0.2", "--concurrency", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )
    report = json.loads(result.stdout)
    assert report["sessions"] == 40 and report["calculations"] == 80
    assert report["requests"] > 0
    assert all(":" not in key for key in report["by_operation"])  # every call answered 200
