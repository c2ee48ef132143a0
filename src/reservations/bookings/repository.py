"""SQL for bookings. Every statement is scoped by tenant_id (and by creator for bookers)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from reservations.events import repository as events
from reservations.kit.db import Conn, fetch_all, fetch_one, fetch_value
from reservations.reservations.repository import (
    BUFFER_AFTER,
    BUFFER_BEFORE,
    CHANGED,
)
from reservations.reservations.repository import COLUMNS as RESERVATION_COLUMNS
from reservations.reservations.rows import RangeRow, ReservationRow


@dataclass(frozen=True, slots=True)
class BookingRow:
    """A `booking` row (COLUMNS); `exdates` is the stored JSON list of ISO 8601 strings."""

    id: UUID
    rrule: str | None
    exdates: list[str]
    timezone: str
    mode: str
    customer: str | None
    metadata: dict[str, Any]
    version: int
    created_by: UUID
    created_at: datetime
    updated_at: datetime
    spanning: bool


COLUMNS = (
    "id, rrule, exdates, timezone, mode, customer, metadata, version, created_by,"
    " created_at, updated_at, spanning"
)


async def insert(
    conn: Conn,
    *,
    booking_id: UUID,
    tenant_id: UUID,
    rrule: str | None,
    exdates: list[str],
    timezone: str,
    mode: str,
    customer: str | None,
    metadata: dict[str, Any],
    created_by: UUID,
    now: datetime,
    spanning: bool = False,
) -> BookingRow:
    row = await fetch_one(
        conn,
        BookingRow,
        "INSERT INTO booking (id, tenant_id, rrule, exdates, timezone, mode, customer,"
        " metadata, created_by, created_at, updated_at, spanning)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        f" RETURNING {COLUMNS}",
        (
            booking_id,
            tenant_id,
            rrule,
            Jsonb(exdates),
            timezone,
            mode,
            customer,
            Jsonb(metadata),
            created_by,
            now,
            now,
            spanning,
        ),
    )
    assert row is not None
    return row


async def get(
    conn: Conn, *, tenant_id: UUID, booking_id: UUID, owner: UUID | None, lock: bool = False
) -> BookingRow | None:
    return await fetch_one(
        conn,
        BookingRow,
        f"SELECT {COLUMNS} FROM booking WHERE id = %(id)s AND tenant_id = %(tenant)s"
        + (" AND created_by = %(owner)s" if owner is not None else "")
        + (" FOR UPDATE" if lock else ""),
        {"id": booking_id, "tenant": tenant_id, "owner": owner},
    )


async def exists(conn: Conn, *, booking_id: UUID) -> bool:
    found = await fetch_value(
        conn, bool, "SELECT EXISTS (SELECT 1 FROM booking WHERE id = %s) AS x", (booking_id,)
    )
    return bool(found)


async def touch(conn: Conn, *, booking_id: UUID, now: datetime) -> BookingRow:
    row = await fetch_one(
        conn,
        BookingRow,
        "UPDATE booking SET version = version + 1, updated_at = %s WHERE id = %s"
        f" RETURNING {COLUMNS}",
        (now, booking_id),
    )
    assert row is not None
    return row


async def reservations(conn: Conn, *, booking_id: UUID, lock: bool = False) -> list[ReservationRow]:
    """The booking's reservations, with those in history; with lock, only the live ones (the
    history is read-only), FOR UPDATE."""
    return await fetch_all(
        conn,
        ReservationRow,
        f"SELECT {RESERVATION_COLUMNS} FROM {'reservation' if lock else 'reservation_all'}"
        " WHERE booking_id = %s"
        " ORDER BY start_at, resource_id" + (" FOR UPDATE" if lock else ""),
        (booking_id,),
    )


async def set_status(
    conn: Conn, *, reservation_ids: list[UUID], status: str, now: datetime
) -> list[RangeRow]:
    await events.lock_sequences(conn, reservation_ids=reservation_ids)
    return await fetch_all(
        conn,
        RangeRow,
        "UPDATE reservation SET status = %s, expires_at = NULL, needs_approval = false,"
        " version = version + 1,"
        f" updated_at = %s WHERE id = ANY(%s) RETURNING {CHANGED}",
        (status, now, reservation_ids),
    )


async def set_expiry(
    conn: Conn, *, expiries: list[tuple[UUID, datetime]], now: datetime
) -> list[RangeRow]:
    """Set (id, expires_at) for held rows the caller holds locked (a hold's extension)."""
    ids, ends = (list(col) for col in zip(*expiries, strict=True))
    await events.lock_sequences(conn, reservation_ids=ids)
    return await fetch_all(
        conn,
        RangeRow,
        "UPDATE reservation SET expires_at = x.expires_at,"
        " version = reservation.version + 1, updated_at = %(now)s"
        " FROM unnest(%(ids)s::uuid[], %(ends)s::timestamptz[]) AS x(id, expires_at)"
        " WHERE reservation.id = x.id"
        f" RETURNING {CHANGED}",
        {"ids": ids, "ends": ends, "now": now},
    )


async def defer_guards(conn: Conn) -> None:
    """Check overlap and capacity at COMMIT instead of per row, for this transaction only:
    a series moved row by row may pass through states where its own occurrences overlap."""
    # ALL: the exclusion constraint is one per partition (migration 0003); the capacity
    # triggers are the only other deferrable constraints.
    await conn.execute("SET CONSTRAINTS ALL DEFERRED")


async def move(
    conn: Conn, *, moves: list[tuple[UUID, datetime, datetime]], now: datetime
) -> list[RangeRow]:
    """Set (id, start, end) for rows the caller holds locked; `during` follows with the
    resource's current buffers."""
    ids, starts, ends = (list(col) for col in zip(*moves, strict=True))
    await events.lock_sequences(conn, reservation_ids=ids)
    return await fetch_all(
        conn,
        RangeRow,
        "UPDATE reservation SET start_at = m.start_at, end_at = m.end_at,"
        f" during = tstzrange(m.start_at - {BUFFER_BEFORE}, m.end_at + {BUFFER_AFTER}),"
        " version = reservation.version + 1, updated_at = %(now)s"
        " FROM unnest(%(ids)s::uuid[], %(starts)s::timestamptz[], %(ends)s::timestamptz[])"
        " AS m(id, start_at, end_at), resource r"
        " WHERE reservation.id = m.id AND r.id = reservation.resource_id"
        f" RETURNING {CHANGED}",
        {"ids": ids, "starts": starts, "ends": ends, "now": now},
    )
