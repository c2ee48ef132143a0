"""SQL for the outbox: reading a tenant's events in order, and taking the per-resource
sequence locks in a fixed order before a statement that changes several resources."""

from __future__ import annotations

from uuid import UUID

from psycopg.rows import DictRow

from reservations.kit.db import Conn

COLUMNS = "id, resource_id, resource_seq, type, subject_id, data, txid::text AS txid, created_at"


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
) -> list[DictRow]:
    """The tenant's events after `cursor` (txid, id), oldest first, only from transactions
    older than every one still running: none can later appear before what was returned."""
    params: dict[str, object] = {"tenant": tenant_id, "limit": limit}
    where = ""
    if cursor is not None:
        where = " AND (txid, id) > (%(txid)s::text::xid8, %(id)s)"
        params["txid"], params["id"] = str(cursor[0]), cursor[1]
    cur = await conn.execute(
        f"SELECT {COLUMNS} FROM event WHERE tenant_id = %(tenant)s{where}"
        " AND txid < pg_snapshot_xmin(pg_current_snapshot())"
        " ORDER BY txid, id LIMIT %(limit)s",
        params,
    )
    return await cur.fetchall()


async def head(conn: Conn, *, tenant_id: UUID) -> DictRow | None:
    """The tenant's last event a reader may see now (same visibility rule as `after`): a
    cursor after which only events committed later, or still running, can appear."""
    cur = await conn.execute(
        "SELECT txid::text AS txid, id FROM event WHERE tenant_id = %(tenant)s"
        " AND txid < pg_snapshot_xmin(pg_current_snapshot())"
        " ORDER BY txid DESC, id DESC LIMIT 1",
        {"tenant": tenant_id},
    )
    return await cur.fetchone()
