"""SQL for calendar feeds: the feed rows (tenant-scoped) and the reservations a feed shows
(scoped by the feed's own tenant and resource or key)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from psycopg import sql

from reservations.kit.db import Conn, fetch_all, fetch_one, fetch_value
from reservations.reservations.repository import EARLIEST_START


@dataclass(frozen=True, slots=True)
class FeedRow:
    """A `feed` row (_FEED) with its resource's name and zone, or its key's prefix."""

    id: UUID
    tenant_id: UUID
    resource_id: UUID | None
    api_key_id: UUID | None
    tag: str | None
    content: str  # events or freebusy
    label: str
    created_at: datetime
    revoked_at: datetime | None
    resource_name: str | None
    resource_timezone: str | None
    api_key_prefix: str | None


@dataclass(frozen=True, slots=True)
class FeedSecretRow(FeedRow):
    """A `feed` row found by its token's prefix, with the secret's hash to check."""

    secret_hash: bytes


@dataclass(frozen=True, slots=True)
class FeedEventRow:
    """A reservation as a feed shows it (_EVENTS), with its resource's name and zone."""

    id: UUID
    start_at: datetime
    end_at: datetime
    status: str
    quantity: int
    customer: str | None
    version: int
    created_at: datetime
    updated_at: datetime
    resource_name: str
    timezone: str


# What every read of a feed returns: the row, its resource's name and zone or its key's
# prefix (never the secret hash, except for the token check).
_FEED = (
    "f.id, f.tenant_id, f.resource_id, f.api_key_id, f.tag, f.content, f.label, f.created_at,"
    " f.revoked_at,"
    " r.name AS resource_name, r.timezone AS resource_timezone, k.prefix AS api_key_prefix"
)
_JOINS = (
    " LEFT JOIN resource r ON r.id = f.resource_id AND r.tenant_id = f.tenant_id"
    " LEFT JOIN api_key k ON k.id = f.api_key_id AND k.tenant_id = f.tenant_id"
)

# The reservations a feed shows: live ones (held and not past expiry, or confirmed) that
# meet the window, of one resource or of one key (the two variants below). The tenant's
# longest reservation bounds the start for the (resource or creator, start_at) indexes.
_EVENTS = sql.SQL(
    "SELECT x.id, x.start_at, x.end_at, x.status, x.quantity, x.customer, x.version,"
    " x.created_at, x.updated_at, r.name AS resource_name, r.timezone"
    " FROM reservation_all x JOIN resource r ON r.id = x.resource_id"
    " WHERE x.tenant_id = %(tenant)s AND x.{scope} = %(scope)s"
    " AND x.status IN ('held', 'confirmed')"
    " AND NOT (x.status = 'held' AND x.expires_at <= %(now)s)"
    " AND x.start_at < %(to)s AND x.end_at > %(from)s"
    f" AND x.start_at > {EARLIEST_START}"
    " ORDER BY x.start_at, x.id LIMIT %(limit)s"
)
_EVENTS_OF_RESOURCE = _EVENTS.format(scope=sql.Identifier("resource_id"))
_EVENTS_OF_KEY = _EVENTS.format(scope=sql.Identifier("created_by"))


async def live_resource(conn: Conn, *, tenant_id: UUID, resource_id: UUID) -> UUID | None:
    """The resource's id if it is live in this tenant."""
    return await fetch_value(
        conn,
        UUID,
        "SELECT id FROM resource WHERE id = %s AND tenant_id = %s AND archived_at IS NULL",
        (resource_id, tenant_id),
    )


async def key_by_prefix(conn: Conn, *, tenant_id: UUID, prefix: str) -> UUID | None:
    """The id of this tenant's key with this prefix."""
    return await fetch_value(
        conn,
        UUID,
        "SELECT id FROM api_key WHERE prefix = %s AND tenant_id = %s",
        (prefix, tenant_id),
    )


async def insert(
    conn: Conn,
    *,
    feed_id: UUID,
    tenant_id: UUID,
    resource_id: UUID | None,
    api_key_id: UUID | None,
    tag: str | None,
    content: str,
    prefix: str,
    secret_hash: bytes,
    label: str,
    created_by: UUID,
    now: datetime,
) -> FeedRow:
    await conn.execute(
        "INSERT INTO feed (id, tenant_id, resource_id, api_key_id, tag, content, prefix,"
        " secret_hash, label, created_by, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            feed_id,
            tenant_id,
            resource_id,
            api_key_id,
            tag,
            content,
            prefix,
            secret_hash,
            label,
            created_by,
            now,
        ),
    )
    row = await get(conn, tenant_id=tenant_id, feed_id=feed_id)
    assert row is not None
    return row


async def get(conn: Conn, *, tenant_id: UUID, feed_id: UUID) -> FeedRow | None:
    return await fetch_one(
        conn,
        FeedRow,
        f"SELECT {_FEED} FROM feed f{_JOINS} WHERE f.id = %s AND f.tenant_id = %s",
        (feed_id, tenant_id),
    )


async def page(conn: Conn, *, tenant_id: UUID, after: UUID | None, limit: int) -> list[FeedRow]:
    """The tenant's feeds (revoked ones too) in creation order."""
    return await fetch_all(
        conn,
        FeedRow,
        f"SELECT {_FEED} FROM feed f{_JOINS} WHERE f.tenant_id = %(tenant)s"
        " AND (f.id > %(after)s OR %(after)s::uuid IS NULL) ORDER BY f.id LIMIT %(limit)s",
        {"tenant": tenant_id, "after": after, "limit": limit},
    )


async def revoke(conn: Conn, *, tenant_id: UUID, feed_id: UUID, at: datetime) -> bool:
    cur = await conn.execute(
        "UPDATE feed SET revoked_at = coalesce(revoked_at, %s) WHERE id = %s AND tenant_id = %s",
        (at, feed_id, tenant_id),
    )
    return cur.rowcount == 1


async def by_prefix(conn: Conn, prefix: str) -> FeedSecretRow | None:
    """A feed by its token's prefix, with the secret's hash to check the rest against."""
    return await fetch_one(
        conn,
        FeedSecretRow,
        f"SELECT {_FEED}, f.secret_hash FROM feed f{_JOINS} WHERE f.prefix = %s",
        (prefix,),
    )


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
) -> list[FeedEventRow]:
    """The feed's reservations meeting [start, end): one resource's, or one key's."""
    return await fetch_all(
        conn,
        FeedEventRow,
        _EVENTS_OF_RESOURCE if resource_id is not None else _EVENTS_OF_KEY,
        {
            "tenant": tenant_id,
            "scope": resource_id if resource_id is not None else created_by,
            "from": start,
            "to": end,
            "now": now,
            "limit": limit,
        },
    )
