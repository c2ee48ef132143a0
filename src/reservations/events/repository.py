"""SQL for the outbox: reading a tenant's events in order, reading the whole outbox in order
for a reader that keeps its position (`outbox_position`), and taking the per-resource
sequence locks in a fixed order before a statement that changes several resources."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from reservations.kit.db import Conn, fetch_all, fetch_one, fetch_value


@dataclass(frozen=True, slots=True)
class EventRow:
    """An `event` (the outbox) as the stream shows it (COLUMNS)."""

    id: int
    resource_id: UUID
    resource_seq: int
    type: str
    subject_id: UUID
    data: dict[str, Any]
    txid: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PositionRow:
    """An event's place in its tenant's stream: (txid, id)."""

    txid: str
    id: int


@dataclass(frozen=True, slots=True)
class RangeEventRow:
    """An event as the availability map's repair reads it: its place in the outbox, its
    resource, and for a reservation event the guarded range after the change and, if the
    change moved it, before (migration 0012; all None for other events)."""

    id: int
    txid: str
    resource_id: UUID
    during_start: datetime | None
    during_end: datetime | None
    was_start: datetime | None
    was_end: datetime | None


# The first half of a reader's advisory-lock key (the second: its name's hash).
POSITION_LOCK = 20261208
COLUMNS = "id, resource_id, resource_seq, type, subject_id, data, txid::text AS txid, created_at"
# Only events of transactions older than every one still running (migration 0004): no event
# can later appear before one a reader has passed, however late its transaction commits.
# Readers order by `event.txid`, the column: a bare `txid` in ORDER BY would name the output
# column `txid::text AS txid`, and "10" sorts before "9".
SETTLED = "txid < pg_snapshot_xmin(pg_current_snapshot())"


async def lock_sequences(
    conn: Conn, *, resource_ids: list[UUID] | None = None, reservation_ids: list[UUID] | None = None
) -> None:
    """Lock the event counters of these resources (or of these reservations' resources) in
    resource order. A statement that changes rows of several resources would otherwise take
    them in row order from its triggers, and two such statements could deadlock."""
    if resource_ids is not None:
        await conn.execute(
            "SELECT 1 FROM resource_event_seq WHERE resource_id = ANY(%s)"
            " ORDER BY resource_id FOR UPDATE",
            (resource_ids,),
        )
    if reservation_ids is not None:
        await conn.execute(
            "SELECT 1 FROM resource_event_seq WHERE resource_id IN"
            " (SELECT resource_id FROM reservation WHERE id = ANY(%s))"
            " ORDER BY resource_id FOR UPDATE",
            (reservation_ids,),
        )


async def after(
    conn: Conn, *, tenant_id: UUID, cursor: tuple[int, int] | None, limit: int
) -> list[EventRow]:
    """The tenant's events after `cursor` (txid, id), oldest first, only from transactions
    older than every one still running: none can later appear before what was returned."""
    params: dict[str, object] = {"tenant": tenant_id, "limit": limit}
    where = ""
    if cursor is not None:
        where = " AND (txid, id) > (%(txid)s::text::xid8, %(id)s)"
        params["txid"], params["id"] = str(cursor[0]), cursor[1]
    return await fetch_all(
        conn,
        EventRow,
        f"SELECT {COLUMNS} FROM event WHERE tenant_id = %(tenant)s{where} AND {SETTLED}"
        " ORDER BY event.txid, event.id LIMIT %(limit)s",
        params,
    )


async def head(conn: Conn, *, tenant_id: UUID) -> PositionRow | None:
    """The tenant's last event a reader may see now (same visibility rule as `after`): a
    cursor after which only events committed later, or still running, can appear."""
    return await fetch_one(
        conn,
        PositionRow,
        f"SELECT txid::text AS txid, id FROM event WHERE tenant_id = %(tenant)s AND {SETTLED}"
        " ORDER BY event.txid DESC, event.id DESC LIMIT 1",
        {"tenant": tenant_id},
    )


async def lock_position(conn: Conn, *, reader: str) -> PositionRow | None:
    """The reader's position in the whole outbox, its advisory lock held for this
    transaction; None if another worker holds it (it is reading the same events right now).
    A lock, not FOR UPDATE: a row lock would give the reader's transaction an id from its
    first statement, and every outbox reader waits for the transactions with an id older than
    its events to end (SETTLED). The position's UPDATE comes last, just before COMMIT."""
    got = await fetch_value(
        conn, bool, "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))", (POSITION_LOCK, reader)
    )
    if not got:
        return None
    return await fetch_one(
        conn,
        PositionRow,
        "SELECT after_txid::text AS txid, after_id AS id FROM outbox_position WHERE reader = %s",
        (reader,),
    )


async def ranges_after(conn: Conn, *, position: PositionRow, limit: int) -> list[RangeEventRow]:
    """Every tenant's events after `position`, oldest first, settled as in `after`."""
    return await fetch_all(
        conn,
        RangeEventRow,
        "SELECT id, txid::text AS txid, resource_id, lower(during) AS during_start,"
        " upper(during) AS during_end, lower(was_during) AS was_start,"
        " upper(was_during) AS was_end FROM event"
        f" WHERE (txid, id) > (%(txid)s::text::xid8, %(id)s) AND {SETTLED}"
        " ORDER BY event.txid, event.id LIMIT %(limit)s",
        {"txid": position.txid, "id": position.id, "limit": limit},
    )


async def advance_position(conn: Conn, *, reader: str, position: PositionRow) -> None:
    await conn.execute(
        "UPDATE outbox_position SET after_txid = %s::text::xid8, after_id = %s WHERE reader = %s",
        (position.txid, position.id, reader),
    )
