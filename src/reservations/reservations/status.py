"""A live reservation's status changes: confirm, extend, cancel, approve, decline. Each is a
step run in one frame (`_change`): its cluster, the Idempotency-Key, the row locked at the
expected version, the step, the reply."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from reservations.availability_map import store as availability_map
from reservations.catalog import repository as catalog
from reservations.context import Context
from reservations.errors import (
    CheckInRefused,
    Forbidden,
    ReservationNotPending,
)
from reservations.kit.db import Conn, Unit
from reservations.kit.idempotency import Idempotency, Reply, claim, record
from reservations.kit.localtime import describe_instant
from reservations.policy import enforce
from reservations.policy.model import CheckIn
from reservations.reservations import admission, existing, repository
from reservations.reservations.rows import ReservationRow
from reservations.reservations.schemas import (
    ReservationRead,
    Status,
)
from reservations.tenancy.service import Principal, Role

# One change of a locked reservation's status: returns the row as it is after.
Step = Callable[[Context, Unit, Principal, ReservationRow, datetime], Awaitable[ReservationRow]]


async def _change(
    svc: Context,
    caller: Principal,
    reservation_id: UUID,
    expected_version: int | None,
    idem: Idempotency | None,
    step: Step,
) -> Reply:
    """The frame of confirm, extend, cancel, approve and decline: the reservation's cluster, the
    Idempotency-Key, the row locked at the expected version, `step`, the reply."""
    now = svc.clock.now()
    svc = svc.at(reservation_id, caller)
    async with svc.db.unit() as unit:
        if replay := await claim(idem, unit.conn, now=now, ttl=svc.settings.idempotency_ttl):
            return replay
        locked = await existing.locked(unit.conn, caller, reservation_id, expected_version)
        row = await step(svc, unit, caller, locked, now)
        reply = existing.reply(row, now)
        await record(idem, unit.conn, reply, now=now)
    return reply


async def _admitted(
    svc: Context,
    unit: Unit,
    caller: Principal,
    row: ReservationRow,
    now: datetime,
    change: admission.Change,
) -> ReservationRow:
    """The row with the terms admission settles for it now (a confirmation or approval),
    marked in the availability map once committed."""
    gate = admission.Gate(actor=caller, change=change, now=now)
    terms = await admission.admit(
        svc, unit.conn, gate, [await existing.as_is(unit.conn, caller, row)]
    )
    changes = terms.columns()
    row = await repository.update(unit.conn, reservation_id=row.id, changes=changes, now=now)
    svc.map_after_commit(unit, availability_map.changes([row], live=True))
    return row


async def _ended(
    svc: Context, unit: Unit, row: ReservationRow, now: datetime, status: Status, **columns: Any
) -> ReservationRow:
    """The row no longer live (`status`): cleared from the map and its range offered to the
    waitlist once committed."""
    changes = {"status": status.value, "expires_at": None, **columns}
    row = await repository.update(unit.conn, reservation_id=row.id, changes=changes, now=now)
    svc.map_after_commit(unit, availability_map.changes([row], live=False))
    svc.freed_after_commit(unit, [row.resource_id])
    return row


async def _live_or_raise(conn: Conn, row: ReservationRow, now: datetime) -> None:
    """`existing.live_or_raise`, an expired hold's time said in its resource's zone too (the
    zone is read only then: a live row costs no round trip more)."""
    expired = ReservationRead.from_row(row, now).status is Status.expired
    zone = await repository.resource_zone(conn, row.resource_id) if expired else None
    existing.live_or_raise(row, now, zone)


async def _confirming(
    svc: Context, unit: Unit, caller: Principal, row: ReservationRow, now: datetime
) -> ReservationRow:
    await _live_or_raise(unit.conn, row, now)
    if row.status != Status.held:
        return row
    # By an admin, a pending booking's confirmation is its approval.
    return await _admitted(svc, unit, caller, row, now, admission.Change.confirm)


async def _checking_in(
    svc: Context, unit: Unit, caller: Principal, row: ReservationRow, now: datetime
) -> ReservationRow:
    if row.checked_in_at is not None:
        return row  # checking in again changes nothing
    await _live_or_raise(unit.conn, row, now)
    resource = await catalog.get(unit.conn, tenant_id=caller.tenant_id, resource_id=row.resource_id)
    if resource is None:  # archived: its live reservations were cancelled with it
        raise CheckInRefused("The resource is archived; nothing can be checked in to it.")
    zone = resource.timezone
    if ReservationRead.from_row(row, now).status is not Status.confirmed:
        raise CheckInRefused(
            "Only a confirmed reservation can be checked in; confirm the hold first."
        )
    terms = enforce.policy_of(resource.policy).check_in or CheckIn()
    opens = row.start_at - terms.opens_before
    closes = row.end_at
    if terms.release_after is not None:
        closes = min(closes, row.start_at + terms.release_after)
    if now < opens:
        raise CheckInRefused(f"Check-in opens at {describe_instant(opens, zone)}; come back then.")
    if now >= closes:
        raise CheckInRefused(
            f"Check-in closed at {describe_instant(closes, zone)}."
            + (
                " The reservation is released as a no-show."
                if terms.release_after is not None and closes < row.end_at
                else ""
            )
        )
    return await repository.update(
        unit.conn, reservation_id=row.id, changes={"checked_in_at": now}, now=now
    )


async def _cancelling(
    svc: Context, unit: Unit, caller: Principal, row: ReservationRow, now: datetime
) -> ReservationRow:
    if row.status == Status.cancelled:
        return row  # cancelling again changes nothing
    await _live_or_raise(unit.conn, row, now)
    return await _ended(svc, unit, row, now, Status.cancelled)


def _admin_or_raise(caller: Principal) -> None:
    # Before the Idempotency-Key is claimed: a refused role leaves nothing under it.
    if caller.role is not Role.admin:
        raise Forbidden("Only admin keys may approve or decline bookings.")


def _pending_or_raise(row: ReservationRow, now: datetime) -> None:
    status = ReservationRead.from_row(row, now).status
    if status is not Status.pending:
        raise ReservationNotPending(
            f"The reservation is {status.value}; only pending bookings can be approved or declined."
        )


async def _approving(
    svc: Context, unit: Unit, caller: Principal, row: ReservationRow, now: datetime
) -> ReservationRow:
    _pending_or_raise(row, now)
    return await _admitted(svc, unit, caller, row, now, admission.Change.approve)


async def _declining(
    svc: Context, unit: Unit, caller: Principal, row: ReservationRow, now: datetime
) -> ReservationRow:
    _pending_or_raise(row, now)
    return await _ended(svc, unit, row, now, Status.declined, needs_approval=False)


async def confirm(
    svc: Context,
    caller: Principal,
    reservation_id: UUID,
    expected_version: int | None,
    idem: Idempotency | None,
) -> Reply:
    return await _change(svc, caller, reservation_id, expected_version, idem, _confirming)


async def extend(
    svc: Context,
    caller: Principal,
    reservation_id: UUID,
    hold_seconds: int,
    expected_version: int | None,
    idem: Idempotency | None,
) -> Reply:
    """A live hold's new expiry, `hold_seconds` from now (admission decides: never shorter,
    within the hold's total life); extending again to an expiry it already has changes
    nothing."""
    admission.check_hold_seconds(svc, hold_seconds)

    async def extending(
        svc: Context, unit: Unit, caller: Principal, row: ReservationRow, now: datetime
    ) -> ReservationRow:
        return await _extending(svc, unit, caller, row, now, hold_seconds)

    return await _change(svc, caller, reservation_id, expected_version, idem, extending)


async def _extending(
    svc: Context,
    unit: Unit,
    caller: Principal,
    row: ReservationRow,
    now: datetime,
    hold_seconds: int,
) -> ReservationRow:
    await _live_or_raise(unit.conn, row, now)
    gate = admission.Gate(
        actor=caller,
        change=admission.Change.extend,
        now=now,
        hold_seconds=hold_seconds,
        hold_max_life=svc.settings.hold_max_life,
    )
    candidate = await existing.as_is(unit.conn, caller, row)
    terms = await admission.admit(svc, unit.conn, gate, [candidate])
    if admission.Current.of(row).same_terms(terms):
        return row
    row = await repository.update(
        unit.conn, reservation_id=row.id, changes=terms.columns(), now=now
    )
    # The map's detail carries the expiry: a granule is free again only after the new one.
    svc.map_after_commit(unit, availability_map.changes([row], live=True))
    return row


async def cancel(
    svc: Context,
    caller: Principal,
    reservation_id: UUID,
    expected_version: int | None,
    idem: Idempotency | None,
) -> Reply:
    """Cancel a live reservation; cancelling a cancelled one again is a no-op (200)."""
    return await _change(svc, caller, reservation_id, expected_version, idem, _cancelling)


async def check_in(
    svc: Context,
    caller: Principal,
    reservation_id: UUID,
    expected_version: int | None,
    idem: Idempotency | None,
) -> Reply:
    """Check in to a confirmed reservation within its window; again is a no-op (200)."""
    return await _change(svc, caller, reservation_id, expected_version, idem, _checking_in)


async def approve(
    svc: Context,
    caller: Principal,
    reservation_id: UUID,
    expected_version: int | None,
    idem: Idempotency | None = None,
) -> Reply:
    """An admin approves a pending booking: it is confirmed."""
    _admin_or_raise(caller)
    return await _change(svc, caller, reservation_id, expected_version, idem, _approving)


async def decline(
    svc: Context,
    caller: Principal,
    reservation_id: UUID,
    expected_version: int | None,
    idem: Idempotency | None = None,
) -> Reply:
    """An admin declines a pending booking: it is declined and its range is free again (the
    waitlist is offered it)."""
    _admin_or_raise(caller)
    return await _change(svc, caller, reservation_id, expected_version, idem, _declining)


async def cancel_locked(
    svc: Context, unit: Unit, caller: Principal, row: ReservationRow, now: datetime
) -> ReservationRow:
    """`cancel`'s own step for a row the caller already holds locked, in the caller's unit
    of work (a policy change's `affected=cancel`): the same update and events, the same map
    change and waitlist offer once committed."""
    return await _cancelling(svc, unit, caller, row, now)
