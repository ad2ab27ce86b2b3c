"""Test helper shared by the Prometheus and Grafana deploy tests: the metric names a PromQL query reads.

Not a PromQL parser: it removes what cannot be a metric name (strings, label matchers, ranges, grouping
clauses, numbers) and keeps identifiers that are not function calls or keywords. Good enough for the
queries in deploy/, and its own test keeps it honest.
"""

from __future__ import annotations

import re

_KEYWORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "inf", "nan",
})
_STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`""")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NUMBER = re.compile(r"(?<![A-Za-z0-9_:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:ms|s|m|h|d|w|y)?")
_IDENTIFIER = re.compile(r"(?<![A-Za-z0-9_:$.])[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Every metric name ``expr`` selects."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group(0)
        if text[match.end():].lstrip().startswith("(") or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


# The fleet's metrics (docs/fleet.md, "Metrics"), with their labels: the alert rules and the dashboard rely on
# them.
FLEET_METRICS: dict[str, tuple[str, ...]] = {
    "athena_supervisor_shard_owned": ("account", "region"),
    "athena_supervisor_shard_credentials_failing": ("account", "region"),
    "athena_supervisor_lease_changes_total": ("outcome",),
}
# Event-fed discovery's metrics (docs/events.md, "Metrics"), with their labels: the alert rules and the dashboard's
# Events row rely on them.
EVENT_METRICS: dict[str, tuple[str, ...]] = {
    "athena_supervisor_events_received_total": ("outcome",),
    "athena_supervisor_discovery_missed_events_total": ("account", "region", "kind"),
    "athena_supervisor_events_queue_depth": (),
    "athena_supervisor_events_last_received_timestamp_seconds": (),
    "athena_supervisor_event_delivery_seconds": (),
}
# Metrics of a target gain these labels in a fleet (its shard); the rules and panels must not drop them.
SHARD_LABELS = ("account", "region")
