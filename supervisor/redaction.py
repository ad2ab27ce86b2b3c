"""Secrets never reach output: pure functions that mask URLs, credentials and header values.

Webhook URLs carry their secret in the userinfo, the path or the query (``https://hooks.example.com/T0/B0/
TOKEN?token=...``), and header values carry API keys. Logs, journal entries, config errors and
``check-config`` output keep only what tells endpoints apart without granting access: scheme, host and
port. The channel name (``webhook-0``) says which of two endpoints on one host is meant.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

MASK = "***"
"""What replaces a secret: ``https://hooks.example.com/***``, ``Bearer ***``."""

_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_SCHEMES = r"(?:Bearer|Basic|Token|Digest|Negotiate|AWS4-HMAC-SHA256)"
_AUTH_SCHEME = re.compile(rf"\b({_SCHEMES})(\s+)[^\s'\",;]+", re.IGNORECASE)
_SCALARS = (bool, int, float)
_TRIGGERS = ("auth", "key", "token", "pass", "secret", "signature", "credential", "bearer", "basic", "digest",
             "negotiate", "aws4")
"""Lower-case words one of which every match of the two patterns below contains (a cheap pre-check)."""
_SECRET_KEY_VALUE = re.compile(
    r"\b([\w-]*(?:authorization|api[_-]?key|token|password|passwd|secret|signature|credential)[\w-]*)"
    r"([\"']?\s*[:=]\s*[\"']?)"
    rf"((?:{_SCHEMES}\s+)?[^\s'\",;&]+)",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """Keep scheme, host and port; mask userinfo, path, query and fragment.

    Args:
        url: any absolute URL, e.g. ``https://user:pw@hooks.example.com:8443/T0/B0/x?token=y``.

    Returns:
        e.g. ``https://***@hooks.example.com:8443/***``. A bare ``/`` path is kept (it hides nothing).
        Text that does not parse as a URL with a host is masked whole.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # e.g. a port that is not a number
        return MASK
    if not parts.scheme or not host:
        return MASK
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    if "@" in parts.netloc:
        netloc = f"{MASK}@{netloc}"
    hidden = parts.path not in ("", "/") or parts.query or parts.fragment
    return f"{parts.scheme}://{netloc}/{MASK}" if hidden else f"{parts.scheme}://{netloc}{parts.path}"


def redact_text(text: str) -> str:
    """Mask every URL (see :func:`redact_url`), ``Bearer``/``Basic`` credentials and the values of
    ``key=value`` / ``key: value`` pairs whose key names a secret (``Authorization``, ``X-Api-Key``,
    ``token``, ``password``, ``aws_secret_access_key`` ...) found in free text, e.g. an exception message
    that embeds the URL it failed on. Errs on the side of masking.
    """
    if "://" in text:
        text = _URL.sub(lambda match: redact_url(match.group(0)), text)
    lowered = text.lower()
    if not any(word in lowered for word in _TRIGGERS):  # the fast path of almost every log value
        return text
    text = _SECRET_KEY_VALUE.sub(lambda match: f"{match.group(1)}{match.group(2)}{MASK}", text)
    return _AUTH_SCHEME.sub(lambda match: f"{match.group(1)}{match.group(2)}{MASK}", text)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The header names with every value masked: any header may carry a credential."""
    return dict.fromkeys(headers, MASK)


def redact_value(value: Any) -> Any:
    """``value`` with :func:`redact_text` applied to every string inside it (dicts, lists, tuples, sets).

    Numbers, booleans and ``None`` are returned as they are. Any other object (an exception, a ``yarl.URL``)
    is returned as is when its ``repr`` holds nothing to mask, else replaced by its redacted ``repr``.
    """
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, _SCALARS):
        return value
    if isinstance(value, dict | Mapping):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [redact_value(item) for item in value]
        return items if isinstance(value, list | set | frozenset) else tuple(items)
    text = repr(value)
    masked = redact_text(text)
    return value if masked == text else masked
