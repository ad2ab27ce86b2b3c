"""What every operation handler needs: the store, the account identity and the current time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from athena_spark_emulator.store import Store

Handler = Callable[["Context", dict[str, Any], float], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Context:
    store: Store
    account_id: str
    region: str

    def workgroup_arn(self, name: str) -> str:
        return f"arn:aws:athena:{self.region}:{self.account_id}:workgroup/{name}"


def drop_none(values: dict[str, Any]) -> dict[str, Any]:
    """A response dict without the members that have no value (AWS omits them)."""
    return {key: value for key, value in values.items() if value is not None}
