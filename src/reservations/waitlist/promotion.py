"""Promotion of waiting entries into holds.

Runs under the resource's advisory lock, first come first: for each waiting entry it tries
to insert a hold in a savepoint, and the database guards (exclusion constraint, capacity
trigger) decide whether it fits. The entry is marked promoted in the same transaction as its
hold, so no entry is promoted twice. It runs right after every cancel and decline and after
the sweeper expires holds (each in its own transaction, after the change committed), and
from the worker for every resource with waiting entries, so a freed range is never left
unoffered. Between a change's commit and its promotion a direct booking may take the range
first: the waitlist offers freed ranges, it does not reserve them against new bookings."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from psycopg import errors as pg_errors

from reservations.deps import Services
from reservations.kit.db import lock_resource
from reservations.kit.ids import lock_key, uuid7_beside
from reservations.reservations import fastmap
from reservations.reservations import repository as reservations
from reservations.waitlist import repository


async def promote(svc: Services, resource_id: UUID) -> list[UUID]:
    """Give holds to the resource's waiting entries that fit now, first come first.
    Returns the promoted entries' ids."""
    now = svc.clock.now()
    promoted: list[UUID] = []
    holds = []
    svc = svc.at(resource_id)
    async with svc.db.transaction() as conn:
        entries = await repository.waiting(conn, resource_id=resource_id)
        if not entries:
            return []
        await lock_resource(conn, lock_key(resource_id))
        for entry in entries:
            if entry["start_at"] <= now:
                await repository.set_status(conn, entry_id=entry["id"], status="lapsed", now=now)
                continue
            await reservations.expire_stale_holds(
                conn,
                resource_id=resource_id,
                start=entry["start_at"],
                end=entry["end_at"],
                now=now,
            )
            try:
                async with conn.transaction():  # a savepoint: a refusal undoes only this try
                    hold = await reservations.insert(
                        conn,
                        reservation_id=uuid7_beside(resource_id),
                        tenant_id=entry["tenant_id"],
                        resource_id=resource_id,
                        start=entry["start_at"],
                        end=entry["end_at"],
                        status="held",
                        quantity=entry["quantity"],
                        expires_at=now + timedelta(seconds=entry["hold_seconds"]),
                        customer=entry["customer"],
                        metadata={"waitlist_entry": str(entry["id"])},
                        created_by=entry["created_by"],
                        now=now,
                    )
            except (pg_errors.ExclusionViolation, pg_errors.CheckViolation):
                continue  # still taken (or before the history horizon): it keeps waiting
            if hold is None:  # the resource was archived
                await repository.set_status(conn, entry_id=entry["id"], status="lapsed", now=now)
                continue
            marked = await repository.set_status(
                conn, entry_id=entry["id"], status="promoted", now=now, reservation_id=hold["id"]
            )
            await repository.promoted_event(conn, tenant_id=entry["tenant_id"], entry=marked)
            promoted.append(entry["id"])
            holds.append(hold)
    if svc.fastmap is not None and holds:
        await svc.fastmap.apply(fastmap.changes(holds, live=True))
    return promoted


async def promote_all(svc: Services) -> int:
    """The worker's safety net: promotion for every resource with waiting entries (catches
    ranges freed by paths that do not promote at once, such as a reschedule or a capacity
    raise)."""
    async with svc.db.connection() as conn:
        waiting = await repository.resources_waiting(conn)
    total = 0
    for resource_id in waiting:
        total += len(await promote(svc, resource_id))
    return total
