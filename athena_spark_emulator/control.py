"""The control API under ``/_emulator/`` (JSON): audit log, faults, reset, state and populate.

Faults: ``/faults`` (throttling, error rates, latency; ``GET`` shows every kind, bare ``DELETE`` clears every
kind) and ``/faults/errors``, ``/faults/states``, ``/faults/removals`` (``POST`` one rule, ``GET`` them,
``DELETE [?id=…]`` one or all).

Control routes are never throttled, never fail by injection and are not recorded in the audit log.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from aiohttp import web

from athena_spark_emulator.audit import parse_since
from athena_spark_emulator.backend import Backend
from athena_spark_emulator.fault_controls import KINDS
from athena_spark_emulator.faults import FaultSpec
from athena_spark_emulator.populate import PopulateError, populate
from athena_spark_emulator.rulebook import UnknownRule

PREFIX = "/_emulator"


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as error:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"invalid JSON: {error}"}),
                                 content_type="application/json") from None


class ControlApi:
    """aiohttp handlers over a :class:`Backend`."""

    def __init__(self, backend: Backend, *, logger: structlog.typing.FilteringBoundLogger | None = None) -> None:
        self._backend = backend
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
        ]

    async def calls(self, request: web.Request) -> web.Response:
        since_text = request.query.get("since")
        try:
            since = parse_since(since_text) if since_text else None
        except ValueError:
            return _bad_request(f"since: not an ISO-8601 instant: {since_text!r}")
        operation = request.query.get("operation") or None
        return web.json_response({"calls": self._backend.audit.entries(since, operation)})

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self._backend.injections.to_json())

    async def set_faults(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            return _bad_request("expected a JSON object")
        operation = body.get("operation")
        if operation is not None and not isinstance(operation, str):
            return _bad_request("operation must be a string")
        try:
            spec = FaultSpec.from_json(body)
        except ValueError as error:
            return _bad_request(str(error))
        self._backend.faults.set(operation, spec, self._backend.clock.now())
        self._log.info("emulator.faults_set", operation=operation, **spec.to_json())
        return web.json_response(self._backend.injections.to_json())

    async def clear_faults(self, request: web.Request) -> web.Response:
        operation = request.query.get("operation")
        self._log.info("emulator.faults_cleared", operation=operation)
        return web.json_response(self._backend.clear_faults(operation))

    async def get_rules(self, request: web.Request) -> web.Response:
        kind = request.path.rsplit("/", 1)[-1]
        return web.json_response({kind: self._backend.injections.to_json()[kind]})

    async def add_rule(self, request: web.Request) -> web.Response:
        kind = request.path.rsplit("/", 1)[-1]
        body = await _json_body(request)
        try:
            rule = self._backend.install(kind, body)
        except ValueError as error:
            return _bad_request(str(error))
        self._log.info("emulator.fault_added", kind=kind, **rule)
        return web.json_response(rule)

    async def remove_rules(self, request: web.Request) -> web.Response:
        kind = request.path.rsplit("/", 1)[-1]
        rule_id = request.query.get("id") or None
        try:
            left = self._backend.uninstall(kind, rule_id)
        except UnknownRule:
            return web.json_response({"error": f"no {kind} rule with id {rule_id!r}"}, status=404)
        self._log.info("emulator.fault_removed", kind=kind, id=rule_id)
        return web.json_response({kind: left})

    async def reset(self, request: web.Request) -> web.Response:
        self._backend.reset()
        self._log.info("emulator.reset")
        return web.json_response({"reset": True})

    async def state(self, request: web.Request) -> web.Response:
        return web.json_response(self._backend.state())

    async def populate(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            created = populate(self._backend.store, body, self._backend.clock.now())
        except PopulateError as error:
            return _bad_request(str(error))
        self._log.info("emulator.populated", workgroups=len(created["workgroups"]),
                       sessions=len(created["sessions"]))
        return web.json_response(created)
