"""SQL for calendar feeds: the feed rows (tenant-scoped) and the reservations a feed shows
(scoped by the feed's own tenant and resource or key)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from psycopg.rows import DictRow

from reservations.kit.db import Conn
from reservations.reservations.repository import EARLIEST_START

# What every read of a feed returns: the row, its resource's name and zone or its key's
# prefix (never the secret hash, except for the token check).
_FEED = (
    "f.id, f.tenant_id, f.resource_id, f.api_key_id, f.label, f.created_at, f.revoked_at,"
    " r.name AS resource_name, r.timezone AS resource_timezone, k.prefix AS api_key_prefix"
)
_JOINS = (
    " LEFT JOIN resource r ON r.id = f.resource_id AND r.tenant_id = f.tenant_id"
    " LEFT JOIN api_key k ON k.id = f.api_key_id AND k.tenant_id = f.tenant_id"
)

# The reservations a feed shows: live ones (held and not past expiry, or confirmed) that
# meet the window. The tenant's longest reservation bounds the start for the (resource or
# creator, start_at) indexes.
_EVENTS = (
    "SELECT x.id, x.start_at, x.end_at, x.status, x.quantity, x.customer, x.version,"
    " x.created_at, x.updated_at, r.name AS resource_name, r.timezone"
    " FROM reservation_all x JOIN resource r ON r.id = x.resource_id"
    " WHERE x.tenant_id = %(tenant)s AND {scope}"
    " AND x.status IN ('held', 'confirmed')"
    " AND NOT (x.status = 'held' AND x.expires_at <= %(now)s)"
    " AND x.start_at < %(to)s AND x.end_at > %(from)s"
    f" AND x.start_at > {EARLIEST_START}"
    " ORDER BY x.start_at, x.id LIMIT %(limit)s"
)


async def live_resource(conn: Conn, *, tenant_id: UUID, resource_id: UUID) -> DictRow | None:
    cur = await conn.execute(
        "SELECT id FROM resource WHERE id = %s AND tenant_id = %s AND archived_at IS NULL",
        (resource_id, tenant_id),
    )
    return await cur.fetchone()


async def key_by_prefix(conn: Conn, *, tenant_id: UUID, prefix: str) -> DictRow | None:
    cur = await conn.execute(
        "SELECT id FROM api_key WHERE prefix = %s AND tenant_id = %s", (prefix, tenant_id)
    )
    return await cur.fetchone()


async def insert(
    conn: Conn,
    *,
    feed_id: UUID,
    tenant_id: UUID,
    resource_id: UUID | None,
    api_key_id: UUID | None,
    prefix: str,
    secret_hash: bytes,
    label: str,
    created_by: UUID,
    now: datetime,
) -> DictRow:
    await conn.execute(
        "INSERT INTO feed (id, tenant_id, resource_id, api_key_id, prefix, secret_hash, label,"
        " created_by, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (feed_id, tenant_id, resource_id, api_key_id, prefix, secret_hash, label, created_by, now),
    )
    row = await get(conn, tenant_id=tenant_id, feed_id=feed_id)
    assert row is not None
    return row


async def get(conn: Conn, *, tenant_id: UUID, feed_id: UUID) -> DictRow | None:
    cur = await conn.execute(
        f"SELECT {_FEED} FROM feed f{_JOINS} WHERE f.id = %s AND f.tenant_id = %s",
        (feed_id, tenant_id),
    )
    return await cur.fetchone()


async def page(conn: Conn, *, tenant_id: UUID, after: UUID | None, limit: int) -> list[DictRow]:
    """The tenant's feeds (revoked ones too) in creation order."""
    cur = await conn.execute(
        f"SELECT {_FEED} FROM feed f{_JOINS} WHERE f.tenant_id = %(tenant)s"
        " AND (f.id > %(after)s OR %(after)s::uuid IS NULL) ORDER BY f.id LIMIT %(limit)s",
        {"tenant": tenant_id, "after": after, "limit": limit},
    )
    return await cur.fetchall()


async def revoke(conn: Conn, *, tenant_id: UUID, feed_id: UUID, at: datetime) -> bool:
    cur = await conn.execute(
        "UPDATE feed SET revoked_at = coalesce(revoked_at, %s) WHERE id = %s AND tenant_id = %s",
        (at, feed_id, tenant_id),
    )
    return cur.rowcount == 1


async def by_prefix(conn: Conn, prefix: str) -> DictRow | None:
    """A feed by its token's prefix, with the secret's hash to check the rest against."""
    cur = await conn.execute(
        f"SELECT {_FEED}, f.secret_hash FROM feed f{_JOINS} WHERE f.prefix = %s", (prefix,)
    )
    return await cur.fetchone()


async def events(
    conn: Conn,
    *,
    tenant_id: UUID,
    resource_id: UUID | None,
    created_by: UUID | None,
    start: datetime,
    end: datetime,
    now: datetime,
    limit: int,
) -> list[DictRow]:
    """The feed's reservations meeting [start, end): one resource's, or one key's."""
    scope = "x.resource_id = %(scope)s" if resource_id is not None else "x.created_by = %(scope)s"
    cur = await conn.execute(
        _EVENTS.format(scope=scope),
        {
            "tenant": tenant_id,
            "scope": resource_id if resource_id is not None else created_by,
            "from": start,
            "to": end,
            "now": now,
            "limit": limit,
        },
    )
    return await cur.fetchall()
