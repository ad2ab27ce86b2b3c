"""The fleet bench still runs end to end (``bench/fleet.py --quick --events``: 2 replicas over 2 tiny
account-regions, one killed with SIGKILL; the violators announced by their CloudTrail events on moto's SQS, as the
full-size run does). It checks that every step of a run works and every figure is there, and that the judging finds
nothing wrong; timings are never asserted here (the figures of the full run are in bench/README.md, and the fleet's
behaviour is judged by tests/test_fleet_processes.py, on the same harness).

It mostly waits (real time, ~25 s), so it plays in the background of the run (tests/background.py), through the
command's ``main`` in this process (its report and progress lines in strings, not on this process's stdout and
stderr), so that its processes are copies of the zygote the other background scenarios share: a fresh interpreter
importing the bench (~0.7 s of CPU) and a zygote of its own (~0.75 s) fewer."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from tests.background import ZYGOTES, Background, in_background

pytestmark = pytest.mark.slow


def fleet_bench_quick(directory: Path) -> dict[str, Any]:
    from bench.fleet import main  # only in the process that plays the scenario

    out = directory / "fleet.json"
    report, progress = io.StringIO(), io.StringIO()
    code = main(["--quick", "--events", "--announced-limit", "3", "--event-visibility", "5",
                 "--keep", str(directory / "keep"), "--out", str(out)], out=report, progress=progress, zygotes=ZYGOTES)
    assert code == 0, report.getvalue() + progress.getvalue()
    result: dict[str, Any] = json.loads(out.read_text())
    result["stdout"] = report.getvalue()
    return result


@in_background(fleet_bench_quick)
def test_fleet_bench_quick(background: Background) -> None:
    summary = background.result(fleet_bench_quick)
    [result] = summary["results"]
    assert result["replicas"] == 2
    assert result["counts"] == {"missed": 0, "wrongful": 0, "duplicate": 0}, result
    assert result["due"] == result["taken"] > 0
    takeover = result["takeover"]
    assert takeover["killed"] in ("r1", "r2") and takeover["shards"]
    assert all(seconds is not None for seconds in takeover["first_action_seconds"].values()), takeover
    for key in ("per_action", "at_rest_per_second", "steady_per_second", "server_ms_per_request"):
        assert result["dynamodb"][key], key
    assert result["cpu"]["steady_percent_mean"] > 0
    assert all(usage["peak_rss_mib"] > 0 for usage in result["replica_processes"].values())
    assert {usage["exit_code"] for usage in result["replica_processes"].values()} == {0, -9}
    assert set(result["targets"]) == {"lag_p99_le_1s", "no_missed_wrongful_duplicate", "takeover_le_lease_plus_2s",
                                      "cpu_per_replica_below_smaller_fleets"}
    assert "takeover after kill -9 (s)" in summary["stdout"]
    # Every violator was started by a user's call and its event published; the survivor applied its shard's.
    events = result["events"]
    assert events["announce_errors"] == []
    assert events["emulator"]["published"] == events["emulator"]["events"] > 0, events
    assert events["replicas"]["applied"] > 0, events
    assert "events applied / handed back" in summary["stdout"]
