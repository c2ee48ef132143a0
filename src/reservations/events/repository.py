"""SQL for the outbox: reading a tenant's events in order, and taking the per-resource
sequence locks in a fixed order before a statement that changes several resources."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from reservations.kit.db import Conn, fetch_all, fetch_one


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


COLUMNS = "id, resource_id, resource_seq, type, subject_id, data, txid::text AS txid, created_at"
# Readers order by `event.txid`, the column: a bare `txid` in ORDER BY would name the output
# column `txid::text AS txid`, and "10" sorts before "9".


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
        f"SELECT {COLUMNS} FROM event WHERE tenant_id = %(tenant)s{where}"
        " AND txid < pg_snapshot_xmin(pg_current_snapshot())"
        " ORDER BY event.txid, event.id LIMIT %(limit)s",
        params,
    )


async def head(conn: Conn, *, tenant_id: UUID) -> PositionRow | None:
    """The tenant's last event a reader may see now (same visibility rule as `after`): a
    cursor after which only events committed later, or still running, can appear."""
    return await fetch_one(
        conn,
        PositionRow,
        "SELECT txid::text AS txid, id FROM event WHERE tenant_id = %(tenant)s"
        " AND txid < pg_snapshot_xmin(pg_current_snapshot())"
        " ORDER BY event.txid DESC, event.id DESC LIMIT 1",
        {"tenant": tenant_id},
    )
