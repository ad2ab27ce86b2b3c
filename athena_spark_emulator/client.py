"""A small synchronous client for the control API (used by the pytest fixture, the demo and benches).

Every method takes optional keyword-only ``account`` and ``region``: the account-region a fault or populate
acts on (each defaulting to the emulator's default), or the filters of ``calls``, ``state`` and ``reset``
(none: every account-region).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class ControlError(RuntimeError):
    """The control API answered an error (the message is its ``error``).

    Attributes:
        status: the HTTP status.
        error_type: for :meth:`ControlClient.call`, the Athena error's ``__type`` (else None).
    """

    def __init__(self, message: str, *, status: int | None = None, error_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


def _query(**values: str | None) -> dict[str, str]:
    return {key: value for key, value in values.items() if value}


def _error_type(detail: str) -> str | None:
    """The ``__type`` of an Athena error body (what ``POST /_emulator/call`` answers), else None."""
    try:
        body = json.loads(detail)
    except ValueError:
        return None
    error_type = body.get("__type") if isinstance(body, dict) else None
    return error_type if isinstance(error_type, str) else None


class ControlClient:
    """Talks to ``<endpoint>/_emulator``.

    Args:
        control_url: e.g. ``http://127.0.0.1:4566/_emulator``.
        timeout: seconds per request.
    """

    def __init__(self, control_url: str, *, timeout: float = 30.0) -> None:
        self.control_url = control_url.rstrip("/")
        self._timeout = timeout

    def _request(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> Any:
        url = f"{self.control_url}/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")
            raise ControlError(f"{method} {path}: HTTP {error.code}: {detail}", status=error.code,
                               error_type=_error_type(detail)) from None

    def calls(self, since: str | None = None, operation: str | None = None, *, account: str | None = None,
              region: str | None = None) -> list[dict[str, Any]]:
        """Audit-log entries (oldest first), at or after ``since`` (ISO-8601), optionally of one operation,
        account and/or region."""
        query = _query(since=since, operation=operation, account=account, region=region)
        result: list[dict[str, Any]] = self._request("GET", "calls", query=query)["calls"]
        return result

    def set_faults(self, operation: str | None = None, *, throttle_tps: float | None = None,
                   burst: float | None = None, error_rate: float | None = None,
                   latency: str | float | None = None, account: str | None = None,
                   region: str | None = None) -> dict[str, Any]:
        """Install a fault rule for one operation (or globally when ``operation`` is None)."""
        body = {key: value for key, value in (("operation", operation), ("throttle_tps", throttle_tps),
                                             ("burst", burst), ("error_rate", error_rate),
                                             ("latency", latency)) if value is not None}
        result: dict[str, Any] = self._request("POST", "faults", body, _query(account=account, region=region))
        return result

    def clear_faults(self, operation: str | None = None, *, account: str | None = None,
                     region: str | None = None) -> None:
        """Clear one operation's throttle/error-rate/latency rule, or (no operation) every fault of every kind."""
        self._request("DELETE", "faults", query=_query(operation=operation, account=account, region=region))

    def faults(self, *, account: str | None = None, region: str | None = None) -> dict[str, Any]:
        """Every installed fault: ``global``, ``operations``, ``errors``, ``states``, ``removals``."""
        result: dict[str, Any] = self._request("GET", "faults", query=_query(account=account, region=region))
        return result

    def _add(self, kind: str, body: dict[str, Any], account: str | None, region: str | None) -> dict[str, Any]:
        rule: dict[str, Any] = self._request("POST", f"faults/{kind}",
                                             {key: value for key, value in body.items() if value is not None},
                                             _query(account=account, region=region))
        return rule

    def _remove(self, kind: str, rule_id: str | None, account: str | None,
                region: str | None) -> list[dict[str, Any]]:
        left: list[dict[str, Any]] = self._request(
            "DELETE", f"faults/{kind}", query=_query(id=rule_id, account=account, region=region))[kind]
        return left

    def add_error(self, error: str, *, operation: str | None = None, session_id: str | None = None,
                  calculation_id: str | None = None, workgroup: str | None = None, message: str | None = None,
                  count: int | None = None, account: str | None = None,
                  region: str | None = None) -> dict[str, Any]:
        """Answer ``error`` to the calls about a resource (and/or of an operation); returns the rule and its id."""
        return self._add("errors", {"error": error, "operation": operation, "session_id": session_id,
                                    "calculation_id": calculation_id, "workgroup": workgroup, "message": message,
                                    "count": count}, account, region)

    def clear_errors(self, rule_id: str | None = None, *, account: str | None = None,
                     region: str | None = None) -> list[dict[str, Any]]:
        """Remove one error rule (or all); returns the rules left."""
        return self._remove("errors", rule_id, account, region)

    def override_state(self, state: str, *, session_id: str | None = None, calculation_id: str | None = None,
                       account: str | None = None, region: str | None = None) -> dict[str, Any]:
        """Report ``state`` for one session or calculation in Get*/List* answers; returns the rule."""
        return self._add("states", {"state": state, "session_id": session_id, "calculation_id": calculation_id},
                         account, region)

    def clear_state_overrides(self, rule_id: str | None = None, *, account: str | None = None,
                              region: str | None = None) -> list[dict[str, Any]]:
        return self._remove("states", rule_id, account, region)

    def remove_fields(self, operation: str, fields: list[str], *, session_id: str | None = None,
                      calculation_id: str | None = None, workgroup: str | None = None,
                      account: str | None = None, region: str | None = None) -> dict[str, Any]:
        """Drop ``fields`` (dotted paths, list items too) from ``operation``'s answers; returns the rule."""
        return self._add("removals", {"operation": operation, "fields": fields, "session_id": session_id,
                                      "calculation_id": calculation_id, "workgroup": workgroup}, account, region)

    def clear_field_removals(self, rule_id: str | None = None, *, account: str | None = None,
                             region: str | None = None) -> list[dict[str, Any]]:
        return self._remove("removals", rule_id, account, region)

    def reset(self, *, account: str | None = None, region: str | None = None) -> None:
        """Back to the start state: the account-regions of ``account``/``region``, or (neither) everything."""
        self._request("POST", "reset", {}, _query(account=account, region=region))

    def state(self, *, account: str | None = None, region: str | None = None) -> dict[str, Any]:
        """The summary of the account-regions of ``account``/``region`` (neither: all of them)."""
        result: dict[str, Any] = self._request("GET", "state", query=_query(account=account, region=region))
        return result

    def populate(self, spec: dict[str, Any], *, account: str | None = None,
                 region: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", "populate", spec, _query(account=account, region=region))
        return result

    def set_role(self, role_arn: str, *, deny: bool = False, external_id: str | None = None) -> dict[str, Any]:
        """Make AssumeRole of ``role_arn`` refuse every caller (``deny``) or require ``external_id``."""
        body: dict[str, Any] = {"role_arn": role_arn, "deny": deny}
        if external_id is not None:
            body["external_id"] = external_id
        result: dict[str, Any] = self._request("POST", "roles", body)
        return result

    def roles(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "roles")["roles"]
        return result

    def clear_roles(self, role_arn: str | None = None) -> list[dict[str, Any]]:
        """Remove the rule of one role (or every rule); returns the rules left."""
        result: list[dict[str, Any]] = self._request("DELETE", "roles", query=_query(role_arn=role_arn))["roles"]
        return result

    # -- CloudTrail events and calls as a user would make them -------------------------------------------
    def set_events(self, *, sqs_queue_url: str | None = None, event_bus_name: str | None = None,
                   endpoint_url: str | None = None, region: str | None = None, delay: str | float | None = None,
                   drop_rate: float | None = None, duplicate_rate: float | None = None,
                   seed: int | None = None) -> dict[str, Any]:
        """Publish every successful write call's CloudTrail event to an SQS queue or an EventBridge bus
        (replacing any previous configuration); returns what :meth:`events` returns."""
        body = {key: value for key, value in (
            ("sqs_queue_url", sqs_queue_url), ("event_bus_name", event_bus_name), ("endpoint_url", endpoint_url),
            ("region", region), ("delay", delay), ("drop_rate", drop_rate), ("duplicate_rate", duplicate_rate),
            ("seed", seed)) if value is not None}
        result: dict[str, Any] = self._request("POST", "events", body)
        return result

    def events(self) -> dict[str, Any]:
        """``{"configuration": {...} or None, "counters": {"events", "published", "dropped", "duplicated",
        "failed", "pending", "discarded"}}``."""
        result: dict[str, Any] = self._request("GET", "events")
        return result

    def clear_events(self) -> dict[str, Any]:
        """Stop publishing (pending deliveries are discarded); returns the last counters."""
        result: dict[str, Any] = self._request("DELETE", "events")
        return result

    def call(self, operation: str, params: dict[str, Any] | None = None, *, account: str | None = None,
             region: str | None = None) -> dict[str, Any]:
        """Make one Athena call as a user of that account-region would (same answer and event), without
        throttling or injected faults; returns the response. An Athena error raises :class:`ControlError`
        with its ``error_type``."""
        body: dict[str, Any] = {"operation": operation, "params": params or {}}
        body.update(_query(account=account, region=region))
        result: dict[str, Any] = self._request("POST", "call", body)
        return result
