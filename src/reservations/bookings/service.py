"""Booking use cases: a series, a multi-resource group, or both, made, confirmed, moved and
cancelled atomically. Each function owns one transaction.

Every writer of a resource takes its advisory lock first; a booking takes the locks of all
its resources up front, in ascending lock-key order, so two bookings that share resources
always queue in the same order and never deadlock. With the locks held, the live rows read
are the truth (no other writer can change them), and the database guards still check every
row written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

from psycopg import errors as pg_errors

from reservations.availability_map import store as availability_map
from reservations.bookings import holds, records, repository, spanning
from reservations.bookings.evaluation import Series, booked, evaluate, occurrences_of
from reservations.bookings.reply import booking_reply
from reservations.bookings.repository import BookingRow
from reservations.bookings.schemas import (
    BookingCancel,
    BookingCreate,
    BookingMove,
    Mode,
    Scope,
)
from reservations.catalog import repository as resource_repo
from reservations.catalog.repository import ResourceRow
from reservations.context import Context
from reservations.errors import (
    BookingSpansClusters,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    ReservationConflict,
    ReservationNotLive,
)
from reservations.kit.db import Conn, lock_resource
from reservations.kit.fields import EARLIEST, LATEST
from reservations.kit.idempotency import Idempotency, Reply, claim, record
from reservations.kit.ids import lock_key, uuid7_beside
from reservations.kit.localtime import describe_instant
from reservations.policy import enforce
from reservations.reservations import admission, metrics
from reservations.reservations import repository as reservation_repo
from reservations.reservations.conflicts import blocking, items
from reservations.reservations.rows import RangeRow, ReservationRow
from reservations.reservations.schemas import Status, is_stale_hold
from reservations.reservations.service import check_override
from reservations.tenancy.service import Principal


def _not_found(booking_id: UUID) -> NotFound:
    return NotFound(f"No booking {booking_id} that your key may see.")


async def lock_all(conn: Conn, resource_ids: list[UUID]) -> None:
    """The resources' locks, in lock-key order (every writer of several takes them so)."""
    for key in sorted({lock_key(r) for r in resource_ids}):
        await lock_resource(conn, key)


async def create(
    svc: Context, caller: Principal, body: BookingCreate, idem: Idempotency | None
) -> Reply:
    check_override(caller, body.override_rules)
    admission.check_length(svc, body.start, body.end)
    admission.check_hold_seconds(svc, body.hold_seconds)
    # The series is expanded before any lock or connection is taken: its cost is bounded by
    # work (bookings.recurrence), and nobody waits on it.
    zone = body.timezone or await _zone_of(svc, caller, body.resources[0].resource)
    occurrences = await occurrences_of(body, zone)
    groups = svc.shards.group(r.resource for r in body.resources)
    try:
        if len(groups) == 1:
            return await _create(
                svc.at(body.resources[0].resource, caller),
                caller,
                body,
                idem,
                Series(zone, occurrences),
            )
        reply, rows = await spanning.create(
            svc, caller, body, idem, groups, Series(zone, occurrences)
        )
    except pg_errors.ExclusionViolation:
        # Only a writer that skips the resource locks can get here; the guard held.
        metrics.RESERVATIONS_CONFLICTED.labels("constraint").inc()
        raise ReservationConflict(
            "A concurrent change took part of these ranges; nothing was booked. Retry."
        ) from None
    if rows:
        metrics.RESERVATIONS_CREATED.labels(rows[0].status).inc(len(rows))
    return reply


async def _zone_of(svc: Context, caller: Principal, resource_id: UUID) -> str:
    """The first resource's time zone, the series' default (read before the booking's
    transaction; the transaction reads the resource again under its lock)."""
    if svc.resource_cache is not None:
        cached = await svc.resource_cache.get(caller.tenant_id, resource_id)
        if cached is not None:
            return cached.timezone
    row = await svc.at(resource_id).db.read(
        lambda conn: resource_repo.get(conn, tenant_id=caller.tenant_id, resource_id=resource_id)
    )
    # None: the transaction says 404, after the Idempotency-Key's claim (a retry of a booking
    # whose resource has since been archived still gets its stored reply).
    return row.timezone if row is not None else "UTC"


async def _create(
    svc: Context,
    caller: Principal,
    body: BookingCreate,
    idem: Idempotency | None,
    series: Series,
) -> Reply:
    now = svc.clock.now()
    ids = [r.resource for r in body.resources]
    occurrences = series.occurrences
    async with svc.db.unit() as unit:
        conn = unit.conn
        if replay := await claim(idem, conn, now=now, ttl=svc.settings.idempotency_ttl):
            return replay
        # The locks first: what is read below (capacity, archived or not) then holds until
        # COMMIT. (Locking ids of another tenant's resources reveals nothing: 404 follows.)
        await lock_all(conn, ids)
        found = await resource_repo.get_many(conn, tenant_id=caller.tenant_id, resource_ids=ids)
        targets = records.targets_of({r.id: r for r in found}, body, occurrences)
        gate = records.create_gate(caller, body, now)
        evaluation = await evaluate(conn, gate, body, targets, occurrences)
        ok = evaluation.ok()
        if not ok or (len(ok) < len(occurrences) and body.mode is Mode.all_or_nothing):
            raise evaluation.refusal()
        candidates = booked(gate, body, targets, occurrences, ok)
        terms = await admission.settle(svc, conn, gate, candidates)
        booking = await records.insert_booking(
            conn, caller, body, booking_id=uuid7_beside(ids[0]), zone=series.zone, now=now
        )
        rows = await records.insert_reservations(
            conn,
            caller,
            body,
            booking_id=booking.id,
            candidates=candidates,
            terms=terms,
            now=now,
        )
        rows.sort(key=lambda r: (r.start_at, str(r.resource_id)))
        reply = booking_reply(booking, rows, now, status=201, report=evaluation.report())
        await record(idem, conn, reply, now=now)
        svc.map_after_commit(
            unit,
            availability_map.changes(rows, live=True)
            + availability_map.changes(evaluation.expired, live=False),
        )
    metrics.RESERVATIONS_CREATED.labels(rows[0].status).inc(len(rows))
    return reply


async def get(svc: Context, caller: Principal, booking_id: UUID) -> Reply:
    async def read(conn: Conn) -> tuple[BookingRow | None, list[ReservationRow]]:
        booking = await repository.get(
            conn, tenant_id=caller.tenant_id, booking_id=booking_id, owner=caller.owner()
        )
        if booking is None:
            return None, []
        return booking, await repository.reservations(conn, booking_id=booking_id)

    booking, rows = await svc.at(booking_id).db.read(read)
    if booking is None:
        raise _not_found(booking_id)
    if booking.spanning:  # each cluster holds its resources' reservations
        parts = await svc.shards.gather(
            lambda conn: repository.reservations(conn, booking_id=booking_id)
        )
        rows = sorted(
            (r for part in parts for r in part),
            key=lambda r: (r.start_at, str(r.resource_id)),
        )
    return booking_reply(booking, rows, svc.clock.now())


async def _locked_booking(
    conn: Conn, caller: Principal, booking_id: UUID, expected_version: int | None
) -> BookingRow:
    booking = await repository.get(
        conn, tenant_id=caller.tenant_id, booking_id=booking_id, owner=caller.owner(), lock=True
    )
    if booking is None:
        raise _not_found(booking_id)
    if booking.spanning:
        raise BookingSpansClusters(
            "This booking's resources live on several database clusters; moving it as one "
            "is not supported yet. Move its reservations one by one (/v1/reservations/{id}),"
            " or cancel it and book again."
        )
    if expected_version is not None and booking.version != expected_version:
        raise PreconditionFailed(
            f"The booking is at version {booking.version}; fetch it again and retry.",
            current_version=booking.version,
        )
    return booking


async def confirm(
    svc: Context,
    caller: Principal,
    booking_id: UUID,
    expected_version: int | None,
    idem: Idempotency | None,
) -> Reply:
    """Confirm every held reservation of the booking, or none: if any hold has expired, the
    whole confirm is refused (409 hold-expired) and nothing changes."""
    return await _change(
        svc, caller, booking_id, expected_version, idem,
        pick=lambda rows, now, _zone: holds.to_confirm(rows, caller, now),
        write=spanning.status_write("confirmed"),
        admit=lambda conn, held, now: holds.admit_confirm(svc, conn, caller, held, now),
    )  # fmt: skip


async def extend(
    svc: Context,
    caller: Principal,
    booking_id: UUID,
    hold_seconds: int,
    expected_version: int | None,
    idem: Idempotency | None,
) -> Reply:
    """Extend every live hold of the booking to `hold_seconds` from now, or none: if any
    hold has expired, or admission refuses one (past its total life), nothing changes."""
    admission.check_hold_seconds(svc, hold_seconds)

    async def write(conn: Conn, held: list[ReservationRow], now: datetime) -> list[RangeRow]:
        return await holds.extend(svc, conn, caller, held, now, hold_seconds)

    return await _change(
        svc, caller, booking_id, expected_version, idem,
        pick=lambda rows, now, _zone: holds.to_extend(rows, now), write=write,
    )  # fmt: skip


async def _change(
    svc: Context,
    caller: Principal,
    booking_id: UUID,
    expected_version: int | None,
    idem: Idempotency | None,
    *,
    pick: spanning.Pick,
    write: spanning.Write,
    admit: spanning.Admit | None = None,
) -> Reply:
    """`write` the reservations `pick` chooses (after `admit`'s word on them), all or none:
    on the booking's cluster, or on every cluster at once when it spans several."""
    try:
        return await _change_here(
            svc, caller, booking_id, expected_version, idem, pick, write, admit
        )
    except BookingSpansClusters:  # nothing was done; do it on every cluster at once
        return await spanning.change(
            svc, caller, booking_id, expected_version, idem, pick=pick, write=write, admit=admit
        )


async def _change_here(
    svc: Context,
    caller: Principal,
    booking_id: UUID,
    expected_version: int | None,
    idem: Idempotency | None,
    pick: spanning.Pick,
    write: spanning.Write,
    admit: spanning.Admit | None,
) -> Reply:
    now = svc.clock.now()
    svc = svc.at(booking_id, caller)
    async with svc.db.unit() as unit:
        conn = unit.conn
        if replay := await claim(idem, conn, now=now, ttl=svc.settings.idempotency_ttl):
            return replay
        booking = await _locked_booking(conn, caller, booking_id, expected_version)
        rows = await repository.reservations(conn, booking_id=booking_id, lock=True)
        now = svc.clock.now()  # after the locks: a hold may have run out while we waited
        chosen = pick(rows, now, booking.timezone)
        if chosen:
            if admit is not None:
                await admit(conn, chosen, now)
            changed = await write(conn, chosen, now)
            booking = await repository.touch(conn, booking_id=booking_id, now=now)
            rows = await repository.reservations(conn, booking_id=booking_id)
            svc.map_after_commit(unit, spanning.map_changes(changed))
        reply = booking_reply(booking, rows, now)
        await record(idem, conn, reply, now=now)
    return reply


def to_cancel(
    rows: list[ReservationRow], change: BookingCancel, now: datetime, zone: str
) -> list[ReservationRow]:
    """The live reservations in the cancel's scope (`zone`: the booking's)."""
    return [
        r
        for r in _in_scope(rows, change, zone)
        if r.status in (Status.held, Status.confirmed) and not is_stale_hold(r, now)
    ]


def _in_scope(
    rows: list[ReservationRow], change: BookingCancel | BookingMove, zone: str
) -> list[ReservationRow]:
    if change.scope is Scope.all:
        return rows
    assert change.occurrence is not None
    if change.scope is Scope.occurrence:
        picked = [r for r in rows if r.start_at == change.occurrence]
    else:
        picked = [r for r in rows if r.start_at >= change.occurrence]
    if not picked:
        at = describe_instant(change.occurrence, zone)
        raise NotFound(
            f"No occurrence of this booking starts at {at}; use "
            "the `start` of one of its reservations."
        )
    return picked


async def cancel(
    svc: Context,
    caller: Principal,
    booking_id: UUID,
    change: BookingCancel,
    expected_version: int | None,
    idem: Idempotency | None,
) -> Reply:
    """Cancel the live reservations in scope; cancelling again changes nothing."""
    return await _change(
        svc, caller, booking_id, expected_version, idem,
        pick=lambda rows, now, zone: to_cancel(rows, change, now, zone),
        write=spanning.status_write("cancelled"),
    )  # fmt: skip


def _moved(row: ReservationRow, move: BookingMove, zone: str) -> tuple[datetime, datetime]:
    """Shift the start in local wall time (RFC 5545 placement for gaps and folds)."""
    start = row.start_at
    if move.shift:  # no shift: keep the instant (it may be the second pass of a fold)
        tz = ZoneInfo(zone)
        wall = start.astimezone(tz).replace(tzinfo=None) + move.shift
        start = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    end = start + (move.duration or row.end_at - row.start_at)
    if not (start >= EARLIEST and end < LATEST):
        raise InvalidInput(
            "The moved booking would fall outside 1970-9000; use a smaller shift.",
            errors=[{"field": "shift", "in": "body", "message": "out of range"}],
        )
    return start, end


async def move(
    svc: Context,
    caller: Principal,
    booking_id: UUID,
    change: BookingMove,
    expected_version: int | None,
) -> Reply:
    """Reschedule the live reservations in scope, all or none."""
    check_override(caller, change.override_rules)
    try:
        return await _move(svc, caller, booking_id, change, expected_version)
    except pg_errors.ExclusionViolation:
        metrics.RESERVATIONS_CONFLICTED.labels("constraint").inc()
        raise ReservationConflict(
            "The moved occurrences would overlap each other or other reservations; nothing "
            "was moved."
        ) from None


async def _move(
    svc: Context,
    caller: Principal,
    booking_id: UUID,
    change: BookingMove,
    expected_version: int | None,
) -> Reply:
    now = svc.clock.now()
    svc = svc.at(booking_id, caller)
    async with svc.db.unit() as unit:
        conn = unit.conn
        booking = await repository.get(
            conn, tenant_id=caller.tenant_id, booking_id=booking_id, owner=caller.owner()
        )
        if booking is None:
            raise _not_found(booking_id)
        rows = await repository.reservations(conn, booking_id=booking_id)
        resource_ids = sorted({r.resource_id for r in rows})
        await lock_all(conn, resource_ids)  # resource locks before row locks, as everywhere
        booking = await _locked_booking(conn, caller, booking_id, expected_version)
        rows = await repository.reservations(conn, booking_id=booking_id, lock=True)
        live = [
            r
            for r in _in_scope(rows, change, booking.timezone)
            if r.status in (Status.held, Status.confirmed) and not is_stale_hold(r, now)
        ]
        if not live:
            raise ReservationNotLive("No live reservation of this booking is in scope.")
        found = {
            r.id: r
            for r in await resource_repo.get_many(
                conn, tenant_id=caller.tenant_id, resource_ids=resource_ids
            )
        }
        gate = admission.Gate(
            actor=caller,
            change=admission.Change.reschedule,
            now=now,
            override=change.override_rules,
        )
        moves, candidates = _moves(svc, gate, change, booking.timezone, live, found)
        if refused := await admission.booker_refusals(conn, gate, candidates):
            first = min(refused)
            raise enforce.refuse([refused[first]], occurrence=live[first].start_at.isoformat())
        terms = await admission.settle_each(svc, conn, gate, candidates)
        expired = await _expire_in_the_way(conn, resource_ids, live, moves, now)
        await _refuse_overlaps(conn, caller, live, moves, found, now)
        await repository.defer_guards(conn)
        moved = await repository.move(conn, moves=moves, now=now)
        for candidate, (rid_, _, _), settled in zip(candidates, moves, terms, strict=True):
            if candidate.current is not None and not candidate.current.same_terms(settled):
                await reservation_repo.update(
                    conn, reservation_id=rid_, changes=settled.columns(), now=now
                )
        booking = await repository.touch(conn, booking_id=booking_id, now=now)
        rows = await repository.reservations(conn, booking_id=booking_id)
        was = {r.id: (r.during_start, r.during_end) for r in live}
        marks = availability_map.changes(moved, live=True, was=was)
        svc.map_after_commit(unit, marks + availability_map.changes(expired, live=False))
    return booking_reply(booking, rows, now)


def _moves(
    svc: Context,
    gate: admission.Gate,
    change: BookingMove,
    zone: str,
    live: list[ReservationRow],
    found: dict[UUID, ResourceRow],
) -> tuple[list[tuple[UUID, datetime, datetime]], list[admission.Candidate]]:
    """Where each live reservation in scope goes, and its candidate for admission; refused
    at the first that breaks a rule."""
    moves, candidates = [], []
    for row in live:
        start, end = _moved(row, change, zone)
        resource = found.get(row.resource_id)
        if resource is None:
            raise ReservationNotLive("A resource of this booking is archived.")
        candidate = admission.Candidate.moved(
            admission.Target.of(resource), row, start=start, end=end, customer=row.customer
        )
        admission.check_length(svc, start, end)
        if violations := admission.violations(gate, candidate):
            raise enforce.refuse(violations, occurrence=row.start_at.isoformat())
        moves.append((row.id, start, end))
        candidates.append(candidate)
    return moves, candidates


async def _expire_in_the_way(
    conn: Conn,
    resource_ids: list[UUID],
    live: list[ReservationRow],
    moves: list[tuple[UUID, datetime, datetime]],
    now: datetime,
) -> list[RangeRow]:
    """Holds past their expiry must not stand in the way of the moved ranges."""
    expired: list[RangeRow] = []
    for rid in resource_ids:
        mine = [m for m, r in zip(moves, live, strict=True) if r.resource_id == rid]
        if mine:
            expired += await reservation_repo.expire_stale_holds(
                conn,
                resource_id=rid,
                start=min(m[1] for m in mine),
                end=max(m[2] for m in mine),
                now=now,
            )
    return expired


async def _refuse_overlaps(
    conn: Conn,
    caller: Principal,
    live: list[ReservationRow],
    moves: list[tuple[UUID, datetime, datetime]],
    found: dict[UUID, ResourceRow],
    now: datetime,
) -> None:
    """Name the reservations (outside the moved set) that the new ranges would meet."""
    moving = {m[0] for m in moves}
    lo = min(m[1] for m in moves) - timedelta(days=1)
    hi = max(m[2] for m in moves) + timedelta(days=1)
    busy: dict[UUID, list[RangeRow]] = {}
    for b in await reservation_repo.busy_between(
        conn, resource_ids=list(found), start=lo, end=hi, now=now
    ):
        if b.id not in moving:
            busy.setdefault(b.resource_id, []).append(b)
    clashes: list[RangeRow] = []
    for row, (_, start, end) in zip(live, moves, strict=True):
        resource = found[row.resource_id]
        policy = enforce.policy_of(resource.policy)
        during = policy.guarded(start, end)
        near = [
            b
            for b in busy.get(row.resource_id, [])
            if b.during_start < during[1] and during[0] < b.during_end
        ]
        clashes += blocking(
            near, now=now, capacity=resource.capacity, quantity=row.quantity, during=during
        )
    if clashes:
        metrics.RESERVATIONS_CONFLICTED.labels("precheck").inc()
        raise ReservationConflict(
            "The new ranges overlap live reservations; nothing was moved.",
            conflicts=items(clashes, caller, with_resource=True),
        )
