"""ListEngineVersions and ListApplicationDPUSizes: what a workgroup and a session can be created with."""

from __future__ import annotations

from typing import Any

from athena_spark_emulator.context import Context, Handler, drop_none
from athena_spark_emulator.errors import invalid_request
from athena_spark_emulator.records import SPARK_CONNECT_ENGINE, SPARK_ENGINE, SQL_ENGINE

# Every engine CreateWorkGroup accepts, "including the Auto option" (AUTO runs Athena engine version 3).
ENGINE_VERSIONS = (("AUTO", SQL_ENGINE), (SQL_ENGINE, SQL_ENGINE), (SPARK_ENGINE, SPARK_ENGINE),
                   (SPARK_CONNECT_ENGINE, SPARK_CONNECT_ENGINE))
# The application runtimes and their DPU sizes: the notebook engine of PySpark engine version 3 (1-DPU
# coordinators and executors, as CoordinatorDpuSize and DefaultExecutorDpuSize allow).
APPLICATION_DPU_SIZES = (("Athena notebook version 1", (1,)),)


def _page(items: list[Any], body: dict[str, Any], default: int) -> tuple[list[Any], str | None]:
    token = body.get("NextToken")
    if token and not token.isdigit():
        raise invalid_request("NextToken is invalid or expired")
    start, limit = int(token or 0), body.get("MaxResults", default)
    return items[start:start + limit], str(start + limit) if start + limit < len(items) else None


def list_engine_versions(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    versions = [{"SelectedEngineVersion": selected, "EffectiveEngineVersion": effective}
                for selected, effective in ENGINE_VERSIONS]
    page, token = _page(versions, body, 10)
    return drop_none({"EngineVersions": page, "NextToken": token})


def list_application_dpu_sizes(ctx: Context, body: dict[str, Any], now: float) -> dict[str, Any]:
    sizes = [{"ApplicationRuntimeId": runtime, "SupportedDPUSizes": list(dpus)}
             for runtime, dpus in APPLICATION_DPU_SIZES]
    page, token = _page(sizes, body, 100)
    return drop_none({"ApplicationDPUSizes": page, "NextToken": token})


HANDLERS: dict[str, Handler] = {
    "ListEngineVersions": list_engine_versions,
    "ListApplicationDPUSizes": list_application_dpu_sizes,
}
