"""SQL for tenants and API keys."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from psycopg.rows import DictRow

from reservations.kit.db import Conn


async def find_tenant(conn: Conn, name: str) -> DictRow | None:
    cur = await conn.execute("SELECT id, name, created_at FROM tenant WHERE name = %s", (name,))
    return await cur.fetchone()


async def insert_tenant(conn: Conn, *, tenant_id: UUID, name: str) -> DictRow:
    cur = await conn.execute(
        "INSERT INTO tenant (id, name) VALUES (%s, %s)"
        " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name"
        " RETURNING id, name, created_at",
        (tenant_id, name),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def count_tenants(conn: Conn) -> int:
    cur = await conn.execute("SELECT count(*) AS n FROM tenant")
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def insert_key(
    conn: Conn,
    *,
    key_id: UUID,
    tenant_id: UUID,
    prefix: str,
    secret_hash: bytes,
    role: str,
    label: str,
    expires_at: datetime | None,
) -> DictRow:
    cur = await conn.execute(
        "INSERT INTO api_key (id, tenant_id, prefix, secret_hash, role, label, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " RETURNING id, tenant_id, prefix, role, label, created_at, expires_at, revoked_at",
        (key_id, tenant_id, prefix, secret_hash, role, label, expires_at),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def key_by_prefix(conn: Conn, prefix: str) -> DictRow | None:
    cur = await conn.execute(
        "SELECT id, tenant_id, secret_hash, role, expires_at, revoked_at"
        " FROM api_key WHERE prefix = %s",
        (prefix,),
    )
    return await cur.fetchone()


async def list_keys(conn: Conn, tenant_name: str | None) -> list[DictRow]:
    cur = await conn.execute(
        "SELECT k.id, t.name AS tenant, k.prefix, k.role, k.label, k.created_at,"
        " k.expires_at, k.revoked_at FROM api_key k JOIN tenant t ON t.id = k.tenant_id"
        " WHERE %(tenant)s::text IS NULL OR t.name = %(tenant)s ORDER BY t.name, k.created_at",
        {"tenant": tenant_name},
    )
    return await cur.fetchall()


async def revoke_key(conn: Conn, *, prefix: str, at: datetime) -> DictRow | None:
    cur = await conn.execute(
        "UPDATE api_key SET revoked_at = coalesce(revoked_at, %s) WHERE prefix = %s"
        " RETURNING id, prefix, revoked_at",
        (at, prefix),
    )
    return await cur.fetchone()
