"""What every operation handler needs: the store, the account identity and the states to report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from athena_spark_emulator.state_overrides import StateOverrides
from athena_spark_emulator.store import Store

Handler = Callable[["Context", dict[str, Any], float], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Context:
    store: Store
    account_id: str
    region: str
    states: StateOverrides = field(default_factory=StateOverrides)

    def workgroup_arn(self, name: str) -> str:
        return f"arn:aws:athena:{self.region}:{self.account_id}:workgroup/{name}"


def drop_none(values: dict[str, Any]) -> dict[str, Any]:
    """A response dict without the members that have no value (AWS omits them)."""
    return {key: value for key, value in values.items() if value is not None}
