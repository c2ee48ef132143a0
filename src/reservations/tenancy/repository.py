"""SQL for tenants and API keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from reservations.kit.db import Conn, fetch_all, fetch_one, fetch_value


@dataclass(frozen=True, slots=True)
class TenantRow:
    """A `tenant` row."""

    id: UUID
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    """An `api_key` row without its secret's hash."""

    id: UUID
    tenant_id: UUID
    prefix: str
    role: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class KeyCheckRow:
    """What authentication reads of an `api_key` row: its tenant, role, validity and the
    secret's hash."""

    id: UUID
    tenant_id: UUID
    secret_hash: bytes
    role: str
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class ListedKeyRow:
    """An `api_key` row as `keys list` shows it: with its tenant's name, no secret."""

    id: UUID
    tenant: str
    prefix: str
    role: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class RevokedKeyRow:
    """A revoked `api_key` row: when it was (first) revoked."""

    id: UUID
    prefix: str
    revoked_at: datetime


async def find_tenant(conn: Conn, name: str) -> TenantRow | None:
    return await fetch_one(
        conn, TenantRow, "SELECT id, name, created_at FROM tenant WHERE name = %s", (name,)
    )


async def insert_tenant(conn: Conn, *, tenant_id: UUID, name: str) -> TenantRow:
    row = await fetch_one(
        conn,
        TenantRow,
        "INSERT INTO tenant (id, name) VALUES (%s, %s)"
        " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name"
        " RETURNING id, name, created_at",
        (tenant_id, name),
    )
    assert row is not None
    return row


async def count_tenants(conn: Conn) -> int:
    return await fetch_value(conn, int, "SELECT count(*) FROM tenant") or 0


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
) -> ApiKeyRow:
    row = await fetch_one(
        conn,
        ApiKeyRow,
        "INSERT INTO api_key (id, tenant_id, prefix, secret_hash, role, label, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " RETURNING id, tenant_id, prefix, role, label, created_at, expires_at, revoked_at",
        (key_id, tenant_id, prefix, secret_hash, role, label, expires_at),
    )
    assert row is not None
    return row


async def key_by_prefix(conn: Conn, prefix: str) -> KeyCheckRow | None:
    return await fetch_one(
        conn,
        KeyCheckRow,
        "SELECT id, tenant_id, secret_hash, role, expires_at, revoked_at"
        " FROM api_key WHERE prefix = %s",
        (prefix,),
    )


async def list_keys(conn: Conn, tenant_name: str | None) -> list[ListedKeyRow]:
    return await fetch_all(
        conn,
        ListedKeyRow,
        "SELECT k.id, t.name AS tenant, k.prefix, k.role, k.label, k.created_at,"
        " k.expires_at, k.revoked_at FROM api_key k JOIN tenant t ON t.id = k.tenant_id"
        " WHERE %(tenant)s::text IS NULL OR t.name = %(tenant)s ORDER BY t.name, k.created_at",
        {"tenant": tenant_name},
    )


async def revoke_key(conn: Conn, *, prefix: str, at: datetime) -> RevokedKeyRow | None:
    return await fetch_one(
        conn,
        RevokedKeyRow,
        "UPDATE api_key SET revoked_at = coalesce(revoked_at, %s) WHERE prefix = %s"
        " RETURNING id, prefix, revoked_at",
        (at, prefix),
    )
