"""The reservations domain's background steps, each one short transaction at a time, for the
worker (worker.py): expire holds past their expiry, and rebuild the availability map from the
reservations it should hold."""

from __future__ import annotations

from collections import defaultdict
from uuid import UUID

from reservations.availability_map import store as availability_map
from reservations.availability_map.metrics import AVAILABILITY_MAP_REPAIRS
from reservations.context import Context
from reservations.kit.db import acting_as
from reservations.reservations import repository
from reservations.reservations.metrics import RESERVATIONS_EXPIRED

# The audit log's actor for the hold sweeper's changes.
SWEEPER = "system:sweeper"


async def sweep_expired(svc: Context, *, batch: int = 500) -> int:
    """Expire holds past their expiry, in batches, until none are due; their ranges are
    cleared from the availability map and offered to whoever waits for them (`on_freed`)."""
    total = 0
    while True:
        with acting_as(SWEEPER):
            async with svc.db.unit() as unit:
                rows = await repository.expire_due(unit.conn, now=svc.clock.now(), batch=batch)
                svc.map_after_commit(unit, availability_map.changes(rows, live=False))
                svc.freed_after_commit(unit, [r.resource_id for r in rows])
        total += len(rows)
        if len(rows) < batch:
            break
    if total:
        RESERVATIONS_EXPIRED.labels("sweeper").inc(total)
    return total


async def repair_map(svc: Context, *, resource_id: UUID | None = None, page: int = 10_000) -> int:
    """Rebuild from PostgreSQL the next page of (resource, day) entries the availability map
    holds (or every entry of one resource); returns how many entries were wrong. Pages
    continue across rounds and workers, so every entry is rebuilt within
    ceil(entries / page) + 1 rounds: that bounds how long a lost clear can refuse a free
    range."""
    if svc.availability_map is None:
        return 0
    days: dict[UUID, list[int]] = defaultdict(list)
    for rid, day in await svc.availability_map.days_in_use(resource_id=resource_id, limit=page):
        days[rid].append(day)
    fixed = 0
    now = svc.clock.now()
    for rid, in_use in days.items():
        start = availability_map.day_bounds(min(in_use))[0]
        end = availability_map.day_bounds(max(in_use))[1]
        async with svc.at(rid).db.connection() as conn:
            rows = await repository.live_unit_rows(
                conn, resource_id=rid, start=start, end=end, now=now
            )
        for day in in_use:
            lo, hi = availability_map.day_bounds(day)
            on_day = [r for r in rows if r.during_start < hi and lo < r.during_end]
            fixed += await svc.availability_map.repair_day(rid, day, on_day) or 0
    if fixed:
        AVAILABILITY_MAP_REPAIRS.inc(fixed)
    return fixed
