"""SQL of the shard map (catalog), shard ownership and fencing (clusters), the two-phase
decision log (catalog) and the tenancy rows a cluster mirrors from the catalog."""

from __future__ import annotations

from uuid import UUID

from psycopg.rows import DictRow

from reservations.kit.db import Conn

# --- catalog: the shard map ---


async def load_map(conn: Conn) -> dict[int, str]:
    cur = await conn.execute("SELECT logical, cluster FROM shard_map ORDER BY logical")
    return {int(r["logical"]): str(r["cluster"]) for r in await cur.fetchall()}


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
    cur = await conn.execute("SELECT logical FROM shard_owned ORDER BY logical")
    return [int(r["logical"]) for r in await cur.fetchall()]


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
    cur = await conn.execute(
        "WITH ins AS (INSERT INTO twophase_decision (gid, decision, participants)"
        " VALUES (%s, %s, %s) ON CONFLICT (gid) DO NOTHING RETURNING decision)"
        " SELECT decision FROM ins UNION ALL"
        " SELECT decision FROM twophase_decision WHERE gid = %s LIMIT 1",
        (gid, decision, participants, gid),
    )
    row = await cur.fetchone()
    assert row is not None
    return str(row["decision"])


async def decision(conn: Conn, gid: str) -> str | None:
    cur = await conn.execute("SELECT decision FROM twophase_decision WHERE gid = %s", (gid,))
    row = await cur.fetchone()
    return None if row is None else str(row["decision"])


async def forget_decisions(conn: Conn, *, older_than_seconds: float) -> int:
    cur = await conn.execute(
        "DELETE FROM twophase_decision WHERE decided_at < now() - make_interval(secs => %s)",
        (older_than_seconds,),
    )
    return cur.rowcount


async def prepared(conn: Conn, prefix: str) -> list[DictRow]:
    """This cluster's prepared transactions whose gid starts with `prefix`, with their age."""
    cur = await conn.execute(
        "SELECT gid, extract(epoch FROM now() - prepared)::float8 AS age"
        " FROM pg_prepared_xacts WHERE gid LIKE %s AND database = current_database()"
        " ORDER BY prepared",
        (prefix + "%",),
    )
    return await cur.fetchall()


# --- tenancy rows a cluster needs for its foreign keys ---


async def tenancy_rows(conn: Conn, api_key_id: UUID) -> DictRow | None:
    cur = await conn.execute(
        "SELECT t.id AS tenant_id, t.name, t.created_at AS tenant_created_at, k.id, k.prefix,"
        " k.role, k.label, k.created_at, k.expires_at, k.revoked_at"
        " FROM api_key k JOIN tenant t ON t.id = k.tenant_id WHERE k.id = %s",
        (api_key_id,),
    )
    return await cur.fetchone()


async def mirror_tenancy(conn: Conn, row: DictRow) -> None:
    """Copy a tenant and one of its keys onto a cluster, for the foreign keys of the rows
    written there. No secret: clusters never authenticate anyone (the catalog does)."""
    await conn.execute(
        "INSERT INTO tenant (id, name, created_at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
        (row["tenant_id"], row["name"], row["tenant_created_at"]),
    )
    await conn.execute(
        "INSERT INTO api_key (id, tenant_id, prefix, secret_hash, role, label, created_at,"
        " expires_at, revoked_at) VALUES (%s, %s, %s, '\\x', %s, %s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING",
        (
            row["id"],
            row["tenant_id"],
            row["prefix"],
            row["role"],
            row["label"],
            row["created_at"],
            row["expires_at"],
            row["revoked_at"],
        ),
    )


async def counts(conn: Conn) -> DictRow:
    """Rows on one cluster: resources and live reservations."""
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM resource) AS resources,"
        " (SELECT count(*) FROM reservation WHERE status IN ('held', 'confirmed'))"
        " AS live_reservations"
    )
    row = await cur.fetchone()
    assert row is not None
    return row
