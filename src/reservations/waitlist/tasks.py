"""The waitlist's background step, for the worker (worker.py)."""

from __future__ import annotations

from reservations.context import Context
from reservations.waitlist import repository
from reservations.waitlist.promotion import promote


async def promote_all(svc: Context) -> int:
    """The worker's safety net: promotion for every resource with waiting entries (catches
    ranges freed by paths that do not promote at once, such as a reschedule or a capacity
    raise)."""
    async with svc.db.connection() as conn:
        waiting = await repository.resources_waiting(conn)
    total = 0
    for resource_id in waiting:
        total += len(await promote(svc, resource_id))
    return total
