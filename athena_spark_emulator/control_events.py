"""The control API's event routes: ``/_emulator/events`` (CloudTrail event publishing) and ``/_emulator/call``.

- ``POST /events`` configures publishing (:class:`~athena_spark_emulator.event_settings.EventSettings`; a bad
  value answers 400 naming the field), ``GET /events`` shows the configuration and counters, ``DELETE /events``
  stops publishing and discards what is pending.
- ``POST /call`` ``{"operation", "params", "account", "region"}`` serves one Athena call as a user of that
  account-region would make it (same validation, answer and event), without throttling or injected faults,
  audited as ``control``: a benchmark starts work throughout a run with it, without spending the request
  budget of the daemon it measures. The answer is the Athena response (HTTP 200) or error body (its
  status, ``__type`` and ``Message``, plus ``error`` for people), with ``x-amzn-RequestId``.
"""

from __future__ import annotations

import uuid

from aiohttp import web

from athena_spark_emulator.callers import RequestInfo
from athena_spark_emulator.control import PREFIX, bad_request, checked_scope, json_body
from athena_spark_emulator.event_settings import EventSettings
from athena_spark_emulator.fleet import Fleet

CALL_KEYS = frozenset({"operation", "params", "account", "region"})


class EventControlApi:
    """aiohttp handlers over a :class:`Fleet`'s event publisher and account-regions."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(f"{PREFIX}/events", self.get_events),
            web.post(f"{PREFIX}/events", self.set_events),
            web.delete(f"{PREFIX}/events", self.clear_events),
            web.post(f"{PREFIX}/call", self.call),
        ]

    async def get_events(self, request: web.Request) -> web.Response:
        return web.json_response(self._fleet.events.status())

    async def set_events(self, request: web.Request) -> web.Response:
        try:
            settings = EventSettings.from_json(await json_body(request))
        except ValueError as error:
            raise bad_request(str(error)) from None
        return web.json_response(await self._fleet.events.configure(settings))

    async def clear_events(self, request: web.Request) -> web.Response:
        return web.json_response(await self._fleet.events.clear())

    async def call(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        if not isinstance(body, dict):
            raise bad_request("expected a JSON object")
        unknown = set(body) - CALL_KEYS
        if unknown:
            raise bad_request(f"{sorted(unknown)[0]}: unknown key (known: {', '.join(sorted(CALL_KEYS))})")
        operation, params = body.get("operation"), body.get("params", {})
        if not isinstance(operation, str) or not operation:
            raise bad_request(f"operation: expected an Athena operation name, got {operation!r}")
        if not isinstance(params, dict):
            raise bad_request(f"params: expected a JSON object of request members, got {params!r}")
        backend = self._fleet.backend(*checked_scope(body.get("account"), body.get("region")))
        info = RequestInfo(str(uuid.uuid4()), request.headers.get("User-Agent", ""), request.remote or "127.0.0.1")
        status, payload, error = backend.control_call(operation, params, info)
        if error is not None:
            payload = {**payload, "error": f"{error}: {payload.get('Message', '')}"}
        return web.json_response(payload, status=status, headers={"x-amzn-RequestId": info.request_id})
