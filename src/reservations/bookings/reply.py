"""A booking's HTTP reply: the booking, its reservations and (on create) the report."""

from __future__ import annotations

from datetime import datetime

from reservations.bookings.repository import BookingRow
from reservations.bookings.schemas import BookingRead, OccurrenceReport
from reservations.kit.idempotency import Reply
from reservations.reservations.rows import ReservationRow
from reservations.reservations.schemas import ReservationRead, Status


def booking_reply(
    booking: BookingRow,
    rows: list[ReservationRow],
    now: datetime,
    *,
    status: int = 200,
    report: list[OccurrenceReport] | None = None,
) -> Reply:
    reads = [ReservationRead.from_row(r, now) for r in rows]
    live = {r.status for r in reads}
    state = (
        "pending"
        if Status.pending in live
        else "held"
        if Status.held in live
        else "confirmed"
        if Status.confirmed in live
        else "cancelled"
    )
    body = BookingRead(
        id=booking.id,
        status=state,
        rrule=booking.rrule,
        exdates=booking.exdates,
        timezone=booking.timezone,
        mode=booking.mode,
        customer=booking.customer,
        metadata=booking.metadata,
        version=booking.version,
        created_at=booking.created_at,
        updated_at=booking.updated_at,
        reservations=reads,
        report=report,
    )
    headers = {"ETag": f'"{booking.version}"'}
    if status == 201:
        headers["Location"] = f"/v1/bookings/{booking.id}"
    dumped = body.model_dump_json(exclude={"report"} if report is None else None)
    return Reply(status=status, body=dumped, headers=headers)
