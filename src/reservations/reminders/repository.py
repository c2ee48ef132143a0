"""SQL for reminders: what is due, and sending it (the row in `reminder_sent` and the event,
in one transaction)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from reservations.kit.db import Conn, fetch_all


@dataclass(frozen=True, slots=True)
class DueRow:
    """A reminder due: for a reservation's start (`kind` is the policy's lead time, ISO 8601)
    or for a hold's expiry (`kind` is `hold`); `at` is the instant it is for."""

    reservation_id: UUID
    tenant_id: UUID
    resource_id: UUID
    kind: str
    at: datetime
    start_at: datetime
    end_at: datetime
    status: str
    needs_approval: bool
    expires_at: datetime | None
    customer: str | None


_FIELDS = (
    "r.id AS reservation_id, r.tenant_id, r.resource_id, {kind} AS kind, {at} AS at,"
    " r.start_at, r.end_at, r.status, r.needs_approval, r.expires_at, r.customer"
)
_NOT_SENT = (
    "NOT EXISTS (SELECT 1 FROM reminder_sent x WHERE x.reservation_id = r.id"
    " AND x.kind = {kind} AND x.at = {at})"
)
# Per resource with reminders, per lead time: its confirmed reservations whose start less the
# lead is in [now - catch_up, now] and still ahead. Each lead time is one scan of the
# exclusion constraint's index (`during` meets the window that such starts lie in).
_BEFORE_START = (
    "SELECT " + _FIELDS.format(kind="o.kind", at="r.start_at") + " FROM resource s"
    " CROSS JOIN LATERAL jsonb_array_elements_text(s.policy -> 'reminders') AS o(kind)"
    " CROSS JOIN LATERAL (SELECT make_interval(secs => extract(epoch FROM o.kind::interval))"
    "   AS lead) l"
    " CROSS JOIN LATERAL (SELECT * FROM reservation r WHERE r.resource_id = s.id"
    "   AND r.status = 'confirmed'"
    "   AND r.during && tstzrange(%(now)s + l.lead - %(catch_up)s, %(now)s + l.lead, '[]')"
    "   AND r.start_at >= %(now)s + l.lead - %(catch_up)s AND r.start_at <= %(now)s + l.lead"
    "   AND r.start_at > %(now)s OFFSET 0) r"
    " WHERE jsonb_array_length(coalesce(s.policy -> 'reminders', '[]'::jsonb)) > 0"
    " AND " + _NOT_SENT.format(kind="o.kind", at="r.start_at") + " LIMIT %(batch)s"
)
# Live holds (and pending bookings) that lapse within the lead.
_HOLD_EXPIRING = (
    "SELECT "
    + _FIELDS.format(kind="'hold'", at="r.expires_at")
    + " FROM reservation r WHERE r.status = 'held'"
    " AND r.expires_at > %(now)s AND r.expires_at <= %(now)s + %(hold_lead)s"
    " AND "
    + _NOT_SENT.format(kind="'hold'", at="r.expires_at")
    + " ORDER BY r.expires_at LIMIT %(batch)s"
)


async def due(
    conn: Conn, *, now: datetime, catch_up: timedelta, hold_lead: timedelta, batch: int
) -> list[DueRow]:
    params = {"now": now, "catch_up": catch_up, "hold_lead": hold_lead, "batch": batch}
    rows = await fetch_all(conn, DueRow, _BEFORE_START, params)
    if hold_lead > timedelta(0):
        rows += await fetch_all(conn, DueRow, _HOLD_EXPIRING, params)
    return rows


def _event(row: DueRow) -> tuple[str, dict[str, Any]]:
    status = "pending" if row.status == "held" and row.needs_approval else row.status
    data: dict[str, Any] = {
        "id": str(row.reservation_id),
        "resource_id": str(row.resource_id),
        "start": row.start_at.isoformat(),
        "end": row.end_at.isoformat(),
        "status": status,
        "customer": row.customer,
    }
    if row.kind == "hold":
        data["expires_at"] = row.at.isoformat()
        return "hold.expiring", data
    data["before"] = row.kind
    return "reservation.reminder", data


async def send(conn: Conn, rows: list[DueRow], *, now: datetime) -> int:
    """Record the reminders and append their events; a reminder another worker recorded first
    is skipped (ON CONFLICT DO NOTHING). The caller locked the resources' event counters."""
    sent = await fetch_all(
        conn,
        _Key,
        "INSERT INTO reminder_sent (reservation_id, resource_id, kind, at, sent_at)"
        " SELECT *, %s FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::timestamptz[])"
        " ON CONFLICT DO NOTHING RETURNING reservation_id, kind, at",
        (
            now,
            [r.reservation_id for r in rows],
            [r.resource_id for r in rows],
            [r.kind for r in rows],
            [r.at for r in rows],
        ),
    )
    keys = {(k.reservation_id, k.kind, k.at) for k in sent}
    fresh = [r for r in rows if (r.reservation_id, r.kind, r.at) in keys]
    if not fresh:
        return 0
    events = [_event(r) for r in fresh]
    await conn.execute(
        "SELECT event_append(t, r, ty, s, d) FROM unnest(%s::uuid[], %s::uuid[], %s::text[],"
        " %s::uuid[], %s::jsonb[]) WITH ORDINALITY AS u(t, r, ty, s, d, n) ORDER BY n",
        (
            [r.tenant_id for r in fresh],
            [r.resource_id for r in fresh],
            [kind for kind, _ in events],
            [r.reservation_id for r in fresh],
            [Jsonb(data) for _, data in events],
        ),
    )
    return len(fresh)


@dataclass(frozen=True, slots=True)
class _Key:
    reservation_id: UUID
    kind: str
    at: datetime


async def purge(conn: Conn, *, before: datetime) -> int:
    """Forget reminders whose instant is past `before`: nothing can be sent for it again."""
    cur = await conn.execute("DELETE FROM reminder_sent WHERE at < %s", (before,))
    return cur.rowcount
