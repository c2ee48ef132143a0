"""The hash chain, pure: how an audit row becomes bytes, and how the chain links them.

Position `seq` (1, 2, 3...) holds `sha256(previous hash || canonical bytes)`; before
position 1 the previous hash is 32 zero bytes. The canonical bytes are UTF-8 JSON of one
object with these members, keys sorted by code point, no whitespace:

    action, actor, after, before, changed_at, id, object_id, object_type, request_id, seq,
    tenant_id, txid

- `id` and `seq` are integers; `txid` is the transaction id as a decimal string; uuids are
  their lowercase hyphenated text; `changed_at` is UTC as `YYYY-MM-DDTHH:MM:SS.ffffffZ`;
  `actor`, `request_id` may be null.
- `before` and `after` are the stored JSON (or null), re-serialized the same way: object
  keys sorted, no whitespace, numbers exactly as PostgreSQL prints them (never re-parsed
  into floats, so 1.10 and 1.1 stay different).
- Strings are JSON strings escaping only what JSON requires: `"`, `\\`, and control
  characters (\\b \\f \\n \\r \\t, others as \\u00xx); everything else is literal UTF-8.

Changing any stored column of a sealed row, removing it, or removing or reordering a seal
changes a hash from there on; `verify` (reservations.audit.service) names the first one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from reservations.audit.repository import AuditTextRow

GENESIS = bytes(32)


class _Number(str):
    """A JSON number kept as the text it was written with."""


def parse_json(text: str | None) -> Any:
    """Stored JSON (PostgreSQL's text form) with every number kept as written."""
    if text is None:
        return None
    return json.loads(text, parse_int=_Number, parse_float=_Number, parse_constant=_Number)


def canonical_json(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, _Number):
        return str.__str__(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        items = sorted(value.items())
        return "{" + ",".join(f"{canonical_json(k)}:{canonical_json(v)}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(canonical_json(v) for v in value) + "]"
    raise TypeError(f"no canonical JSON for {type(value).__name__}")


def canonical_bytes(row: AuditTextRow, seq: int) -> bytes:
    """The bytes the hash covers for `row` (the columns of an audit row that the hash covers,
    in the text forms the repository reads: chosen so that reading them back can only give
    the same bytes) at `seq`."""
    doc: dict[str, Any] = {
        "id": row.id,
        "tenant_id": row.tenant_id,
        "actor": row.actor,
        "request_id": row.request_id,
        "action": row.action,
        "object_type": row.object_type,
        "object_id": row.object_id,
        "before": parse_json(row.before),
        "after": parse_json(row.after),
        "txid": row.txid,
        "changed_at": row.changed_at,
        "seq": seq,
    }
    return canonical_json(doc).encode("utf-8")


def link(previous: bytes, row: AuditTextRow, seq: int) -> bytes:
    return hashlib.sha256(previous + canonical_bytes(row, seq)).digest()
