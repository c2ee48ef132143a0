"""The reservations domain's background steps, each one short transaction at a time, for the
worker (worker.py): expire holds past their expiry, and rebuild the availability map's entries
that committed changes touched, from the reservations it should hold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from reservations.availability_map import store as availability_map
from reservations.availability_map.metrics import AVAILABILITY_MAP_REPAIRS
from reservations.availability_map.store import AvailabilityMap
from reservations.context import Context
from reservations.events import repository as events
from reservations.kit.db import Conn, acting_as
from reservations.reservations import repository
from reservations.reservations.metrics import RESERVATIONS_EXPIRED
from reservations.reservations.rows import RangeRow

# The audit log's actor for the hold sweeper's changes.
SWEEPER = "system:sweeper"
# The map repair's row in `outbox_position`, and its bounds: events per batch (one
# transaction, one read of the rows, a few round trips to Redis), batches per call.
MAP_READER = "availability_map"
MAP_BATCH = 1_000
MAP_BATCHES = 10


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


async def sweep_no_shows(svc: Context, *, batch: int = 500) -> int:
    """Release confirmed reservations nobody checked in to by `start + release_after` of their
    resource's policy (`no_show`), in batches: the rest of their ranges are cleared from the
    map and offered to whoever waits for them, as for an expired hold."""
    total = 0
    while True:
        with acting_as(SWEEPER):
            async with svc.db.unit() as unit:
                rows = await repository.release_no_shows(
                    unit.conn, now=svc.clock.now(), batch=batch
                )
                svc.map_after_commit(unit, availability_map.changes(rows, live=False))
                svc.freed_after_commit(unit, [r.resource_id for r in rows])
        total += len(rows)
        if len(rows) < batch:
            break
    return total


@dataclass(frozen=True, slots=True)
class MapRepair:
    """What a repair of the availability map did: outbox events read, (resource, day)
    entries rebuilt, reservation rows read to rebuild them, reservations the entries had
    wrong (AvailabilityMap.repair_days); `more`: it stopped at its bound with events
    possibly left to read."""

    events: int = 0
    entries: int = 0
    rows: int = 0
    wrong: int = 0
    more: bool = False

    def __add__(self, other: MapRepair) -> MapRepair:
        return MapRepair(
            events=self.events + other.events,
            entries=self.entries + other.entries,
            rows=self.rows + other.rows,
            wrong=self.wrong + other.wrong,
            more=other.more,
        )


async def repair_map_changes(
    svc: Context, *, batch: int = MAP_BATCH, batches: int = MAP_BATCHES
) -> MapRepair:
    """Rebuild from PostgreSQL the (resource, day) entries of the availability map that the
    changes committed since the last repair touched (in `svc.db`'s outbox), `batch` events
    at a time, until none are left or `batches` were read. The work is that of the changes,
    whatever the size of the tables or of the map.

    Every change of a reservation writes its event in its own transaction, so a change whose
    own write to the map was lost (a crash after COMMIT, Redis unreachable, a change made in
    SQL) has its days rebuilt here all the same: its days after the change and, when it
    moved, the days it left (`event.was_during`). Resource events need nothing: a capacity
    change leaves marks only on a resource the map is not asked about (capacity above 1),
    and the reservations it covers come with events of their own when they change.

    The position in the outbox is a row in the same database (`outbox_position`), under an
    advisory lock: one worker reads a batch at a time, the others skip it, and it survives
    restarts. It moves only once the batch's entries are rebuilt; if Redis cannot be reached
    the batch is read again next time (rebuilding an entry twice is harmless)."""
    done = MapRepair()
    if svc.availability_map is None:
        return done
    for _ in range(batches):
        step = await _repair_batch(svc, svc.availability_map, batch)
        done += step
        if not step.more:
            break
    if done.wrong:
        AVAILABILITY_MAP_REPAIRS.inc(done.wrong)
    return done


async def _repair_batch(svc: Context, store: AvailabilityMap, batch: int) -> MapRepair:
    async with svc.db.transaction() as conn:
        position = await events.lock_position(conn, reader=MAP_READER)
        if position is None:  # another worker is reading these events
            return MapRepair()
        changed = await events.ranges_after(conn, position=position, limit=batch)
        if not changed:
            return MapRepair()
        days = sorted({(e.resource_id, day) for e in changed for day in _days(e)})
        rows, wrong = await _rebuild(svc, store, conn, days)
        if wrong is None:  # Redis unreachable: read these events again next time
            return MapRepair(events=len(changed), entries=len(days), rows=rows)
        last = changed[-1]
        await events.advance_position(
            conn, reader=MAP_READER, position=events.PositionRow(txid=last.txid, id=last.id)
        )
    return MapRepair(
        events=len(changed), entries=len(days), rows=rows, wrong=wrong, more=len(changed) == batch
    )


def _days(event: events.RangeEventRow) -> set[int]:
    """The days of the map an event's change reached: those of its range after the change
    and, if it moved, before."""
    days: set[int] = set()
    if event.during_start is not None and event.during_end is not None:
        days.update(availability_map.touched(event.during_start, event.during_end))
    if event.was_start is not None and event.was_end is not None:
        days.update(availability_map.touched(event.was_start, event.was_end))
    return days


async def _rebuild(
    svc: Context, store: AvailabilityMap, conn: Conn, days: Sequence[tuple[UUID, int]]
) -> tuple[int, int | None]:
    """Rebuild these (resource, day) entries from the live rows `conn` reads: (rows read,
    reservations the entries had wrong, or None if Redis could not be reached)."""
    windows = [(rid, *availability_map.day_bounds(day)) for rid, day in days]
    rows = await repository.live_unit_rows(conn, windows=windows, now=svc.clock.now())
    on_day: dict[tuple[UUID, int], dict[UUID, RangeRow]] = {pair: {} for pair in days}
    for row in rows:
        for day in availability_map.touched(row.during_start, row.during_end):
            if (found := on_day.get((row.resource_id, day))) is not None:
                found[row.id] = row
    wrong = await store.repair_days(
        [(rid, day, list(on_day[(rid, day)].values())) for rid, day in days]
    )
    return len(rows), wrong


async def repair_resource_days(svc: Context, *, resource_id: UUID) -> int:
    """Rebuild every entry the map holds for one resource (after a change that concerns all
    its days: a capacity change); how many reservations they had wrong. Scans the map's
    keys, so only for such rare changes: the repair that runs all the time is
    `repair_map_changes`."""
    store = svc.availability_map
    if store is None:
        return 0
    days = await store.days_in_use(resource_id)
    if not days:
        return 0
    async with svc.at(resource_id).db.connection() as conn:
        _, wrong = await _rebuild(svc, store, conn, sorted(days))
    if wrong:
        AVAILABILITY_MAP_REPAIRS.inc(wrong)
    return wrong or 0
