"""Injected faults: throttling (token buckets), error rates (500s), added latency; per operation or global."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from athena_spark_emulator.durations import parse_duration


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One fault rule.

    Attributes:
        throttle_tps: sustained requests/s allowed (None: no throttling).
        burst: bucket size (defaults to ``max(1, throttle_tps)``).
        error_rate: probability in [0, 1] of an InternalServerException (HTTP 500).
        latency: seconds added before answering.
    """

    throttle_tps: float | None = None
    burst: float | None = None
    error_rate: float = 0.0
    latency: float = 0.0

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> FaultSpec:
        """Parse a control-API fault body; raise ValueError naming the bad key."""
        unknown = set(body) - {"operation", "throttle_tps", "burst", "error_rate", "latency"}
        if unknown:
            raise ValueError(f"unknown fault keys: {', '.join(sorted(unknown))}")
        tps, burst = body.get("throttle_tps"), body.get("burst")
        for key, value in (("throttle_tps", tps), ("burst", burst)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or value <= 0):
                raise ValueError(f"{key} must be a number > 0")
        rate = body.get("error_rate", 0.0)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise ValueError("error_rate must be a number between 0 and 1")
        try:
            latency = parse_duration(body.get("latency", 0))
        except ValueError as error:
            raise ValueError(f"latency: {error}") from None
        return cls(None if tps is None else float(tps), None if burst is None else float(burst),
                   float(rate), latency)

    def to_json(self) -> dict[str, Any]:
        return {"throttle_tps": self.throttle_tps, "burst": self.burst, "error_rate": self.error_rate,
                "latency": self.latency}


class TokenBucket:
    """A token bucket refilled at ``rate`` tokens/s up to ``capacity``, on the emulator's clock."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True, slots=True)
class Verdict:
    throttled: bool
    failed: bool


class Faults:
    """The active fault rules (``None`` key = global) and their token buckets.

    Args:
        rng: the random source for error rates (inject a seeded one for reproducible tests).
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._specs: dict[str | None, FaultSpec] = {}
        self._buckets: dict[str | None, TokenBucket] = {}

    def spawn(self) -> Faults:
        """An empty registry drawing on the same random source (for another account-region)."""
        return Faults(self._rng)

    def set(self, operation: str | None, spec: FaultSpec, now: float) -> None:
        self._specs[operation] = spec
        self._buckets.pop(operation, None)
        if spec.throttle_tps is not None:
            capacity = spec.burst if spec.burst is not None else max(1.0, spec.throttle_tps)
            self._buckets[operation] = TokenBucket(spec.throttle_tps, capacity, now)

    def clear(self, operation: str | None = None, *, everything: bool = True) -> None:
        if everything:
            self._specs.clear()
            self._buckets.clear()
        else:
            self._specs.pop(operation, None)
            self._buckets.pop(operation, None)

    def to_json(self) -> dict[str, Any]:
        return {"global": self._specs[None].to_json() if None in self._specs else None,
                "operations": {op: spec.to_json() for op, spec in self._specs.items() if op is not None}}

    def latency(self, operation: str, *, include_global: bool = True) -> float:
        """Seconds to wait before processing a call: its operation's latency plus the global one."""
        if not self._specs:
            return 0.0
        return sum(spec.latency for key, spec in self._specs.items()
                   if key == operation or (key is None and include_global))

    def admit(self, operation: str, now: float, *, include_global: bool = True) -> Verdict:
        """Decide the fate of one call after its latency: throttled, failed (500) or served."""
        if not self._specs:
            return Verdict(False, False)
        scopes = (operation, None) if include_global else (operation,)
        for key in scopes:
            bucket = self._buckets.get(key)
            if bucket is not None and not bucket.take(now):
                return Verdict(True, False)
        for key in scopes:
            spec = self._specs.get(key)
            if spec is not None and spec.error_rate > 0 and self._rng.random() < spec.error_rate:
                return Verdict(False, True)
        return Verdict(False, False)
