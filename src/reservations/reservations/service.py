"""Reservation use cases. Each public function owns one transaction (or, after a conflict,
one retry of it) and returns the reply the endpoint sends.

How a create is kept fast and correct (DESIGN.md, "The one invariant"):
1. a read-only pre-check of live overlaps refuses most conflicts without writing WAL;
2. the per-resource advisory lock serializes writers, so inserts into the exclusion
   constraint's index never deadlock;
3. holds past their expiry that overlap are expired in the same transaction;
4. the insert runs under the exclusion constraint, which alone decides; 23P01 becomes 409
   after one retry (the retry expires holds that went stale between the steps).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import errors as pg_errors
from psycopg import sql

from reservations.availability_map import store as availability_map
from reservations.context import Context
from reservations.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    ReservationNotLive,
)
from reservations.kit.db import Conn, lock_resource
from reservations.kit.idempotency import Idempotency, Reply, record
from reservations.kit.ids import lock_key, uuid7_beside
from reservations.kit.pagination import decode_instant_cursor, encode_cursor, merged
from reservations.reservations import admission, existing, metrics, repository
from reservations.reservations.conflicts import blocking, conflict
from reservations.reservations.rows import FoundRow, RangeRow, ReservationRow
from reservations.reservations.schemas import (
    ReservationCreate,
    ReservationPage,
    ReservationRead,
    ReservationUpdate,
    Status,
)
from reservations.tenancy.service import Principal, Role

# What a caller adds to a create's reply (a pool's note of its pick).
Shape = Callable[[Reply], Reply]


def check_override(caller: Principal, override: bool) -> None:
    if override and caller.role is not Role.admin:
        raise Forbidden("Only admin keys may send override_rules=true.")


async def create(
    svc: Context,
    caller: Principal,
    body: ReservationCreate,
    idem: Idempotency | None,
    *,
    shape: Shape | None = None,
) -> Reply:
    """Book `body.resource_id` (a create from a pool: reservations/pools.py, which comes here
    once per resource it tries). `shape` completes the reply before it is stored under the
    Idempotency-Key."""
    assert body.resource_id is not None, "a pool is booked through reservations.pools"
    check_override(caller, body.override_rules)
    admission.check_length(svc, body.start, body.end)
    admission.check_hold_seconds(svc, body.hold_seconds)
    svc = svc.at(body.resource_id, caller)
    # A retry with an Idempotency-Key must get its stored reply, never a map refusal.
    fill = await _refuse_from_map(svc, caller, body) if idem is None else False
    for attempt in range(2):
        try:
            return await _create_once(
                svc, caller, body, idem, expire_first=attempt > 0, fill_cache=fill, shape=shape
            )
        except pg_errors.ExclusionViolation:
            if attempt == 0:
                continue
            async with svc.db.connection() as conn:
                clashes = await repository.overlaps(
                    conn, resource_id=body.resource_id, start=body.start, end=body.end
                )
                zone = await repository.resource_zone(conn, body.resource_id)
            raise conflict(clashes, caller, stage="constraint", zone=zone) from None
    raise AssertionError("unreachable")


def _gate(svc: Context, caller: Principal, body: ReservationCreate) -> admission.Gate:
    return admission.Gate(
        actor=caller,
        change=admission.Change.create,
        now=svc.clock.now(),
        override=body.override_rules,
        hold_seconds=body.hold_seconds,
    )


def _candidate(
    caller: Principal, body: ReservationCreate, target: admission.Target
) -> admission.Candidate:
    return admission.Candidate(
        resource=target,
        start=body.start,
        end=body.end,
        owner=caller.api_key_id,
        customer=body.customer,
        quantity=body.quantity,
    )


async def _refuse_from_map(svc: Context, caller: Principal, body: ReservationCreate) -> bool:
    """The database-free refusal: with the resource's metadata from the cache and its
    availability map from Redis, refuse a create whose guarded range fully covers a granule
    a live reservation holds. Anything less certain goes on to the database. Returns whether
    the resource was missing from the cache (the database path then fills it)."""
    if svc.availability_map is None or svc.resource_cache is None or body.quantity != 1:
        return False
    assert body.resource_id is not None
    resource = await svc.resource_cache.get(caller.tenant_id, body.resource_id)
    if resource is None:
        return True
    if resource.capacity != 1:
        return False
    target = admission.Target.of(resource)
    admission.screen(svc, _gate(svc, caller, body), _candidate(caller, body, target))
    policy = target.policy
    in_way = await svc.availability_map.refusal(
        body.resource_id, *policy.guarded(body.start, body.end), now=svc.clock.now()
    )
    if in_way:
        error = conflict(in_way, caller, stage="map", zone=target.zone)
        error.extra["source"] = "availability-map"
        raise error
    return False


async def _create_once(
    svc: Context,
    caller: Principal,
    body: ReservationCreate,
    idem: Idempotency | None,
    *,
    expire_first: bool,
    fill_cache: bool = False,
    shape: Shape | None = None,
) -> Reply:
    assert body.resource_id is not None
    gate = _gate(svc, caller, body)
    now = gate.now
    # BEGIN and the key's claim go in one round trip, the idempotency record with COMMIT
    # (kit/db.py `Database.unit`); the pre-check and the insert run on generic plans.
    ttl = svc.settings.idempotency_ttl

    def first(conn: Conn) -> list[sql.Composed | sql.SQL]:
        return [idem.claim_statements(conn, now=now, ttl=ttl)] if idem is not None else []

    async with svc.db.unit(first=first, generic_plans=True) as unit:
        conn = unit.conn
        replay = await idem.claimed(conn, unit.first, now=now) if idem and unit.first else None
        if replay is not None:
            return replay
        found = await repository.resource_and_overlaps(
            conn,
            tenant_id=caller.tenant_id,
            resource_id=body.resource_id,
            start=body.start,
            end=body.end,
        )
        if found is None:
            raise NotFound(f"No resource {body.resource_id} in your tenant.")
        if fill_cache and svc.resource_cache is not None:
            await svc.resource_cache.put(found, tenant_id=caller.tenant_id)
        target = admission.Target.of(found)
        candidate = _candidate(caller, body, target)
        admission.screen(svc, gate, candidate)
        overlaps = [RangeRow.from_json(o) for o in found.overlaps]
        await _refuse_overlaps(svc, caller, candidate, overlaps, now, repair=True)
        # The insert's trigger takes the resource's lock (migration 0011); it is taken
        # before only when something is read under it (stale holds to expire, the
        # booker's reservations).
        expired = []
        stale = bool(overlaps) or expire_first
        if stale or admission.reads_locked(gate, [candidate]):
            await lock_resource(conn, lock_key(body.resource_id))
        if stale:
            expired = await repository.expire_stale_holds(
                conn, resource_id=body.resource_id, start=body.start, end=body.end, now=now
            )
            metrics.RESERVATIONS_EXPIRED.labels("booking").inc(len(expired))
        terms = await admission.admit(svc, conn, gate, [candidate])
        row = await _insert(conn, caller, body, terms, now)
        reply = existing.reply(row, now, status=201)
        if shape is not None:
            reply = shape(reply)
        await record(idem, conn, reply, now=now)
        svc.map_after_commit(
            unit,
            availability_map.changes([row], live=True)
            + availability_map.changes(expired, live=False),
        )
    metrics.RESERVATIONS_CREATED.labels(row.status).inc()
    return reply


async def _refuse_overlaps(
    svc: Context,
    caller: Principal,
    candidate: admission.Candidate,
    overlaps: list[RangeRow],
    now: datetime,
    *,
    repair: bool,
) -> None:
    """The lock-free pre-check: 409 when the live rows read with the resource leave no room
    for the candidate (with `repair`, the confirmed ones go to the availability map first,
    so a retry is refused there)."""
    target = candidate.resource
    in_way = blocking(
        overlaps,
        now=now,
        capacity=target.capacity,
        quantity=candidate.quantity,
        during=target.policy.guarded(candidate.start, candidate.end),
    )
    if not in_way:
        return
    if repair and svc.availability_map is not None:
        confirmed = [r for r in in_way if r.status == "confirmed"]
        await svc.availability_map.apply(availability_map.changes(confirmed, live=True))
    raise conflict(in_way, caller, stage="precheck", zone=target.zone, capacity=target.capacity)


async def _insert(
    conn: Conn, caller: Principal, body: ReservationCreate, terms: admission.Terms, now: datetime
) -> ReservationRow:
    """The reservation row as admitted, under the database's guards."""
    assert body.resource_id is not None
    row = await repository.insert(
        conn,
        reservation_id=uuid7_beside(body.resource_id),
        tenant_id=caller.tenant_id,
        resource_id=body.resource_id,
        start=body.start,
        end=body.end,
        status=terms.status,
        quantity=body.quantity,
        expires_at=terms.expires_at,
        customer=body.customer,
        metadata=body.metadata,
        created_by=caller.api_key_id,
        now=now,
        needs_approval=terms.needs_approval,
    )
    if row is None:
        raise NotFound(f"No resource {body.resource_id} in your tenant.")
    return row


async def get(svc: Context, caller: Principal, reservation_id: UUID) -> Reply:
    svc = svc.at(reservation_id)
    row = await svc.db.read(
        lambda conn: repository.get(
            conn, tenant_id=caller.tenant_id, reservation_id=reservation_id, owner=caller.owner()
        )
    )
    if row is None:
        raise existing.not_found(reservation_id)
    return existing.reply(row, svc.clock.now())


async def list_page(
    svc: Context,
    caller: Principal,
    *,
    resource_id: UUID | None,
    booking_id: UUID | None = None,
    window_from: datetime | None,
    window_to: datetime | None,
    statuses: list[Status],
    customer: str | None,
    limit: int,
    cursor: str | None,
    flagged: bool | None = None,
) -> ReservationPage:
    if window_from is not None and window_to is not None and window_to <= window_from:
        raise InvalidInput(
            "'to' must be after 'from'.",
            errors=[{"field": "to", "in": "query", "message": "must be after from"}],
        )
    after = decode_instant_cursor(cursor) if cursor is not None else None
    now = svc.clock.now()
    # One resource's rows live on its shard; the rest (a booking's too: it may span clusters)
    # on every shard.
    within = resource_id

    def query(conn: Conn) -> Awaitable[list[ReservationRow]]:
        return repository.page(
            conn,
            tenant_id=caller.tenant_id,
            owner=caller.owner(),
            resource_id=resource_id,
            booking_id=booking_id,
            window_from=window_from,
            window_to=window_to,
            statuses=sorted({s.value for s in statuses}),
            customer=customer,
            after=after,
            limit=limit + 1,
            now=now,
            flagged=flagged,
        )

    if within is not None:
        rows = await svc.at(within).db.read(query)
    else:
        pages = await svc.shards.gather(query)
        rows = merged(pages, key=lambda r: (r.start_at, r.id), limit=limit + 1)
    items = [ReservationRead.from_row(r, now) for r in rows[:limit]]
    next_cursor = (
        encode_cursor(rows[limit - 1].start_at, rows[limit - 1].id) if len(rows) > limit else None
    )
    return ReservationPage(items=items, next_cursor=next_cursor)


async def update(
    svc: Context,
    caller: Principal,
    reservation_id: UUID,
    body: ReservationUpdate,
    expected_version: int | None,
) -> Reply:
    """Reschedule and/or edit. A reschedule takes the resource lock before the row lock, the
    same order as every other writer, so the two kinds of lock never wait on each other in a
    cycle."""
    check_override(caller, body.override_rules)
    fields = body.model_fields_set
    svc = svc.at(reservation_id, caller)
    for attempt in range(2):
        try:
            return await _update_once(
                svc,
                caller,
                reservation_id,
                body,
                fields,
                expected_version,
                expire_first=attempt > 0,
            )
        except pg_errors.ExclusionViolation:
            if attempt == 0:
                continue
            async with svc.db.connection() as conn:
                row = await repository.get(
                    conn,
                    tenant_id=caller.tenant_id,
                    reservation_id=reservation_id,
                    owner=caller.owner(),
                )
                assert row is not None
                clashes = await repository.overlaps(
                    conn,
                    resource_id=row.resource_id,
                    start=body.start or row.start_at,
                    end=body.end or row.end_at,
                    exclude=reservation_id,
                )
                zone = await repository.resource_zone(conn, row.resource_id)
            raise conflict(clashes, caller, stage="constraint", zone=zone) from None
    raise AssertionError("unreachable")


async def _update_once(
    svc: Context,
    caller: Principal,
    reservation_id: UUID,
    body: ReservationUpdate,
    fields: set[str],
    expected_version: int | None,
    *,
    expire_first: bool,
) -> Reply:
    now = svc.clock.now()
    async with svc.db.unit() as unit:
        conn = unit.conn
        current = await _current(conn, caller, reservation_id)
        changes = _edits(body, fields, current)
        start = body.start if body.start is not None else current.start_at
        end = body.end if body.end is not None else current.end_at
        moving = (start, end) != (current.start_at, current.end_at)
        if moving:
            admission.check_length(svc, start, end)
        # A new range, or a live row counted for another customer: admission asks again.
        live = ReservationRead.from_row(current, now).status in _LIVE
        admit = moving or ("customer" in changes and live)
        if admit:
            gate = admission.Gate(
                actor=caller,
                change=admission.Change.reschedule if moving else admission.Change.edit,
                now=now,
                override=body.override_rules,
            )
            customer = changes.get("customer", current.customer)
            candidate, clashes = await _screened(
                svc, conn, caller, gate, current, (start, end), customer, moving=moving
            )
            await lock_resource(conn, lock_key(current.resource_id))
        row: ReservationRow = await existing.locked(conn, caller, reservation_id, expected_version)
        expired: list[RangeRow] = []
        if admit:
            existing.live_or_raise(row, now, zone=candidate.resource.zone)
            if moving and (clashes or expire_first):
                expired = await repository.expire_stale_holds(
                    conn, resource_id=row.resource_id, start=start, end=end, now=now
                )
            # Counted against the row as locked (it may have changed since the first read).
            locked = replace(candidate, current=admission.Current.of(row))
            terms = await admission.admit(svc, conn, gate, [locked])
            if not locked.current or not locked.current.same_terms(terms):
                changes.update(terms.columns())
            if moving:
                changes["start_at"], changes["end_at"] = start, end
        if not changes:
            return existing.reply(row, now)
        was = {row.id: (row.during_start, row.during_end)}
        row = await repository.update(conn, reservation_id=reservation_id, changes=changes, now=now)
        if moving:
            marks = availability_map.changes([row], live=True, was=was)
            svc.map_after_commit(unit, marks + availability_map.changes(expired, live=False))
    return existing.reply(row, now)


async def _current(conn: Conn, caller: Principal, reservation_id: UUID) -> FoundRow:
    """The reservation as the caller may see it, not yet locked; refused if in history."""
    current = await repository.get(
        conn, tenant_id=caller.tenant_id, reservation_id=reservation_id, owner=caller.owner()
    )
    if current is None:
        raise existing.not_found(reservation_id)
    if current.in_history:
        raise existing.in_history(current)
    return current


def _edits(body: ReservationUpdate, fields: set[str], current: ReservationRow) -> dict[str, Any]:
    """The columns a PATCH changes besides the range."""
    changes: dict[str, Any] = {}
    if "customer" in fields and body.customer != current.customer:
        changes["customer"] = body.customer
    if "metadata" in fields and body.metadata is not None:
        changes["metadata"] = body.metadata
    return changes


async def _screened(
    svc: Context,
    conn: Conn,
    caller: Principal,
    gate: admission.Gate,
    current: ReservationRow,
    span: tuple[datetime, datetime],
    customer: str | None,
    *,
    moving: bool,
) -> tuple[admission.Candidate, list[RangeRow]]:
    """A change that admission asks again, before the locks: the candidate as changed,
    screened, and the live rows in its new range (refused now if they leave no room)."""
    found = await repository.resource_and_overlaps(
        conn,
        tenant_id=caller.tenant_id,
        resource_id=current.resource_id,
        start=span[0],
        end=span[1],
        exclude=current.id,
    )
    if found is None:
        raise ReservationNotLive("The reservation's resource is archived.")
    candidate = admission.Candidate.moved(
        admission.Target.of(found), current, start=span[0], end=span[1], customer=customer
    )
    admission.screen(svc, gate, candidate)
    clashes = [RangeRow.from_json(o) for o in found.overlaps] if moving else []
    await _refuse_overlaps(svc, caller, candidate, clashes, gate.now, repair=False)
    return candidate, clashes


_LIVE = (Status.held, Status.pending, Status.confirmed)
