"""Opaque keyset cursors: the last row's sort key, base64url-encoded JSON.

A cursor comes back from the client, so each part of its key is checked to the range of the
column it is compared with (`key_id`, `key_instant`, `key_int`) before it reaches SQL: a part
this API could not have written is a 422, never a database error."""

from __future__ import annotations

import base64
import heapq
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from itertools import islice
from typing import Any, TypeVar
from uuid import UUID

import orjson

from reservations.errors import InvalidInput
from reservations.kit.fields import within_range

T = TypeVar("T")

BIGINT_MAX = 2**63 - 1
XID8_MAX = 2**64 - 1
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


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


def key_id(raw: str) -> UUID:
    """An id as encode_cursor writes it (lowercase, hyphenated)."""
    if not _UUID.fullmatch(raw):
        raise invalid_cursor()
    return UUID(raw)


def key_instant(raw: str) -> datetime:
    """An instant as encode_cursor writes it (ISO 8601 with an offset), in the range every
    stored timestamp lies in (kit/fields.py: 1970 to 9000)."""
    try:
        at = datetime.fromisoformat(raw)
        if at.tzinfo is None:
            raise ValueError("naive")
        return within_range(at)
    except ValueError:
        raise invalid_cursor() from None


def key_int(raw: str, *, high: int = BIGINT_MAX) -> int:
    """A non-negative integer in ASCII digits, at most `high` (a bigint's, or an xid8's)."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(high)):
        raise invalid_cursor()
    value = int(raw)
    if value > high:
        raise invalid_cursor()
    return value


def decode_id_cursor(cursor: str) -> UUID:
    """The id of a cursor keyed by id alone."""
    (raw,) = decode_cursor(cursor, 1)
    return key_id(raw)


def decode_instant_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The (instant, id) of a cursor keyed by a time and then the id."""
    raw_at, raw_id = decode_cursor(cursor, 2)
    return key_instant(raw_at), key_id(raw_id)


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
        out[name or "primary"] = key_int(number)
    return out
