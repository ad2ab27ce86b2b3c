"""The environment the harnesses give the processes they start.

The harnesses also run in the background of the test suite, in threads, while pytest sets and deletes
``PYTEST_CURRENT_TEST`` in ``os.environ`` around every test. ``{**os.environ}`` lists the keys and then reads
each one, so a key deleted in between raised ``KeyError`` and ended a whole background scenario (the fleet's
process scenarios, once in three runs on a loaded machine). Copied here key by key from a list of the keys taken at
once, a key gone meanwhile is simply left out.
"""

from __future__ import annotations

import os
import urllib.request
from typing import Any


def environment(*extras: dict[str, str]) -> dict[str, str]:
    """A copy of this process's environment, then each of ``extras`` over it."""
    copied: dict[str, str] = {}
    for key in list(os.environ):  # the keys at once (os.environ lists them from a copy of its dict's keys)
        value = os.environ.get(key)
        if value is not None:
            copied[key] = value
    for extra in extras:
        copied.update(extra)
    return copied


# urllib's default opener looks for proxies in os.environ (every variable, by iterating it: the race above, a KeyError
# in a background scenario now and then) when the process's first urlopen builds it, and again for each request if
# it found one. The harnesses talk to servers on loopback: no proxy, and os.environ left alone.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def urlopen(url: str | urllib.request.Request, timeout: float) -> Any:
    """``urllib.request.urlopen`` without proxies, so without reading ``os.environ`` (for servers on loopback)."""
    return _DIRECT.open(url, timeout=timeout)
