"""The Python API for injecting faults: the same rules, validation and answers as the control API.

Every method takes what the matching ``/_emulator/faults…`` body takes and returns what it answers (the
rule as JSON, with its ``id``), so a test reads the same either way. Methods raise ``ValueError`` (bad
rule) or :class:`~athena_spark_emulator.rulebook.UnknownRule` (no rule with that id).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from athena_spark_emulator.clock import Clock
from athena_spark_emulator.error_rules import ErrorRule
from athena_spark_emulator.faults import FaultSpec
from athena_spark_emulator.field_removals import FieldRemoval
from athena_spark_emulator.injections import Injections
from athena_spark_emulator.rulebook import RuleBook
from athena_spark_emulator.service import HANDLERS
from athena_spark_emulator.state_overrides import StateOverride
from athena_spark_emulator.sts import OPERATIONS as STS_OPERATIONS

RULE_OPERATIONS = frozenset(HANDLERS) | STS_OPERATIONS
KINDS = ("errors", "states", "removals")


def given(**values: Any) -> dict[str, Any]:
    """A control-API body from keyword arguments: the ones that were given (not None)."""
    return {key: value for key, value in values.items() if value is not None}


class FaultControls:
    """Mixed into :class:`~athena_spark_emulator.backend.Backend`, which provides ``clock`` and ``injections``."""

    clock: Clock
    injections: Injections

    # -- one entry point per kind, shared with the control API -----------------------------------------
    def install(self, kind: str, body: Any) -> dict[str, Any]:
        """Parse and install one rule of ``kind`` (``errors``, ``states`` or ``removals``); return it."""
        injections = self.injections
        if kind == "errors":
            rule_id = injections.errors.add(ErrorRule.from_json(body, RULE_OPERATIONS))
            return {"id": rule_id, **injections.errors.get(rule_id).to_json()}
        if kind == "states":
            rule_id = injections.states.put(StateOverride.from_json(body))
            return {"id": rule_id, **injections.states.get(rule_id).to_json()}
        if kind == "removals":
            rule_id = injections.removals.add(FieldRemoval.from_json(body, RULE_OPERATIONS))
            return {"id": rule_id, **injections.removals.get(rule_id).to_json()}
        raise ValueError(f"unknown kind of fault {kind!r} (known: {', '.join(KINDS)})")

    def uninstall(self, kind: str, rule_id: str | None = None) -> list[dict[str, Any]]:
        """Remove one rule of ``kind`` by id (or all of them); return the ones left."""
        book: RuleBook[Any]
        if kind == "errors":
            book = self.injections.errors
        elif kind == "states":
            book = self.injections.states
        elif kind == "removals":
            book = self.injections.removals
        else:
            raise ValueError(f"unknown kind of fault {kind!r} (known: {', '.join(KINDS)})")
        if rule_id is None:
            book.clear()
        else:
            book.remove(rule_id)
        return book.to_json()

    # -- throttling, error rates, latency --------------------------------------------------------------
    def set_faults(self, operation: str | None = None, *, throttle_tps: float | None = None,
                   burst: float | None = None, error_rate: float | None = None,
                   latency: str | float | None = None) -> dict[str, Any]:
        """Install the throttle/error-rate/latency rule of one operation (or the global one)."""
        spec = FaultSpec.from_json(given(throttle_tps=throttle_tps, burst=burst, error_rate=error_rate,
                                         latency=latency))
        self.injections.faults.set(operation, spec, self.clock.now())
        return self.injections.to_json()

    def clear_faults(self, operation: str | None = None) -> dict[str, Any]:
        """Without ``operation``: clear every fault of every kind; else that operation's throttle rule."""
        if operation is None:
            self.injections.clear()
        else:
            self.injections.faults.clear(operation, everything=False)
        return self.injections.to_json()

    # -- errors for one resource, workgroup or operation ----------------------------------------------
    def add_error(self, error: str, *, operation: str | None = None, session_id: str | None = None,
                  calculation_id: str | None = None, workgroup: str | None = None, message: str | None = None,
                  count: int | None = None) -> dict[str, Any]:
        """Answer ``error`` to the calls about a resource (and/or of an operation), ``count`` times or until
        removed."""
        return self.install("errors", given(error=error, operation=operation, session_id=session_id,
                                            calculation_id=calculation_id, workgroup=workgroup, message=message,
                                            count=count))

    def clear_errors(self, rule_id: str | None = None) -> list[dict[str, Any]]:
        return self.uninstall("errors", rule_id)

    # -- reported states -------------------------------------------------------------------------------
    def override_state(self, state: str, *, session_id: str | None = None,
                       calculation_id: str | None = None) -> dict[str, Any]:
        """Report ``state`` for one session or calculation in Get*/List* answers (replaces its previous one)."""
        return self.install("states", given(state=state, session_id=session_id, calculation_id=calculation_id))

    def clear_state_overrides(self, rule_id: str | None = None) -> list[dict[str, Any]]:
        return self.uninstall("states", rule_id)

    # -- answers with members missing ------------------------------------------------------------------
    def remove_fields(self, operation: str, fields: Sequence[str], *, session_id: str | None = None,
                      calculation_id: str | None = None, workgroup: str | None = None) -> dict[str, Any]:
        """Drop ``fields`` (dotted paths; applied to list items too) from ``operation``'s answers."""
        return self.install("removals", given(operation=operation, fields=list(fields), session_id=session_id,
                                              calculation_id=calculation_id, workgroup=workgroup))

    def clear_field_removals(self, rule_id: str | None = None) -> list[dict[str, Any]]:
        return self.uninstall("removals", rule_id)
