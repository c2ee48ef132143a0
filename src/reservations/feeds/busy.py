"""Reading a free/busy feed: its resources (one, or a tag's), what keeps them busy from each
busy source, and the periods freebusy.py makes of them.

Busy sources: each reads, for the feed's resources on one database, the time they are taken
as `Busy` entries (a range and the units it takes, buffers included), which the capacity
arithmetic counts together. Reservations are the one source today; another (a calendar's
external busy times, say) is a function of the same shape added to SOURCES, and must be
what admission refuses as well, or the feed would show free what a booking cannot take.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from reservations.catalog import repository as resources
from reservations.catalog.repository import ResourceRow
from reservations.context import Context
from reservations.feeds.freebusy import Moment, Period, free_spans, periods
from reservations.history import repository as history
from reservations.kit.db import Conn
from reservations.kit.spans import Span
from reservations.policy import enforce
from reservations.policy.usage import Busy
from reservations.reservations import repository as reservations

# What a free/busy feed shows: from the current 5-minute step to HORIZON ahead; at most
# MAX_PERIODS periods per resource (then it says where its description ends), at most
# MAX_TAG_RESOURCES resources of a tag (the first by id).
HORIZON = timedelta(days=62)
MAX_PERIODS = 5000
MAX_TAG_RESOURCES = 50

# (database, its resources of the feed, where busy time matters, now) -> busy entries by
# resource id.
BusySource = Callable[
    [Conn, Sequence[ResourceRow], Span, datetime], Awaitable[dict[UUID, list[Busy]]]
]


@dataclass(frozen=True, slots=True)
class ResourceBusy:
    id: UUID
    name: str
    timezone: str
    start: datetime
    end: datetime  # the window's end, or where MAX_PERIODS cut the periods
    periods: list[Period]


@dataclass(frozen=True, slots=True)
class FreeBusy:
    moment: Moment
    start: datetime
    end: datetime
    resources: list[ResourceBusy]
    complete: bool


@dataclass(frozen=True, slots=True)
class _Part:
    """One database's share: its resources, what is busy on them, its history horizon."""

    rows: list[ResourceRow]
    busy: dict[UUID, list[Busy]]
    history_before: datetime | None
    complete: bool


async def _reservations(
    conn: Conn, rows: Sequence[ResourceRow], window: Span, now: datetime
) -> dict[UUID, list[Busy]]:
    """Live reservations (their guarded ranges, the buffers in them) meeting the window."""
    found = await reservations.busy_between(
        conn, resource_ids=[r.id for r in rows], start=window[0], end=window[1], now=now
    )
    out: dict[UUID, list[Busy]] = {}
    for r in found:
        out.setdefault(r.resource_id, []).append(Busy(r.during_start, r.during_end, r.quantity))
    return out


SOURCES: tuple[BusySource, ...] = (_reservations,)


def _reach(rows: Sequence[ResourceRow], window: Span) -> Span:
    """Where busy time can matter to bookings starting in the window: widened by the buffers
    and by the shortest booking (which may end past the window)."""
    zero = timedelta(0)
    policies = [enforce.policy_of(r.policy) for r in rows]
    before = max((p.buffer_before for p in policies), default=zero)
    after = max((p.buffer_after + (p.min_duration or zero) for p in policies), default=zero)
    return window[0] - before, window[1] + after


async def _part(
    conn: Conn,
    *,
    tenant_id: UUID,
    resource_id: UUID | None,
    tag: str | None,
    window: Span,
    now: datetime,
) -> _Part:
    if resource_id is not None:
        row = await resources.get(conn, tenant_id=tenant_id, resource_id=resource_id)
        rows, complete = ([row] if row is not None else []), True
    else:
        assert tag is not None
        rows = await resources.candidates(
            conn, tenant_id=tenant_id, tags=[tag], min_capacity=1, limit=MAX_TAG_RESOURCES + 1
        )
        complete = len(rows) <= MAX_TAG_RESOURCES
        rows = rows[:MAX_TAG_RESOURCES]
    busy: dict[UUID, list[Busy]] = {r.id: [] for r in rows}
    if rows:
        reach = _reach(rows, window)
        for source in SOURCES:
            for rid, entries in (await source(conn, rows, reach, now)).items():
                busy[rid] += entries
    return _Part(rows, busy, await history.horizon(conn), complete)


async def read(
    svc: Context, *, tenant_id: UUID, resource_id: UUID | None, tag: str | None
) -> FreeBusy:
    """The free/busy of one resource, or of a tag's resources (on every cluster)."""
    now = svc.clock.now()
    moment = Moment.of(now)
    window = (moment.floor, moment.floor + HORIZON)

    def part(conn: Conn) -> Awaitable[_Part]:
        return _part(
            conn, tenant_id=tenant_id, resource_id=resource_id, tag=tag, window=window, now=now
        )

    if resource_id is not None:
        parts = [await svc.at(resource_id).db.read(part)]
    else:
        parts = await svc.shards.gather(part)
    found = sorted(((row, p) for p in parts for row in p.rows), key=lambda item: item[0].id)
    complete = all(p.complete for p in parts) and len(found) <= MAX_TAG_RESOURCES
    longest = svc.settings.max_reservation

    def computed() -> list[ResourceBusy]:
        return [
            _resource(row, p, window=window, moment=moment, max_length=longest)
            for row, p in found[:MAX_TAG_RESOURCES]
        ]

    # Off the event loop: a tag's resources over the horizon take a while.
    out = await asyncio.to_thread(computed)
    return FreeBusy(moment, window[0], window[1], out, complete)


def _resource(
    row: ResourceRow, part: _Part, *, window: Span, moment: Moment, max_length: timedelta
) -> ResourceBusy:
    free, taken = free_spans(
        enforce.policy_of(row.policy),
        row.timezone,
        row.capacity,
        part.busy[row.id],
        window=window,
        moment=moment,
        max_length=max_length,
        history_before=part.history_before,
    )
    found = periods(free, taken, window)
    end = window[1]
    if len(found) > MAX_PERIODS:
        # Described exactly up to where the first period left out begins.
        end, found = found[MAX_PERIODS].start, found[:MAX_PERIODS]
    return ResourceBusy(row.id, row.name, row.timezone, window[0], end, found)
