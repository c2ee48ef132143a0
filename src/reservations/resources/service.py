"""Resource use cases. Each function owns its transaction."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any
from uuid import UUID

from psycopg import errors as pg_errors

from reservations.availability_map import store as availability_map
from reservations.catalog import repository
from reservations.catalog.repository import ResourceRow
from reservations.context import Context
from reservations.errors import (
    CapacityInUse,
    NotFound,
    PreconditionFailed,
    ResourceHasFutureReservations,
)
from reservations.kit.db import Conn, Unit, lock_resource
from reservations.kit.idempotency import Idempotency, Reply, claim, record
from reservations.kit.ids import lock_key, uuid7, uuid7_beside
from reservations.kit.pagination import (
    decode_id_cursor,
    decode_instant_cursor,
    encode_cursor,
    merged,
)
from reservations.reservations import admission, tasks
from reservations.reservations import repository as reservation_repo
from reservations.reservations.rows import RangeRow
from reservations.resources import affected
from reservations.resources.schemas import (
    Affected,
    PolicyPreview,
    ResourceChanged,
    ResourceCreate,
    ResourcePage,
    ResourceRead,
    ResourceUpdate,
)
from reservations.tenancy.service import Principal


def _not_found(resource_id: UUID) -> NotFound:
    return NotFound(f"No resource {resource_id} in your tenant.")


def _read(row: ResourceRow) -> ResourceRead:
    return ResourceRead.model_validate(row, from_attributes=True)


async def create(svc: Context, caller: Principal, body: ResourceCreate) -> ResourceRead:
    """Create a resource (no Idempotency-Key: the demo's seeding)."""
    reply = await create_reply(svc, caller, body, None)
    return ResourceRead.model_validate_json(reply.body)


def _created(resource: ResourceRead) -> Reply:
    headers = {"Location": f"/v1/resources/{resource.id}", "ETag": f'"{resource.version}"'}
    return Reply(status=201, body=resource.model_dump_json(), headers=headers)


async def create_reply(
    svc: Context, caller: Principal, body: ResourceCreate, idem: Idempotency | None
) -> Reply:
    """Create a resource; the reply is the one an Idempotency-Key replays."""
    # Its logical shard follows from its id; `near` puts it on another resource's, and an
    # Idempotency-Key on the shard of its record (a retry must find it).
    anchor = body.near or (idem.anchor() if idem is not None else None)
    resource_id = uuid7() if anchor is None else uuid7_beside(anchor)
    svc = svc.at(resource_id, caller)
    if (near := body.near) is not None and await svc.db.read(
        lambda conn: repository.get(conn, tenant_id=caller.tenant_id, resource_id=near)
    ) is None:
        raise NotFound(f"No resource {near} in your tenant (near).")
    now = svc.clock.now()
    async with svc.db.unit() as unit:
        conn = unit.conn
        if replay := await claim(idem, conn, now=now, ttl=svc.settings.idempotency_ttl):
            return replay
        row = await repository.insert(
            conn,
            resource_id=resource_id,
            tenant_id=caller.tenant_id,
            name=body.name,
            capacity=body.capacity,
            timezone=body.timezone,
            tags=body.tags,
            metadata=body.metadata,
            policy=body.policy.model_dump(mode="json", exclude_defaults=True),
            now=now,
        )
        # Read the row back before COMMIT: a row the reader refused would fail every later
        # GET; it must fail this request and leave nothing.
        reply = _created(_read(row))
        await record(idem, conn, reply, now=now)
        _cache_after_commit(svc, unit, caller, row)
    return reply


def _cache_after_commit(svc: Context, unit: Unit, caller: Principal, row: ResourceRow) -> None:
    """Once committed, offer the row to the cache (a newer version there wins)."""
    if svc.resource_cache is not None:
        cache = svc.resource_cache
        unit.after_commit(partial(cache.put, row, tenant_id=caller.tenant_id, essential=True))


async def get(svc: Context, caller: Principal, resource_id: UUID) -> ResourceRead:
    if svc.resource_cache is not None:
        cached = await svc.resource_cache.get(caller.tenant_id, resource_id)
        if cached is not None:
            return _read(cached)
    svc = svc.at(resource_id)
    row = await svc.db.read(
        lambda conn: repository.get(conn, tenant_id=caller.tenant_id, resource_id=resource_id)
    )
    if row is None:
        raise _not_found(resource_id)
    if svc.db.replicas is None and svc.resource_cache is not None:
        # A replica's copy may be stale: only the primary's fills the cache.
        await svc.resource_cache.put(row, tenant_id=caller.tenant_id, essential=True)
    return _read(row)


async def list_page(
    svc: Context, caller: Principal, *, tags: list[str], limit: int, cursor: str | None
) -> ResourcePage:
    after = None
    if cursor is not None:
        after = decode_id_cursor(cursor)
    pages = await svc.shards.gather(
        lambda conn: repository.page(
            conn, tenant_id=caller.tenant_id, tags=tags, after=after, limit=limit + 1
        )
    )
    rows = merged(pages, key=lambda r: r.id, limit=limit + 1)
    items = [_read(r) for r in rows[:limit]]
    next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
    return ResourcePage(items=items, next_cursor=next_cursor)


async def update(
    svc: Context,
    caller: Principal,
    resource_id: UUID,
    body: ResourceUpdate,
    expected_version: int | None,
    *,
    action: Affected = Affected.keep,
    limit: int = 50,
    cursor: str | None = None,
) -> ResourceChanged:
    """Change a resource. With `action` flag or cancel, the future live reservations its
    rules (as changed) refuse are flagged, or flagged and cancelled, in the same
    transaction, under the resource's lock (no booking can slip in between)."""
    after = decode_instant_cursor(cursor) if cursor is not None else None
    changes = _changes(body)
    expired: list[RangeRow] = []
    examined: affected.Examined | None = None
    now = svc.clock.now()
    svc = svc.at(resource_id, caller)
    async with svc.db.unit() as unit:
        conn = unit.conn
        if action is not Affected.keep:
            await _lock(conn, caller, resource_id)
        if "capacity" in changes:
            expired = await _make_room(svc, conn, caller, resource_id, changes["capacity"])
        try:
            row = await repository.update(
                conn,
                tenant_id=caller.tenant_id,
                resource_id=resource_id,
                changes=changes,
                expected_version=expected_version,
                now=now,
            )
        except pg_errors.ExclusionViolation:
            # The database's own check (trigger resource_capacity_changed): overlapping live
            # reservations cannot move under unit capacity.
            raise _capacity_in_use(changes["capacity"], None) from None
        if row is None:
            raise await _not_updated(conn, caller, resource_id)
        updated = ResourceChanged.model_validate(row, from_attributes=True)  # before COMMIT
        if action is not Affected.keep:
            target = admission.Target.of(row)
            examined = await affected.examine(conn, caller, target, now=now, lock=True)
            await affected.act(svc, unit, caller, resource_id, examined, action, now)
        svc.map_after_commit(unit, availability_map.changes(expired, live=False))
        if "capacity" in changes and svc.availability_map is not None:
            # Which reservations the map may hold just changed: rebuild this resource's days.
            unit.after_commit(partial(tasks.repair_resource_days, svc, resource_id=resource_id))
        _cache_after_commit(svc, unit, caller, row)
    if examined is not None:
        updated.affected = affected.report(examined, action, now=now, limit=limit, after=after)
    return updated


async def _lock(conn: Conn, caller: Principal, resource_id: UUID) -> None:
    """The resource's lock, after making sure the resource is the caller's."""
    if await repository.get(conn, tenant_id=caller.tenant_id, resource_id=resource_id) is None:
        raise _not_found(resource_id)
    await lock_resource(conn, lock_key(resource_id))


async def preview(
    svc: Context,
    caller: Principal,
    resource_id: UUID,
    body: ResourceUpdate,
    expected_version: int | None,
    *,
    action: Affected,
    limit: int,
    cursor: str | None,
) -> PolicyPreview:
    """A dry run of `update`: the resource as the change would leave it and the future
    live reservations its rules would refuse; nothing is written, no lock taken."""
    after = decode_instant_cursor(cursor) if cursor is not None else None
    changes = _changes(body)
    now = svc.clock.now()
    svc = svc.at(resource_id, caller)
    async with svc.db.unit() as unit:  # the primary: what the change itself would find
        conn = unit.conn
        row = await repository.get(conn, tenant_id=caller.tenant_id, resource_id=resource_id)
        if row is None:
            raise _not_found(resource_id)
        if expected_version is not None and row.version != expected_version:
            raise await _not_updated(conn, caller, resource_id)
        would = replace(row, **changes)
        resource = _read(would)  # refuses what the change itself would
        examined = await affected.examine(
            conn, caller, admission.Target.of(would), now=now, lock=False
        )
    affected.check_cancellable(examined, action)
    return PolicyPreview(
        resource=resource,
        affected=affected.report(examined, action, now=now, limit=limit, after=after),
    )


def _changes(body: ResourceUpdate) -> dict[str, Any]:
    """The columns a PATCH sets; an explicit null leaves a required field as it is."""
    changes = body.model_dump(exclude_unset=True)
    for field in ("name", "capacity", "timezone", "tags", "metadata", "policy"):
        if field in changes and changes[field] is None:
            del changes[field]
    if body.policy is not None:
        changes["policy"] = body.policy.model_dump(mode="json", exclude_defaults=True)
    return changes


async def _make_room(
    svc: Context, conn: Conn, caller: Principal, resource_id: UUID, capacity: int
) -> list[RangeRow]:
    """Before a capacity change: under the resource's lock (no booking counted against the
    old capacity can interleave), holds past their expiry expire (they must not count), and
    a peak of live use above the new capacity refuses it. Returns the expired holds."""
    if await repository.get(conn, tenant_id=caller.tenant_id, resource_id=resource_id) is None:
        raise _not_found(resource_id)  # before touching anything of another tenant's
    await lock_resource(conn, lock_key(resource_id))
    expired = await reservation_repo.expire_all_stale_holds(
        conn, resource_id=resource_id, now=svc.clock.now()
    )
    peak = await reservation_repo.peak_usage(conn, resource_id=resource_id)
    if peak > capacity:  # overlaps and quantities alike
        raise _capacity_in_use(capacity, peak)
    return expired


async def _not_updated(conn: Conn, caller: Principal, resource_id: UUID) -> Exception:
    """Why an UPDATE matched nothing: the resource is gone, or at another version."""
    current = await repository.get(conn, tenant_id=caller.tenant_id, resource_id=resource_id)
    if current is None:
        return _not_found(resource_id)
    return PreconditionFailed(
        f"The resource is at version {current.version}; fetch it again and retry.",
        current_version=current.version,
    )


def _capacity_in_use(capacity: int, peak: int | None) -> CapacityInUse:
    used = f"up to {peak} units" if peak is not None else "overlapping ranges"
    return CapacityInUse(
        f"Live reservations (past or future) use {used} at once, more than the new capacity "
        f"of {capacity}. Cancel or move them first.",
        peak_usage=peak,
    )


async def archive(
    svc: Context, caller: Principal, resource_id: UUID, *, cancel_reservations: bool
) -> None:
    """Archive a resource. Its future live reservations would otherwise be orphaned, so they
    must be cancelled explicitly (`cancel_reservations=true`) or the archive is refused."""
    now = svc.clock.now()
    svc = svc.at(resource_id, caller)
    async with svc.db.unit() as unit:
        conn = unit.conn
        if await repository.get(conn, tenant_id=caller.tenant_id, resource_id=resource_id) is None:
            raise _not_found(resource_id)
        # Same lock as the writers: no booking can slip in between the count and the archive.
        await lock_resource(conn, lock_key(resource_id))
        cancelled = []
        if cancel_reservations:
            cancelled = await reservation_repo.cancel_future(conn, resource_id=resource_id, now=now)
        else:
            count = await reservation_repo.count_future_live(conn, resource_id=resource_id, now=now)
            if count:
                raise ResourceHasFutureReservations(
                    f"{count} live reservation(s) end after now. Cancel them first, or send "
                    "DELETE with ?cancel_reservations=true to cancel them with the archive.",
                    live_reservations=count,
                )
        version = await repository.archive(
            conn, tenant_id=caller.tenant_id, resource_id=resource_id, now=now
        )
        if version is None:
            raise _not_found(resource_id)
        if svc.resource_cache is not None:
            unit.after_commit(partial(svc.resource_cache.archived, resource_id, version))
        svc.map_after_commit(unit, availability_map.changes(cancelled, live=False))
