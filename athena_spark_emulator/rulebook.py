"""An ordered set of injected rules under stable ids (``error-1``, ``state-2``…) for the control API."""

from __future__ import annotations

import itertools
from typing import Any, Generic, Protocol, TypeVar


class JsonRule(Protocol):
    def to_json(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=JsonRule)


class UnknownRule(KeyError):
    """No rule has this id (it was removed, used up, or never existed)."""


class RuleBook(Generic[R]):
    """Rules in installation order; ids are never reused until :meth:`clear`, so a client can remove the
    rule it added without racing another client.

    Args:
        prefix: the id prefix, e.g. ``error`` gives ``error-1``, ``error-2``…
    """

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._rules: dict[str, R] = {}
        self._ids = itertools.count(1)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def add(self, rule: R) -> str:
        rule_id = f"{self._prefix}-{next(self._ids)}"
        self._rules[rule_id] = rule
        return rule_id

    def update(self, rule_id: str, rule: R) -> None:
        """Replace a rule in place (keeps its id and position)."""
        if rule_id not in self._rules:
            raise UnknownRule(rule_id)
        self._rules[rule_id] = rule

    def remove(self, rule_id: str) -> R:
        try:
            return self._rules.pop(rule_id)
        except KeyError:
            raise UnknownRule(rule_id) from None

    def clear(self) -> None:
        self._rules.clear()
        self._ids = itertools.count(1)

    def items(self) -> list[tuple[str, R]]:
        return list(self._rules.items())

    def get(self, rule_id: str) -> R:
        try:
            return self._rules[rule_id]
        except KeyError:
            raise UnknownRule(rule_id) from None

    def to_json(self) -> list[dict[str, Any]]:
        return [{"id": rule_id, **rule.to_json()} for rule_id, rule in self._rules.items()]
