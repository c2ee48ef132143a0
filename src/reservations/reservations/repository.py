"""SQL for reservations. Every statement is scoped by tenant_id or by a resource the caller
already resolved within its tenant.

Queries that look for live overlaps repeat the guards' own predicates so the partial GiST
indexes answer them (DESIGN.md, "The status predicate"): unit resources' rows sit under the
exclusion constraint (`... AND NOT pooled`), pooled ones under `reservation_pooled_live`.

`during` is the booked range widened by the resource's buffers, which PostgreSQL reads from
the policy (ISO 8601 durations are valid interval input) when it writes the row.

Writes go to `reservation` (the live rows, hash-partitioned by resource); reads of single
reservations and lists go to `reservation_all`, which adds the history (reservations that
ended before the history horizon, migration 0003) and says which rows are there."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, LiteralString
from uuid import UUID

from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

from reservations.catalog.repository import ResourceRow
from reservations.events import repository as events
from reservations.kit.db import (
    Conn,
    fetch_all,
    fetch_one,
    fetch_value,
    fetch_values,
    pipelined,
)
from reservations.reservations.rows import DueRow, FoundRow, HoldsRow, RangeRow, ReservationRow

_COLUMN_NAMES = (
    "id",
    "resource_id",
    "booking_id",
    "start_at",
    "end_at",
    "status",
    "quantity",
    "expires_at",
    "customer",
    "metadata",
    "version",
    "created_by",
    "created_at",
    "updated_at",
    "pooled",
    "needs_approval",
    "checked_in_at",
    "flagged_at",
    "flagged_violations",
)


def _columns(table: str = "") -> str:
    """The reservation columns every read returns, plus the guarded range (`during`)."""
    prefix = f"{table}." if table else ""
    return ", ".join(f"{prefix}{c}" for c in _COLUMN_NAMES) + (
        f", lower({prefix}during) AS during_start, upper({prefix}during) AS during_end"
    )


COLUMNS = _columns()


def _changed(table: str = "reservation") -> str:
    """What the availability map needs to record or forget a reservation after a change
    (a RangeRow)."""
    t = table
    return (
        f"{t}.id, {t}.resource_id, {t}.version, {t}.pooled, {t}.status, {t}.start_at,"
        f" {t}.end_at, {t}.expires_at, {t}.created_by, {t}.quantity,"
        f" lower({t}.during) AS during_start, upper({t}.during) AS during_end"
    )


CHANGED = _changed()

BUFFER_BEFORE = "coalesce((r.policy->>'buffer_before')::interval, interval '0')"
BUFFER_AFTER = "coalesce((r.policy->>'buffer_after')::interval, interval '0')"
LIVE = "status IN ('held', 'confirmed')"
# A hold past its expiry is dead even before the sweeper marks it.
STALE_HOLD = "(status = 'held' AND expires_at <= %(now)s)"

_OVERLAP_COLUMNS = (
    "id, resource_id, start_at, end_at, lower(during) AS during_start,"
    " upper(during) AS during_end, status, quantity, expires_at, created_by, version, pooled"
)


def _live_overlaps(range_sql: str, resource_sql: str = "%(resource)s") -> str:
    """Live reservations of one resource (`resource_sql`: a parameter, or a column of an
    outer query) whose guarded range meets `range_sql`; each half of the UNION uses its own
    index (the constraint's for unit resources, the pooled one's for capacity)."""
    base = (
        f"SELECT {_OVERLAP_COLUMNS} FROM reservation WHERE resource_id = {resource_sql}"
        f" AND {LIVE} AND during && {range_sql} AND id IS DISTINCT FROM %(exclude)s::uuid"
    )
    return f"({base} AND NOT pooled) UNION ALL ({base} AND pooled)"


# A RangeRow read from `_live_overlaps(...) o`.
_RANGE = ", ".join(f"o.{f.name}" for f in fields(RangeRow))


@dataclass(frozen=True, slots=True)
class ResourceOverlapsRow(ResourceRow):
    """`resource_and_overlaps`: the resource row with the live reservations in the way, as
    JSON objects (`RangeRow.from_json` reads them)."""

    overlaps: list[dict[str, Any]]


def _resource_and_overlaps(
    tenant_id: UUID, resource_id: UUID, start: datetime, end: datetime, exclude: UUID | None
) -> tuple[LiteralString, dict[str, Any]]:
    widened = f"tstzrange(%(start)s - {BUFFER_BEFORE}, %(end)s + {BUFFER_AFTER})"
    return (
        "SELECT r.id, r.name, r.capacity, r.timezone, r.tags, r.metadata, r.policy, r.version,"
        " r.created_at, r.updated_at, coalesce((SELECT json_agg(o ORDER BY o.start_at)"
        f" FROM ({_live_overlaps(widened)}) o), '[]') AS overlaps"
        " FROM resource r WHERE r.id = %(resource)s AND r.tenant_id = %(tenant)s"
        " AND r.archived_at IS NULL",
        {
            "tenant": tenant_id,
            "resource": resource_id,
            "start": start,
            "end": end,
            "exclude": exclude,
        },
    )


async def resource_and_overlaps(
    conn: Conn,
    *,
    tenant_id: UUID,
    resource_id: UUID,
    start: datetime,
    end: datetime,
    exclude: UUID | None = None,
) -> ResourceOverlapsRow | None:
    """The resource (if live, in this tenant) with its policy, and the live reservations
    whose `during` meets [start, end) widened by its buffers: the cheap, lock-free
    pre-check, in one round trip."""
    query, params = _resource_and_overlaps(tenant_id, resource_id, start, end, exclude)
    return await fetch_one(conn, ResourceOverlapsRow, query, params)


async def overlaps(
    conn: Conn,
    *,
    resource_id: UUID,
    start: datetime,
    end: datetime,
    exclude: UUID | None = None,
) -> list[RangeRow]:
    """Live reservations whose `during` meets [start, end) widened by the buffers."""
    widened = (
        f"(SELECT tstzrange(%(start)s - {BUFFER_BEFORE}, %(end)s + {BUFFER_AFTER})"
        " FROM resource r WHERE r.id = %(resource)s)"
    )
    return await fetch_all(
        conn,
        RangeRow,
        f"SELECT {_RANGE} FROM ({_live_overlaps(widened)}) o ORDER BY start_at",
        {"resource": resource_id, "start": start, "end": end, "exclude": exclude},
    )


async def resource_zone(conn: Conn, resource_id: UUID) -> str | None:
    """The resource's time zone, for messages that name its times."""
    return await fetch_value(
        conn, str, "SELECT timezone FROM resource WHERE id = %s", (resource_id,)
    )


async def busy_between(
    conn: Conn, *, resource_ids: list[UUID], start: datetime, end: datetime, now: datetime
) -> list[RangeRow]:
    """Live, unexpired reservations of these resources whose `during` meets [start, end),
    one index probe per resource (GiST cannot take `= ANY`). One resource gets its id bound
    directly: the planner then prunes to its partition at plan time, where the lateral form
    plans all 16 partitions on every call (about 30 ms of planning against under 1 ms of
    execution, BENCHMARKS.md)."""
    if len(resource_ids) == 1:
        return await fetch_all(
            conn,
            RangeRow,
            f"SELECT {_RANGE} FROM ({_live_overlaps('tstzrange(%(start)s, %(end)s)')}) o"
            " WHERE NOT (o.status = 'held' AND o.expires_at <= %(now)s) ORDER BY o.during_start",
            {
                "resource": resource_ids[0],
                "start": start,
                "end": end,
                "now": now,
                "exclude": None,
            },
        )
    return await fetch_all(
        conn,
        RangeRow,
        f"SELECT {_RANGE} FROM unnest(%(resources)s::uuid[]) AS x(resource_id)"
        " CROSS JOIN LATERAL ("
        + _live_overlaps("tstzrange(%(start)s, %(end)s)", "x.resource_id")
        + ") o WHERE NOT (o.status = 'held' AND o.expires_at <= %(now)s)"
        " ORDER BY x.resource_id, o.during_start",
        {"resources": resource_ids, "start": start, "end": end, "now": now, "exclude": None},
    )


async def expire_stale_holds(
    conn: Conn, *, resource_id: UUID, start: datetime, end: datetime, now: datetime
) -> list[RangeRow]:
    """Mark expired the holds past their expiry whose `during` meets [start, end) widened
    by the buffers, so a booking never waits for the sweeper. Call with the resource lock."""
    return await fetch_all(
        conn,
        RangeRow,
        "UPDATE reservation SET status = 'expired', version = reservation.version + 1,"
        " updated_at = %(now)s FROM resource r"
        " WHERE r.id = %(resource)s AND reservation.resource_id = r.id"
        " AND reservation.status = 'held' AND reservation.expires_at <= %(now)s"
        f" AND during && tstzrange(%(start)s - {BUFFER_BEFORE}, %(end)s + {BUFFER_AFTER})"
        f" RETURNING {CHANGED}",
        {"resource": resource_id, "start": start, "end": end, "now": now},
    )


_INSERT = (
    "INSERT INTO reservation (id, tenant_id, resource_id, booking_id, start_at, end_at, during,"
    " status, needs_approval, quantity, expires_at, customer, metadata, created_by, created_at,"
    " updated_at)"
    " SELECT x.id, r.tenant_id, r.id, %(booking)s, x.start_at, x.end_at,"
    f" tstzrange(x.start_at - {BUFFER_BEFORE}, x.end_at + {BUFFER_AFTER}),"
    " %(status)s, %(pending)s, x.quantity, %(expires)s, %(customer)s, %(metadata)s,"
    " %(created_by)s, %(now)s, %(now)s"
)


async def insert(
    conn: Conn,
    *,
    reservation_id: UUID,
    tenant_id: UUID,
    resource_id: UUID,
    start: datetime,
    end: datetime,
    status: str,
    quantity: int,
    expires_at: datetime | None,
    customer: str | None,
    metadata: dict[str, Any],
    created_by: UUID,
    now: datetime,
    needs_approval: bool = False,
) -> ReservationRow | None:
    """Insert under the guards; None if the resource was archived meanwhile (its trigger
    takes the resource's lock and then reads the resource: migration 0011).
    Raises psycopg.errors.ExclusionViolation (23P01) on overlap or over capacity."""
    query = (
        _INSERT + " FROM (VALUES (%(id)s::uuid, %(start)s::timestamptz, %(end)s::timestamptz,"
        " %(quantity)s::int)) AS x(id, start_at, end_at, quantity)"
        " JOIN resource r ON r.id = %(resource)s AND r.tenant_id = %(tenant)s"
        f" AND r.archived_at IS NULL RETURNING {COLUMNS}"
    )
    params = {
        "id": reservation_id,
        "tenant": tenant_id,
        "resource": resource_id,
        "booking": None,
        "pending": needs_approval,
        "start": start,
        "end": end,
        "status": status,
        "quantity": quantity,
        "expires": expires_at,
        "customer": customer,
        "metadata": Jsonb(metadata),
        "created_by": created_by,
        "now": now,
    }
    try:
        return await fetch_one(conn, ReservationRow, query, params)
    except pg_errors.NoDataFound as exc:
        if exc.diag.constraint_name == "reservation_resource_live":
            return None  # archived while this insert waited for its lock (migration 0011)
        raise


async def insert_many(
    conn: Conn,
    *,
    tenant_id: UUID,
    booking_id: UUID,
    items: list[tuple[UUID, UUID, datetime, datetime, int]],
    status: str,
    expires_at: datetime | None,
    customer: str | None,
    metadata: dict[str, Any],
    created_by: UUID,
    now: datetime,
    needs_approval: bool = False,
) -> list[ReservationRow]:
    """Insert (id, resource_id, start, end, quantity) rows of one booking in one statement;
    rows of archived resources are left out (the caller compares counts)."""
    ids, resources, starts, ends, quantities = (list(col) for col in zip(*items, strict=True))
    await events.lock_sequences(conn, resource_ids=sorted(set(resources)))
    return await fetch_all(
        conn,
        ReservationRow,
        _INSERT + " FROM unnest(%(ids)s::uuid[], %(resources)s::uuid[], %(starts)s::timestamptz[],"
        " %(ends)s::timestamptz[], %(quantities)s::int[])"
        " AS x(id, resource_id, start_at, end_at, quantity)"
        " JOIN resource r ON r.id = x.resource_id AND r.tenant_id = %(tenant)s"
        f" AND r.archived_at IS NULL RETURNING {COLUMNS}",
        {
            "ids": ids,
            "resources": resources,
            "starts": starts,
            "ends": ends,
            "quantities": quantities,
            "tenant": tenant_id,
            "booking": booking_id,
            "pending": needs_approval,
            "status": status,
            "expires": expires_at,
            "customer": customer,
            "metadata": Jsonb(metadata),
            "created_by": created_by,
            "now": now,
        },
    )


def _owner_clause(owner: UUID | None) -> str:
    return " AND created_by = %(owner)s" if owner is not None else ""


async def get(
    conn: Conn, *, tenant_id: UUID, reservation_id: UUID, owner: UUID | None, lock: bool = False
) -> FoundRow | None:
    """One reservation of the tenant (and of `owner`, for bookers), with `in_history`. With
    lock, only a live-table row, FOR UPDATE: history is read-only."""
    source = "false AS in_history FROM reservation" if lock else "in_history FROM reservation_all"
    return await fetch_one(
        conn,
        FoundRow,
        f"SELECT {COLUMNS}, {source} WHERE id = %(id)s AND tenant_id = %(tenant)s"
        + _owner_clause(owner)
        + (" FOR UPDATE" if lock else ""),
        {"id": reservation_id, "tenant": tenant_id, "owner": owner},
    )


async def update(
    conn: Conn, *, reservation_id: UUID, changes: dict[str, Any], now: datetime
) -> ReservationRow:
    """Apply column changes to a row the caller holds locked; bumps the version.
    Changing start_at/end_at also moves `during` (and may raise ExclusionViolation)."""
    sets = ["version = reservation.version + 1", "updated_at = %(now)s"]
    params: dict[str, Any] = {"id": reservation_id, "now": now}
    for column in (
        "status",
        "needs_approval",
        "expires_at",
        "start_at",
        "end_at",
        "customer",
        "metadata",
        "checked_in_at",
    ):
        if column in changes:
            sets.append(f"{column} = %({column})s")
            value = changes[column]
            params[column] = Jsonb(value) if column == "metadata" else value
    if "start_at" in changes or "end_at" in changes:
        sets.append(
            f"during = tstzrange(%(start_at)s - {BUFFER_BEFORE}, %(end_at)s + {BUFFER_AFTER})"
        )
    row = await fetch_one(
        conn,
        ReservationRow,
        f"UPDATE reservation SET {', '.join(sets)} FROM resource r"
        " WHERE reservation.id = %(id)s AND r.id = reservation.resource_id"
        f" RETURNING {_columns('reservation')}",
        params,
    )
    assert row is not None
    return row


_STATUS_SQL = {
    "held": "(status = 'held' AND NOT needs_approval AND expires_at > %(now)s)",
    "pending": "(status = 'held' AND needs_approval AND expires_at > %(now)s)",
    "confirmed": "status = 'confirmed'",
    "cancelled": "status = 'cancelled'",
    "declined": "status = 'declined'",
    "no_show": "status = 'no_show'",
    "expired": f"(status = 'expired' OR {STALE_HOLD})",
}

# How far before a window's start (%(from)s) a reservation of tenant %(tenant)s that meets
# the window can begin: the tenant's longest reservation in this database (migration 0009).
# It bounds the index range on start_at; with no row the tenant has no reservations here.
EARLIEST_START = "%(from)s - (SELECT longest FROM reservation_span WHERE tenant_id = %(tenant)s)"


async def page(
    conn: Conn,
    *,
    tenant_id: UUID,
    owner: UUID | None,
    resource_id: UUID | None,
    booking_id: UUID | None,
    window_from: datetime | None,
    window_to: datetime | None,
    statuses: list[str],
    customer: str | None,
    after: tuple[datetime, UUID] | None,
    limit: int,
    now: datetime,
    flagged: bool | None = None,
) -> list[ReservationRow]:
    """Reservations ordered by (start, id). Only the filters given become SQL, so every
    combination gets a plan that fits it."""
    where = ["tenant_id = %(tenant)s"]
    params: dict[str, Any] = {"tenant": tenant_id, "limit": limit, "now": now}
    if owner is not None:
        where.append("created_by = %(owner)s")
        params["owner"] = owner
    if resource_id is not None:
        where.append("resource_id = %(resource)s")
        params["resource"] = resource_id
    if booking_id is not None:
        where.append("booking_id = %(booking)s")
        params["booking"] = booking_id
    if window_from is not None:
        where.append("end_at > %(from)s")
        where.append(f"start_at > {EARLIEST_START}")
        params["from"] = window_from
    if window_to is not None:
        where.append("start_at < %(to)s")
        params["to"] = window_to
    if statuses:
        where.append("(" + " OR ".join(_STATUS_SQL[s] for s in statuses) + ")")
    if customer is not None:
        where.append("customer = %(customer)s")
        params["customer"] = customer
    if flagged is not None:
        where.append("flagged_at IS NOT NULL" if flagged else "flagged_at IS NULL")
    if after is not None:
        where.append("(start_at, id) > (%(after_start)s, %(after_id)s)")
        params["after_start"], params["after_id"] = after
    query = (
        f"SELECT {COLUMNS} FROM reservation_all WHERE {' AND '.join(where)}"
        " ORDER BY start_at, id LIMIT %(limit)s"
    )
    if resource_id is not None:
        return await fetch_all(conn, ReservationRow, query, params)
    # Tenant-wide: the generic plan, always. An ordered index scan per partition, bounded and
    # pruned at run time, executes as fast as a custom plan, but from ~10^6 rows its
    # estimated cost (default selectivities for the parameters) keeps the plan cache
    # re-planning every call over the 16 live partitions and the history months: 4 ms of
    # planning for 1 ms of work (BENCHMARKS.md, Growth). One round trip for all four.
    async with pipelined(conn):
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan", prepare=False)
        return await fetch_all(conn, ReservationRow, query, params)


async def booker_starts(
    conn: Conn,
    *,
    resource_id: UUID,
    created_by: UUID,
    customer: str | None,
    start: datetime | None,
    end: datetime | None,
    now: datetime,
) -> list[datetime]:
    """Starts of the booker's live reservations of a resource: by customer when given,
    else by API key; within [start, end) if given, else those not yet ended. A period may
    reach back past the history horizon, so the history counts too."""
    who = "customer = %(customer)s" if customer is not None else "created_by = %(key)s"
    window = (
        "start_at >= %(start)s AND start_at < %(end)s"
        if start is not None and end is not None
        else "end_at > %(now)s"
    )
    return await fetch_values(
        conn,
        datetime,
        f"SELECT start_at FROM reservation_all WHERE resource_id = %(resource)s AND {who}"
        f" AND {LIVE} AND NOT {STALE_HOLD} AND {window}",
        {
            "resource": resource_id,
            "customer": customer,
            "key": created_by,
            "start": start,
            "end": end,
            "now": now,
        },
    )


async def peak_usage(conn: Conn, *, resource_id: UUID) -> int:
    """The most units the resource's live reservations use at any one instant."""
    peak = await fetch_value(
        conn,
        int,
        "WITH o AS (SELECT during, quantity FROM reservation WHERE resource_id = %(r)s"
        f" AND {LIVE}), ev AS (SELECT lower(during) AS t, quantity AS d FROM o"
        " UNION ALL SELECT upper(during), -quantity FROM o)"
        " SELECT coalesce(max(run), 0) AS peak FROM"
        " (SELECT sum(d) OVER (ORDER BY t, d) AS run FROM ev) x",
        {"r": resource_id},
    )
    return peak or 0


async def expire_all_stale_holds(conn: Conn, *, resource_id: UUID, now: datetime) -> list[RangeRow]:
    """Mark expired every hold of the resource past its expiry (before a capacity change
    counts what is live). Call with the resource lock held."""
    return await fetch_all(
        conn,
        RangeRow,
        "UPDATE reservation SET status = 'expired', version = version + 1, updated_at = %(now)s"
        f" WHERE resource_id = %(r)s AND {STALE_HOLD} RETURNING {CHANGED}",
        {"r": resource_id, "now": now},
    )


async def count_future_live(conn: Conn, *, resource_id: UUID, now: datetime) -> int:
    n = await fetch_value(
        conn,
        int,
        f"SELECT count(*) AS n FROM reservation WHERE resource_id = %(r)s AND {LIVE}"
        f" AND end_at > %(now)s AND NOT {STALE_HOLD}",
        {"r": resource_id, "now": now},
    )
    return n or 0


async def cancel_future(conn: Conn, *, resource_id: UUID, now: datetime) -> list[RangeRow]:
    return await fetch_all(
        conn,
        RangeRow,
        "UPDATE reservation SET status = 'cancelled', version = version + 1,"
        f" updated_at = %(now)s WHERE resource_id = %(r)s AND {LIVE} AND end_at > %(now)s"
        f" AND NOT {STALE_HOLD} RETURNING {CHANGED}",
        {"r": resource_id, "now": now},
    )


async def future_live(
    conn: Conn, *, resource_id: UUID, now: datetime, until: datetime, limit: int, lock: bool
) -> list[ReservationRow]:
    """The resource's live, unexpired reservations starting after `now` and before `until`, in
    (start, id) order, at most `limit` (a policy change's preview; with `lock`, FOR UPDATE:
    the change then flags or cancels them)."""
    return await fetch_all(
        conn,
        ReservationRow,
        f"SELECT {COLUMNS} FROM reservation WHERE resource_id = %(r)s AND {LIVE}"
        f" AND NOT {STALE_HOLD} AND start_at > %(now)s AND start_at < %(until)s"
        " ORDER BY start_at, id LIMIT %(limit)s" + (" FOR UPDATE" if lock else ""),
        {"r": resource_id, "now": now, "until": until, "limit": limit},
    )


async def flag(
    conn: Conn,
    *,
    resource_id: UUID,
    flags: Sequence[tuple[UUID, list[dict[str, str]]]],
    now: datetime,
) -> int:
    """Flag reservations of the resource (id, violations) the caller holds locked; one
    already flagged with the same violations is left as it is (no second event). Returns
    how many changed."""
    if not flags:
        return 0
    cur = await conn.execute(
        "UPDATE reservation SET flagged_at = %(now)s, flagged_violations = x.violations,"
        " version = reservation.version + 1, updated_at = %(now)s"
        " FROM unnest(%(ids)s::uuid[], %(violations)s::jsonb[]) AS x(id, violations)"
        " WHERE reservation.resource_id = %(r)s AND reservation.id = x.id"
        " AND reservation.flagged_violations IS DISTINCT FROM x.violations",
        {
            "r": resource_id,
            "now": now,
            "ids": [f[0] for f in flags],
            "violations": [Jsonb(f[1]) for f in flags],
        },
    )
    return cur.rowcount


async def expire_due(conn: Conn, *, now: datetime, batch: int) -> list[RangeRow]:
    """The sweeper's step: expire up to `batch` holds past their expiry. SKIP LOCKED lets any
    number of workers sweep side by side, and never waits on a row a request is changing.
    The event counters of the batch's resources are locked in order first (the outbox)."""
    due = await fetch_all(
        conn,
        DueRow,
        "SELECT id, resource_id FROM reservation WHERE status = 'held'"
        " AND expires_at <= %(now)s ORDER BY expires_at LIMIT %(batch)s FOR UPDATE SKIP LOCKED",
        {"now": now, "batch": batch},
    )
    if not due:
        return []
    await events.lock_sequences(conn, resource_ids=sorted({r.resource_id for r in due}))
    return await fetch_all(
        conn,
        RangeRow,
        "UPDATE reservation SET status = 'expired', version = version + 1, updated_at = %(now)s"
        f" WHERE id = ANY(%(ids)s) RETURNING {CHANGED}",
        {"now": now, "ids": [r.id for r in due]},
    )


async def live_unit_rows(
    conn: Conn, *, windows: Sequence[tuple[UUID, datetime, datetime]], now: datetime
) -> list[RangeRow]:
    """Live, unexpired reservations of unit resources whose `during` meets a window
    (resource, start, end): what the availability map should hold (its repair's source of
    truth). One statement for every window; a row meeting two windows comes twice. OFFSET 0
    keeps the planner from turning the windows into a hash join over every partition's live
    rows: each window is one scan of the exclusion constraint's index, whatever the table."""
    return await fetch_all(
        conn,
        RangeRow,
        "SELECT r.* FROM unnest(%(r)s::uuid[], %(start)s::timestamptz[], %(end)s::timestamptz[])"
        " AS w(resource_id, s, e) CROSS JOIN LATERAL"
        f" (SELECT {CHANGED} FROM reservation WHERE resource_id = w.resource_id AND {LIVE}"
        " AND NOT pooled AND during && tstzrange(w.s, w.e)"
        f" AND NOT {STALE_HOLD} OFFSET 0) AS r",
        {
            "r": [w[0] for w in windows],
            "start": [w[1] for w in windows],
            "end": [w[2] for w in windows],
            "now": now,
        },
    )


async def live_holds(conn: Conn, *, tenant_id: UUID, now: datetime) -> tuple[int, datetime | None]:
    """How many unexpired holds the tenant has, and when the first of them expires."""
    row = await fetch_one(
        conn,
        HoldsRow,
        "SELECT count(*) AS n, min(expires_at) AS first FROM reservation"
        " WHERE tenant_id = %s AND status = 'held' AND expires_at > %s",
        (tenant_id, now),
    )
    assert row is not None
    return row.n, row.first


# The resources whose policy releases no-shows (index `resource_releases_no_shows`), and how
# long after a start they do, in seconds (an interval of fixed length: '1 day' in timestamptz
# arithmetic would follow the session's zone across a DST change).
_RELEASE_AFTER = (
    "make_interval(secs => extract(epoch FROM (s.policy #>> '{check_in,release_after}')::interval))"
)
# How far back the sweeper looks: a reservation that ended more than this before it ran stays
# confirmed (docs/api.md, Check-in and no-shows).
NO_SHOW_LOOKBACK = "interval '1 day'"


async def release_no_shows(conn: Conn, *, now: datetime, batch: int) -> list[RangeRow]:
    """The sweeper's step: up to `batch` confirmed reservations nobody checked in to by
    `start + release_after` become `no_show`. The candidates are found through the resources
    that release no-shows (each one scan of its exclusion index), then locked with SKIP LOCKED
    and checked again under the lock: a check-in that got there first wins."""
    due = await fetch_all(
        conn,
        DueRow,
        "SELECT r.id, r.resource_id FROM resource s CROSS JOIN LATERAL"
        " (SELECT id, resource_id FROM reservation r WHERE r.resource_id = s.id"
        "  AND r.status = 'confirmed' AND r.checked_in_at IS NULL"
        f"  AND r.during && tstzrange(%(now)s - {NO_SHOW_LOOKBACK} - {_RELEASE_AFTER}, %(now)s)"
        f"  AND r.start_at <= %(now)s - {_RELEASE_AFTER} OFFSET 0) AS r"
        " WHERE (s.policy #>> '{check_in,release_after}') IS NOT NULL"
        " LIMIT %(batch)s",
        {"now": now, "batch": batch},
    )
    if not due:
        return []
    locked = await fetch_all(
        conn,
        DueRow,
        "SELECT id, resource_id FROM reservation WHERE id = ANY(%(ids)s)"
        " AND status = 'confirmed' AND checked_in_at IS NULL ORDER BY id"
        " FOR UPDATE SKIP LOCKED",
        {"ids": [r.id for r in due]},
    )
    if not locked:
        return []
    await events.lock_sequences(conn, resource_ids=sorted({r.resource_id for r in locked}))
    return await fetch_all(
        conn,
        RangeRow,
        "UPDATE reservation SET status = 'no_show', version = version + 1, updated_at = %(now)s"
        f" WHERE id = ANY(%(ids)s) RETURNING {CHANGED}",
        {"now": now, "ids": [r.id for r in locked]},
    )


async def key_live_holds(
    conn: Conn, *, api_key_id: UUID, now: datetime
) -> tuple[int, datetime | None]:
    """How many unexpired holds the key made, and when the first of them expires."""
    row = await fetch_one(
        conn,
        HoldsRow,
        "SELECT count(*) AS n, min(expires_at) AS first FROM reservation"
        " WHERE created_by = %s AND status = 'held' AND expires_at > %s",
        (api_key_id, now),
    )
    assert row is not None
    return row.n, row.first
