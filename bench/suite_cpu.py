"""Where the test suite's CPU goes: every test's CPU seconds, summed by file.

The suite is CPU-bound on a 2-core machine (issue 9: its wall time is about its CPU divided by two), so the way to
a shorter run is less CPU, and the way to find it is this table. The tests run in one process (``-n0``), each
measured from its setup to its teardown: the CPU of this process (every thread: the daemon, the emulator and moto
serve in the test's own process) plus that of the child processes it waited for (``check-config``, promtool,
real daemons). Collection, the process's start and the background scenarios' own processes are not in it; the
``total`` line says how much of the run they left out.

Usage:
    python bench/suite_cpu.py [--top N] [--out FILE.json] [-- PYTEST ARGS...]

The default selection is the foreground (``-m "not background and not fleet_processes"``: the background
scenarios mostly wait for real time, and their processes are not children this process waits for); pass pytest
arguments after ``--`` to measure something else, e.g. ``-- tests/test_fleet_cluster_e2e.py``. Measure on a quiet
machine and compare runs of the same selection: a test that runs first in a process also pays for imports and
warm-ups (moto's ~1 s) that later ones do not.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOREGROUND = ["-m", "not background and not fleet_processes"]
OUT_VARIABLE = "SUITE_CPU_OUT"


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Recorder:
    """The pytest plugin: one row per test, written as JSON lines to ``$SUITE_CPU_OUT`` when the run ends."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.rows: list[dict[str, Any]] = []

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, None, None]:
        cpu, children, wall = time.process_time(), _children_seconds(), time.monotonic()
        yield
        self.rows.append({"test": item.nodeid, "cpu": time.process_time() - cpu,
                          "children": _children_seconds() - children, "wall": time.monotonic() - wall})

    def pytest_unconfigure(self) -> None:
        self.out.write_text("".join(json.dumps(row) + "\n" for row in self.rows), encoding="utf-8")


def pytest_configure(config: pytest.Config) -> None:
    """Registers the recorder in the pytest run this module is loaded into (``-p bench.suite_cpu``)."""
    out = os.environ.get(OUT_VARIABLE)
    if out:
        config.pluginmanager.register(Recorder(Path(out)), "suite-cpu-recorder")


def by_file(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows summed by test file, the dearest first."""
    files: dict[str, dict[str, Any]] = defaultdict(lambda: {"tests": 0, "cpu": 0.0, "children": 0.0, "wall": 0.0})
    for row in rows:
        total = files[row["test"].split("::")[0]]
        total["tests"] += 1
        for key in ("cpu", "children", "wall"):
            total[key] += row[key]
    return sorted(({"file": name, **total} for name, total in files.items()),
                  key=lambda total: -(total["cpu"] + total["children"]))


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    ours, pytest_args = (arguments[:arguments.index("--")], arguments[arguments.index("--") + 1:]) \
        if "--" in arguments else (arguments, FOREGROUND)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--top", type=int, default=25, help="files and tests to print (default 25)")
    parser.add_argument("--out", type=Path, help="write every test's figures and the files' sums here (JSON)")
    options = parser.parse_args(ours)
    with tempfile.TemporaryDirectory() as scratch:
        rows_path = Path(scratch) / "rows.jsonl"
        before, started = _children_seconds(), time.monotonic()
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n0", "-p", "bench.suite_cpu", *pytest_args],
                             cwd=ROOT, env={**os.environ, OUT_VARIABLE: str(rows_path)}, check=False)
        process_cpu, wall = _children_seconds() - before, time.monotonic() - started
        rows = [json.loads(line) for line in rows_path.read_text(encoding="utf-8").splitlines()] \
            if rows_path.exists() else []
    files = by_file(rows)
    measured = sum(row["cpu"] + row["children"] for row in rows)
    print(f"\n{'CPU s':>8} {'of it children':>14} {'tests':>6}  file")
    for total in files[:options.top]:
        print(f"{total['cpu'] + total['children']:8.2f} {total['children']:14.2f} {total['tests']:6d}  {total['file']}")
    print(f"\n{'CPU s':>8}  test")
    for row in sorted(rows, key=lambda row: -(row["cpu"] + row["children"]))[:options.top]:
        print(f"{row['cpu'] + row['children']:8.2f}  {row['test']}")
    print(f"\ntotal: {measured:.1f} s of CPU in {len(rows)} tests; the pytest process and its children "
          f"{process_cpu:.1f} s ({process_cpu - measured:.1f} s outside the tests: start, collection); "
          f"{wall:.1f} s wall")
    if options.out:
        rounded = [{key: round(value, 4) if isinstance(value, float) else value for key, value in entry.items()}
                   for entry in (*files, *rows)]
        options.out.write_text(json.dumps({"pytest_args": pytest_args, "exit_code": run.returncode,
                                           "process_cpu_seconds": round(process_cpu, 2), "wall_seconds": round(wall, 2),
                                           "files": rounded[:len(files)], "tests": rounded[len(files):]}) + "\n",
                               encoding="utf-8")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
