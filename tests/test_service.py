"""The wiring's rule for root tasks: a crash is logged with the task's name and stops the process."""

from __future__ import annotations

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from supervisor.service import TaskCrashed, _supervised


async def test_a_crashed_root_task_is_logged_with_its_name_and_stops_everything() -> None:
    async def broken(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await anyio.lowlevel.checkpoint()
        raise RuntimeError("boom")

    stopped = anyio.Event()

    async def healthy(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            stopped.set()

    with capture_logs() as logs, pytest.raises(BaseExceptionGroup) as raised:
        async with anyio.create_task_group() as task_group:
            await task_group.start(_supervised, "discovery", healthy)
            await task_group.start(_supervised, "checks", broken)
    crashed = raised.value.subgroup(TaskCrashed)
    assert crashed is not None and [error.name for error in crashed.exceptions] == ["checks"]  # type: ignore[attr-defined]
    assert stopped.is_set(), "the other tasks are cancelled"
    [entry] = [entry for entry in logs if entry["event"] == "supervisor.task_crashed"]
    assert entry["task"] == "checks" and "boom" in entry["error"]
