"""A policy change's reach: the future live reservations of a resource that its rules, as
changed, refuse, and what the change does to them (`affected`: keep, flag, cancel).

Each reservation is asked what a create of its range would be asked (reservations/admission.py
`violations`, the function `screen` asks), under the policy a booking already made is held
to (policy/standing.py: the rules on the booking, not those on when it was made), so a listed
reservation's `violations` read exactly like a refused create's. The work is bounded: at most
`MAX_EXAMINED` reservations starting within `HORIZON`, at most `MAX_CANCELLED` cancelled."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime
from uuid import UUID

from reservations.context import Context
from reservations.errors import InvalidInput
from reservations.kit.db import Conn, Unit
from reservations.kit.pagination import encode_cursor
from reservations.policy.rules import Violation
from reservations.policy.standing import HORIZON, MAX_CANCELLED, MAX_EXAMINED, standing
from reservations.reservations import admission, status
from reservations.reservations import repository as reservation_repo
from reservations.reservations.rows import ReservationRow
from reservations.reservations.schemas import ReservationRead, RuleBroken
from reservations.resources.schemas import Affected, AffectedReport, AffectedReservation
from reservations.tenancy.service import Principal


@dataclass(frozen=True, slots=True)
class Refused:
    row: ReservationRow
    violations: list[Violation]

    def broken(self) -> list[dict[str, str]]:
        """The violations as a refused create's 422 lists them (policy/enforce.py `refuse`)."""
        return [{"reason": v.reason.value, "detail": v.detail} for v in self.violations]


@dataclass(frozen=True, slots=True)
class Examined:
    """The reservations one change examined and those it found refused."""

    refused: list[Refused]
    count: int
    horizon: datetime
    complete: bool


def refusals(
    actor: Principal, target: admission.Target, rows: list[ReservationRow], now: datetime
) -> list[Refused]:
    """The rows a create of their range would be refused, with admission's violations (pure)."""
    held_to = replace(target, policy=standing(target.policy))
    gate = admission.Gate(actor=actor, change=admission.Change.create, now=now)
    found = []
    for row in rows:
        candidate = admission.Candidate(
            resource=held_to,
            start=row.start_at,
            end=row.end_at,
            owner=row.created_by,
            customer=row.customer,
            quantity=row.quantity,
        )
        if violations := admission.violations(gate, candidate):
            found.append(Refused(row, violations))
    return found


async def examine(
    conn: Conn, actor: Principal, target: admission.Target, *, now: datetime, lock: bool
) -> Examined:
    """The resource's future live reservations (start after now, before the horizon; at most
    MAX_EXAMINED, earliest first) that `target`'s rules refuse. With `lock`, the rows stay
    locked for the caller's transaction (call with the resource's lock held)."""
    horizon = now + HORIZON
    rows = await reservation_repo.future_live(
        conn, resource_id=target.id, now=now, until=horizon, limit=MAX_EXAMINED + 1, lock=lock
    )
    complete = len(rows) <= MAX_EXAMINED
    if not complete:
        horizon = rows[-1].start_at  # every row starting before it is among those read
        rows = [r for r in rows[:MAX_EXAMINED] if r.start_at < horizon]
    # Off the event loop: the rules cost CPU per row (tenths of a millisecond each).
    found = await asyncio.to_thread(refusals, actor, target, rows, now)
    return Examined(found, len(rows), horizon, complete)


def check_cancellable(examined: Examined, action: Affected) -> None:
    """Refuse (before anything is written) a cancel of more than one change may do."""
    if action is Affected.cancel and len(examined.refused) > MAX_CANCELLED:
        raise InvalidInput(
            f"The change would cancel {len(examined.refused)} reservations; one change cancels "
            f"at most {MAX_CANCELLED}. Send affected=flag, then cancel the flagged ones "
            "(GET /v1/reservations?flagged=true), or change the policy in smaller steps.",
            errors=[{"field": "affected", "in": "query", "message": f"at most {MAX_CANCELLED}"}],
        )


async def act(
    svc: Context,
    unit: Unit,
    caller: Principal,
    resource_id: UUID,
    examined: Examined,
    action: Affected,
    now: datetime,
) -> None:
    """Flag the refused reservations (locked by `examine`), and with `cancel` cancel them
    through the cancel of a reservation (reservations/status.py), in the change's
    transaction: a cancelled row keeps its flag, which says why."""
    if action is Affected.keep or not examined.refused:
        return
    check_cancellable(examined, action)
    flags = [(r.row.id, r.broken()) for r in examined.refused]
    await reservation_repo.flag(unit.conn, resource_id=resource_id, flags=flags, now=now)
    if action is Affected.cancel:
        for refused in examined.refused:
            await status.cancel_locked(svc, unit, caller, refused.row, now)


def report(
    examined: Examined,
    action: Affected,
    *,
    now: datetime,
    limit: int,
    after: tuple[datetime, UUID] | None = None,
) -> AffectedReport:
    """The answer's account of them: a page of the refused (after the cursor's key)."""
    rest = [r for r in examined.refused if after is None or (r.row.start_at, r.row.id) > after]
    page = rest[:limit]
    last = page[-1].row if page and len(rest) > limit else None
    return AffectedReport(
        action=action,
        total=len(examined.refused),
        examined=examined.count,
        complete=examined.complete,
        horizon=examined.horizon,
        items=[_item(r, now) for r in page],
        next_cursor=encode_cursor(last.start_at, last.id) if last is not None else None,
    )


def _item(refused: Refused, now: datetime) -> AffectedReservation:
    row = refused.row
    return AffectedReservation(
        id=row.id,
        booking_id=row.booking_id,
        start=row.start_at,
        end=row.end_at,
        status=ReservationRead.from_row(row, now).status,
        customer=row.customer,
        reason=refused.violations[0].reason.value,
        violations=[RuleBroken.model_validate(v) for v in refused.broken()],
    )
