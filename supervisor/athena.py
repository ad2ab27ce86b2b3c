"""Reads of the Athena Spark API, turned into snapshots. Every call goes through the gateway.

A listed item that cannot be parsed (no id) is skipped and handed to ``on_malformed``, so one bad item never
hides the rest of its page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from supervisor.clock import Clock
from supervisor.core.model import (
    ACTIVE_SESSION_STATES,
    CalculationSnapshot,
    MalformedItem,
    SessionSnapshot,
    WorkgroupSnapshot,
    engine_name,
)
from supervisor.gateway import Gateway, Priority

T = TypeVar("T")
OnMalformed = Callable[[str, MalformedItem], None]


def _ignore(operation: str, error: MalformedItem) -> None:
    return None


def parse_items(
    items: Iterable[Mapping[str, Any]], parse: Callable[[Mapping[str, Any]], T], operation: str,
    on_malformed: OnMalformed,
) -> list[T]:
    parsed: list[T] = []
    for item in items:
        try:
            parsed.append(parse(item))
        except MalformedItem as error:
            on_malformed(operation, error)
    return parsed

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


def workgroup_snapshot(summary: dict[str, Any], tags: Mapping[str, str] | None) -> WorkgroupSnapshot:
    return WorkgroupSnapshot(
        name=str(summary["Name"]), enabled=summary.get("State", "ENABLED") == "ENABLED",
        is_spark=_is_spark(summary), tags=tags, engine=engine_name(summary.get("EngineVersion")),
    )


def session_parser(workgroup: str, observed_at: datetime) -> Callable[[Mapping[str, Any]], SessionSnapshot]:
    return lambda item: SessionSnapshot.from_api(workgroup, item, observed_at)


def _calculation_parser(
    session: SessionSnapshot, observed_at: datetime
) -> Callable[[Mapping[str, Any]], CalculationSnapshot]:
    return lambda item: CalculationSnapshot.from_api(session.session_id, session.workgroup, item, observed_at)


async def list_sessions(
    gateway: Gateway, workgroup: str, clock: Clock, states: Iterable[str] | None = None, *,
    priority: Priority = Priority.DISCOVER, on_malformed: OnMalformed = _ignore,
) -> list[SessionSnapshot]:
    """Sessions of ``workgroup`` in ``states`` (default: every active state), one StateFilter listing each."""
    sessions: list[SessionSnapshot] = []
    for state in states or sorted(ACTIVE_SESSION_STATES):
        async for page in gateway.paginate(
            "ListSessions", {"WorkGroup": workgroup, "StateFilter": str(state), "MaxResults": PAGE_SIZE},
            result_key="Sessions", priority=priority,
        ):
            observed_at = clock.now()
            sessions.extend(parse_items(page, session_parser(workgroup, observed_at), "ListSessions", on_malformed))
    return sessions


async def list_calculations(
    gateway: Gateway, session: SessionSnapshot, clock: Clock, *, on_malformed: OnMalformed = _ignore
) -> list[CalculationSnapshot]:
    """The live calculations of a session. Listings are newest first; a session runs one calculation at a time,
    so paging stops at the first page whose calculations have all ended."""
    live: list[CalculationSnapshot] = []
    async for page in gateway.paginate(
        "ListCalculationExecutions", {"SessionId": session.session_id, "MaxResults": PAGE_SIZE},
        result_key="Calculations", priority=Priority.DISCOVER,
    ):
        observed_at = clock.now()
        snapshots = parse_items(page, _calculation_parser(session, observed_at), "ListCalculationExecutions",
                                on_malformed)
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
