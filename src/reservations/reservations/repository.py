"""SQL for reservations. Every statement is scoped by tenant_id or by a resource the caller
already resolved within its tenant.

Queries that look for live overlaps repeat the exclusion constraint's own predicate
(`resource_id = ... AND during && ... AND status IN ('held', 'confirmed')`) so they are
answered from the constraint's partial GiST index (DESIGN.md, "The status predicate")."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from reservations.kit.db import Conn

COLUMNS = (
    "id, resource_id, start_at, end_at, status, quantity, expires_at, customer, metadata,"
    " version, created_by, created_at, updated_at"
)

_OVERLAPS = (
    "SELECT id, start_at, end_at, status, expires_at, created_by FROM reservation"
    " WHERE resource_id = %(resource)s AND status IN ('held', 'confirmed')"
    " AND during && tstzrange(%(start)s, %(end)s)"
    " AND id IS DISTINCT FROM %(exclude)s::uuid ORDER BY start_at"
)


async def resource_and_overlaps(
    conn: Conn,
    *,
    tenant_id: UUID,
    resource_id: UUID,
    start: datetime,
    end: datetime,
    exclude: UUID | None = None,
) -> DictRow | None:
    """The resource (if live, in this tenant) and the live reservations overlapping
    [start, end), in one round trip and without locking: the cheap pre-check."""
    cur = await conn.execute(
        "SELECT r.id, r.capacity, r.timezone,"
        " coalesce((SELECT json_agg(json_build_object('id', o.id, 'start_at', o.start_at,"
        " 'end_at', o.end_at, 'status', o.status, 'expires_at', o.expires_at,"
        f" 'created_by', o.created_by)) FROM ({_OVERLAPS}) o), '[]') AS overlaps"
        " FROM resource r WHERE r.id = %(resource)s AND r.tenant_id = %(tenant)s"
        " AND r.archived_at IS NULL",
        {
            "tenant": tenant_id,
            "resource": resource_id,
            "start": start,
            "end": end,
            "exclude": exclude,
        },
    )
    return await cur.fetchone()


async def overlaps(
    conn: Conn, *, resource_id: UUID, start: datetime, end: datetime, exclude: UUID | None = None
) -> list[DictRow]:
    cur = await conn.execute(
        _OVERLAPS,
        {"resource": resource_id, "start": start, "end": end, "exclude": exclude},
    )
    return await cur.fetchall()


async def expire_stale_holds(
    conn: Conn, *, resource_id: UUID, start: datetime, end: datetime, now: datetime
) -> int:
    """Mark expired the holds past their expiry that overlap [start, end) on this resource,
    so a booking never waits for the sweeper. Call with the resource lock held."""
    cur = await conn.execute(
        "UPDATE reservation SET status = 'expired', version = version + 1, updated_at = %(now)s"
        " WHERE resource_id = %(resource)s AND status = 'held' AND expires_at <= %(now)s"
        " AND during && tstzrange(%(start)s, %(end)s)",
        {"resource": resource_id, "start": start, "end": end, "now": now},
    )
    return cur.rowcount


async def insert(
    conn: Conn,
    *,
    reservation_id: UUID,
    tenant_id: UUID,
    resource_id: UUID,
    start: datetime,
    end: datetime,
    status: str,
    quantity: int,
    expires_at: datetime | None,
    customer: str | None,
    metadata: dict[str, Any],
    created_by: UUID,
    now: datetime,
) -> DictRow | None:
    """Insert under the exclusion constraint; None if the resource was archived meanwhile.
    Raises psycopg.errors.ExclusionViolation (23P01) on overlap."""
    cur = await conn.execute(
        "INSERT INTO reservation (id, tenant_id, resource_id, start_at, end_at, during, status,"
        " quantity, expires_at, customer, metadata, created_by, created_at, updated_at)"
        " SELECT %(id)s, %(tenant)s, %(resource)s, %(start)s, %(end)s,"
        " tstzrange(%(start)s, %(end)s), %(status)s, %(quantity)s, %(expires)s, %(customer)s,"
        " %(metadata)s, %(created_by)s, %(now)s, %(now)s"
        " WHERE EXISTS (SELECT 1 FROM resource WHERE id = %(resource)s"
        " AND tenant_id = %(tenant)s AND archived_at IS NULL)"
        f" RETURNING {COLUMNS}",
        {
            "id": reservation_id,
            "tenant": tenant_id,
            "resource": resource_id,
            "start": start,
            "end": end,
            "status": status,
            "quantity": quantity,
            "expires": expires_at,
            "customer": customer,
            "metadata": Jsonb(metadata),
            "created_by": created_by,
            "now": now,
        },
    )
    return await cur.fetchone()


def _owner_clause(owner: UUID | None) -> str:
    return " AND created_by = %(owner)s" if owner is not None else ""


async def get(
    conn: Conn, *, tenant_id: UUID, reservation_id: UUID, owner: UUID | None, lock: bool = False
) -> DictRow | None:
    """One reservation of the tenant (and of `owner`, for bookers); FOR UPDATE with lock."""
    cur = await conn.execute(
        f"SELECT {COLUMNS} FROM reservation WHERE id = %(id)s AND tenant_id = %(tenant)s"
        + _owner_clause(owner)
        + (" FOR UPDATE" if lock else ""),
        {"id": reservation_id, "tenant": tenant_id, "owner": owner},
    )
    return await cur.fetchone()


async def update(
    conn: Conn, *, reservation_id: UUID, changes: dict[str, Any], now: datetime
) -> DictRow:
    """Apply column changes to a row the caller holds locked; bumps the version.
    Changing start_at/end_at also moves `during` (and may raise ExclusionViolation)."""
    sets = ["version = version + 1", "updated_at = %(now)s"]
    params: dict[str, Any] = {"id": reservation_id, "now": now}
    for column in ("status", "expires_at", "start_at", "end_at", "customer", "metadata"):
        if column in changes:
            sets.append(f"{column} = %({column})s")
            value = changes[column]
            params[column] = Jsonb(value) if column == "metadata" else value
    if "start_at" in changes or "end_at" in changes:
        sets.append("during = tstzrange(%(start_at)s, %(end_at)s)")
    cur = await conn.execute(
        f"UPDATE reservation SET {', '.join(sets)} WHERE id = %(id)s RETURNING {COLUMNS}",
        params,
    )
    row = await cur.fetchone()
    assert row is not None
    return row


_STATUS_SQL = {
    "held": "(status = 'held' AND expires_at > %(now)s)",
    "confirmed": "status = 'confirmed'",
    "cancelled": "status = 'cancelled'",
    "expired": "(status = 'expired' OR (status = 'held' AND expires_at <= %(now)s))",
}

# Reservations cannot be longer than this (a CHECK in the schema), which bounds how far
# before a window's start an overlapping reservation can begin: the list's index range.
MAX_SPAN = "366 days"


async def page(
    conn: Conn,
    *,
    tenant_id: UUID,
    owner: UUID | None,
    resource_id: UUID | None,
    window_from: datetime | None,
    window_to: datetime | None,
    statuses: list[str],
    customer: str | None,
    after: tuple[datetime, UUID] | None,
    limit: int,
    now: datetime,
) -> list[DictRow]:
    """Reservations ordered by (start, id). Only the filters given become SQL, so every
    combination gets a plan that fits it."""
    where = ["tenant_id = %(tenant)s"]
    params: dict[str, Any] = {"tenant": tenant_id, "limit": limit, "now": now}
    if owner is not None:
        where.append("created_by = %(owner)s")
        params["owner"] = owner
    if resource_id is not None:
        where.append("resource_id = %(resource)s")
        params["resource"] = resource_id
    if window_from is not None:
        where.append("end_at > %(from)s")
        where.append(f"start_at > %(from)s - interval '{MAX_SPAN}'")
        params["from"] = window_from
    if window_to is not None:
        where.append("start_at < %(to)s")
        params["to"] = window_to
    if statuses:
        where.append("(" + " OR ".join(_STATUS_SQL[s] for s in statuses) + ")")
    if customer is not None:
        where.append("customer = %(customer)s")
        params["customer"] = customer
    if after is not None:
        where.append("(start_at, id) > (%(after_start)s, %(after_id)s)")
        params["after_start"], params["after_id"] = after
    cur = await conn.execute(
        f"SELECT {COLUMNS} FROM reservation WHERE {' AND '.join(where)}"
        " ORDER BY start_at, id LIMIT %(limit)s",
        params,
    )
    return await cur.fetchall()


async def count_future_live(conn: Conn, *, resource_id: UUID, now: datetime) -> int:
    cur = await conn.execute(
        "SELECT count(*) AS n FROM reservation WHERE resource_id = %s"
        " AND status IN ('held', 'confirmed') AND during && tstzrange(%s, NULL)"
        " AND NOT (status = 'held' AND expires_at <= %s)",
        (resource_id, now, now),
    )
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def cancel_future(conn: Conn, *, resource_id: UUID, now: datetime) -> int:
    cur = await conn.execute(
        "UPDATE reservation SET status = 'cancelled', version = version + 1, updated_at = %s"
        " WHERE resource_id = %s AND status IN ('held', 'confirmed')"
        " AND during && tstzrange(%s, NULL) AND NOT (status = 'held' AND expires_at <= %s)",
        (now, resource_id, now, now),
    )
    return cur.rowcount


async def expire_due(conn: Conn, *, now: datetime, batch: int) -> int:
    """The sweeper's step: expire up to `batch` holds past their expiry. SKIP LOCKED lets any
    number of workers sweep side by side, and never waits on a row a request is changing."""
    cur = await conn.execute(
        "UPDATE reservation SET status = 'expired', version = version + 1, updated_at = %(now)s"
        " WHERE id IN (SELECT id FROM reservation WHERE status = 'held'"
        " AND expires_at <= %(now)s ORDER BY expires_at LIMIT %(batch)s FOR UPDATE SKIP LOCKED)",
        {"now": now, "batch": batch},
    )
    return cur.rowcount
