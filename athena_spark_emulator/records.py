"""Stored facts about workgroups, sessions and calculations: what was asked and when, never derived state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from athena_spark_emulator.pragma import CalculationPragma, SessionPragma

SPARK_ENGINE = "PySpark engine version 3"  # calculations and notebooks
SPARK_CONNECT_ENGINE = "Apache Spark version 3.5"  # Spark Connect (GetSessionEndpoint); no calculation API
SPARK_ENGINES = (SPARK_ENGINE, SPARK_CONNECT_ENGINE)
SQL_ENGINE = "Athena engine version 3"


@dataclass(frozen=True, slots=True)
class WorkGroupRecord:
    name: str
    state: str
    description: str | None
    created_at: float
    configuration: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def engine(self) -> str:
        engine = self.configuration.get("EngineVersion", {})
        selected = engine.get("EffectiveEngineVersion") or engine.get("SelectedEngineVersion") or SQL_ENGINE
        return SQL_ENGINE if selected == "AUTO" else str(selected)

    @property
    def is_spark(self) -> bool:
        return self.engine in SPARK_ENGINES

    @property
    def has_calculations(self) -> bool:
        """Only ``PySpark engine version 3`` has the calculation and notebook APIs."""
        return self.engine == SPARK_ENGINE


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session as started; ``terminate_requested_at`` is the only fact that changes later."""

    id: str
    seq: int
    workgroup: str
    description: str | None
    engine_configuration: dict[str, Any]
    request: dict[str, Any]
    idle_timeout_minutes: int
    pragma: SessionPragma
    created_at: float
    tags: dict[str, str]
    terminate_requested_at: float | None = None
    engine: str = SPARK_ENGINE

    @property
    def order_key(self) -> tuple[float, int]:
        return (self.created_at, self.seq)

    @property
    def has_calculations(self) -> bool:
        return self.engine == SPARK_ENGINE

    @property
    def coordinator_dpus(self) -> int:
        return int(self.engine_configuration.get("CoordinatorDpuSize", 1))


@dataclass(frozen=True, slots=True)
class CalculationRecord:
    """A calculation as submitted; ``stop_requested_at`` is the only fact that changes later."""

    id: str
    seq: int
    session_id: str
    description: str | None
    code: str
    pragma: CalculationPragma
    submitted_at: float
    stop_requested_at: float | None = None

    @property
    def order_key(self) -> tuple[float, int]:
        return (self.submitted_at, self.seq)


@dataclass(frozen=True, slots=True)
class NotebookRecord:
    """An ``ipynb`` file of a PySpark engine version 3 workgroup."""

    id: str
    name: str
    workgroup: str
    created_at: float
    modified_at: float
    payload: str
