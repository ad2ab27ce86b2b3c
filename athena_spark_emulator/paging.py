"""Newest-first indexes with opaque NextTokens: one page costs O(log n + page + filtered-out items)."""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Callable, Iterator

from athena_spark_emulator.errors import invalid_request

Key = tuple[float, int]


def encode_token(key: Key) -> str:
    return base64.urlsafe_b64encode(f"{key[0]!r}|{key[1]}".encode()).decode()


def decode_token(token: str) -> Key:
    """Decode a NextToken; an invalid one is an InvalidRequestException naming NextToken."""
    try:
        stamp, _, seq = base64.urlsafe_b64decode(token.encode()).decode().partition("|")
        return (float(stamp), int(seq))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid_request("NextToken is invalid or expired") from None


class NewestFirstIndex:
    """Ids kept sorted by ``(timestamp, seq)``; iterated newest first from an optional token."""

    __slots__ = ("_ids", "_keys")

    def __init__(self) -> None:
        self._keys: list[Key] = []
        self._ids: list[str] = []

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, key: Key, item_id: str) -> None:
        position = bisect.bisect_right(self._keys, key)
        self._keys.insert(position, key)
        self._ids.insert(position, item_id)

    def ids(self) -> list[str]:
        """All ids, oldest first."""
        return list(self._ids)

    def newest_first(self, after: Key | None = None) -> Iterator[tuple[Key, str]]:
        position = len(self._keys) if after is None else bisect.bisect_left(self._keys, after)
        for index in range(position - 1, -1, -1):
            yield self._keys[index], self._ids[index]

    def page(self, token: str | None, limit: int,
             keep: Callable[[str], bool] | None = None) -> tuple[list[str], str | None]:
        """Return up to ``limit`` ids (newest first) after ``token`` that ``keep``, and the next token."""
        after = decode_token(token) if token else None
        found: list[str] = []
        last: Key | None = None
        for key, item_id in self.newest_first(after):
            if len(found) == limit:
                return found, encode_token(last) if last is not None else None
            if keep is None or keep(item_id):
                found.append(item_id)
                last = key
        return found, None
