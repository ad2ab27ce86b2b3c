"""The throughput benchmark still runs (tiny sizes; the real numbers are in docs/emulator.md)."""

from __future__ import annotations

import json

import pytest


def test_throughput_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.emulator_throughput import main

    # Load for 0.2 s: some 400 requests on a quiet machine, dozens of each of the four operations, enough to see every
    # one answered; each further tenth of a second costs ~0.2 s of CPU (the command: 2.8 s at 0.5 s, 2.2 s at 0.2 s).
    # The bench's own side runs in this process (a fresh interpreter importing it cost ~0.6 s of CPU), unpinned: it
    # would pin the process it runs in to a core. Its emulator is a process of its own, as always.
    assert main(["--sessions", "40", "--workgroups", "2", "--duration", "0.2", "--concurrency", "4", "--no-pin"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sessions"] == 40 and report["calculations"] == 80
    assert report["requests"] > 0
    assert all(":" not in key for key in report["by_operation"])  # every call answered 200
