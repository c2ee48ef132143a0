"""SQL for the history: the horizon, the monthly partitions, and moving rows across.

Migration 0003 explains the contract: a live row may not start before the horizon, and the
horizon moves only under the exclusive history lock that every writer takes shared."""

from __future__ import annotations

from datetime import UTC, datetime

from psycopg import sql

from reservations.kit.db import Conn, fetch_value, fetch_values

# The (int, int) advisory-lock key of migration 0003's HISTORY_LOCK.
HISTORY_LOCK = (20261125, 1)
# Serializes partition DDL between several workers.
PARTITION_LOCK = (20261125, 2)

_COLUMNS = (
    "id, tenant_id, resource_id, booking_id, start_at, end_at, during, status, quantity,"
    " expires_at, customer, metadata, version, created_by, created_at, updated_at, pooled,"
    " needs_approval, checked_in_at, flagged_at, flagged_violations"
)


def month_start(at: datetime) -> datetime:
    """The first instant (UTC) of the month holding `at`."""
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def next_month(start: datetime) -> datetime:
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


def partition_name(start: datetime) -> str:
    return f"reservation_history_{start.year:04d}_{start.month:02d}"


async def horizon(conn: Conn) -> datetime | None:
    """Live rows may not start before this; None until the first move."""
    return await fetch_value(conn, datetime, "SELECT moved_before FROM history_horizon")


async def advance_horizon(conn: Conn, *, to: datetime) -> datetime:
    """Move the horizon forward to `to` (never back). Waits until every writer that read the
    old horizon has finished; call in its own short transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", HISTORY_LOCK)
    moved_before = await fetch_value(
        conn,
        datetime,
        "UPDATE history_horizon SET moved_before = greatest(moved_before, %s)"
        " RETURNING moved_before",
        (to,),
    )
    assert moved_before is not None
    return moved_before


async def partitions(conn: Conn) -> dict[str, tuple[datetime, datetime]]:
    """The attached history partitions by name, with their [from, to) bounds."""
    names = await fetch_values(
        conn,
        str,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'reservation_history'::regclass",
    )
    found: dict[str, tuple[datetime, datetime]] = {}
    for name in names:
        year, month = int(name[-7:-3]), int(name[-2:])
        start = datetime(year, month, 1, tzinfo=UTC)
        found[name] = (start, next_month(start))
    return found


async def candidate_months(conn: Conn, *, before: datetime) -> list[datetime]:
    """Months (UTC) of start_at among live-table rows whose guarded range ends by `before`."""
    return await fetch_values(
        conn,
        datetime,
        "SELECT DISTINCT date_trunc('month', start_at, 'UTC') FROM reservation"
        " WHERE upper(during) <= %s",
        (before,),
    )


async def create_partition(conn: Conn, *, start: datetime) -> bool:
    """Create and attach the month's partition unless it exists. ATTACH takes a lock that
    lets reads of the history go on (CREATE ... PARTITION OF would block them)."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", PARTITION_LOCK)
    name = partition_name(start)
    cur = await conn.execute(
        "SELECT 1 FROM pg_inherits WHERE inhparent = 'reservation_history'::regclass"
        " AND inhrelid = to_regclass(%s)",
        (name,),
    )
    if await cur.fetchone():
        return False
    table = sql.Identifier(name)
    await conn.execute(
        sql.SQL("CREATE TABLE {} (LIKE reservation_history INCLUDING DEFAULTS)").format(table)
    )
    await conn.execute(
        sql.SQL(
            "ALTER TABLE reservation_history ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})"
        ).format(table, sql.Literal(start), sql.Literal(next_month(start)))
    )
    return True


async def detach_partition(conn: Conn, *, name: str) -> None:
    """Take a month out of the history: its table stays, reads no longer see it."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", PARTITION_LOCK)
    await conn.execute(
        sql.SQL("ALTER TABLE reservation_history DETACH PARTITION {}").format(sql.Identifier(name))
    )


async def move_batch(conn: Conn, *, before: datetime, batch: int, now: datetime) -> int:
    """Move up to `batch` rows whose guarded range ends by `before` into the history.
    SKIP LOCKED: a row a request is changing right now moves next time."""
    cur = await conn.execute(
        "WITH moved AS (DELETE FROM reservation WHERE (id, resource_id) IN ("
        "SELECT id, resource_id FROM reservation WHERE upper(during) <= %(before)s"
        " ORDER BY upper(during) LIMIT %(batch)s FOR UPDATE SKIP LOCKED)"
        f" RETURNING {_COLUMNS})"
        f" INSERT INTO reservation_history ({_COLUMNS}, moved_at)"
        f" SELECT {_COLUMNS}, %(now)s FROM moved",
        {"before": before, "batch": batch, "now": now},
    )
    return cur.rowcount
