"""SQL of the shard map (catalog), shard ownership and fencing (clusters), the two-phase
decision log (catalog) and the tenancy rows a cluster mirrors from the catalog."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from psycopg import sql

from reservations.kit.db import Conn, fetch_all, fetch_one, fetch_value, fetch_values


@dataclass(frozen=True, slots=True)
class MapRow:
    """A `shard_map` row: where a logical shard lives."""

    logical: int
    cluster: str


@dataclass(frozen=True, slots=True)
class PreparedRow:
    """A prepared transaction (`pg_prepared_xacts`) with its age in seconds."""

    gid: str
    age: float


@dataclass(frozen=True, slots=True)
class TenancyRow:
    """A tenant and one of its `api_key` rows (no secret), as a cluster mirrors them."""

    tenant_id: UUID
    name: str
    tenant_created_at: datetime
    id: UUID
    prefix: str
    role: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class CountsRow:
    """What one cluster holds: resources and live reservations."""

    resources: int
    live_reservations: int


# --- catalog: the shard map ---


async def load_map(conn: Conn) -> dict[int, str]:
    rows = await fetch_all(conn, MapRow, "SELECT logical, cluster FROM shard_map ORDER BY logical")
    return {r.logical: r.cluster for r in rows}


async def seed_map(conn: Conn, assignment: tuple[str, ...]) -> None:
    """Write the configured assignment if the catalog has none yet (first start)."""
    await conn.execute(
        "INSERT INTO shard_map (logical, cluster)"
        " SELECT n - 1, c FROM unnest(%s::text[]) WITH ORDINALITY AS a (c, n)"
        " ON CONFLICT (logical) DO NOTHING",
        (list(assignment),),
    )


async def assign(conn: Conn, *, logical: int, cluster: str) -> None:
    await conn.execute(
        "UPDATE shard_map SET cluster = %s, updated_at = now() WHERE logical = %s",
        (cluster, logical),
    )


# --- cluster: ownership and fencing ---


async def owned(conn: Conn) -> list[int]:
    return await fetch_values(conn, int, "SELECT logical FROM shard_owned ORDER BY logical")


async def claim(conn: Conn, shards: list[int]) -> None:
    await conn.execute(
        "INSERT INTO shard_owned (logical) SELECT unnest(%s::int[]) ON CONFLICT DO NOTHING",
        (shards,),
    )


async def release(conn: Conn, shard: int) -> None:
    await conn.execute("DELETE FROM shard_owned WHERE logical = %s", (shard,))


async def guard(conn: Conn, shard: int) -> None:
    """Wait while a move holds `shard`; refuse (RS001) if it is not on this cluster."""
    await conn.execute("SELECT shard_guard(%s)", (shard,))


async def lock_for_move(conn: Conn, shard: int) -> None:
    """Hold off every writer of `shard` on this cluster until this transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(1936221300, %s)", (shard,))


async def fence(conn: Conn, *, resource_id: UUID, token: int) -> None:
    """Refuse (RS002) a fencing token older than the newest this cluster saw for it."""
    await conn.execute("SELECT fence_check(%s, %s)", (resource_id, token))


# --- catalog: two-phase decisions ---


async def decide(conn: Conn, *, gid: str, decision: str, participants: list[str]) -> str:
    """Record a decision unless one exists; return the decision that stands."""
    decided = await fetch_value(
        conn,
        str,
        "WITH ins AS (INSERT INTO twophase_decision (gid, decision, participants)"
        " VALUES (%s, %s, %s) ON CONFLICT (gid) DO NOTHING RETURNING decision)"
        " SELECT decision FROM ins UNION ALL"
        " SELECT decision FROM twophase_decision WHERE gid = %s LIMIT 1",
        (gid, decision, participants, gid),
    )
    assert decided is not None
    return decided


async def decision(conn: Conn, gid: str) -> str | None:
    return await fetch_value(
        conn, str, "SELECT decision FROM twophase_decision WHERE gid = %s", (gid,)
    )


async def forget_decisions(conn: Conn, *, older_than_seconds: float) -> int:
    cur = await conn.execute(
        "DELETE FROM twophase_decision WHERE decided_at < now() - make_interval(secs => %s)",
        (older_than_seconds,),
    )
    return cur.rowcount


async def prepared(conn: Conn, prefix: str) -> list[PreparedRow]:
    """This cluster's prepared transactions whose gid starts with `prefix`, with their age."""
    return await fetch_all(
        conn,
        PreparedRow,
        "SELECT gid, extract(epoch FROM now() - prepared)::float8 AS age"
        " FROM pg_prepared_xacts WHERE gid LIKE %s AND database = current_database()"
        " ORDER BY prepared",
        (prefix + "%",),
    )


# --- tenancy rows a cluster needs for its foreign keys ---


_TENANCY = (
    "SELECT t.id AS tenant_id, t.name, t.created_at AS tenant_created_at, k.id, k.prefix,"
    " k.role, k.label, k.created_at, k.expires_at, k.revoked_at"
    " FROM api_key k JOIN tenant t ON t.id = k.tenant_id"
)


async def tenancy_rows(conn: Conn, api_key_id: UUID) -> TenancyRow | None:
    return await fetch_one(conn, TenancyRow, _TENANCY + " WHERE k.id = %s", (api_key_id,))


async def mirror_tenancy(conn: Conn, row: TenancyRow) -> None:
    """Copy a tenant and one of its keys onto a cluster, for the foreign keys of the rows
    written there. No secret: clusters never authenticate anyone (the catalog does)."""
    await conn.execute(
        "INSERT INTO tenant (id, name, created_at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
        (row.tenant_id, row.name, row.tenant_created_at),
    )
    await conn.execute(
        "INSERT INTO api_key (id, tenant_id, prefix, secret_hash, role, label, created_at,"
        " expires_at, revoked_at) VALUES (%s, %s, %s, '\\x', %s, %s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING",
        (
            row.id,
            row.tenant_id,
            row.prefix,
            row.role,
            row.label,
            row.created_at,
            row.expires_at,
            row.revoked_at,
        ),
    )


async def counts(conn: Conn) -> CountsRow:
    """Rows on one cluster: resources and live reservations."""
    row = await fetch_one(
        conn,
        CountsRow,
        "SELECT (SELECT count(*) FROM resource) AS resources,"
        " (SELECT count(*) FROM reservation WHERE status IN ('held', 'confirmed'))"
        " AS live_reservations",
    )
    assert row is not None
    return row


async def wal_position(conn: Conn) -> str:
    lsn = await fetch_value(conn, str, "SELECT pg_current_wal_lsn()::text")
    assert lsn is not None
    return lsn


async def behind(conn: Conn, position: str) -> int:
    """Bytes of WAL a replica has yet to replay to reach the primary's `position`."""
    lag = await fetch_value(
        conn,
        int,
        "SELECT greatest(0, pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn()))::bigint",
        (position,),
    )
    return lag or 0


# --- moving a logical shard: what belongs to shard %(n)s of %(count)s, table by table ---


@dataclass(frozen=True)
class ShardTable:
    name: str
    where: sql.Composable  # the rows of shard %(n)s of %(count)s
    skip: tuple[str, ...] = ()  # columns the target assigns itself


_OF_RESOURCE = sql.SQL("logical_shard(resource_id, %(count)s) = %(n)s")
# Copy order (parents first); deletes go the other way.
SHARD_TABLES = (
    ShardTable("resource", sql.SQL("logical_shard(id, %(count)s) = %(n)s")),
    ShardTable(
        "booking",
        sql.SQL(
            "id IN (SELECT booking_id FROM reservation_all WHERE booking_id IS NOT NULL AND {})"
        ).format(_OF_RESOURCE),
    ),
    ShardTable("reservation", _OF_RESOURCE),
    ShardTable("reservation_history", _OF_RESOURCE),
    ShardTable("resource_event_seq", _OF_RESOURCE),
    # Events get the target's ids and transaction ids; they keep their per-resource seq.
    ShardTable("event", _OF_RESOURCE, skip=("id", "txid")),
    ShardTable("waitlist_entry", _OF_RESOURCE),
    ShardTable("resource_fence", _OF_RESOURCE),
    ShardTable("reminder_sent", _OF_RESOURCE),
    # A stored reply names its resource (a reservation's) or its first reservation's.
    ShardTable(
        "idempotency_record",
        sql.SQL(
            "body::jsonb ? 'id' AND logical_shard(coalesce((body::jsonb ->> 'resource_id')::uuid,"
            " (body::jsonb -> 'reservations' -> 0 ->> 'resource_id')::uuid,"
            " '00000000-0000-0000-0000-000000000000'::uuid), %(count)s) = %(n)s"
        ),
    ),
)


async def replica_role(conn: Conn) -> None:
    """For this transaction: no triggers (outbox, audit, foreign keys). The copied rows were
    checked where they were written; re-firing the triggers would invent events."""
    await conn.execute("SET LOCAL session_replication_role = replica")


async def all_tenancy(conn: Conn) -> list[TenancyRow]:
    return await fetch_all(conn, TenancyRow, _TENANCY)


async def delete_shard_rows(conn: Conn, table: ShardTable, params: dict[str, int]) -> int:
    cur = await conn.execute(
        sql.SQL("DELETE FROM {} WHERE {}").format(sql.Identifier(table.name), table.where),
        params,
    )
    return cur.rowcount


async def history_months(conn: Conn, params: dict[str, int]) -> list[datetime]:
    return await fetch_values(
        conn,
        datetime,
        sql.SQL(
            "SELECT DISTINCT date_trunc('month', start_at, 'UTC') FROM reservation_history WHERE {}"
        ).format(_OF_RESOURCE),
        params,
    )


async def _columns(conn: Conn, table: ShardTable) -> list[str]:
    names = await fetch_values(
        conn,
        str,
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
        " AND table_schema = current_schema() AND is_generated = 'NEVER'"
        " ORDER BY ordinal_position",
        (table.name,),
    )
    return [name for name in names if name not in table.skip]


async def copy_shard_rows(
    reader: Conn, write: Conn, table: ShardTable, params: dict[str, int]
) -> AsyncIterator[int]:
    """COPY one table's rows of the shard from `reader` into `write`; yields the number of
    rows in each chunk as it goes (text format: one line per row)."""
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in await _columns(reader, table))
    name = sql.Identifier(table.name)
    out = sql.SQL("COPY (SELECT {} FROM {} WHERE {}) TO STDOUT").format(cols, name, table.where)
    into = sql.SQL("COPY {} ({}) FROM STDIN").format(name, cols)
    async with (
        reader.cursor() as rcur,
        write.cursor() as wcur,
        rcur.copy(out, params) as source,
        wcur.copy(into) as sink,
    ):
        async for data in source:
            await sink.write(data)
            yield bytes(data).count(b"\n")


async def widen_spans(conn: Conn, params: dict[str, int]) -> None:
    """Widen each tenant's longest reservation (migration 0009) by the shard's rows, which
    were copied with the trigger that keeps it switched off."""
    await conn.execute(
        sql.SQL(
            "INSERT INTO reservation_span AS s (tenant_id, longest)"
            " SELECT tenant_id, max(span_of(start_at, end_at)) FROM reservation_all"
            " WHERE {} GROUP BY tenant_id"
            " ON CONFLICT (tenant_id) DO UPDATE SET longest = greatest(s.longest, excluded.longest)"
        ).format(_OF_RESOURCE),
        params,
    )


async def split_bookings(conn: Conn, params: dict[str, int]) -> list[UUID]:
    """Bookings with reservations on this shard and on others."""
    return await fetch_values(
        conn,
        UUID,
        sql.SQL(
            "SELECT DISTINCT booking_id FROM reservation_all WHERE booking_id IS NOT NULL"
            " AND {} AND booking_id IN (SELECT booking_id FROM reservation_all"
            " WHERE logical_shard(resource_id, %(count)s) <> %(n)s)"
        ).format(_OF_RESOURCE),
        params,
    )


async def mark_spanning(conn: Conn, bookings: list[UUID]) -> None:
    await conn.execute("UPDATE booking SET spanning = true WHERE id = ANY(%s)", (bookings,))


async def shard_bookings(conn: Conn, params: dict[str, int]) -> list[UUID]:
    return await fetch_values(
        conn,
        UUID,
        sql.SQL(
            "SELECT DISTINCT booking_id FROM reservation_all WHERE booking_id IS NOT NULL AND {}"
        ).format(_OF_RESOURCE),
        params,
    )


async def delete_bookings_without_rows(conn: Conn, bookings: list[UUID]) -> int:
    cur = await conn.execute(
        "DELETE FROM booking b WHERE id = ANY(%s) AND NOT EXISTS"
        " (SELECT 1 FROM reservation_all r WHERE r.booking_id = b.id)",
        (bookings,),
    )
    return cur.rowcount
