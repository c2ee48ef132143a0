"""What a booking's confirm or extension changes: `pick` functions that choose the held rows
(refusing unless all of them can change) and admission's word on them (bookings/service.py
`_change` runs them on one cluster, bookings/spanning.py `change` on several)."""

from __future__ import annotations

from datetime import datetime

from reservations.bookings import repository
from reservations.catalog import repository as resource_repo
from reservations.context import Context
from reservations.errors import (
    ApprovalRequired,
    HoldExpired,
    ReservationNotHeld,
    ReservationNotLive,
)
from reservations.kit.db import Conn
from reservations.reservations import admission
from reservations.reservations.rows import RangeRow, ReservationRow
from reservations.reservations.schemas import Status, is_stale_hold
from reservations.tenancy.service import Principal, Role


async def _as_is(
    conn: Conn, caller: Principal, held: list[ReservationRow]
) -> list[admission.Candidate]:
    """The rows as admission sees them when only their terms change."""
    found = {
        r.id: admission.Target.of(r)
        for r in await resource_repo.get_many(
            conn, tenant_id=caller.tenant_id, resource_ids=sorted({h.resource_id for h in held})
        )
    }
    if any(h.resource_id not in found for h in held):
        raise ReservationNotLive("A resource of this booking is archived.")
    return [admission.Candidate.as_is(found[h.resource_id], h) for h in held]


async def admit_confirm(
    svc: Context, conn: Conn, caller: Principal, held: list[ReservationRow], now: datetime
) -> None:
    """Admission's word on confirming these holds (approval, as the resources ask now)."""
    gate = admission.Gate(actor=caller, change=admission.Change.confirm, now=now)
    await admission.settle_each(svc, conn, gate, await _as_is(conn, caller, held))


async def extend(
    svc: Context,
    conn: Conn,
    caller: Principal,
    held: list[ReservationRow],
    now: datetime,
    hold_seconds: int,
) -> list[RangeRow]:
    """The holds' new expiries as admission settles them, each from its own; the rows whose
    expiry changes are written."""
    gate = admission.Gate(
        actor=caller,
        change=admission.Change.extend,
        now=now,
        hold_seconds=hold_seconds,
        hold_max_life=svc.settings.hold_max_life,
    )
    settled = await admission.settle_each(svc, conn, gate, await _as_is(conn, caller, held))
    expiries = [
        (h.id, t.expires_at)
        for h, t in zip(held, settled, strict=True)
        if t.expires_at is not None and t.expires_at != h.expires_at
    ]
    if not expiries:
        return []
    return await repository.set_expiry(conn, expiries=expiries, now=now)


def to_extend(rows: list[ReservationRow], now: datetime) -> list[ReservationRow]:
    """The live holds an extension changes; refuses unless all of them can be (an expired
    hold: 409 hold-expired; nothing held: 409 reservation-not-held or -not-live)."""
    held = [r for r in rows if r.status == Status.held and not is_stale_hold(r, now)]
    gone = [r for r in rows if r.status == Status.expired or is_stale_hold(r, now)]
    if gone:
        raise HoldExpired(
            f"{len(gone)} hold(s) of this booking expired; nothing was extended. Book again."
        )
    if not held:
        if any(r.status == Status.confirmed for r in rows):
            raise ReservationNotHeld("This booking holds nothing to extend: it is confirmed.")
        raise ReservationNotLive("Nothing in this booking is live; book again.")
    return held


def to_confirm(
    rows: list[ReservationRow], caller: Principal, now: datetime
) -> list[ReservationRow]:
    """The held reservations a confirm changes; refuses unless all of them can be."""
    held = [r for r in rows if r.status == Status.held]
    if any(r.needs_approval for r in held) and caller.role is not Role.admin:
        raise ApprovalRequired(
            "An admin must approve this booking's reservations (or confirm the booking)."
        )
    gone = [r for r in held if is_stale_hold(r, now)]
    gone += [r for r in rows if r.status == Status.expired] if held else []
    if gone:
        raise HoldExpired(
            f"{len(gone)} hold(s) of this booking expired; nothing was confirmed. Book again."
        )
    if not held and not any(r.status == Status.confirmed for r in rows):
        if any(r.status == Status.expired for r in rows):
            raise HoldExpired("The holds of this booking expired; nothing was confirmed.")
        raise ReservationNotLive("Nothing in this booking is live; book again.")
    return held
