"""SQL for the webhook queues: the fan-out from the outbox into each endpoint's queue, and
claiming, recording and purging deliveries.

Times that several workers compare (leases, due times, failure streaks) are the database's
clock, never a worker's: workers on different hosts may disagree about now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from reservations.kit.db import Conn, fetch_all, fetch_one, fetch_value, fetch_values

# An endpoint's filter: no types means every type; "reservation.*" every reservation event.
_TYPE_MATCHES = (
    "(cardinality(ep.event_types) = 0 OR e.type = ANY(ep.event_types)"
    " OR split_part(e.type, '.', 1) || '.*' = ANY(ep.event_types))"
)


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
    """The tenant's next events in (txid, id) order (the column's, not its text's), only from
    transactions older than every one still running (see migration 0004): none can later
    appear before them."""
    return await fetch_all(
        conn,
        OutboxRow,
        "SELECT id, txid::text AS txid, resource_id, resource_seq FROM event"
        " WHERE tenant_id = %(tenant)s AND (txid, id) > (%(txid)s::text::xid8, %(id)s)"
        " AND txid < pg_snapshot_xmin(pg_current_snapshot())"
        " ORDER BY event.txid, event.id LIMIT %(limit)s",
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
