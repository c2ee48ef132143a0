"""SQL for webhooks: endpoints (tenant-scoped), the fan-out from the outbox into each
endpoint's queue, claiming and recording deliveries, and the attempt log.

Times that several workers compare (leases, due times, failure streaks) are the database's
clock, never a worker's: workers on different hosts may disagree about now."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any
from uuid import UUID

from reservations.kit.db import Conn, fetch_all, fetch_one, fetch_value, fetch_values


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
class FanoutRow:
    """An endpoint's `webhook_fanout` position in its tenant's outbox."""

    tenant_id: UUID
    after_txid: str
    after_id: int


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """An `event` as the fan-out reads it: its place in the outbox and in its resource's
    sequence."""

    id: int
    txid: str
    resource_id: UUID
    resource_seq: int


@dataclass(frozen=True, slots=True)
class StreamMarkRow:
    """A `webhook_stream` row: the last sequence number queued for (endpoint, resource)."""

    resource_id: UUID
    last_seq: int


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """A claimed `webhook_delivery` with what sending it needs: its endpoint's URL and
    secret, and its event (all None for a test message)."""

    id: UUID
    endpoint_id: UUID
    event_type: str
    attempts: int
    created_at: datetime
    url: str
    secret: str
    event_id: int | None
    event_txid: str | None
    resource_id: UUID | None
    resource_seq: int | None
    subject_id: UUID | None
    data: dict[str, Any] | None
    event_created_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeliveryStateRow:
    """A `webhook_delivery`'s state when its attempt is recorded, with the database's now."""

    endpoint_id: UUID
    status: str
    claim: UUID | None
    first_attempt_at: datetime | None
    now: datetime


@dataclass(frozen=True, slots=True)
class StreakRow:
    """An endpoint's failure streak after counting one more, with the database's now."""

    enabled: bool
    consecutive_failures: int
    failing_since: datetime
    now: datetime


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

# An endpoint's filter: no types means every type; "reservation.*" every reservation event.
_TYPE_MATCHES = (
    "(cardinality(ep.event_types) = 0 OR e.type = ANY(ep.event_types)"
    " OR split_part(e.type, '.', 1) || '.*' = ANY(ep.event_types))"
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


# --------------------------------------------------------------------------------------------
# fan-out: outbox -> per-endpoint queue


async def fanout_due(conn: Conn) -> list[UUID]:
    """Endpoints whose tenant has readable events past their fan-out position."""
    return await fetch_values(
        conn,
        UUID,
        "SELECT f.endpoint_id FROM webhook_fanout f WHERE EXISTS (SELECT 1 FROM event e"
        " WHERE e.tenant_id = f.tenant_id AND (e.txid, e.id) > (f.after_txid, f.after_id)"
        " AND e.txid < pg_snapshot_xmin(pg_current_snapshot()))",
    )


async def lock_fanout(conn: Conn, *, endpoint_id: UUID) -> FanoutRow | None:
    """The endpoint's fan-out position, locked for this transaction; None if another worker
    holds it (or the endpoint is gone). The endpoint is locked first (KEY SHARE: only a
    DELETE waits for it), the order DELETE keeps, so the two cannot deadlock."""
    cur = await conn.execute(
        "SELECT 1 FROM webhook_endpoint WHERE id = %s FOR KEY SHARE", (endpoint_id,)
    )
    if await cur.fetchone() is None:
        return None
    return await fetch_one(
        conn,
        FanoutRow,
        "SELECT tenant_id, after_txid::text AS after_txid, after_id FROM webhook_fanout"
        " WHERE endpoint_id = %s FOR UPDATE SKIP LOCKED",
        (endpoint_id,),
    )


async def outbox_after(
    conn: Conn, *, tenant_id: UUID, after_txid: str, after_id: int, limit: int
) -> list[OutboxRow]:
    """The tenant's next events in (txid, id) order, only from transactions older than every
    one still running (see migration 0004): none can later appear before them."""
    return await fetch_all(
        conn,
        OutboxRow,
        "SELECT id, txid::text AS txid, resource_id, resource_seq FROM event"
        " WHERE tenant_id = %(tenant)s AND (txid, id) > (%(txid)s::text::xid8, %(id)s)"
        " AND txid < pg_snapshot_xmin(pg_current_snapshot())"
        " ORDER BY txid, id LIMIT %(limit)s",
        {"tenant": tenant_id, "txid": after_txid, "id": after_id, "limit": limit},
    )


async def stream_marks(
    conn: Conn, *, endpoint_id: UUID, resource_ids: list[UUID]
) -> dict[UUID, int]:
    rows = await fetch_all(
        conn,
        StreamMarkRow,
        "SELECT resource_id, last_seq FROM webhook_stream"
        " WHERE endpoint_id = %s AND resource_id = ANY(%s)",
        (endpoint_id, resource_ids),
    )
    return {row.resource_id: row.last_seq for row in rows}


async def enqueue(conn: Conn, *, endpoint_id: UUID, ranges: list[tuple[UUID, int, int]]) -> int:
    """Queue, for each (resource, after, upto), every event of the resource with
    after < resource_seq <= upto that the endpoint wants: of a type it takes, from a
    transaction its registration could not see. Returns how many were queued."""
    if not ranges:
        return 0
    cur = await conn.execute(
        "INSERT INTO webhook_delivery (id, endpoint_id, event_id, event_type, resource_id,"
        " resource_seq, next_attempt_at, created_at)"
        " SELECT gen_random_uuid(), ep.id, e.id, e.type, e.resource_id, e.resource_seq,"
        " statement_timestamp(), statement_timestamp()"
        " FROM webhook_endpoint ep,"
        " unnest(%(resources)s::uuid[], %(after)s::bigint[], %(upto)s::bigint[])"
        " AS r(resource_id, after_seq, upto_seq)"
        " JOIN event e ON e.resource_id = r.resource_id"
        " AND e.resource_seq > r.after_seq AND e.resource_seq <= r.upto_seq"
        " WHERE ep.id = %(endpoint)s AND e.tenant_id = ep.tenant_id"
        " AND NOT pg_visible_in_snapshot(e.txid, ep.registered_snapshot)"
        f" AND {_TYPE_MATCHES}"
        " ORDER BY e.resource_id, e.resource_seq"
        " ON CONFLICT (endpoint_id, event_id) DO NOTHING",
        {
            "endpoint": endpoint_id,
            "resources": [r[0] for r in ranges],
            "after": [r[1] for r in ranges],
            "upto": [r[2] for r in ranges],
        },
    )
    return cur.rowcount


async def set_stream_marks(conn: Conn, *, endpoint_id: UUID, marks: dict[UUID, int]) -> None:
    await conn.execute(
        "INSERT INTO webhook_stream (endpoint_id, resource_id, last_seq)"
        " SELECT %s, r, s FROM unnest(%s::uuid[], %s::bigint[]) AS m(r, s)"
        " ON CONFLICT (endpoint_id, resource_id)"
        " DO UPDATE SET last_seq = GREATEST(webhook_stream.last_seq, excluded.last_seq)",
        (endpoint_id, list(marks), list(marks.values())),
    )


async def advance_fanout(conn: Conn, *, endpoint_id: UUID, txid: str, event_id: int) -> None:
    await conn.execute(
        "UPDATE webhook_fanout SET after_txid = %s::text::xid8, after_id = %s"
        " WHERE endpoint_id = %s",
        (txid, event_id, endpoint_id),
    )


# --------------------------------------------------------------------------------------------
# delivery


async def claim(
    conn: Conn, *, claim_id: UUID, limit: int, lease_seconds: float
) -> list[ClaimedRow]:
    """Lease up to `limit` due messages of enabled endpoints, each the oldest still waiting
    in its (endpoint, resource) queue, and return what sending them needs. SKIP LOCKED keeps
    workers apart while they claim; the committed lease keeps them apart while one sends."""
    return await fetch_all(
        conn,
        ClaimedRow,
        "WITH due AS (SELECT d.id FROM webhook_delivery d"
        " JOIN webhook_endpoint ep ON ep.id = d.endpoint_id"
        " WHERE d.status = 'pending' AND d.next_attempt_at <= statement_timestamp()"
        " AND (d.locked_until IS NULL OR d.locked_until <= statement_timestamp())"
        " AND ep.enabled"
        " AND NOT EXISTS (SELECT 1 FROM webhook_delivery p WHERE p.status = 'pending'"
        " AND p.endpoint_id = d.endpoint_id AND p.resource_id = d.resource_id"
        " AND p.resource_seq < d.resource_seq)"
        " ORDER BY d.next_attempt_at LIMIT %(limit)s FOR UPDATE OF d SKIP LOCKED),"
        " claimed AS (UPDATE webhook_delivery d"
        " SET locked_until = statement_timestamp() + make_interval(secs => %(lease)s),"
        " claim = %(claim)s, attempts = d.attempts + 1,"
        " first_attempt_at = coalesce(d.first_attempt_at, statement_timestamp())"
        " FROM due WHERE d.id = due.id"
        " RETURNING d.id, d.endpoint_id, d.event_id, d.event_type, d.attempts, d.created_at)"
        " SELECT c.id, c.endpoint_id, c.event_type, c.attempts, c.created_at,"
        " ep.url, ep.secret, e.id AS event_id, e.txid::text AS event_txid, e.resource_id,"
        " e.resource_seq, e.subject_id, e.data, e.created_at AS event_created_at"
        " FROM claimed c JOIN webhook_endpoint ep ON ep.id = c.endpoint_id"
        " LEFT JOIN event e ON e.id = c.event_id",
        {"claim": claim_id, "limit": limit, "lease": lease_seconds},
    )


async def lock_endpoint(conn: Conn, *, endpoint_id: UUID) -> bool:
    """Lock the endpoint row for this transaction; False if it was deleted."""
    cur = await conn.execute(
        "SELECT 1 FROM webhook_endpoint WHERE id = %s FOR NO KEY UPDATE", (endpoint_id,)
    )
    return await cur.fetchone() is not None


async def lock_delivery(conn: Conn, *, delivery_id: UUID) -> DeliveryStateRow | None:
    """The message's state, locked, with the database's now; None if it was deleted."""
    return await fetch_one(
        conn,
        DeliveryStateRow,
        "SELECT endpoint_id, status, claim, first_attempt_at, statement_timestamp() AS now"
        " FROM webhook_delivery WHERE id = %s FOR UPDATE",
        (delivery_id,),
    )


async def mark_delivered(conn: Conn, *, delivery_id: UUID) -> None:
    await conn.execute(
        "UPDATE webhook_delivery SET status = 'delivered', finished_at = statement_timestamp(),"
        " locked_until = NULL WHERE id = %s AND status = 'pending'",
        (delivery_id,),
    )


async def mark_dead(conn: Conn, *, delivery_id: UUID) -> None:
    await conn.execute(
        "UPDATE webhook_delivery SET status = 'dead', finished_at = statement_timestamp(),"
        " locked_until = NULL WHERE id = %s AND status = 'pending'",
        (delivery_id,),
    )


async def reschedule(conn: Conn, *, delivery_id: UUID, delay_seconds: float) -> datetime:
    next_at = await fetch_value(
        conn,
        datetime,
        "UPDATE webhook_delivery SET locked_until = NULL,"
        " next_attempt_at = statement_timestamp() + make_interval(secs => %s)"
        " WHERE id = %s RETURNING next_attempt_at",
        (delay_seconds, delivery_id),
    )
    assert next_at is not None
    return next_at


async def insert_attempt(
    conn: Conn,
    *,
    delivery_id: UUID,
    endpoint_id: UUID,
    attempt: int,
    outcome: str,
    status_code: int | None,
    latency_ms: int | None,
    error: str | None,
    attempted_at: datetime,
    next_attempt_at: datetime | None,
) -> None:
    await conn.execute(
        "INSERT INTO webhook_attempt (delivery_id, endpoint_id, attempt, outcome, status_code,"
        " latency_ms, error, attempted_at, next_attempt_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            delivery_id,
            endpoint_id,
            attempt,
            outcome,
            status_code,
            latency_ms,
            error,
            attempted_at,
            next_attempt_at,
        ),
    )


async def endpoint_succeeded(conn: Conn, *, endpoint_id: UUID) -> None:
    await conn.execute(
        "UPDATE webhook_endpoint SET consecutive_failures = 0, failing_since = NULL"
        " WHERE id = %s AND (consecutive_failures <> 0 OR failing_since IS NOT NULL)",
        (endpoint_id,),
    )


async def endpoint_failed(conn: Conn, *, endpoint_id: UUID) -> StreakRow | None:
    """Count a failure in the endpoint's streak; the streak, and whether it is enabled."""
    return await fetch_one(
        conn,
        StreakRow,
        "UPDATE webhook_endpoint SET consecutive_failures = consecutive_failures + 1,"
        " failing_since = coalesce(failing_since, statement_timestamp())"
        " WHERE id = %s RETURNING enabled, consecutive_failures, failing_since,"
        " statement_timestamp() AS now",
        (endpoint_id,),
    )


async def disable_endpoint(conn: Conn, *, endpoint_id: UUID, reason: str) -> None:
    await conn.execute(
        "UPDATE webhook_endpoint SET enabled = false, disabled_reason = %s,"
        " disabled_at = statement_timestamp(), version = version + 1,"
        " updated_at = statement_timestamp() WHERE id = %s AND enabled",
        (reason, endpoint_id),
    )


async def purge_finished(conn: Conn, *, older_than_days: int, batch: int) -> int:
    """Delete up to `batch` delivered or dead messages (and their attempts) finished before
    the retention period. Ordering and exactly-once do not need them: the stream marks do."""
    cur = await conn.execute(
        "DELETE FROM webhook_delivery WHERE id IN (SELECT id FROM webhook_delivery"
        " WHERE status <> 'pending'"
        " AND finished_at < statement_timestamp() - make_interval(days => %s) LIMIT %s)",
        (older_than_days, batch),
    )
    return cur.rowcount


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
