"""SQL for the audit log: the sealer's reads and writes, the verifier's reads, the API's page.

Audit rows are only ever written by the triggers of migration 0007; nothing here changes
one (the table refuses it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from reservations.kit.db import Conn, fetch_all, fetch_one, fetch_value

# The (int, int) advisory-lock key that lets one sealer at a time extend the chain (apart
# from the history job's (20261125, 1) and (20261125, 2)).
SEAL_LOCK = (20261125, 24225)

# An actor that is an API key id (not "system:...").
_UUID_PATTERN = "'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'"

# The hashed columns in the text forms reservations.audit.chain defines.
_HASHED = (
    "a.id, a.tenant_id::text AS tenant_id, a.actor, a.request_id, a.action, a.object_type,"
    " a.object_id::text AS object_id, a.before::text AS before, a.after::text AS after,"
    " a.txid::text AS txid,"
    " to_char(a.changed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    " AS changed_at"
)


@dataclass(frozen=True, slots=True)
class SealRow:
    """An `audit_seal` row: a chain position, its hash, and the audit row it seals."""

    seq: int
    hash: bytes
    audit_id: int
    txid: str


@dataclass(frozen=True, slots=True)
class AuditTextRow:
    """An `audit_log` row in the text forms the hash chain covers (_HASHED; see
    reservations.audit.chain)."""

    id: int
    tenant_id: str
    actor: str | None
    request_id: str | None
    action: str
    object_type: str
    object_id: str
    before: str | None
    after: str | None
    txid: str
    changed_at: str


@dataclass(frozen=True, slots=True)
class ChainRow:
    """A seal with the audit row it seals (`chain`): the audit columns are None when that
    row is gone."""

    seq: int
    audit_id: int
    seal_txid: str
    hash: bytes
    id: int | None
    tenant_id: str | None
    actor: str | None
    request_id: str | None
    action: str | None
    object_type: str | None
    object_id: str | None
    before: str | None
    after: str | None
    txid: str | None
    changed_at: str | None

    def audited(self) -> AuditTextRow | None:
        """The sealed audit row, or None if it is gone."""
        if (
            self.id is None
            or self.tenant_id is None
            or self.action is None
            or self.object_type is None
            or self.object_id is None
            or self.txid is None
            or self.changed_at is None
        ):
            return None
        return AuditTextRow(
            id=self.id,
            tenant_id=self.tenant_id,
            actor=self.actor,
            request_id=self.request_id,
            action=self.action,
            object_type=self.object_type,
            object_id=self.object_id,
            before=self.before,
            after=self.after,
            txid=self.txid,
            changed_at=self.changed_at,
        )


@dataclass(frozen=True, slots=True)
class UnsealedRow:
    """How many audit rows have no seal (see `unsealed_counts`)."""

    behind: int
    pending: int
    stale: int


@dataclass(frozen=True, slots=True)
class AuditEntryRow:
    """An `audit_log` row as the API shows it, with its seal (if sealed) and the acting
    key's prefix (if a key)."""

    id: int
    actor: str | None
    request_id: str | None
    action: str
    object_type: str
    object_id: UUID
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    changed_at: datetime
    seq: int | None
    hash: bytes | None
    actor_key_prefix: str | None


async def try_seal_lock(conn: Conn) -> bool:
    got = await fetch_value(conn, bool, "SELECT pg_try_advisory_xact_lock(%s, %s)", SEAL_LOCK)
    return bool(got)


async def head(conn: Conn) -> SealRow | None:
    """The last seal: its position, hash, and the (txid, audit id) the chain has reached."""
    return await fetch_one(
        conn,
        SealRow,
        "SELECT seq, hash, audit_id, txid::text AS txid FROM audit_seal ORDER BY seq DESC LIMIT 1",
    )


async def unsealed(conn: Conn, *, after: tuple[str, int] | None, limit: int) -> list[AuditTextRow]:
    """Audit rows after `after` (txid, id) in chain order, only from transactions older than
    every one still running: no row can later appear before what this returns."""
    params: dict[str, object] = {"limit": limit}
    where = ""
    if after is not None:
        where = " AND (a.txid, a.id) > (%(txid)s::xid8, %(id)s)"
        params["txid"], params["id"] = after
    return await fetch_all(
        conn,
        AuditTextRow,
        f"SELECT {_HASHED} FROM audit_log a"
        f" WHERE a.txid < pg_snapshot_xmin(pg_current_snapshot()){where}"
        " ORDER BY a.txid, a.id LIMIT %(limit)s",
        params,
    )


async def insert_seals(
    conn: Conn, *, seqs: list[int], audit_ids: list[int], txids: list[str], hashes: list[bytes]
) -> None:
    await conn.execute(
        "INSERT INTO audit_seal (seq, audit_id, txid, hash)"
        " SELECT s, a, t::xid8, h FROM unnest(%s::bigint[], %s::bigint[], %s::text[],"
        " %s::bytea[]) AS x(s, a, t, h)",
        (seqs, audit_ids, txids, hashes),
    )


async def chain(conn: Conn, *, after_seq: int, limit: int) -> list[ChainRow]:
    """Seals after `after_seq` in order, each with its audit row (NULL columns if the row is
    gone)."""
    return await fetch_all(
        conn,
        ChainRow,
        "SELECT s.seq, s.audit_id, s.txid::text AS seal_txid, s.hash, "
        f"{_HASHED} FROM audit_seal s LEFT JOIN audit_log a ON a.id = s.audit_id"
        " WHERE s.seq > %s ORDER BY s.seq LIMIT %s",
        (after_seq, limit),
    )


async def unsealed_counts(
    conn: Conn, *, head: tuple[str, int] | None, older_than_seconds: float
) -> UnsealedRow:
    """Rows without a seal: `behind` the chain's head (never sealed although the chain has
    passed them: written outside the triggers, or their seal removed), and `pending` after
    it (waiting for the sealer), with how many of those are older than the given age."""
    txid, audit_id = head if head is not None else ("0", 0)
    row = await fetch_one(
        conn,
        UnsealedRow,
        "SELECT count(*) FILTER (WHERE (a.txid, a.id) <= (%(txid)s::xid8, %(id)s)) AS behind,"
        " count(*) FILTER (WHERE (a.txid, a.id) > (%(txid)s::xid8, %(id)s)) AS pending,"
        " count(*) FILTER (WHERE (a.txid, a.id) > (%(txid)s::xid8, %(id)s)"
        "  AND a.changed_at < now() - make_interval(secs => %(age)s)) AS stale"
        " FROM audit_log a WHERE NOT EXISTS (SELECT 1 FROM audit_seal s WHERE s.audit_id = a.id)",
        {"txid": txid, "id": audit_id, "age": older_than_seconds},
    )
    assert row is not None
    return row


async def page(
    conn: Conn,
    *,
    tenant_id: UUID,
    object_id: UUID | None,
    actor: str | None,
    before_id: int | None,
    limit: int,
) -> list[AuditEntryRow]:
    """The tenant's audit rows, newest first, with their seal (if sealed yet) and the
    acting key's prefix."""
    where = ["a.tenant_id = %(tenant)s"]
    if object_id is not None:
        where.append("a.object_id = %(object)s")
    if actor is not None:
        where.append("a.actor = %(actor)s")
    if before_id is not None:
        where.append("a.id < %(before)s")
    return await fetch_all(
        conn,
        AuditEntryRow,
        "SELECT a.id, a.actor, a.request_id, a.action, a.object_type, a.object_id, a.before,"
        " a.after, a.changed_at, s.seq, s.hash, k.prefix AS actor_key_prefix"
        " FROM audit_log a LEFT JOIN audit_seal s ON s.audit_id = a.id"
        f" LEFT JOIN api_key k ON k.id = CASE WHEN a.actor ~ {_UUID_PATTERN}"
        " THEN a.actor::uuid END"
        f" WHERE {' AND '.join(where)} ORDER BY a.id DESC LIMIT %(limit)s",
        {
            "tenant": tenant_id,
            "object": object_id,
            "actor": actor,
            "before": before_id,
            "limit": limit,
        },
    )


async def snapshot(conn: Conn) -> None:
    """The rest of this transaction reads one consistent snapshot (first statement only)."""
    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
