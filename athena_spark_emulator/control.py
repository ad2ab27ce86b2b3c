"""The control API under ``/_emulator/`` (JSON): audit log, faults, reset, state, populate and roles.

Faults: ``/faults`` (throttling, error rates, latency; ``GET`` shows every kind, bare ``DELETE`` clears every
kind) and ``/faults/errors``, ``/faults/states``, ``/faults/removals`` (``POST`` one rule, ``GET`` them,
``DELETE [?id=…]`` one or all). Roles: ``/roles`` (``POST`` a rule, ``GET`` them, ``DELETE [?role_arn=…]``).

Every route takes ``?account=&region=``. Faults and populate act on that account-region (each defaulting to
the default one, created on first use); ``calls``, ``state`` and ``reset`` take them as filters (none: every
account-region).

Control routes are never throttled, never fail by injection and are not recorded in the audit log (but the
Athena call that ``POST /_emulator/call`` makes is, labelled ``control``). Event publishing and ``/call`` are
in :mod:`~athena_spark_emulator.control_events`.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from aiohttp import web

from athena_spark_emulator.audit import parse_since
from athena_spark_emulator.backend import Backend
from athena_spark_emulator.callers import ACCOUNT_ID
from athena_spark_emulator.fault_controls import KINDS
from athena_spark_emulator.faults import FaultSpec
from athena_spark_emulator.fleet import Fleet
from athena_spark_emulator.populate import PopulateError, populate
from athena_spark_emulator.roles import RoleRule
from athena_spark_emulator.rulebook import UnknownRule
from athena_spark_emulator.signing import REGION_NAME

PREFIX = "/_emulator"


def bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


async def json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as error:
        raise bad_request(f"invalid JSON: {error}") from None


def checked_scope(account: Any, region: Any) -> tuple[str | None, str | None]:
    """``account`` and ``region`` (None or empty: absent); raise 400 when malformed."""
    account, region = account or None, region or None
    if account is not None and (not isinstance(account, str) or ACCOUNT_ID.fullmatch(account) is None):
        raise bad_request(f"account: expected 12 digits, got {account!r}")
    if region is not None and (not isinstance(region, str) or REGION_NAME.fullmatch(region) is None):
        raise bad_request(f"region: expected a region name such as us-east-1, got {region!r}")
    return account, region


def _scope(request: web.Request) -> tuple[str | None, str | None]:
    """``account`` and ``region`` of the query string (None when absent); raise 400 when malformed."""
    return checked_scope(request.query.get("account"), request.query.get("region"))


class ControlApi:
    """aiohttp handlers over a :class:`Fleet`."""

    def __init__(self, fleet: Fleet, *, logger: structlog.typing.FilteringBoundLogger | None = None) -> None:
        self._fleet = fleet
        self._log = logger or structlog.get_logger("athena_spark_emulator")

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(f"{PREFIX}/calls", self.calls),
            web.get(f"{PREFIX}/faults", self.get_faults),
            web.post(f"{PREFIX}/faults", self.set_faults),
            web.delete(f"{PREFIX}/faults", self.clear_faults),
            *(route for kind in KINDS for route in (
                web.get(f"{PREFIX}/faults/{kind}", self.get_rules),
                web.post(f"{PREFIX}/faults/{kind}", self.add_rule),
                web.delete(f"{PREFIX}/faults/{kind}", self.remove_rules),
            )),
            web.post(f"{PREFIX}/reset", self.reset),
            web.get(f"{PREFIX}/state", self.state),
            web.post(f"{PREFIX}/populate", self.populate),
            web.get(f"{PREFIX}/roles", self.get_roles),
            web.post(f"{PREFIX}/roles", self.set_role),
            web.delete(f"{PREFIX}/roles", self.remove_roles),
        ]

    def _backend(self, request: web.Request) -> Backend:
        """The account-region a fault or populate request acts on."""
        return self._fleet.backend(*_scope(request))

    async def calls(self, request: web.Request) -> web.Response:
        account, region = _scope(request)
        since_text = request.query.get("since")
        try:
            since = parse_since(since_text) if since_text else None
        except ValueError:
            raise bad_request(f"since: not an ISO-8601 instant: {since_text!r}") from None
        operation = request.query.get("operation") or None
        entries = self._fleet.audit.entries(since, operation, account=account, region=region)
        return web.json_response({"calls": entries})

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self._backend(request).injections.to_json())

    async def set_faults(self, request: web.Request) -> web.Response:
        backend = self._backend(request)
        body = await json_body(request)
        if not isinstance(body, dict):
            raise bad_request("expected a JSON object")
        operation = body.get("operation")
        if operation is not None and not isinstance(operation, str):
            raise bad_request("operation must be a string")
        try:
            spec = FaultSpec.from_json(body)
        except ValueError as error:
            raise bad_request(str(error)) from None
        backend.faults.set(operation, spec, backend.clock.now())
        self._log.info("emulator.faults_set", account=backend.account_id, region=backend.region,
                       operation=operation, **spec.to_json())
        return web.json_response(backend.injections.to_json())

    async def clear_faults(self, request: web.Request) -> web.Response:
        backend = self._backend(request)
        operation = request.query.get("operation")
        self._log.info("emulator.faults_cleared", account=backend.account_id, region=backend.region,
                       operation=operation)
        return web.json_response(backend.clear_faults(operation))

    async def get_rules(self, request: web.Request) -> web.Response:
        kind = request.path.rsplit("/", 1)[-1]
        return web.json_response({kind: self._backend(request).injections.to_json()[kind]})

    async def add_rule(self, request: web.Request) -> web.Response:
        backend = self._backend(request)
        kind = request.path.rsplit("/", 1)[-1]
        body = await json_body(request)
        try:
            rule = backend.install(kind, body)
        except ValueError as error:
            raise bad_request(str(error)) from None
        self._log.info("emulator.fault_added", account=backend.account_id, region=backend.region, kind=kind,
                       **rule)
        return web.json_response(rule)

    async def remove_rules(self, request: web.Request) -> web.Response:
        backend = self._backend(request)
        kind = request.path.rsplit("/", 1)[-1]
        rule_id = request.query.get("id") or None
        try:
            left = backend.uninstall(kind, rule_id)
        except UnknownRule:
            return web.json_response({"error": f"no {kind} rule with id {rule_id!r}"}, status=404)
        self._log.info("emulator.fault_removed", account=backend.account_id, region=backend.region, kind=kind,
                       id=rule_id)
        return web.json_response({kind: left})

    async def reset(self, request: web.Request) -> web.Response:
        account, region = _scope(request)
        self._fleet.reset(account, region)
        self._log.info("emulator.reset", account=account, region=region)
        return web.json_response({"reset": True})

    async def state(self, request: web.Request) -> web.Response:
        return web.json_response(self._fleet.state(*_scope(request)))

    async def populate(self, request: web.Request) -> web.Response:
        backend = self._backend(request)
        body = await json_body(request)
        try:
            created = populate(backend.store, body, backend.clock.now())
        except PopulateError as error:
            raise bad_request(str(error)) from None
        self._log.info("emulator.populated", account=backend.account_id, region=backend.region,
                       workgroups=len(created["workgroups"]), sessions=len(created["sessions"]))
        return web.json_response(created)

    async def get_roles(self, request: web.Request) -> web.Response:
        return web.json_response({"roles": self._fleet.roles.to_json()})

    async def set_role(self, request: web.Request) -> web.Response:
        try:
            rule = RoleRule.from_json(await json_body(request))
        except ValueError as error:
            raise bad_request(str(error)) from None
        self._fleet.roles.put(rule)
        self._log.info("emulator.role_set", **rule.to_json())
        return web.json_response(rule.to_json())

    async def remove_roles(self, request: web.Request) -> web.Response:
        role_arn = request.query.get("role_arn") or None
        try:
            self._fleet.roles.remove(role_arn)
        except KeyError:
            return web.json_response({"error": f"no rule for role {role_arn!r}"}, status=404)
        self._log.info("emulator.role_removed", role_arn=role_arn)
        return web.json_response({"roles": self._fleet.roles.to_json()})
