"""Opaque keyset cursors: the last row's sort key, base64url-encoded JSON."""

from __future__ import annotations

import base64
import heapq
from collections.abc import Callable, Iterable
from datetime import datetime
from itertools import islice
from typing import Any, TypeVar

import orjson

from reservations.errors import InvalidInput

T = TypeVar("T")


def encode_cursor(*key: Any) -> str:
    raw = orjson.dumps([k.isoformat() if isinstance(k, datetime) else str(k) for k in key])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, orjson.JSONDecodeError):
        parts = None
    if (
        not isinstance(parts, list)
        or len(parts) != arity
        or not all(isinstance(p, str) for p in parts)
    ):
        raise invalid_cursor()
    return parts


def invalid_cursor() -> InvalidInput:
    return InvalidInput(
        "The cursor is not one this API issued. Pass the next_cursor of the previous page "
        "unchanged, or omit it to start from the first page.",
        errors=[{"field": "cursor", "in": "query", "message": "malformed cursor"}],
    )


def merged(
    pages: Iterable[list[T]], *, key: Callable[[T], Any], limit: int, reverse: bool = False
) -> list[T]:
    """The first `limit` rows of several pages each sorted by `key` (one page per shard,
    each the first rows after the same cursor): the first rows after it overall. Each
    page's own order is kept, so the result's rows from a page are a prefix of it."""
    return list(islice(heapq.merge(*pages, key=key, reverse=reverse), limit))


def encode_positions(positions: dict[str, int]) -> str:
    """A cursor holding one position per database (`name:n,...`); with only the catalog's
    (`primary`), the plain one-number cursor it always was."""
    if list(positions) == ["primary"]:
        return encode_cursor(positions["primary"])
    return encode_cursor(",".join(f"{name}:{n}" for name, n in sorted(positions.items())))


def decode_positions(cursor: str | None) -> dict[str, int]:
    if cursor is None:
        return {}
    (raw,) = decode_cursor(cursor, 1)
    out: dict[str, int] = {}
    for part in raw.split(","):
        name, _, number = part.rpartition(":")
        if not number.isdigit() or len(number) > 18:
            raise invalid_cursor()
        out[name or "primary"] = int(number)
    return out
