"""structlog configured for one JSON object per line: an event name, a UTC timestamp, stable keys.

Every event passes :func:`redact_secrets` last before rendering, so no value (a string, a nested
container, a formatted exception, an object's repr) carries a URL path, a query token, userinfo or a
bearer token: this covers our events (e.g. ``aws.retrying`` and ``notification.retrying`` with the error
that caused the retry), those libraries emit through structlog, and stdlib ``logging`` records (asyncio,
aiohttp, botocore), which are routed through the same chain.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

from supervisor.redaction import redact_value

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def redact_secrets(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: :func:`~supervisor.redaction.redact_value` on every value of the event."""
    return {key: redact_value(value) for key, value in event_dict.items()}


class _StdlibHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Renders stdlib records as our JSON lines; follows ``sys.stderr`` when no stream was given."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream or sys.stderr)
        self._follow_stderr = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow_stderr:
            self.stream = sys.stderr
        super().emit(record)


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the moment of writing (it may be replaced after configuration, e.g.
    by a test harness capturing output), never to a stream that was closed since."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            redact_secrets,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream or _CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    handler = _StdlibHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_secrets,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
    ))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
