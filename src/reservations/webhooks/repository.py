"""SQL for webhook endpoints (tenant-scoped), their test messages and the attempt log; the
queues behind them are queue.py's.

Times that several workers compare (leases, due times, failure streaks) are the database's
clock, never a worker's: workers on different hosts may disagree about now."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any
from uuid import UUID

from reservations.kit.db import Conn, fetch_all, fetch_one, fetch_value


@dataclass(frozen=True, slots=True)
class EndpointRow:
    """A `webhook_endpoint` row as the API shows it (ENDPOINT_COLUMNS: no secret)."""

    id: UUID
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    failing_since: datetime | None
    consecutive_failures: int
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class QueuedTestRow:
    """The `webhook_delivery` row of a queued test message."""

    id: UUID
    status: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """A `webhook_attempt` row with its message (`webhook_delivery`) and event's txid."""

    id: int
    attempt: int
    outcome: str
    status_code: int | None
    latency_ms: int | None
    error: str | None
    attempted_at: datetime
    next_attempt_at: datetime | None
    delivery_id: UUID
    delivery_status: str
    event_type: str
    event_id: int | None
    event_txid: str | None
    resource_id: UUID | None
    resource_seq: int | None


@dataclass(frozen=True, slots=True)
class EndpointCopyRow:
    """A `webhook_endpoint` row as shard clusters copy it (COPIED: with the secret)."""

    id: UUID
    tenant_id: UUID
    url: str
    description: str
    event_types: list[str]
    secret: str
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime


ENDPOINT_COLUMNS = (
    "id, url, description, event_types, enabled, disabled_reason, disabled_at,"
    " failing_since, consecutive_failures, version, created_at, updated_at"
)


# --------------------------------------------------------------------------------------------
# endpoints


async def insert_endpoint(
    conn: Conn,
    *,
    endpoint_id: UUID,
    tenant_id: UUID,
    url: str,
    description: str,
    event_types: list[str],
    secret: str,
    now: datetime,
) -> EndpointRow:
    """The endpoint and its fan-out position. The statement's snapshot is kept: the endpoint
    receives the events of every transaction that snapshot cannot see, and the fan-out starts
    at its xmin (no such transaction is older)."""
    row = await fetch_one(
        conn,
        EndpointRow,
        "WITH ep AS (INSERT INTO webhook_endpoint (id, tenant_id, url, description, event_types,"
        " secret, registered_snapshot, created_at, updated_at)"
        " VALUES (%(id)s, %(tenant)s, %(url)s, %(description)s, %(types)s, %(secret)s,"
        " pg_current_snapshot(), %(now)s, %(now)s) RETURNING *),"
        " fanout AS (INSERT INTO webhook_fanout (endpoint_id, tenant_id, after_txid, after_id)"
        " SELECT id, tenant_id, pg_snapshot_xmin(registered_snapshot), 0 FROM ep)"
        f" SELECT {ENDPOINT_COLUMNS} FROM ep",
        {
            "id": endpoint_id,
            "tenant": tenant_id,
            "url": url,
            "description": description,
            "types": event_types,
            "secret": secret,
            "now": now,
        },
    )
    assert row is not None
    return row


async def get_endpoint(conn: Conn, *, tenant_id: UUID, endpoint_id: UUID) -> EndpointRow | None:
    return await fetch_one(
        conn,
        EndpointRow,
        f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoint WHERE id = %s AND tenant_id = %s",
        (endpoint_id, tenant_id),
    )


async def page_endpoints(
    conn: Conn, *, tenant_id: UUID, after: UUID | None, limit: int
) -> list[EndpointRow]:
    return await fetch_all(
        conn,
        EndpointRow,
        f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoint WHERE tenant_id = %(tenant)s"
        " AND (%(after)s::uuid IS NULL OR id > %(after)s) ORDER BY id LIMIT %(limit)s",
        {"tenant": tenant_id, "after": after, "limit": limit},
    )


async def update_endpoint(
    conn: Conn,
    *,
    tenant_id: UUID,
    endpoint_id: UUID,
    changes: dict[str, Any],
    expected_version: int | None,
    now: datetime,
) -> EndpointRow | None:
    """Apply `changes` (url, description, event_types, enabled) when the version matches;
    None if there is no such endpoint or the version is stale. Enabling clears the reason
    and the failure streak; disabling records `disabled_reason`."""
    sets = []
    params: dict[str, Any] = {
        "id": endpoint_id,
        "tenant": tenant_id,
        "expected": expected_version,
        "now": now,
    }
    for column in ("url", "description", "event_types"):
        if column in changes:
            sets.append(f"{column} = %({column})s")
            params[column] = changes[column]
    if changes.get("enabled") is True:
        sets.append(
            "enabled = true, disabled_reason = NULL, disabled_at = NULL,"
            " failing_since = NULL, consecutive_failures = 0"
        )
    elif changes.get("enabled") is False:
        sets.append(
            "disabled_reason = CASE WHEN enabled THEN %(reason)s ELSE disabled_reason END,"
            " disabled_at = CASE WHEN enabled THEN statement_timestamp() ELSE disabled_at END,"
            " enabled = false"
        )
        params["reason"] = changes["disabled_reason"]
    sets.append("version = version + 1, updated_at = %(now)s")
    return await fetch_one(
        conn,
        EndpointRow,
        f"UPDATE webhook_endpoint SET {', '.join(sets)}"
        " WHERE id = %(id)s AND tenant_id = %(tenant)s"
        " AND (%(expected)s::int IS NULL OR version = %(expected)s)"
        f" RETURNING {ENDPOINT_COLUMNS}",
        params,
    )


async def resume_deliveries(conn: Conn, *, endpoint_id: UUID) -> int:
    """A re-enabled endpoint's waiting messages are due now, with a fresh give-up period."""
    cur = await conn.execute(
        "UPDATE webhook_delivery SET next_attempt_at = statement_timestamp(),"
        " first_attempt_at = NULL WHERE endpoint_id = %s AND status = 'pending'",
        (endpoint_id,),
    )
    return cur.rowcount


async def reset_streak(conn: Conn, *, endpoint_id: UUID) -> None:
    await conn.execute(
        "UPDATE webhook_endpoint SET failing_since = NULL, consecutive_failures = 0 WHERE id = %s",
        (endpoint_id,),
    )


async def delete_endpoint(conn: Conn, *, tenant_id: UUID, endpoint_id: UUID) -> bool:
    """Delete the endpoint with its queue, marks and log (ON DELETE CASCADE)."""
    cur = await conn.execute(
        "DELETE FROM webhook_endpoint WHERE id = %s AND tenant_id = %s", (endpoint_id, tenant_id)
    )
    return cur.rowcount > 0


async def insert_test_message(conn: Conn, *, delivery_id: UUID, endpoint_id: UUID) -> QueuedTestRow:
    row = await fetch_one(
        conn,
        QueuedTestRow,
        "INSERT INTO webhook_delivery (id, endpoint_id, event_type, next_attempt_at, created_at)"
        " VALUES (%s, %s, 'webhook.test', statement_timestamp(), statement_timestamp())"
        " RETURNING id, status, created_at",
        (delivery_id, endpoint_id),
    )
    assert row is not None
    return row


async def attempts_page(
    conn: Conn, *, endpoint_id: UUID, before: int | None, limit: int
) -> list[AttemptRow]:
    """The endpoint's attempt log, newest first, with the message each attempt belongs to."""
    return await fetch_all(
        conn,
        AttemptRow,
        "SELECT a.id, a.attempt, a.outcome, a.status_code, a.latency_ms, a.error,"
        " a.attempted_at, a.next_attempt_at, d.id AS delivery_id, d.status AS delivery_status,"
        " d.event_type, d.event_id, e.txid::text AS event_txid, d.resource_id, d.resource_seq"
        " FROM webhook_attempt a JOIN webhook_delivery d ON d.id = a.delivery_id"
        " LEFT JOIN event e ON e.id = d.event_id"
        " WHERE a.endpoint_id = %(endpoint)s AND (%(before)s::bigint IS NULL OR a.id < %(before)s)"
        " ORDER BY a.id DESC LIMIT %(limit)s",
        {"endpoint": endpoint_id, "before": before, "limit": limit},
    )


async def disable_endpoint(conn: Conn, *, endpoint_id: UUID, reason: str) -> None:
    await conn.execute(
        "UPDATE webhook_endpoint SET enabled = false, disabled_reason = %s,"
        " disabled_at = statement_timestamp(), version = version + 1,"
        " updated_at = statement_timestamp() WHERE id = %s AND enabled",
        (reason, endpoint_id),
    )


# --------------------------------------------------------------------------------------------
# with shard clusters: every cluster keeps a copy of each endpoint (its outbox is fanned out and
# delivered there); the catalog's row is the endpoint.

COPIED = (
    "id, tenant_id, url, description, event_types, secret, enabled, disabled_reason,"
    " disabled_at, version, created_at, updated_at"
)


async def all_endpoints(conn: Conn) -> list[EndpointCopyRow]:
    return await fetch_all(
        conn, EndpointCopyRow, f"SELECT {COPIED} FROM webhook_endpoint ORDER BY id"
    )


async def sync_copies(conn: Conn, rows: list[EndpointCopyRow]) -> int:
    """Make this cluster's copies match `rows` (the catalog's endpoints): new ones start
    receiving with this statement's snapshot, changed ones take the catalog's settings,
    ones the catalog no longer has go (with their queues). Endpoints of tenants that never
    wrote here are left out: they have no events here. Returns how many copies changed."""
    # One array parameter per column, named as the row's fields.
    params = {f.name: [getattr(r, f.name) for r in rows] for f in fields(EndpointCopyRow)}
    changed = await fetch_value(
        conn,
        int,
        "WITH src AS (SELECT * FROM unnest(%(id)s::uuid[], %(tenant_id)s::uuid[],"
        " %(url)s::text[], %(description)s::text[], %(event_types)s::text[],"
        " %(secret)s::text[], %(enabled)s::bool[], %(disabled_reason)s::text[],"
        " %(disabled_at)s::timestamptz[], %(version)s::int[], %(created_at)s::timestamptz[],"
        " %(updated_at)s::timestamptz[]) AS s(id, tenant_id, url, description, types, secret,"
        " enabled, disabled_reason, disabled_at, version, created_at, updated_at)"
        " WHERE EXISTS (SELECT 1 FROM tenant t WHERE t.id = s.tenant_id)),"
        " ins AS (INSERT INTO webhook_endpoint AS ep (id, tenant_id, url, description,"
        " event_types, secret, enabled, disabled_reason, disabled_at, version,"
        " registered_snapshot, created_at, updated_at)"
        " SELECT id, tenant_id, url, description, string_to_array(types, ','), secret, enabled,"
        " disabled_reason, disabled_at, version, pg_current_snapshot(), created_at, updated_at"
        " FROM src ON CONFLICT (id) DO UPDATE SET url = excluded.url,"
        " description = excluded.description, event_types = excluded.event_types,"
        " secret = excluded.secret, enabled = excluded.enabled,"
        " disabled_reason = excluded.disabled_reason, disabled_at = excluded.disabled_at,"
        " version = excluded.version, updated_at = excluded.updated_at"
        " WHERE (ep.url, ep.description, ep.event_types, ep.secret, ep.enabled, ep.version)"
        " IS DISTINCT FROM (excluded.url, excluded.description, excluded.event_types,"
        " excluded.secret, excluded.enabled, excluded.version)"
        " RETURNING ep.id, ep.tenant_id, ep.registered_snapshot, (xmax = 0) AS inserted),"
        " fanout AS (INSERT INTO webhook_fanout (endpoint_id, tenant_id, after_txid, after_id)"
        " SELECT id, tenant_id, pg_snapshot_xmin(registered_snapshot), 0 FROM ins"
        " WHERE inserted ON CONFLICT DO NOTHING),"
        " gone AS (DELETE FROM webhook_endpoint WHERE id <> ALL(%(id)s::uuid[]) RETURNING id)"
        " SELECT (SELECT count(*) FROM ins) + (SELECT count(*) FROM gone)",
        {**params, "event_types": [",".join(r.event_types) for r in rows]},
    )
    return changed or 0
