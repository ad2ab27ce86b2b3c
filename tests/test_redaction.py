"""supervisor.redaction: URLs keep scheme, host and port; credentials, paths, queries and header values go."""

from __future__ import annotations

import pytest

from supervisor.redaction import MASK, redact_headers, redact_text, redact_url, redact_value


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("https://hooks.example.com/services/T0/B0/secret", "https://hooks.example.com/***"),
        ("https://hooks.example.com/?token=abc", "https://hooks.example.com/***"),
        ("https://hooks.example.com#frag", "https://hooks.example.com/***"),
        ("http://user:pw@127.0.0.1:8080/", "http://***@127.0.0.1:8080/"),
        ("http://user:pw@127.0.0.1:8080/hook?token=x", "http://***@127.0.0.1:8080/***"),
        ("http://token@example.com", "http://***@example.com"),
        ("https://example.com", "https://example.com"),
        ("https://example.com/", "https://example.com/"),
        ("http://[::1]:9000/path", "http://[::1]:9000/***"),
        ("ftp://files.example.com/TOKEN?token=abc", "ftp://files.example.com/***"),
        ("HTTPS://Example.COM:443/x", "https://example.com:443/***"),
        ("http://example.com:notaport/x", MASK),
        ("not a url", MASK),
        ("", MASK),
    ],
)
def test_redact_url(url: str, masked: str) -> None:
    assert redact_url(url) == masked


def test_two_endpoints_stay_apart_by_host_and_port() -> None:
    assert redact_url("https://a.example.com/x") != redact_url("https://b.example.com/x")
    assert redact_url("http://127.0.0.1:1/x") != redact_url("http://127.0.0.1:2/x")


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        # aiohttp's TooManyRedirects / ClientResponseError text
        ("TooManyRedirects: 0, message='', url='http://127.0.0.1:5000/SECRET-PATH?token=SECRET-QUERY'",
         "TooManyRedirects: 0, message='', url='http://127.0.0.1:5000/***'"),
        ("ClientConnectorError: Cannot connect to host h:1 ssl:default [Connection refused]",
         "ClientConnectorError: Cannot connect to host h:1 ssl:default [Connection refused]"),
        ("URL('https://u:p@hooks.example.com/a/b')", "URL('https://***@hooks.example.com/***')"),
        ("two: http://a/x and https://b:8/y.", "two: http://a/*** and https://b:8/***"),
        ("header Bearer SECRET-HEADER-000 sent", "header Bearer *** sent"),
        ("basic dXNlcjpwdw==", "basic ***"),
        ("{'Authorization': 'Bearer abc', 'X-Api-Key': 'k1'}", "{'Authorization': '***', 'X-Api-Key': '***'}"),
        ("Authorization: Basic abc", "Authorization: ***"),
        ("aws_secret_access_key=AKIAxyz token=t1 password: hunter2",
         "aws_secret_access_key=*** token=*** password: ***"),
        ("HTTP 500", "HTTP 500"),
        ("calculation c-1 crossed max_runtime after 90s", "calculation c-1 crossed max_runtime after 90s"),
        ("arn:aws:sns:us-east-1:123456789012:topic", "arn:aws:sns:us-east-1:123456789012:topic"),
    ],
)
def test_redact_text(text: str, masked: str) -> None:
    assert redact_text(text) == masked


def test_redact_text_is_idempotent() -> None:
    text = "url='http://u:p@h:1/p?q=1' Bearer x"
    assert redact_text(redact_text(text)) == redact_text(text)


def test_redact_headers_keeps_names_only() -> None:
    assert redact_headers({"Authorization": "Bearer x", "X-Team": "data"}) == {"Authorization": MASK, "X-Team": MASK}


class Opaque:
    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Opaque({self.text!r})"


def test_redact_value_walks_containers_and_objects() -> None:
    harmless = Opaque("fine")
    value = {
        "url": "https://h/p?token=1",
        "nested": [("Bearer abc", 3), {"deeper": {"x": "http://u:p@h/"}}],
        "numbers": [1, 2.5, True, None],
        "error": ValueError("failed on https://h/secret"),
        "opaque": harmless,
    }
    assert redact_value(value) == {
        "url": "https://h/***",
        "nested": [("Bearer ***", 3), {"deeper": {"x": "http://***@h/"}}],
        "numbers": [1, 2.5, True, None],
        "error": "ValueError('failed on https://h/***')",
        "opaque": harmless,
    }
