"""Reads of the Athena Spark API, turned into snapshots. Every call goes through the gateway."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from supervisor.clock import Clock
from supervisor.gateway import Gateway, Priority
from supervisor.model import (
    ACTIVE_SESSION_STATES,
    CalculationSnapshot,
    SessionSnapshot,
    WorkgroupSnapshot,
)

PAGE_SIZE = 100
SPARK_ENGINE_MARKERS = ("spark",)


def workgroup_arn(region: str, account_id: str, name: str) -> str:
    return f"arn:aws:athena:{region}:{account_id}:workgroup/{name}"


def _is_spark(summary: dict[str, Any]) -> bool:
    engine = summary.get("EngineVersion") or {}
    names = (engine.get("EffectiveEngineVersion") or "", engine.get("SelectedEngineVersion") or "")
    return any(marker in name.lower() for name in names for marker in SPARK_ENGINE_MARKERS)


async def list_workgroups(gateway: Gateway) -> list[dict[str, Any]]:
    """All workgroup summaries."""
    summaries: list[dict[str, Any]] = []
    async for page in gateway.paginate(
        "ListWorkGroups", {"MaxResults": 50}, result_key="WorkGroups", priority=Priority.DISCOVER
    ):
        summaries.extend(page)
    return summaries


async def workgroup_tags(gateway: Gateway, arn: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    async for page in gateway.paginate(
        "ListTagsForResource", {"ResourceARN": arn, "MaxResults": 100}, result_key="Tags",
        priority=Priority.DISCOVER,
    ):
        tags.update({str(tag["Key"]): str(tag.get("Value", "")) for tag in page})
    return tags


def workgroup_snapshot(summary: dict[str, Any], tags: dict[str, str]) -> WorkgroupSnapshot:
    return WorkgroupSnapshot(
        name=str(summary["Name"]), enabled=summary.get("State", "ENABLED") == "ENABLED",
        is_spark=_is_spark(summary), tags=tags,
    )


async def list_sessions(
    gateway: Gateway, workgroup: str, clock: Clock, states: Iterable[str] | None = None
) -> list[SessionSnapshot]:
    """Sessions of ``workgroup`` in ``states`` (default: every active state), one StateFilter listing each."""
    sessions: list[SessionSnapshot] = []
    for state in states or sorted(ACTIVE_SESSION_STATES):
        async for page in gateway.paginate(
            "ListSessions", {"WorkGroup": workgroup, "StateFilter": str(state), "MaxResults": PAGE_SIZE},
            result_key="Sessions", priority=Priority.DISCOVER,
        ):
            observed_at = clock.now()
            sessions.extend(SessionSnapshot.from_api(workgroup, item, observed_at) for item in page)
    return sessions


async def list_calculations(gateway: Gateway, session: SessionSnapshot, clock: Clock) -> list[CalculationSnapshot]:
    """The live calculations of a session. Listings are newest first; a session runs one calculation at a time,
    so paging stops at the first page whose calculations have all ended."""
    live: list[CalculationSnapshot] = []
    async for page in gateway.paginate(
        "ListCalculationExecutions", {"SessionId": session.session_id, "MaxResults": PAGE_SIZE},
        result_key="Calculations", priority=Priority.DISCOVER,
    ):
        observed_at = clock.now()
        snapshots = [
            CalculationSnapshot.from_api(session.session_id, session.workgroup, item, observed_at) for item in page
        ]
        page_live = [snapshot for snapshot in snapshots if snapshot.is_live or snapshot.state is None]
        live.extend(page_live)
        if not page_live:
            break
    return live


async def get_calculation(
    gateway: Gateway, calculation_id: str, session_id: str, workgroup: str, clock: Clock, *, priority: Priority
) -> CalculationSnapshot:
    """Status and statistics of one calculation (GetCalculationExecutionStatus: the cheapest read that has both)."""
    response = await gateway.call(
        "GetCalculationExecutionStatus", {"CalculationExecutionId": calculation_id}, priority=priority
    )
    response = {**response, "CalculationExecutionId": calculation_id}
    return CalculationSnapshot.from_api(session_id, workgroup, response, clock.now())


async def get_session(
    gateway: Gateway, session_id: str, workgroup: str, clock: Clock, *, priority: Priority, statistics: bool
) -> SessionSnapshot:
    """GetSession when statistics are needed, else the lighter GetSessionStatus."""
    operation = "GetSession" if statistics else "GetSessionStatus"
    response = await gateway.call(operation, {"SessionId": session_id}, priority=priority)
    return SessionSnapshot.from_api(workgroup, response, clock.now())
