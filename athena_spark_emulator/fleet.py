"""Every emulated account-region, and what they share: one clock, one audit log, STS, the event publisher.

Each API call is served by its caller's account-region (the account rule in
:mod:`~athena_spark_emulator.callers`), created on first use with the ``primary`` workgroup. The default
account-region exists from the start, with the workgroups given at start.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from athena_spark_emulator.audit import AuditLog
from athena_spark_emulator.backend import Backend
from athena_spark_emulator.callers import DEFAULT_ACCOUNT, DEFAULT_REGION, Callers, RequestInfo
from athena_spark_emulator.clock import Clock
from athena_spark_emulator.credentials import Keyring
from athena_spark_emulator.events import EventPublisher
from athena_spark_emulator.faults import Faults
from athena_spark_emulator.model import load_sts_model
from athena_spark_emulator.roles import Roles
from athena_spark_emulator.sts_service import StsService


def _merged(counts: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"total", "by_state"}`` summed over account-regions."""
    by_state: collections.Counter[str] = collections.Counter()
    for count in counts:
        by_state.update(count["by_state"])
    return {"total": sum(count["total"] for count in counts), "by_state": dict(by_state)}


class Fleet:
    """The account-regions by ``(account, region)``, routing calls to them.

    Args:
        clock: the one time source of every account-region (and of credential expiry).
        account_id / region: the default account-region (see the account rule).
        workgroups: Spark workgroups of the default account-region at start (and after reset).
        throttle_tps: a global throttle of every account-region at start (and after reset), as Athena's
            quotas are per account and region.
        faults: the default account-region's fault registry; the others draw on its random source.
        keyring: where credentials issued by AssumeRole are kept (inject one with a seeded RNG).
    """

    def __init__(self, *, clock: Clock, account_id: str = DEFAULT_ACCOUNT, region: str = DEFAULT_REGION,
                 workgroups: Sequence[str] = (), throttle_tps: float | None = None, faults: Faults | None = None,
                 keyring: Keyring | None = None,
                 logger: structlog.typing.FilteringBoundLogger | None = None) -> None:
        self.clock = clock
        self.audit = AuditLog()
        self.keyring = keyring or Keyring()
        self.roles = Roles()
        self.callers = Callers(self.keyring, default_account=account_id, default_region=region)
        self._sts = StsService(self.keyring, self.roles, load_sts_model())
        self._workgroups = tuple(workgroups)
        self._throttle_tps = throttle_tps
        self._faults = faults or Faults()
        self._log = logger or structlog.get_logger("athena_spark_emulator")
        self.events = EventPublisher(clock, logger=self._log)
        self._backends: dict[tuple[str, str], Backend] = {}
        self.default = self.backend()

    def _key(self, account: str | None, region: str | None) -> tuple[str, str]:
        """``(account, region)``, each defaulting to the default one."""
        return account or self.callers.default_account, region or self.callers.default_region

    def backend(self, account: str | None = None, region: str | None = None) -> Backend:
        """The account-region (each defaults to the default one), created on first use."""
        key = self._key(account, region)
        backend = self._backends.get(key)
        if backend is None:
            is_default = key == self._key(None, None)
            backend = Backend(
                clock=self.clock, account_id=key[0], region=key[1],
                workgroups=self._workgroups if is_default else (), throttle_tps=self._throttle_tps,
                faults=self._faults if is_default else self._faults.spawn(), audit=self.audit,
                sts_service=self._sts, events=self.events, logger=self._log,
            )
            self._backends[key] = backend
            if not is_default:
                self._log.info("emulator.account_region_created", account=key[0], region=key[1])
        return backend

    def existing(self, account: str | None = None, region: str | None = None) -> Backend | None:
        """The account-region if it was used already (each defaults to the default one), else None."""
        return self._backends.get(self._key(account, region))

    def select(self, account: str | None = None, region: str | None = None) -> list[Backend]:
        """The account-regions used so far of ``account`` and ``region`` (None: any), in order of first use."""
        return [backend for (backend_account, backend_region), backend in self._backends.items()
                if account in (None, backend_account) and region in (None, backend_region)]

    async def call(self, target: str | None, raw: bytes, *, authorization: str | None = None,
                   security_token: str | None = None,
                   request: RequestInfo | None = None) -> tuple[int, bytes, str | None]:
        """Serve one Athena call in its caller's account-region; see :meth:`Backend.call`."""
        caller = self.callers.identify(authorization, security_token, self.clock.now())
        backend = self.backend(caller.identity.account_id, caller.identity.region)
        return await backend.call(target, raw, caller, request)

    async def call_sts(self, raw: bytes, *, authorization: str | None = None,
                       security_token: str | None = None) -> tuple[int, bytes, str | None]:
        """Serve one STS call in its caller's account-region; see :meth:`Backend.call_sts`."""
        caller = self.callers.identify(authorization, security_token, self.clock.now())
        backend = self.backend(caller.identity.account_id, caller.identity.region)
        return await backend.call_sts(raw, caller)

    def reset(self, account: str | None = None, region: str | None = None) -> None:
        """Put the account-regions of ``account`` and ``region`` back to their start state and forget their
        calls; with neither, everything: every account-region, the audit log, issued credentials, role rules.
        """
        for backend in self.select(account, region):
            backend.reset()
        self.audit.clear(account, region)
        if account is None and region is None:
            self.keyring.clear()
            self.roles.remove()

    def state(self, account: str | None = None, region: str | None = None) -> dict[str, Any]:
        """The summary of ``GET /_emulator/state`` over the account-regions of ``account`` and ``region``.

        ``faults`` are those of the account-region both name (each defaulting), as ``GET /_emulator/faults``
        shows them, or None when it was never used.
        """
        summaries = [backend.state() for backend in self.select(account, region)]
        scoped = self.existing(account, region)
        return {
            "now": datetime.fromtimestamp(self.clock.now(), UTC).isoformat().replace("+00:00", "Z"),
            "workgroups": [{"account": summary["account"], "region": summary["region"], **workgroup}
                           for summary in summaries for workgroup in summary["workgroups"]],
            "sessions": _merged([summary["sessions"] for summary in summaries]),
            "calculations": _merged([summary["calculations"] for summary in summaries]),
            "calls": self.audit.count(account, region),
            "faults": scoped.injections.to_json() if scoped is not None else None,
            "accounts": [{**summary, "workgroups": [workgroup["name"] for workgroup in summary["workgroups"]]}
                         for summary in summaries],
        }
