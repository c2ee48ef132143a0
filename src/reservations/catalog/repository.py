"""SQL for resources. Every statement is scoped by tenant_id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from reservations.kit.db import Conn, fetch_all, fetch_one, fetch_value


@dataclass(frozen=True, slots=True)
class ResourceRow:
    """A live `resource` row as every domain reads it (COLUMNS); `policy` is the stored
    JSON (availability's `policy_of` reads it)."""

    id: UUID
    name: str
    capacity: int
    timezone: str
    tags: list[str]
    metadata: dict[str, Any]
    policy: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime


COLUMNS = "id, name, capacity, timezone, tags, metadata, policy, version, created_at, updated_at"


async def insert(
    conn: Conn,
    *,
    resource_id: UUID,
    tenant_id: UUID,
    name: str,
    capacity: int,
    timezone: str,
    tags: list[str],
    metadata: dict[str, Any],
    policy: dict[str, Any],
    now: datetime,
) -> ResourceRow:
    row = await fetch_one(
        conn,
        ResourceRow,
        "INSERT INTO resource (id, tenant_id, name, capacity, timezone, tags, metadata, policy,"
        " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        f" RETURNING {COLUMNS}",
        (
            resource_id,
            tenant_id,
            name,
            capacity,
            timezone,
            tags,
            Jsonb(metadata),
            Jsonb(policy),
            now,
            now,
        ),
    )
    assert row is not None
    return row


async def get(conn: Conn, *, tenant_id: UUID, resource_id: UUID) -> ResourceRow | None:
    return await fetch_one(
        conn,
        ResourceRow,
        f"SELECT {COLUMNS} FROM resource WHERE id = %s AND tenant_id = %s AND archived_at IS NULL",
        (resource_id, tenant_id),
    )


async def get_many(conn: Conn, *, tenant_id: UUID, resource_ids: list[UUID]) -> list[ResourceRow]:
    return await fetch_all(
        conn,
        ResourceRow,
        f"SELECT {COLUMNS} FROM resource WHERE id = ANY(%s) AND tenant_id = %s"
        " AND archived_at IS NULL ORDER BY id",
        (resource_ids, tenant_id),
    )


async def candidates(
    conn: Conn, *, tenant_id: UUID, tags: list[str], min_capacity: int, limit: int
) -> list[ResourceRow]:
    """Live resources with all `tags` and at least `min_capacity`, for a search."""
    return await fetch_all(
        conn,
        ResourceRow,
        f"SELECT {COLUMNS} FROM resource WHERE tenant_id = %(tenant)s AND archived_at IS NULL"
        " AND capacity >= %(cap)s"
        " AND (cardinality(%(tags)s::text[]) = 0 OR tags @> %(tags)s::text[])"
        " ORDER BY id LIMIT %(limit)s",
        {"tenant": tenant_id, "tags": tags, "cap": min_capacity, "limit": limit},
    )


async def members(
    conn: Conn,
    *,
    tenant_id: UUID,
    tags: list[str],
    resource_ids: list[UUID] | None,
    min_capacity: int,
    limit: int,
) -> list[ResourceRow]:
    """Live resources of a pool: all `tags`, among `resource_ids` when given, at least
    `min_capacity` (reservations/pool_model.py; the caller orders them)."""
    return await fetch_all(
        conn,
        ResourceRow,
        f"SELECT {COLUMNS} FROM resource WHERE tenant_id = %(tenant)s AND archived_at IS NULL"
        " AND capacity >= %(cap)s AND tags @> %(tags)s::text[]"
        " AND (%(ids)s::uuid[] IS NULL OR id = ANY(%(ids)s::uuid[]))"
        " ORDER BY id LIMIT %(limit)s",
        {
            "tenant": tenant_id,
            "tags": tags,
            "ids": resource_ids,
            "cap": min_capacity,
            "limit": limit,
        },
    )


async def page(
    conn: Conn,
    *,
    tenant_id: UUID,
    tags: list[str],
    after: UUID | None,
    limit: int,
) -> list[ResourceRow]:
    return await fetch_all(
        conn,
        ResourceRow,
        f"SELECT {COLUMNS} FROM resource WHERE tenant_id = %(tenant)s AND archived_at IS NULL"
        " AND (%(after)s::uuid IS NULL OR id > %(after)s)"
        " AND (cardinality(%(tags)s::text[]) = 0 OR tags @> %(tags)s::text[])"
        " ORDER BY id LIMIT %(limit)s",
        {"tenant": tenant_id, "after": after, "tags": tags, "limit": limit},
    )


async def update(
    conn: Conn,
    *,
    tenant_id: UUID,
    resource_id: UUID,
    changes: dict[str, Any],
    expected_version: int | None,
    now: datetime,
) -> ResourceRow | None:
    """Apply `changes` (column -> value) when the version matches; None if no such row or
    the version is stale (the caller tells the two apart)."""
    sets = []
    params: dict[str, Any] = {
        "id": resource_id,
        "tenant": tenant_id,
        "expected": expected_version,
        "now": now,
    }
    for column in ("name", "capacity", "timezone", "tags", "metadata", "policy"):
        if column in changes:
            sets.append(f"{column} = %({column})s")
            value = changes[column]
            params[column] = Jsonb(value) if column in ("metadata", "policy") else value
    sets.append("version = version + 1")
    sets.append("updated_at = %(now)s")
    return await fetch_one(
        conn,
        ResourceRow,
        f"UPDATE resource SET {', '.join(sets)}"
        " WHERE id = %(id)s AND tenant_id = %(tenant)s AND archived_at IS NULL"
        " AND (%(expected)s::int IS NULL OR version = %(expected)s)"
        f" RETURNING {COLUMNS}",
        params,
    )


async def archive(conn: Conn, *, tenant_id: UUID, resource_id: UUID, now: datetime) -> int | None:
    """Archive; the new version, or None if there was no live resource to archive."""
    return await fetch_value(
        conn,
        int,
        "UPDATE resource SET archived_at = %s, version = version + 1, updated_at = %s"
        " WHERE id = %s AND tenant_id = %s AND archived_at IS NULL RETURNING version",
        (now, now, resource_id, tenant_id),
    )


@dataclass(frozen=True, slots=True)
class ResourceLabel:
    """What an export prints beside a reservation: archived resources included."""

    id: UUID
    name: str
    timezone: str


async def labels(conn: Conn, *, tenant_id: UUID, resource_ids: list[UUID]) -> list[ResourceLabel]:
    return await fetch_all(
        conn,
        ResourceLabel,
        "SELECT id, name, timezone FROM resource WHERE id = ANY(%s) AND tenant_id = %s",
        (resource_ids, tenant_id),
    )
