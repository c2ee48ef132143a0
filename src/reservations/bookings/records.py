"""What a booking writes, on one cluster (service.py) or across clusters (spanning.py) alike:
the checks on its resources before any rule is evaluated, the booking row, and its
reservations as admission settled them."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from reservations.bookings import repository
from reservations.bookings.evaluation import check_shape
from reservations.bookings.recurrence import Occurrence
from reservations.bookings.repository import BookingRow
from reservations.bookings.schemas import BookingCreate
from reservations.catalog.repository import ResourceRow
from reservations.errors import NotFound
from reservations.kit.db import Conn
from reservations.kit.ids import uuid7_beside
from reservations.reservations import admission
from reservations.reservations import repository as reservation_repo
from reservations.reservations.rows import ReservationRow
from reservations.tenancy.service import Principal


def create_gate(caller: Principal, body: BookingCreate, now: datetime) -> admission.Gate:
    return admission.Gate(
        actor=caller,
        change=admission.Change.create,
        now=now,
        override=body.override_rules,
        hold_seconds=body.hold_seconds,
    )


def targets_of(
    found: dict[UUID, ResourceRow], body: BookingCreate, occurrences: list[Occurrence]
) -> dict[UUID, admission.Target]:
    """The booking's resources as admission sees them, once every one is found, has the
    units asked for, and takes occurrences of this shape."""
    ids = [r.resource for r in body.resources]
    if missing := [str(i) for i in ids if i not in found]:
        raise NotFound(f"No resource {', '.join(missing)} in your tenant.")
    targets = {i: admission.Target.of(found[i]) for i in ids}
    for units in body.resources:
        admission.check_quantity(units.quantity, targets[units.resource].capacity)
    check_shape(occurrences, targets)
    return targets


async def insert_booking(
    conn: Conn,
    caller: Principal,
    body: BookingCreate,
    *,
    booking_id: UUID,
    zone: str,
    now: datetime,
    spanning: bool = False,
) -> BookingRow:
    return await repository.insert(
        conn,
        booking_id=booking_id,
        tenant_id=caller.tenant_id,
        rrule=body.rrule,
        exdates=[d.isoformat() for d in body.exdates],
        timezone=zone,
        mode=body.mode.value,
        customer=body.customer,
        metadata=body.metadata,
        created_by=caller.api_key_id,
        now=now,
        spanning=spanning,
    )


async def insert_reservations(
    conn: Conn,
    caller: Principal,
    body: BookingCreate,
    *,
    booking_id: UUID,
    candidates: list[admission.Candidate],
    terms: admission.Terms,
    now: datetime,
) -> list[ReservationRow]:
    """The candidates' reservations, all or none (under the locks a resource cannot be
    archived meanwhile; if one were, nothing is booked)."""
    rows = await reservation_repo.insert_many(
        conn,
        tenant_id=caller.tenant_id,
        booking_id=booking_id,
        items=[
            (uuid7_beside(c.resource.id), c.resource.id, c.start, c.end, c.quantity)
            for c in candidates
        ],
        status=terms.status,
        expires_at=terms.expires_at,
        customer=body.customer,
        metadata=body.metadata,
        created_by=caller.api_key_id,
        now=now,
        needs_approval=terms.needs_approval,
    )
    if len(rows) != len(candidates):
        raise NotFound("A resource of this booking was archived meanwhile; nothing booked.")
    return rows
