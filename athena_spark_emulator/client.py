"""A small synchronous client for the control API (used by the pytest fixture, the demo and benches)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class ControlError(RuntimeError):
    """The control API answered an error (the message is its ``error``)."""


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
            raise ControlError(f"{method} {path}: HTTP {error.code}: {detail}") from None

    def calls(self, since: str | None = None, operation: str | None = None) -> list[dict[str, Any]]:
        """Audit-log entries (oldest first), at or after ``since`` (ISO-8601), optionally of one operation."""
        query = {key: value for key, value in (("since", since), ("operation", operation)) if value}
        result: list[dict[str, Any]] = self._request("GET", "calls", query=query)["calls"]
        return result

    def set_faults(self, operation: str | None = None, *, throttle_tps: float | None = None,
                   burst: float | None = None, error_rate: float | None = None,
                   latency: str | float | None = None) -> dict[str, Any]:
        """Install a fault rule for one operation (or globally when ``operation`` is None)."""
        body = {key: value for key, value in (("operation", operation), ("throttle_tps", throttle_tps),
                                             ("burst", burst), ("error_rate", error_rate),
                                             ("latency", latency)) if value is not None}
        result: dict[str, Any] = self._request("POST", "faults", body)
        return result

    def clear_faults(self, operation: str | None = None) -> None:
        """Clear one operation's throttle/error-rate/latency rule, or (no operation) every fault of every kind."""
        self._request("DELETE", "faults", query={"operation": operation} if operation else None)

    def faults(self) -> dict[str, Any]:
        """Every installed fault: ``global``, ``operations``, ``errors``, ``states``, ``removals``."""
        result: dict[str, Any] = self._request("GET", "faults")
        return result

    def _add(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        rule: dict[str, Any] = self._request("POST", f"faults/{kind}",
                                             {key: value for key, value in body.items() if value is not None})
        return rule

    def _remove(self, kind: str, rule_id: str | None) -> list[dict[str, Any]]:
        left: list[dict[str, Any]] = self._request("DELETE", f"faults/{kind}",
                                                   query={"id": rule_id} if rule_id else None)[kind]
        return left

    def add_error(self, error: str, *, operation: str | None = None, session_id: str | None = None,
                  calculation_id: str | None = None, workgroup: str | None = None, message: str | None = None,
                  count: int | None = None) -> dict[str, Any]:
        """Answer ``error`` to the calls about a resource (and/or of an operation); returns the rule and its id."""
        return self._add("errors", {"error": error, "operation": operation, "session_id": session_id,
                                    "calculation_id": calculation_id, "workgroup": workgroup, "message": message,
                                    "count": count})

    def clear_errors(self, rule_id: str | None = None) -> list[dict[str, Any]]:
        """Remove one error rule (or all); returns the rules left."""
        return self._remove("errors", rule_id)

    def override_state(self, state: str, *, session_id: str | None = None,
                       calculation_id: str | None = None) -> dict[str, Any]:
        """Report ``state`` for one session or calculation in Get*/List* answers; returns the rule."""
        return self._add("states", {"state": state, "session_id": session_id, "calculation_id": calculation_id})

    def clear_state_overrides(self, rule_id: str | None = None) -> list[dict[str, Any]]:
        return self._remove("states", rule_id)

    def remove_fields(self, operation: str, fields: list[str], *, session_id: str | None = None,
                      calculation_id: str | None = None, workgroup: str | None = None) -> dict[str, Any]:
        """Drop ``fields`` (dotted paths, list items too) from ``operation``'s answers; returns the rule."""
        return self._add("removals", {"operation": operation, "fields": fields, "session_id": session_id,
                                      "calculation_id": calculation_id, "workgroup": workgroup})

    def clear_field_removals(self, rule_id: str | None = None) -> list[dict[str, Any]]:
        return self._remove("removals", rule_id)

    def reset(self) -> None:
        self._request("POST", "reset", {})

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "state")
        return result

    def populate(self, spec: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", "populate", spec)
        return result
