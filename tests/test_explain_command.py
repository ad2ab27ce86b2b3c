"""``explain`` tells the truth about targets that ended and sessions that are busy: the command's own code
(:func:`~supervisor.commands.explain.explain_target` and its rendering, as ``athena-supervisor explain`` runs them)
against the emulator, on the virtual clock, so every time left is asserted exactly."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from supervisor.clock import ManualClock
from supervisor.commands.budgets import open_storage
from supervisor.commands.explain import explain_target, render
from supervisor.config import Settings, parse_settings
from tests.daemon_fixtures import daemon_config
from tests.virtual_fixtures import VirtualWorld

POLICIES = [{"name": "etl-limits", "workgroups": ["etl-*"], "calculation": {"max_runtime": "8s", "max_queued": "1m"},
             "session": {"max_idle": "10m", "max_age": "1h"}}]


@pytest.fixture
def settings(virtual_world: VirtualWorld, tmp_path: Path) -> Settings:
    return parse_settings(daemon_config(virtual_world.emulator.endpoint_url, tmp_path / "j.db", policies=POLICIES),
                          environ={})


async def explain(settings: Settings, clock: ManualClock, **target: str) -> tuple[dict[str, Any], str]:
    """The report (``--json``) and the text the command prints for ``target`` at the clock's instant."""
    storage = open_storage(settings)
    try:
        report = await explain_target(settings, storage, clock=clock, **target)
    finally:
        storage.close_now()
    return report, "\n".join(render(report))


@pytest.mark.parametrize(("pragma", "state"), [("outcome=failed", "FAILED"), ("outcome=completed", "COMPLETED")])
async def test_a_finished_calculation_is_said_to_have_ended_with_no_time_left(
    virtual_world: VirtualWorld, settings: Settings, pragma: str, state: str
) -> None:
    world = virtual_world
    session_id = await world.start_session("etl-a")
    calculation_id = await world.start_calculation(session_id, f"# sim: runtime=200ms {pragma}")
    await world.vt.run_for(30)  # it ended 29.8 s ago: nothing of it counts on
    assert await world.calculation_state(calculation_id) == state
    report, text = await explain(settings, world.clock, calculation_id=calculation_id)
    ended_at = world.now - timedelta(seconds=30) + timedelta(milliseconds=200)
    assert report["target"]["ended"] == f"{state} at {ended_at.isoformat()}, after 0.2 s"
    by_rule = {limit["rule"]: limit for limit in report["limits"]}
    assert by_rule["max_runtime"] == {"rule": "max_runtime", "unit": "seconds", "limit": 8.0, "observed": 0.2,
                                      "left_seconds": None, "status": "ended",
                                      "note": f"does not apply: the calculation ended ({state})"}
    assert by_rule["max_queued"]["status"] == "ended" and by_rule["max_queued"]["observed"] is None
    assert report["decision"] == (f"nothing: the calculation ended ({report['target']['ended']}); no limit applies "
                                  "to it any more")
    assert "left" not in text and "None" not in text
    assert f"  max_runtime    0.2 / 8 seconds  does not apply: the calculation ended ({state})" in text.splitlines()


async def test_a_busy_session_is_told_its_idle_limit_applies_once_its_calculation_ends(
    virtual_world: VirtualWorld, settings: Settings
) -> None:
    world = virtual_world
    session_id = await world.start_session("etl-a")
    await world.vt.run_for(7)
    await world.start_calculation(session_id, "# sim: runtime=60s")
    await world.vt.run_for(5)
    report, text = await explain(settings, world.clock, session_id=session_id)
    assert report["target"]["state"] == "BUSY" and report["target"]["ended"] is None
    by_rule = {limit["rule"]: limit for limit in report["limits"]}
    assert by_rule["max_age"]["status"] == "counting" and by_rule["max_age"]["left_seconds"] == 3600 - 12
    assert by_rule["max_idle"] == {
        "rule": "max_idle", "unit": "seconds", "limit": 600.0, "observed": None, "left_seconds": None,
        "status": "not_idle",
        "note": "applies once the session is idle: idle time starts when its calculations end (BUSY)"}
    assert report["decision"].startswith("nothing yet; next limit crossing at ")
    assert report["decision"].endswith("; max_idle applies once its calculations end (now BUSY)")
    assert "can be crossed any more" not in text
    assert "  max_idle       - / 600 seconds  applies once the session is idle" in text


async def test_a_running_calculation_no_longer_counts_its_queue_limit(
    virtual_world: VirtualWorld, settings: Settings
) -> None:
    world = virtual_world
    session_id = await world.start_session("etl-a")
    calculation_id = await world.start_calculation(session_id, "# sim: queue=2s runtime=60s")
    await world.vt.run_for(2 + 3)  # queued for 2 s, running for 3
    assert await world.calculation_state(calculation_id) == "RUNNING"
    report, _ = await explain(settings, world.clock, calculation_id=calculation_id)
    by_rule = {limit["rule"]: limit for limit in report["limits"]}
    # max_runtime counts from SubmissionDateTime, as max_queued does: its 2 s in the queue are runtime too
    assert by_rule["max_runtime"]["status"] == "counting" and by_rule["max_runtime"]["left_seconds"] == 8 - 5
    assert by_rule["max_queued"]["status"] == "not_waiting"
    assert report["decision"].startswith("nothing yet; next limit crossing at ")
