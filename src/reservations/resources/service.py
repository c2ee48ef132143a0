"""Resource use cases. Each function owns its transaction."""

from __future__ import annotations

from uuid import UUID

from reservations.deps import Services
from reservations.errors import (
    CapacityNotSupported,
    NotFound,
    PreconditionFailed,
    ResourceHasFutureReservations,
)
from reservations.kit.db import lock_resource
from reservations.kit.ids import lock_key, uuid7
from reservations.kit.pagination import decode_cursor, encode_cursor, invalid_cursor
from reservations.reservations import repository as reservation_repo
from reservations.resources import repository
from reservations.resources.schemas import (
    ResourceCreate,
    ResourcePage,
    ResourceRead,
    ResourceUpdate,
)
from reservations.tenancy.service import Principal


def _not_found(resource_id: UUID) -> NotFound:
    return NotFound(f"No resource {resource_id} in your tenant.")


def _check_capacity(capacity: int | None) -> None:
    if capacity is not None and capacity > 1:
        raise CapacityNotSupported(
            "This version books resources one reservation at a time: set capacity to 1, or "
            "create one resource per unit. Pooled capacity arrives in a later version.",
            errors=[{"field": "capacity", "in": "body", "message": "must be 1 for now"}],
        )


async def create(svc: Services, caller: Principal, body: ResourceCreate) -> ResourceRead:
    _check_capacity(body.capacity)
    async with svc.db.transaction() as conn:
        row = await repository.insert(
            conn,
            resource_id=uuid7(),
            tenant_id=caller.tenant_id,
            name=body.name,
            capacity=body.capacity,
            timezone=body.timezone,
            tags=body.tags,
            metadata=body.metadata,
            now=svc.clock.now(),
        )
    return ResourceRead.model_validate(row)


async def get(svc: Services, caller: Principal, resource_id: UUID) -> ResourceRead:
    async with svc.db.connection() as conn:
        row = await repository.get(conn, tenant_id=caller.tenant_id, resource_id=resource_id)
    if row is None:
        raise _not_found(resource_id)
    return ResourceRead.model_validate(row)


async def list_page(
    svc: Services, caller: Principal, *, tags: list[str], limit: int, cursor: str | None
) -> ResourcePage:
    after = None
    if cursor is not None:
        (raw,) = decode_cursor(cursor, 1)
        try:
            after = UUID(raw)
        except ValueError:
            raise invalid_cursor() from None
    async with svc.db.connection() as conn:
        rows = await repository.page(
            conn, tenant_id=caller.tenant_id, tags=tags, after=after, limit=limit + 1
        )
    items = [ResourceRead.model_validate(r) for r in rows[:limit]]
    next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
    return ResourcePage(items=items, next_cursor=next_cursor)


async def update(
    svc: Services,
    caller: Principal,
    resource_id: UUID,
    body: ResourceUpdate,
    expected_version: int | None,
) -> ResourceRead:
    _check_capacity(body.capacity)
    changes = body.model_dump(exclude_unset=True)
    for field in ("name", "capacity", "timezone", "tags", "metadata"):
        if field in changes and changes[field] is None:
            del changes[field]  # explicit null means "leave as is" for required fields
    async with svc.db.transaction() as conn:
        row = await repository.update(
            conn,
            tenant_id=caller.tenant_id,
            resource_id=resource_id,
            changes=changes,
            expected_version=expected_version,
            now=svc.clock.now(),
        )
        if row is None:
            current = await repository.get(
                conn, tenant_id=caller.tenant_id, resource_id=resource_id
            )
            if current is None:
                raise _not_found(resource_id)
            raise PreconditionFailed(
                f"The resource is at version {current['version']}; fetch it again and retry.",
                current_version=current["version"],
            )
    return ResourceRead.model_validate(row)


async def archive(
    svc: Services, caller: Principal, resource_id: UUID, *, cancel_reservations: bool
) -> None:
    """Archive a resource. Its future live reservations would otherwise be orphaned, so they
    must be cancelled explicitly (`cancel_reservations=true`) or the archive is refused."""
    now = svc.clock.now()
    async with svc.db.transaction() as conn:
        if await repository.get(conn, tenant_id=caller.tenant_id, resource_id=resource_id) is None:
            raise _not_found(resource_id)
        # Same lock as the writers: no booking can slip in between the count and the archive.
        await lock_resource(conn, lock_key(resource_id))
        if cancel_reservations:
            await reservation_repo.cancel_future(conn, resource_id=resource_id, now=now)
        else:
            count = await reservation_repo.count_future_live(conn, resource_id=resource_id, now=now)
            if count:
                raise ResourceHasFutureReservations(
                    f"{count} live reservation(s) end after now. Cancel them first, or send "
                    "DELETE with ?cancel_reservations=true to cancel them with the archive.",
                    live_reservations=count,
                )
        if not await repository.archive(
            conn, tenant_id=caller.tenant_id, resource_id=resource_id, now=now
        ):
            raise _not_found(resource_id)
