"""Every fault injected into one account-region, and where each one acts on a call.

Order for one call: wait the latency (the request is processed after it, so a state change it causes
happens at arrival + latency), take throttle tokens, roll the error rate, check the error rules; then the
service answers (state overrides act inside the handlers, on what Get*/List* report); then field removals
edit the answer. Global throttle/latency/error-rate rules act on Athena operations only; per-operation
rules and error rules may also name an STS operation (``GetCallerIdentity``, ``AssumeRole``).
"""

from __future__ import annotations

from typing import Any

from athena_spark_emulator.clock import Clock, sleeper
from athena_spark_emulator.error_rules import ErrorRules
from athena_spark_emulator.errors import internal, throttled
from athena_spark_emulator.faults import Faults
from athena_spark_emulator.field_removals import FieldRemovals
from athena_spark_emulator.identity import Identity
from athena_spark_emulator.selectors import Resources
from athena_spark_emulator.state_overrides import StateOverrides


class Injections:
    """The fault registries of one account-region.

    Args:
        clock: latency waits on its ``sleep`` when it has one (virtual time), else in real time.
        faults: throttling, error rates and latency, per operation or global.
    """

    def __init__(self, clock: Clock, faults: Faults) -> None:
        self._clock = clock
        self._sleep = sleeper(clock)
        self.faults = faults
        self.errors = ErrorRules()
        self.states = StateOverrides()
        self.removals = FieldRemovals()

    @property
    def targeted(self) -> bool:
        """Whether a rule needs to know which resources a call is about (else skip working it out)."""
        return bool(self.errors) or bool(self.removals)

    def clear(self) -> None:
        self.faults.clear()
        self.errors.clear()
        self.states.clear()
        self.removals.clear()

    def to_json(self) -> dict[str, Any]:
        return {**self.faults.to_json(), "errors": self.errors.to_json(), "states": self.states.to_json(),
                "removals": self.removals.to_json()}

    async def before(self, operation: str, resources: Resources, identity: Identity, *,
                     service: str = "athena") -> None:
        """Wait the latency, then raise the :class:`ApiError` an injected fault answers, if any.

        Args:
            service: ``athena`` (global rules apply) or ``sts`` (only rules naming the operation).
        """
        include_global = service == "athena"
        delay = self.faults.latency(operation, include_global=include_global)
        if delay > 0:
            await self._sleep(delay)
        verdict = self.faults.admit(operation, self._clock.now(), include_global=include_global)
        if verdict.throttled:
            raise throttled()
        if verdict.failed:
            raise internal()
        if self.errors:
            rule = self.errors.take(operation, resources)
            if rule is not None:
                raise rule.api_error(operation, resources, identity, service)

    def after(self, operation: str, resources: Resources, payload: dict[str, Any]) -> dict[str, Any]:
        """The answer with the members that field removals name taken out."""
        return self.removals.apply(operation, resources, payload) if self.removals else payload

