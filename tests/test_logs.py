"""supervisor.logs: JSON lines, and no secret in any value of any event, whoever emits it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from supervisor.logs import configure_logging

SECRETS = ("SECRET-PATH-TOKEN-123", "SECRET-QUERY-456", "SECRET-PASS-789", "SECRET-HEADER-000")
URL = "http://user:SECRET-PASS-789@127.0.0.1:9/hook/SECRET-PATH-TOKEN-123?token=SECRET-QUERY-456"


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    before = list(root.handlers)
    stream = io.StringIO()
    configure_logging("debug", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = before
        structlog.reset_defaults()


def events(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def assert_clean(text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"{leaked} in {text}"


def test_values_nested_and_exceptions_are_redacted(output: io.StringIO) -> None:
    log = structlog.get_logger("test")
    log.warning("notification.retrying", error=f"TooManyRedirects: url='{URL}'",
                detail={"urls": [URL, ("Bearer SECRET-HEADER-000",)]}, cause=ValueError(URL), attempt=2)
    try:
        raise RuntimeError(f"failed on {URL}")
    except RuntimeError:
        log.exception("notification.crashed")
    first, second = events(output)
    assert first["event"] == "notification.retrying" and first["attempt"] == 2
    assert first["error"] == "TooManyRedirects: url='http://***@127.0.0.1:9/***'"
    assert first["detail"] == {"urls": ["http://***@127.0.0.1:9/***", ["Bearer ***"]]}
    assert "RuntimeError: failed on http://***@127.0.0.1:9/***" in second["exception"]
    assert_clean(output.getvalue())


def test_stdlib_records_are_routed_through_the_same_chain(output: io.StringIO) -> None:
    try:
        raise OSError(f"reset by {URL}")
    except OSError:
        logging.getLogger("aiohttp.client").warning("request to %s failed", URL, exc_info=True)
    (record,) = events(output)
    assert record["event"] == "request to http://***@127.0.0.1:9/*** failed"
    assert record["logger"] == "aiohttp.client" and record["level"] == "warning"
    assert "OSError: reset by http://***@127.0.0.1:9/***" in record["exception"]
    assert_clean(output.getvalue())


def test_reconfiguring_replaces_the_stdlib_handler(output: io.StringIO) -> None:
    other = io.StringIO()
    configure_logging("info", stream=other)
    logging.getLogger("x").error("once")
    assert output.getvalue() == ""
    assert [event["event"] for event in events(other)] == ["once"]
