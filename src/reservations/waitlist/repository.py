"""SQL for the waitlist. Every statement is scoped by tenant (or by a resource the caller
already resolved within its tenant)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from reservations.kit.db import Conn, fetch_all, fetch_one, fetch_value, fetch_values


@dataclass(frozen=True, slots=True)
class EntryRow:
    """A `waitlist_entry` row (COLUMNS)."""

    id: UUID
    resource_id: UUID
    start_at: datetime
    end_at: datetime
    quantity: int
    customer: str | None
    hold_seconds: int
    status: str
    reservation_id: UUID | None
    created_by: UUID
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class WaitingRow(EntryRow):
    """`waiting`: an entry that may be promoted, with its tenant and its key's role (the
    booker promotion acts as)."""

    tenant_id: UUID
    role: str


COLUMNS = (
    "id, resource_id, start_at, end_at, quantity, customer, hold_seconds, status,"
    " reservation_id, created_by, created_at, updated_at"
)
_PREFIXED = ", ".join(f"w.{c.strip()}" for c in COLUMNS.split(","))


async def insert(
    conn: Conn,
    *,
    entry_id: UUID,
    tenant_id: UUID,
    resource_id: UUID,
    start: datetime,
    end: datetime,
    quantity: int,
    customer: str | None,
    hold_seconds: int,
    created_by: UUID,
    now: datetime,
) -> EntryRow:
    row = await fetch_one(
        conn,
        EntryRow,
        "INSERT INTO waitlist_entry (id, tenant_id, resource_id, start_at, end_at, quantity,"
        " customer, hold_seconds, status, created_by, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'waiting', %s, %s, %s)"
        f" RETURNING {COLUMNS}",
        (
            entry_id,
            tenant_id,
            resource_id,
            start,
            end,
            quantity,
            customer,
            hold_seconds,
            created_by,
            now,
            now,
        ),
    )
    assert row is not None
    return row


async def get(
    conn: Conn, *, tenant_id: UUID, entry_id: UUID, owner: UUID | None, lock: bool = False
) -> EntryRow | None:
    return await fetch_one(
        conn,
        EntryRow,
        f"SELECT {COLUMNS} FROM waitlist_entry WHERE id = %(id)s AND tenant_id = %(tenant)s"
        + (" AND created_by = %(owner)s" if owner is not None else "")
        + (" FOR UPDATE" if lock else ""),
        {"id": entry_id, "tenant": tenant_id, "owner": owner},
    )


async def position(conn: Conn, *, entry: EntryRow) -> int:
    """1 for the first waiting entry of the resource, 2 for the next..."""
    ahead = await fetch_value(
        conn,
        int,
        "SELECT count(*) AS ahead FROM waitlist_entry WHERE resource_id = %s"
        " AND status = 'waiting' AND (created_at, id) < (%s, %s)",
        (entry.resource_id, entry.created_at, entry.id),
    )
    assert ahead is not None
    return ahead + 1


async def page(
    conn: Conn,
    *,
    tenant_id: UUID,
    owner: UUID | None,
    resource_id: UUID | None,
    after: tuple[datetime, UUID] | None,
    limit: int,
) -> list[EntryRow]:
    where = ["tenant_id = %(tenant)s"]
    params: dict[str, Any] = {"tenant": tenant_id, "limit": limit}
    if owner is not None:
        where.append("created_by = %(owner)s")
        params["owner"] = owner
    if resource_id is not None:
        where.append("resource_id = %(resource)s")
        params["resource"] = resource_id
    if after is not None:
        where.append("(created_at, id) > (%(after_at)s, %(after_id)s)")
        params["after_at"], params["after_id"] = after
    return await fetch_all(
        conn,
        EntryRow,
        f"SELECT {COLUMNS} FROM waitlist_entry WHERE {' AND '.join(where)}"
        " ORDER BY created_at, id LIMIT %(limit)s",
        params,
    )


# An entry of a unit resource whose range (widened by the resource's buffers) meets a live
# reservation cannot be promoted now: it is left out, unless its start has passed (it lapses).
# Pooled resources (capacity > 1) need the peak of their overlaps: all their entries are read.
_BUFFER_BEFORE = "coalesce((res.policy->>'buffer_before')::interval, interval '0')"
_BUFFER_AFTER = "coalesce((res.policy->>'buffer_after')::interval, interval '0')"
_MAYBE_FREE = (
    "(res.archived_at IS NOT NULL OR res.capacity > 1 OR w.start_at <= %(now)s"
    " OR NOT EXISTS (SELECT 1 FROM reservation r WHERE r.resource_id = w.resource_id"
    " AND NOT r.pooled AND r.status IN ('held', 'confirmed')"
    " AND NOT (r.status = 'held' AND r.expires_at <= %(now)s)"
    f" AND r.during && tstzrange(w.start_at - {_BUFFER_BEFORE}, w.end_at + {_BUFFER_AFTER})))"
)


async def waiting(conn: Conn, *, resource_id: UUID, limit: int, now: datetime) -> list[WaitingRow]:
    """The resource's first waiting entries that may be promoted now, first come first, with
    their key's role. Entries of a unit resource whose range is still taken are not read
    (an index probe each, no row returned, no lock), so a cancel on a resource whose queue
    waits for other ranges costs this one statement. Locks the rows returned; SKIP LOCKED:
    one leaving right now is not promoted."""
    return await fetch_all(
        conn,
        WaitingRow,
        f"SELECT {_PREFIXED}, w.tenant_id, k.role FROM waitlist_entry w"
        " JOIN api_key k ON k.id = w.created_by JOIN resource res ON res.id = w.resource_id"
        f" WHERE w.resource_id = %(r)s AND w.status = 'waiting' AND {_MAYBE_FREE}"
        " ORDER BY w.created_at, w.id LIMIT %(limit)s FOR UPDATE OF w SKIP LOCKED",
        {"r": resource_id, "limit": limit, "now": now},
    )


async def count_waiting(
    conn: Conn, *, resource_id: UUID | None = None, created_by: UUID | None = None
) -> int:
    """Waiting entries of a resource, or of a key (for the waitlist's bounds)."""
    column, value = ("resource_id", resource_id) if resource_id else ("created_by", created_by)
    n = await fetch_value(
        conn,
        int,
        f"SELECT count(*) AS n FROM waitlist_entry WHERE {column} = %s AND status = 'waiting'",
        (value,),
    )
    assert n is not None
    return n


async def lapse(conn: Conn, *, entry_ids: list[UUID], now: datetime) -> None:
    """Entries that can no longer be offered (their range began, their resource is gone)."""
    if entry_ids:
        await conn.execute(
            "UPDATE waitlist_entry SET status = 'lapsed', updated_at = %s WHERE id = ANY(%s)",
            (now, entry_ids),
        )


async def resources_waiting(conn: Conn) -> list[UUID]:
    return await fetch_values(
        conn, UUID, "SELECT DISTINCT resource_id FROM waitlist_entry WHERE status = 'waiting'"
    )


async def set_status(
    conn: Conn, *, entry_id: UUID, status: str, now: datetime, reservation_id: UUID | None = None
) -> EntryRow:
    row = await fetch_one(
        conn,
        EntryRow,
        "UPDATE waitlist_entry SET status = %s, reservation_id = %s, updated_at = %s"
        f" WHERE id = %s RETURNING {COLUMNS}",
        (status, reservation_id, now, entry_id),
    )
    assert row is not None
    return row


async def promoted_event(conn: Conn, *, tenant_id: UUID, entry: EntryRow) -> None:
    """`waitlist.promoted` into the outbox, numbered with the resource's other events."""
    await conn.execute(
        "SELECT event_append(%s, %s, 'waitlist.promoted', %s, %s)",
        (
            tenant_id,
            entry.resource_id,
            entry.id,
            Jsonb(
                {
                    "id": str(entry.id),
                    "resource_id": str(entry.resource_id),
                    "reservation_id": str(entry.reservation_id),
                    "start": entry.start_at.isoformat(),
                    "end": entry.end_at.isoformat(),
                    "quantity": entry.quantity,
                    "customer": entry.customer,
                }
            ),
        ),
    )
