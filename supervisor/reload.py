"""The configuration in force, and how it changes without a restart.

:class:`LiveConfig` is the one owner of "which settings run now": loaded at start, replaced by a successful
reload. :class:`Reloader` does the reload (SIGHUP, or ``POST /-/reload`` when ``http.enable_lifecycle`` is on):

- the file is read and validated again exactly as at start (environment overrides, ``{env:}``/``{file:}``
  references read again); an invalid one is rejected with the messages ``check-config`` prints, and the
  running configuration stays;
- a valid one is applied at once to every shard's activities: policies, budgets, mode, scope, pace, pricing,
  escalation timing, safety limits, notifications and the log level; every known target is judged again at once,
  so a tightened limit under a running target acts within the look it takes;
- what needs a restart (``aws``, ``accounts``, ``cluster``, ``journal``, ``http``, ``discovery.events``) is
  reported and kept as it runs;
- the circuit breaker is reset (a reload is an operator's explicit act, as ``athena-supervisor breaker reset``).

Each reload is journaled (``config.reloaded`` / ``config.reload_failed``), logged and counted
(``athena_supervisor_config_reloads_total{outcome}``, ``..._config_last_reload_success_timestamp_seconds``). In a
cluster, each replica reloads its own file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio
import structlog

from supervisor.clock import Clock
from supervisor.config import ConfigError, LoadedConfig, Settings, load_config
from supervisor.core.fleet import Shard
from supervisor.gateway import Gateway
from supervisor.logs import configure_logging
from supervisor.metrics import Metrics
from supervisor.notify.notifier import Notifier, build_delivery
from supervisor.shard import ShardHost
from supervisor.storage import Storage

RESTART_ONLY = ("aws", "accounts", "cluster", "journal", "http")
"""Top-level keys a reload reports and keeps: the gateways, the shards, the journal and the HTTP server are
built once, at start."""


def _time(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class LiveConfig:
    """The settings in force, their digest (:attr:`LoadedConfig.digest`), when and from where they were loaded,
    and the last reload's outcome."""

    settings: Settings
    loaded_at: datetime
    path: str | None = None
    digest: str = ""
    last_reload: dict[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        if not self.digest:
            self.digest = LoadedConfig(self.settings).digest

    def describe(self) -> dict[str, Any]:
        return {"digest": self.digest, "loaded_at": _time(self.loaded_at), "path": self.path,
                "last_reload": self.last_reload}


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload applies: the new file's settings with the restart-only keys as they run; which keys change
    now, and which changed but wait for a restart."""

    settings: Settings
    changed: tuple[str, ...]
    needs_restart: tuple[str, ...]


def plan_reload(running: Settings, loaded: Settings) -> ReloadPlan:
    """Pure: what applying ``loaded`` over ``running`` changes."""
    before, after = running.model_dump(mode="json"), loaded.model_dump(mode="json")
    differ = tuple(key for key in Settings.model_fields if before.get(key) != after.get(key))
    kept = {key: getattr(running, key) for key in RESTART_ONLY}
    # The event feed (its queue, its gateway) is built at start: discovery.events waits for a restart too.
    events_differ = running.discovery.events != loaded.discovery.events
    discovery = loaded.discovery.model_copy(update={"events": running.discovery.events})
    settings = loaded.model_copy(update={**kept, "discovery": discovery})
    after["discovery"]["events"] = before["discovery"]["events"]
    changed = tuple(key for key in Settings.model_fields
                    if before.get(key) != after.get(key) and key not in RESTART_ONLY)
    return ReloadPlan(
        settings=settings,
        changed=changed,
        needs_restart=tuple(key for key in differ if key in RESTART_ONLY) + (
            ("discovery.events",) if events_differ else ()),
    )


class Reloader:
    """Reloads the configuration file into the running daemon, and resets circuit breakers.

    Args:
        live: the configuration in force (replaced by a successful reload).
        hosts: the shards this process supervises now (a cluster's change as leases move; a host created later
            is built from ``live.settings``).
        notifier: the notification channels to reconfigure (None: events go to an injected sink).
        gateway: the daemon's own gateway, which SNS and EventBridge channels call through.
    """

    def __init__(self, *, live: LiveConfig, hosts: Callable[[], Mapping[Shard, ShardHost]], storage: Storage,
                 metrics: Metrics, clock: Clock, notifier: Notifier | None, gateway: Gateway,
                 environ: Mapping[str, str] | None = None,
                 logger: structlog.typing.FilteringBoundLogger | None = None) -> None:
        self.live = live
        self.hosts = hosts
        self.storage = storage
        self.metrics = metrics
        self.clock = clock
        self.notifier = notifier
        self.gateway = gateway
        self.environ = environ
        self._log = logger or structlog.get_logger("supervisor.reload")
        self._lock = anyio.Lock()
        metrics.config_last_reload_success.set(live.loaded_at.timestamp())

    async def reload(self, trigger: str) -> tuple[bool, dict[str, Any]]:
        """Read the file again and apply it; (applied, what happened: JSON-ready). Never raises for a bad file."""
        async with self._lock:
            now = self.clock.now()
            if self.live.path is None:
                return False, {"outcome": "failure", "problems": ["no configuration file to read again"]}
            try:
                loaded = await anyio.to_thread.run_sync(load_config, self.live.path, self.environ)
            except ConfigError as error:
                problems = [str(problem) for problem in error.problems]
                return False, await self._failed(trigger, now, problems)
            plan = plan_reload(self.live.settings, loaded.settings)
            self._apply(plan)
            reset = await self._reset_breakers(f"configuration reload ({trigger})")
            previous = self.live.digest
            self.live.settings, self.live.loaded_at = plan.settings, now
            self.live.digest = LoadedConfig(plan.settings).digest
            outcome = {"at": _time(now), "trigger": trigger, "outcome": "success", "digest": self.live.digest,
                       "previous_digest": previous, "changed": list(plan.changed),
                       "needs_restart": list(plan.needs_restart), "breakers_reset": reset}
            self.live.last_reload = outcome
            self.metrics.config_reloads.labels("success").inc()
            self.metrics.config_last_reload_success.set(now.timestamp())
            await self.storage.record("config.reloaded", detail=outcome, time=now)
            log = self._log.warning if plan.needs_restart else self._log.info
            log("config.reloaded", trigger=trigger, digest=self.live.digest, changed=list(plan.changed),
                needs_restart=list(plan.needs_restart))
            return True, outcome

    async def _failed(self, trigger: str, now: datetime, problems: list[str]) -> dict[str, Any]:
        outcome = {"at": _time(now), "trigger": trigger, "outcome": "failure", "digest": self.live.digest,
                   "problems": problems}
        self.live.last_reload = outcome
        self.metrics.config_reloads.labels("failure").inc()
        await self.storage.record("config.reload_failed", detail=outcome, time=now)
        self._log.error("config.reload_failed", trigger=trigger, problems=problems, kept=self.live.digest)
        return outcome

    def _apply(self, plan: ReloadPlan) -> None:
        running = self.live.settings
        if plan.settings.log_level != running.log_level:
            configure_logging(plan.settings.log_level)
        if self.notifier is not None and plan.settings.notifications != running.notifications:
            self.notifier.reconfigure([(channel, build_delivery(channel, index, self.gateway))
                                       for index, channel in enumerate(plan.settings.notifications)])
        for host in list(self.hosts().values()):
            host.apply(plan.settings)

    async def reset_breaker(self, trigger: str) -> tuple[bool, dict[str, Any]]:
        """Close every shard's circuit breaker; (True, which shards' were open: JSON-ready)."""
        async with self._lock:
            reset = await self._reset_breakers(f"operator reset ({trigger})")
            self._log.info("breaker.reset", trigger=trigger, reset=reset)
            return True, {"at": _time(self.clock.now()), "trigger": trigger, "breakers_reset": reset}

    async def _reset_breakers(self, reason: str) -> list[str]:
        """Reset every running shard's breaker; the shards whose breaker was open."""
        reset = []
        for shard, host in list(self.hosts().items()):
            runtime = host.runtime
            if runtime is not None and await runtime.enforcement.reset_breaker(reason):
                reset.append(str(shard))
        return reset
