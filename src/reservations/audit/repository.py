"""SQL for the audit log: the sealer's reads and writes, the verifier's reads, the API's page.

Audit rows are only ever written by the triggers of migration 0007; nothing here changes
one (the table refuses it)."""

from __future__ import annotations

from uuid import UUID

from psycopg.rows import DictRow

from reservations.kit.db import Conn

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


async def try_seal_lock(conn: Conn) -> bool:
    cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s, %s) AS got", SEAL_LOCK)
    row = await cur.fetchone()
    return bool(row and row["got"])


async def head(conn: Conn) -> DictRow | None:
    """The last seal: its position, hash, and the (txid, audit id) the chain has reached."""
    cur = await conn.execute(
        "SELECT seq, hash, audit_id, txid::text AS txid FROM audit_seal ORDER BY seq DESC LIMIT 1"
    )
    return await cur.fetchone()


async def unsealed(conn: Conn, *, after: tuple[str, int] | None, limit: int) -> list[DictRow]:
    """Audit rows after `after` (txid, id) in chain order, only from transactions older than
    every one still running: no row can later appear before what this returns."""
    params: dict[str, object] = {"limit": limit}
    where = ""
    if after is not None:
        where = " AND (a.txid, a.id) > (%(txid)s::xid8, %(id)s)"
        params["txid"], params["id"] = after
    cur = await conn.execute(
        f"SELECT {_HASHED} FROM audit_log a"
        f" WHERE a.txid < pg_snapshot_xmin(pg_current_snapshot()){where}"
        " ORDER BY a.txid, a.id LIMIT %(limit)s",
        params,
    )
    return await cur.fetchall()


async def insert_seals(
    conn: Conn, *, seqs: list[int], audit_ids: list[int], txids: list[str], hashes: list[bytes]
) -> None:
    await conn.execute(
        "INSERT INTO audit_seal (seq, audit_id, txid, hash)"
        " SELECT s, a, t::xid8, h FROM unnest(%s::bigint[], %s::bigint[], %s::text[],"
        " %s::bytea[]) AS x(s, a, t, h)",
        (seqs, audit_ids, txids, hashes),
    )


async def chain(conn: Conn, *, after_seq: int, limit: int) -> list[DictRow]:
    """Seals after `after_seq` in order, each with its audit row (NULL columns if the row is
    gone)."""
    cur = await conn.execute(
        "SELECT s.seq, s.audit_id, s.txid::text AS seal_txid, s.hash, "
        f"{_HASHED} FROM audit_seal s LEFT JOIN audit_log a ON a.id = s.audit_id"
        " WHERE s.seq > %s ORDER BY s.seq LIMIT %s",
        (after_seq, limit),
    )
    return await cur.fetchall()


async def unsealed_counts(
    conn: Conn, *, head: tuple[str, int] | None, older_than_seconds: float
) -> DictRow:
    """Rows without a seal: `behind` the chain's head (never sealed although the chain has
    passed them: written outside the triggers, or their seal removed), and `pending` after
    it (waiting for the sealer), with how many of those are older than the given age."""
    txid, audit_id = head if head is not None else ("0", 0)
    cur = await conn.execute(
        "SELECT count(*) FILTER (WHERE (a.txid, a.id) <= (%(txid)s::xid8, %(id)s)) AS behind,"
        " count(*) FILTER (WHERE (a.txid, a.id) > (%(txid)s::xid8, %(id)s)) AS pending,"
        " count(*) FILTER (WHERE (a.txid, a.id) > (%(txid)s::xid8, %(id)s)"
        "  AND a.changed_at < now() - make_interval(secs => %(age)s)) AS stale"
        " FROM audit_log a WHERE NOT EXISTS (SELECT 1 FROM audit_seal s WHERE s.audit_id = a.id)",
        {"txid": txid, "id": audit_id, "age": older_than_seconds},
    )
    row = await cur.fetchone()
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
) -> list[DictRow]:
    """The tenant's audit rows, newest first, with their seal (if sealed yet) and the
    acting key's prefix."""
    where = ["a.tenant_id = %(tenant)s"]
    if object_id is not None:
        where.append("a.object_id = %(object)s")
    if actor is not None:
        where.append("a.actor = %(actor)s")
    if before_id is not None:
        where.append("a.id < %(before)s")
    cur = await conn.execute(
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
    return await cur.fetchall()


async def snapshot(conn: Conn) -> None:
    """The rest of this transaction reads one consistent snapshot (first statement only)."""
    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
