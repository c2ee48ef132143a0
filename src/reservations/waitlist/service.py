"""Waitlist use cases: join, read, leave (promotion: waitlist.promotion)."""

from __future__ import annotations

from functools import partial
from uuid import UUID

from reservations.catalog import repository as resources
from reservations.context import Context
from reservations.errors import NotFound, WaitlistFull
from reservations.kit.db import Conn, lock_resource
from reservations.kit.idempotency import Idempotency, Reply, amend, claim, record
from reservations.kit.ids import lock_key, uuid7_beside
from reservations.kit.pagination import decode_instant_cursor, encode_cursor, merged
from reservations.reservations import admission
from reservations.tenancy.service import Principal
from reservations.waitlist import repository
from reservations.waitlist.promotion import promote
from reservations.waitlist.repository import EntryRow
from reservations.waitlist.schemas import EntryStatus, WaitlistEntryRead, WaitlistJoin, WaitlistPage


def _not_found(entry_id: UUID) -> NotFound:
    return NotFound(f"No waitlist entry {entry_id} that your key may see.")


async def join(
    svc: Context, caller: Principal, body: WaitlistJoin, idem: Idempotency | None = None
) -> Reply:
    """Wait for a range. The range must be one the caller could book (admission's rules,
    as a direct create would be judged); the waitlist is bounded per resource and per key."""
    admission.check_length(svc, body.start, body.end)
    admission.check_hold_seconds(svc, body.hold_seconds)
    now = svc.clock.now()
    svc = svc.at(body.resource_id, caller)
    async with svc.db.unit() as unit:
        conn = unit.conn
        if replay := await claim(idem, conn, now=now, ttl=svc.settings.idempotency_ttl):
            return replay
        resource = await resources.get(
            conn, tenant_id=caller.tenant_id, resource_id=body.resource_id
        )
        if resource is None:
            raise NotFound(f"No resource {body.resource_id} in your tenant.")
        gate = admission.Gate(
            actor=caller, change=admission.Change.create, now=now, hold_seconds=body.hold_seconds
        )
        admission.screen(
            svc,
            gate,
            admission.Candidate(
                resource=admission.Target.of(resource),
                start=body.start,
                end=body.end,
                owner=caller.api_key_id,
                customer=body.customer,
                quantity=body.quantity,
            ),
        )
        # The resource's lock makes the bounds exact (joins of one resource queue here).
        await lock_resource(conn, lock_key(body.resource_id))
        await _check_bounds(svc, conn, caller, body.resource_id)
        row = await repository.insert(
            conn,
            entry_id=uuid7_beside(body.resource_id),
            tenant_id=caller.tenant_id,
            resource_id=body.resource_id,
            start=body.start,
            end=body.end,
            quantity=body.quantity,
            customer=body.customer,
            hold_seconds=body.hold_seconds,
            created_by=caller.api_key_id,
            now=now,
        )
        await record(idem, conn, joined(WaitlistEntryRead.from_row(row, None)), now=now)
        unit.after_commit(partial(promote, svc, body.resource_id))  # it may be free already
    # The entry as it is after its promotion, if any, is what a retry replays.
    await amend(svc.db, idem, reply := joined(await get(svc, caller, row.id)))
    return reply


def joined(entry: WaitlistEntryRead) -> Reply:
    return Reply(status=201, body=entry.model_dump_json())


async def _check_bounds(svc: Context, conn: Conn, caller: Principal, resource_id: UUID) -> None:
    per_resource = svc.settings.waitlist_max_per_resource
    if await repository.count_waiting(conn, resource_id=resource_id) >= per_resource:
        raise WaitlistFull(
            f"{per_resource} entries already wait for this resource; try again after some are"
            " promoted or leave, or book another resource."
        )
    per_key = svc.settings.waitlist_max_per_key
    waiting = await repository.count_waiting(conn, created_by=caller.api_key_id)
    if svc.shards.sharded:  # a key's entries live with their resources, on every cluster
        mine = svc.db.name
        for db in svc.shards.databases():
            if db.name != mine:
                async with db.connection() as other:
                    waiting += await repository.count_waiting(other, created_by=caller.api_key_id)
    if waiting >= per_key:
        raise WaitlistFull(
            f"Your key already waits for {per_key} ranges; leave one"
            " (DELETE /v1/waitlist/{id}) before joining another."
        )


async def get(svc: Context, caller: Principal, entry_id: UUID) -> WaitlistEntryRead:
    async with svc.at(entry_id).db.connection() as conn:
        row = await repository.get(
            conn, tenant_id=caller.tenant_id, entry_id=entry_id, owner=caller.owner()
        )
        if row is None:
            raise _not_found(entry_id)
        place = await repository.position(conn, entry=row) if row.status == "waiting" else None
    return WaitlistEntryRead.from_row(row, place)


async def list_page(
    svc: Context, caller: Principal, *, resource_id: UUID | None, cursor: str | None, limit: int
) -> WaitlistPage:
    after = decode_instant_cursor(cursor) if cursor is not None else None

    async def page(conn: Conn) -> list[tuple[EntryRow, int | None]]:
        rows = await repository.page(
            conn,
            tenant_id=caller.tenant_id,
            owner=caller.owner(),
            resource_id=resource_id,
            after=after,
            limit=limit + 1,
        )
        return [
            (r, await repository.position(conn, entry=r) if r.status == "waiting" else None)
            for r in rows
        ]

    if resource_id is not None:
        found = await svc.at(resource_id).db.read(page)
    else:  # every shard's first entries after the cursor, merged
        found = merged(
            await svc.shards.gather(page),
            key=lambda e: (e[0].created_at, e[0].id),
            limit=limit + 1,
        )
    items = [WaitlistEntryRead.from_row(r, place) for r, place in found[:limit]]
    rows = found
    next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
    return WaitlistPage(items=items, next_cursor=next_cursor)


async def leave(svc: Context, caller: Principal, entry_id: UUID) -> WaitlistEntryRead:
    """Leave the list; leaving again (or after promotion) changes nothing."""
    now = svc.clock.now()
    svc = svc.at(entry_id, caller)
    async with svc.db.transaction() as conn:
        row = await repository.get(
            conn, tenant_id=caller.tenant_id, entry_id=entry_id, owner=caller.owner(), lock=True
        )
        if row is None:
            raise _not_found(entry_id)
        if row.status == EntryStatus.waiting:
            row = await repository.set_status(conn, entry_id=entry_id, status="left", now=now)
    return WaitlistEntryRead.from_row(row, None)
