"""One emulated account-region: its store, faults and Athena service, serving its callers' calls.

Every account-region records its calls in the audit log it is given (one log for the whole emulator,
each entry labelled with the account and region), answers STS through the shared STS service, and hands
every successful Athena call to the emulator's event publisher (which keeps the write calls' events).
"""

from __future__ import annotations

import collections
import json
import uuid
from collections.abc import Sequence
from typing import Any

import structlog

from athena_spark_emulator import sts
from athena_spark_emulator.audit import API, CONTROL, AuditLog
from athena_spark_emulator.callers import DEFAULT_ACCOUNT, DEFAULT_REGION, Caller, RequestInfo
from athena_spark_emulator.clock import Clock
from athena_spark_emulator.cloudtrail import ApiCall
from athena_spark_emulator.context import Context
from athena_spark_emulator.credentials import Keyring
from athena_spark_emulator.errors import ApiError
from athena_spark_emulator.events import EventPublisher
from athena_spark_emulator.fault_controls import FaultControls
from athena_spark_emulator.faults import Faults, FaultSpec
from athena_spark_emulator.identity import Identity
from athena_spark_emulator.injections import Injections
from athena_spark_emulator.model import load_athena_model, load_sts_model
from athena_spark_emulator.protocol import audit_operation, decode_body, encode, operation_from_target
from athena_spark_emulator.roles import Roles
from athena_spark_emulator.selectors import Resources, request_resources
from athena_spark_emulator.service import AthenaService
from athena_spark_emulator.store import Store
from athena_spark_emulator.sts_service import StsService
from athena_spark_emulator.workgroups import PRIMARY, new_workgroup, spark_configuration

NO_RESOURCES = Resources()


def _request_fields(request: RequestInfo | None) -> tuple[str, str, str]:
    """``(request id, user agent, source address)`` of an event; a request id is made up when not given."""
    if request is None:
        return str(uuid.uuid4()), "", "127.0.0.1"
    return request.request_id, request.user_agent, request.source_ip


class Backend(FaultControls):
    """One account-region behind the HTTP server; the server and control API are thin adapters over it.

    The fault-injection methods (``set_faults``, ``add_error``, ``override_state``, ``remove_fields`` and
    their ``clear_*``) come from :class:`~athena_spark_emulator.fault_controls.FaultControls`; they act on
    this account-region only.

    Args:
        clock: the time source for every derived state (shared by every account-region).
        workgroups: Spark workgroups created at start (and after reset), besides ``primary`` (SQL).
        throttle_tps: a global throttle installed at start (and after reset).
        account_id / region: the account-region (in ARNs and audit-log labels).
        faults: the fault registry (inject one with a seeded RNG for reproducible error rates).
        audit: the audit log its calls are recorded in (default: its own).
        sts_service: the STS service (default: its own, with no issued credentials and no role rules).
        events: the event publisher its successful calls go to (default: none, no events).
    """

    def __init__(self, *, clock: Clock, workgroups: Sequence[str] = (), throttle_tps: float | None = None,
                 account_id: str = DEFAULT_ACCOUNT, region: str = DEFAULT_REGION, faults: Faults | None = None,
                 audit: AuditLog | None = None, sts_service: StsService | None = None,
                 events: EventPublisher | None = None,
                 logger: structlog.typing.FilteringBoundLogger | None = None) -> None:
        self.clock = clock
        self.account_id = account_id
        self.region = region
        self.identity = Identity(account_id, region)
        self._initial_workgroups = tuple(workgroups)
        self._throttle_tps = throttle_tps
        self._model = load_athena_model()
        self._log = logger or structlog.get_logger("athena_spark_emulator")
        self.injections = Injections(clock, faults or Faults())
        self.faults = self.injections.faults
        self.audit = audit if audit is not None else AuditLog()
        self.sts_service = sts_service or StsService(Keyring(), Roles(), load_sts_model())
        self.events = events
        self.store = Store()
        self.service = self._service()
        self.reset()

    def _service(self) -> AthenaService:
        context = Context(self.store, self.account_id, self.region, self.injections.states)
        return AthenaService(context, self._model, logger=self._log)

    def reset(self) -> None:
        """Back to the start state: ``primary`` + initial workgroups, initial throttle only.

        The audit log is not touched: it belongs to the whole emulator (``Fleet.reset`` clears it).
        """
        now = self.clock.now()
        self.store = Store()
        self.service = self._service()
        self.store.put_workgroup(new_workgroup(PRIMARY, created_at=now))
        for name in self._initial_workgroups:
            self.store.put_workgroup(new_workgroup(name, created_at=now, configuration=spark_configuration()))
        self.injections.clear()
        if self._throttle_tps is not None:
            self.faults.set(None, FaultSpec(throttle_tps=self._throttle_tps), now)

    def _resources(self, body: dict[str, Any]) -> Resources:
        return request_resources(self.store, body) if self.injections.targeted else NO_RESOURCES

    def _record(self, received: float, operation: str | None, raw: bytes, status: int, error: str | None,
                via: str = API) -> None:
        self.audit.record(received, self.account_id, self.region, operation, raw, status, error, via)

    def _announce(self, call: ApiCall) -> None:
        """Give a successful call to the event publisher; its failure is logged, never answered."""
        events = self.events
        if events is None or not events.wants(call.operation):
            return
        try:
            events.publish(call)
        except Exception as error:  # an event is a side effect: it must not fail the call
            self._log.exception("emulator.event_failed", operation=call.operation, error=repr(error))

    async def call(self, target: str | None, raw: bytes, caller: Caller | None = None,
                   request: RequestInfo | None = None) -> tuple[int, bytes, str | None]:
        """Serve one AWS JSON 1.1 call; return ``(HTTP status, response body, error type or None)``.

        The request is processed after its injected latency: a state change it causes happens then. A
        ``caller`` with a refusal (expired or unknown token) is answered that error before any fault. A
        successful write call's event (with ``request``'s id, user agent and address) is published.
        """
        received = self.clock.now()
        identity = caller.identity if caller is not None else self.identity
        served: ApiCall | None = None
        try:
            if caller is not None and caller.refusal is not None:
                raise caller.refusal
            operation = operation_from_target(target)
            try:
                body, undecodable = decode_body(raw), None
            except ApiError as failure:  # answered after the faults, like any invalid request
                body, undecodable = {}, failure
            resources = self._resources(body)
            await self.injections.before(operation, resources, identity)
            if undecodable is not None:
                raise undecodable
            response = self.service.handle(operation, body, self.clock.now())
            payload = self.injections.after(operation, resources, response)
            status, error = 200, None
            # The event records what the service answered (before field removals, a fault of the answer).
            served = ApiCall(operation, body, response, identity, caller.access_key_id if caller else None,
                             received, *_request_fields(request))
        except ApiError as failure:
            payload, status, error = failure.body(), failure.status, failure.error_type
        self._record(received, audit_operation(target), raw, status, error)
        if served is not None:
            self._announce(served)
        return status, encode(payload), error

    def control_call(self, operation: str, params: dict[str, Any],
                     request: RequestInfo | None = None) -> tuple[int, dict[str, Any], str | None]:
        """``POST /_emulator/call``: serve one call as this account-region's default caller would make it
        (same validation, answers and event), without throttling or any injected fault; audited as
        ``control``. Returns ``(HTTP status, response or error body, error type or None)``.

        The event's caller is the account's IAM user, its access key id the account id (the 12-digit key
        that names this account).
        """
        received = self.clock.now()
        served: ApiCall | None = None
        try:
            payload = self.service.handle(operation, params, received)
            status, error = 200, None
            served = ApiCall(operation, params, payload, self.identity, self.account_id, received,
                             *_request_fields(request))
        except ApiError as failure:
            payload, status, error = failure.body(), failure.status, failure.error_type
        self._record(received, operation, encode(params), status, error, CONTROL)
        if served is not None:
            self._announce(served)
        return status, payload, error

    async def call_sts(self, raw: bytes, caller: Caller | None = None) -> tuple[int, bytes, str | None]:
        """Serve one STS Query-protocol call; return ``(status, XML body, error code)``.

        Faults apply only when they name the STS operation. The audit log records it like an Athena call,
        its form fields as the request object.
        """
        received = self.clock.now()
        identity = caller.identity if caller is not None else self.identity
        request_id = str(uuid.uuid4())
        form = sts.decode_form(raw)
        try:
            if caller is not None and caller.refusal is not None:
                raise caller.refusal
            operation = sts.operation_of(form)
            await self.injections.before(operation, NO_RESOURCES, identity, service="sts")
            body = self.sts_service.handle(operation, form, identity, self.clock.now(), request_id)
            status, error = 200, None
        except ApiError as failure:
            status, error, body = sts.error_document(failure, request_id)
        self._record(received, form.get("Action") or None, json.dumps(form).encode(), status, error)
        return status, body, error

    def state(self) -> dict[str, Any]:
        """This account-region's summary: its workgroups, counts by state, its calls and its faults."""
        now = self.clock.now()
        store = self.store
        session_states: collections.Counter[str] = collections.Counter()
        calculation_states: collections.Counter[str] = collections.Counter()
        per_workgroup: dict[str, collections.Counter[str]] = {}
        for session_id, session in store.sessions.items():
            state = store.session_state(session_id, now)
            session_states[state] += 1
            per_workgroup.setdefault(session.workgroup, collections.Counter())[state] += 1
        for calculation_id in store.calculations:
            calculation_states[store.calculation_view(calculation_id, now).state] += 1
        return {
            "account": self.account_id,
            "region": self.region,
            "workgroups": [
                {"name": record.name, "state": record.state, "engine": record.engine, "tags": record.tags,
                 "sessions": dict(per_workgroup.get(record.name, {}))}
                for record in store.workgroups.values()
            ],
            "sessions": {"total": len(store.sessions), "by_state": dict(session_states)},
            "calculations": {"total": len(store.calculations), "by_state": dict(calculation_states)},
            "calls": self.audit.count(self.account_id, self.region),
            "faults": self.injections.to_json(),
        }
