"""Promotion of waiting entries into holds.

Runs under the resource's advisory lock, first come first. One statement reads the waiting
entries that may fit (for a unit resource, those whose range no live reservation meets; an
entry still blocked costs an index probe and is neither returned nor locked), and when there
are none, that is all a cancel costs: no lock is taken. Otherwise the live rows over their
ranges are read once, under the lock, and which entries fit is decided in memory. Each entry
that fits passes admission (reservations.admission) as the booker who joined would: the
policy's rules as they are now, the booker limit for the entry's key and customer, the
approval requirement (an approval resource makes the entry a pending booking, not a hold a
booker may confirm), and the tenant's hold cap. Only then is its hold inserted, in a
savepoint, under the database guards. The entry is marked promoted in the
same transaction as its hold, so no entry is promoted twice.

Entries whose range has begun lapse, as do those a rule that cannot heal with time refuses
(the start passed, the notice grew past it, a length beyond the system's maximum, more units
than the resource has). Entries refused by what can change (a booker limit, the hold cap, a
blackout, hours, the advance) keep waiting.

What a promotion costs follows what can be promoted, not the queue: blocked entries are not
read, the screen is pure, and within one promotion the counts only grow, so once the hold
cap refuses, no later entry asks it again, and once a booker's limit refuses for a period,
that booker's later entries for the same period are not counted again.

It runs right after every cancel and decline and after the sweeper expires holds (each in its
own transaction, after the change committed), and from the worker for every resource with
waiting entries, so a freed range is never left unoffered. Between a change's commit and its
promotion a direct booking may take the range first: the waitlist offers freed ranges, it does
not reserve them against new bookings."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import errors as pg_errors

from reservations.availability_map import store as availability_map
from reservations.catalog import repository as resources
from reservations.context import Context
from reservations.errors import BookingRuleViolated, HoldLimitReached, InvalidInput
from reservations.kit.db import Conn, lock_resource
from reservations.kit.ids import lock_key, uuid7_beside
from reservations.policy import enforce
from reservations.policy.rules import Reason
from reservations.reservations import admission
from reservations.reservations import repository as reservations
from reservations.reservations.conflicts import blocking
from reservations.reservations.rows import ReservationRow
from reservations.tenancy.service import Principal, Role
from reservations.waitlist import repository
from reservations.waitlist.repository import WaitingRow

# Refusals that time cannot heal: the entry lapses instead of waiting for ever.
_LAPSING = {Reason.in_the_past, Reason.too_soon}


async def promote(svc: Context, resource_id: UUID) -> list[UUID]:
    """Give holds to the resource's waiting entries that fit now, first come first.
    Returns the promoted entries' ids."""
    svc = svc.at(resource_id)
    async with svc.db.unit() as unit:
        conn = unit.conn
        entries = await repository.waiting(
            conn,
            resource_id=resource_id,
            limit=svc.settings.waitlist_max_per_resource,
            now=svc.clock.now(),
        )
        if not entries:
            return []
        await lock_resource(conn, lock_key(resource_id))
        promoted, holds = await _promote_locked(svc, conn, resource_id, entries)
        svc.map_after_commit(unit, availability_map.changes(holds, live=True))
    return promoted


async def _promote_locked(
    svc: Context, conn: Conn, resource_id: UUID, entries: list[WaitingRow]
) -> tuple[list[UUID], list[ReservationRow]]:
    now = svc.clock.now()
    resource = await resources.get(conn, tenant_id=entries[0].tenant_id, resource_id=resource_id)
    lapsed = [e.id for e in entries if resource is None or e.start_at <= now]
    entries = [e for e in entries if e.id not in set(lapsed)]
    if resource is None or not entries:
        await repository.lapse(conn, entry_ids=lapsed, now=now)
        return [], []
    target = admission.Target.of(resource)
    policy = target.policy
    lo = min(e.start_at for e in entries)
    hi = max(e.end_at for e in entries)
    await reservations.expire_stale_holds(conn, resource_id=resource_id, start=lo, end=hi, now=now)
    busy = await reservations.busy_between(
        conn,
        resource_ids=[resource_id],
        start=lo - policy.buffer_before,
        end=hi + policy.buffer_after,
        now=now,
    )
    promoted: list[UUID] = []
    holds: list[ReservationRow] = []
    capped = False  # the tenant's hold cap refused: every later entry would add a hold too
    full: set[Any] = set()  # bookers (and periods) the booker limit refused
    for entry in entries:
        during = policy.guarded(entry.start_at, entry.end_at)
        near = [b for b in busy if b.during_start < during[1] and during[0] < b.during_end]
        if blocking(
            near, now=now, capacity=target.capacity, quantity=entry.quantity, during=during
        ):
            continue  # still taken: no statement spent on it
        gate, candidate = _as_booker(entry, target, now)
        if (lapses := _screened(svc, gate, candidate)) is not None:
            if lapses:
                lapsed.append(entry.id)
            continue
        booker = _booker(candidate)
        if capped or booker in full:
            continue  # refused already in this promotion; the counts have only grown since
        try:
            terms = await admission.admit(svc, conn, gate, [candidate])
        except BookingRuleViolated:  # the booker limit (the rules were screened above)
            full.add(booker)
            continue
        except HoldLimitReached:
            capped = True
            continue
        hold = await _insert_hold(conn, entry, terms, now=now)
        if hold is None:
            continue
        busy.append(hold)
        marked = await repository.set_status(
            conn, entry_id=entry.id, status="promoted", now=now, reservation_id=hold.id
        )
        await repository.promoted_event(conn, tenant_id=entry.tenant_id, entry=marked)
        promoted.append(entry.id)
        holds.append(hold)
    await repository.lapse(conn, entry_ids=lapsed, now=now)
    return promoted, holds


def _screened(svc: Context, gate: admission.Gate, candidate: admission.Candidate) -> bool | None:
    """Admission's screen of the entry as a create (`admission.screen`): None when it
    passes, else whether the entry lapses (True: a refusal no wait heals: a length beyond
    the system's maximum, more units than the resource has, a start passed or too soon) or
    keeps waiting (False: a blackout, hours, the advance...)."""
    try:
        admission.screen(svc, gate, candidate)
    except InvalidInput:
        return True
    except BookingRuleViolated as refused:
        reasons = {v["reason"] for v in refused.extra.get("violations", [])}
        return any(r.value in reasons for r in _LAPSING)
    return None


def _booker(candidate: admission.Candidate) -> tuple[Any, ...]:
    """Whom, and for which period, the booker limit counts the candidate."""
    policy, zone = candidate.resource.policy, candidate.resource.zone
    who = enforce.booker_of(policy, candidate.owner, candidate.customer)
    return candidate.owner, who, enforce.booker_window(policy, zone, [candidate.start])


def _as_booker(
    entry: WaitingRow, target: admission.Target, now: datetime
) -> tuple[admission.Gate, admission.Candidate]:
    """The entry as the create of the booker who joined: admission judges it as that."""
    gate = admission.Gate(
        actor=Principal(entry.tenant_id, entry.created_by, Role(entry.role)),
        change=admission.Change.create,
        now=now,
        hold_seconds=entry.hold_seconds,
    )
    candidate = admission.Candidate(
        resource=target,
        start=entry.start_at,
        end=entry.end_at,
        owner=entry.created_by,
        customer=entry.customer,
        quantity=entry.quantity,
    )
    return gate, candidate


async def _insert_hold(
    conn: Conn, entry: WaitingRow, terms: admission.Terms, *, now: datetime
) -> ReservationRow | None:
    """The entry's hold, in a savepoint: a refusal by the guards undoes only this try."""
    try:
        async with conn.transaction():
            return await reservations.insert(
                conn,
                reservation_id=uuid7_beside(entry.resource_id),
                tenant_id=entry.tenant_id,
                resource_id=entry.resource_id,
                start=entry.start_at,
                end=entry.end_at,
                status=terms.status,
                quantity=entry.quantity,
                expires_at=terms.expires_at,
                customer=entry.customer,
                metadata={"waitlist_entry": str(entry.id)},
                created_by=entry.created_by,
                now=now,
                needs_approval=terms.needs_approval,
            )
    except (pg_errors.ExclusionViolation, pg_errors.CheckViolation):
        return None  # still taken (or before the history horizon): it keeps waiting
