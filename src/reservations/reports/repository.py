"""SQL for reports: a shard's reservations summed per resource and local day, in the database
(rows never travel; one row per resource and day that has any)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID

from reservations.kit.db import Conn, fetch_all
from reservations.reservations.repository import EARLIEST_START


@dataclass(frozen=True, slots=True)
class DayTotal:
    resource_id: UUID
    day: date  # the local date in the resource's zone
    booked_seconds: float  # confirmed time within the window, times quantity
    reservations: int  # confirmed reservations starting on this day within the window
    cancellations: int  # cancelled ones, the same way
    no_shows: int  # released no-shows, the same way


# Each reservation clipped to the window, then cut at the local midnights of its resource's
# zone (generate_series over local dates; `AT TIME ZONE` turns a local midnight back into an
# instant, DST days included). Only confirmed time counts as booked; a released no-show's
# time is free again and counts as a no-show only; held, pending, expired and declined rows
# count nowhere.
_DAY_TOTALS = f"""
WITH zone AS (
    SELECT * FROM unnest(%(ids)s::uuid[], %(zones)s::text[]) AS z(resource_id, zone)
), clipped AS (
    SELECT r.resource_id, z.zone, r.status, r.quantity, r.start_at >= %(from)s AS starts_inside,
           greatest(r.start_at, %(from)s) AS s, least(r.end_at, %(to)s) AS e
    FROM reservation_all r JOIN zone z ON z.resource_id = r.resource_id
    WHERE r.tenant_id = %(tenant)s AND r.resource_id = ANY(%(ids)s::uuid[])
      AND r.status IN ('confirmed', 'cancelled', 'no_show')
      AND r.end_at > %(from)s AND r.start_at < %(to)s AND r.start_at > {EARLIEST_START}
)
SELECT c.resource_id, d.day::date AS day,
       coalesce(sum(extract(epoch FROM
                    least(c.e, (d.day + interval '1 day') AT TIME ZONE c.zone)
                    - greatest(c.s, d.day AT TIME ZONE c.zone)) * c.quantity)
                FILTER (WHERE c.status = 'confirmed'), 0)::float8 AS booked_seconds,
       count(*) FILTER (WHERE c.status = 'confirmed' AND c.starts_inside
                        AND d.day = date_trunc('day', c.s AT TIME ZONE c.zone)) AS reservations,
       count(*) FILTER (WHERE c.status = 'cancelled' AND c.starts_inside
                        AND d.day = date_trunc('day', c.s AT TIME ZONE c.zone)) AS cancellations,
       count(*) FILTER (WHERE c.status = 'no_show' AND c.starts_inside
                        AND d.day = date_trunc('day', c.s AT TIME ZONE c.zone)) AS no_shows
FROM clipped c
CROSS JOIN LATERAL generate_series(
    date_trunc('day', c.s AT TIME ZONE c.zone),
    date_trunc('day', (c.e AT TIME ZONE c.zone) - interval '1 microsecond'),
    interval '1 day') AS d(day)
GROUP BY 1, 2
"""


async def day_totals(
    conn: Conn,
    *,
    tenant_id: UUID,
    zones: dict[UUID, str],
    window_from: datetime,
    window_to: datetime,
) -> list[DayTotal]:
    if not zones:
        return []
    ids = list(zones)
    return await fetch_all(
        conn,
        DayTotal,
        _DAY_TOTALS,
        {
            "tenant": tenant_id,
            "ids": ids,
            "zones": [zones[i] for i in ids],
            "from": window_from,
            "to": window_to,
        },
    )
