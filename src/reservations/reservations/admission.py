"""Admission: the one gate every live reservation passes, however it is made or changed.

A direct create, each occurrence of a booking (one cluster or several), a reschedule or an
edit of customer or owner (`PATCH` of a reservation, a booking's move), a confirm, an
approval, a hold's extension and a waitlist promotion all ask the functions here, so a rule
added once holds on every path and a refusal reads the same on every path (422
`booking-rule-violated` with the same `reason` and `violations`). What is decided here:

- the system-wide maximum length (`RESERVATIONS_MAX_RESERVATION_SECONDS`);
- the resource's policy rules (hours, blackouts, grid, duration, notice, advance), and that
  no start lies in the past; admin keys may send `override_rules` to skip them all;
- the booker limit, counted for the row's *final* key and customer;
- the hold terms: held with an expiry, pending an admin's approval, or confirmed (`terms`),
  and a hold's extension: only a live hold, never shorter, within the hold's total life
  (`RESERVATIONS_HOLD_MAX_LIFE_SECONDS`);
- the tenant's cap on live holds;
- what an agent key may do (docs/agents.md): hold (never create confirmed), never confirm,
  approve or override rules; and its own cap on live holds (`check_agent_cap`), exact under
  races: counted under a transaction lock on the key.

It is split in two by the resource lock: `screen` is pure and runs before the lock (a
refusal then costs no lock and no write); `admit` counts what needs the locked rows (booker
limits, live holds) and settles the terms. The database constraint still decides overlaps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from reservations.catalog.repository import ResourceRow
from reservations.context import Context
from reservations.errors import (
    ApprovalRequired,
    Forbidden,
    HoldLimitReached,
    InvalidInput,
    ReservationNotHeld,
    ReservationNotLive,
)
from reservations.kit.db import Conn, Database, lock_resource
from reservations.kit.ids import lock_key
from reservations.kit.localtime import describe_instant
from reservations.policy import enforce, rules
from reservations.policy.model import Policy
from reservations.policy.rules import Violation
from reservations.reservations import repository
from reservations.reservations.rows import ReservationRow
from reservations.reservations.schemas import Status
from reservations.tenancy.service import Principal, Role


class Change(StrEnum):
    """What a write does to a live reservation."""

    create = "create"  # a new row: direct, an occurrence of a booking, a promotion
    reschedule = "reschedule"  # a new start or end (perhaps with a new customer)
    edit = "edit"  # a new customer, same range
    confirm = "confirm"  # held to confirmed
    approve = "approve"  # pending to confirmed, by an admin
    extend = "extend"  # a hold's new expiry (`hold_seconds` from now)


@dataclass(frozen=True, slots=True)
class Target:
    """The resource as admission sees it."""

    id: UUID
    capacity: int
    zone: str
    policy: Policy

    @classmethod
    def of(cls, row: ResourceRow) -> Target:
        return cls(
            id=row.id,
            capacity=row.capacity,
            zone=row.timezone,
            policy=enforce.policy_of(row.policy),
        )


@dataclass(frozen=True, slots=True)
class Current:
    """A live row that a change starts from."""

    start: datetime
    end: datetime
    status: str  # stored status: held or confirmed
    needs_approval: bool
    expires_at: datetime | None
    customer: str | None
    created_at: datetime | None = None  # a hold's life (its extensions) counts from here

    @classmethod
    def of(cls, row: ReservationRow) -> Current:
        return cls(
            start=row.start_at,
            end=row.end_at,
            status=row.status,
            needs_approval=row.needs_approval,
            expires_at=row.expires_at,
            customer=row.customer,
            created_at=row.created_at,
        )

    def same_terms(self, terms: Terms) -> bool:
        return (self.status, self.expires_at, self.needs_approval) == (
            terms.status.value,
            terms.expires_at,
            terms.needs_approval,
        )


@dataclass(frozen=True, slots=True)
class Candidate:
    """A live row as it would be after the write."""

    resource: Target
    start: datetime
    end: datetime
    owner: UUID  # the key the row belongs to (its booker limit counts by it)
    customer: str | None
    quantity: int = 1
    current: Current | None = None  # the row before a change; None for a new row

    @classmethod
    def as_is(cls, target: Target, row: ReservationRow) -> Candidate:
        """A live row whose range and customer stay (a confirm, an approval)."""
        return cls.moved(target, row, start=row.start_at, end=row.end_at, customer=row.customer)

    @classmethod
    def moved(
        cls,
        target: Target,
        row: ReservationRow,
        *,
        start: datetime,
        end: datetime,
        customer: str | None,
    ) -> Candidate:
        """A live row with a new range and its (new or kept) customer."""
        return cls(
            resource=target,
            start=start,
            end=end,
            owner=row.created_by,
            customer=customer,
            quantity=row.quantity,
            current=Current.of(row),
        )


@dataclass(frozen=True, slots=True)
class Terms:
    """How an admitted row is stored."""

    status: Status  # held or confirmed
    expires_at: datetime | None
    needs_approval: bool

    def columns(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "expires_at": self.expires_at,
            "needs_approval": self.needs_approval,
        }


@dataclass(frozen=True, slots=True)
class Gate:
    """Who asks for what: the same for every candidate of one request."""

    actor: Principal
    change: Change
    now: datetime
    override: bool = False
    hold_seconds: int | None = None
    hold_max_life: timedelta | None = None  # an extension's bound on a hold's total life

    def __post_init__(self) -> None:
        if self.override and self.actor.role is not Role.admin:
            raise Forbidden("Only admin keys may send override_rules=true.")
        check_agent(self.actor, self.change, hold_seconds=self.hold_seconds)


def check_agent(actor: Principal, change: Change, *, hold_seconds: int | None = None) -> None:
    """An agent key holds; a person confirms. Refuses (403) an agent's confirm or approval,
    and a create that would be confirmed at once (no `hold_seconds`)."""
    if actor.role is not Role.agent:
        return
    if change in (Change.confirm, Change.approve):
        raise Forbidden(
            "Agent keys may not confirm or approve: send the hold's confirm link to a person, "
            "who confirms it with a booker or admin key."
        )
    if change is Change.create and hold_seconds is None:
        raise Forbidden("Agent keys may only hold: send hold_seconds (a person confirms the hold).")


def check_length(svc: Context, start: datetime, end: datetime) -> None:
    """The system-wide bounds on a range, whoever asks."""
    if end <= start:
        raise InvalidInput(
            "end must be after start.",
            errors=[{"field": "end", "in": "body", "message": "must be after start"}],
        )
    if end - start > svc.settings.max_reservation:
        raise InvalidInput(
            f"A reservation may last at most {svc.settings.max_reservation}; "
            "split longer bookings into several reservations.",
            errors=[{"field": "end", "in": "body", "message": "reservation too long"}],
        )


def check_hold_seconds(svc: Context, hold_seconds: int | None) -> None:
    if hold_seconds is not None and hold_seconds > svc.settings.max_hold_seconds:
        raise InvalidInput(
            f"hold_seconds may be at most {svc.settings.max_hold_seconds}.",
            errors=[{"field": "hold_seconds", "in": "body", "message": "too long"}],
        )


def check_quantity(quantity: int, capacity: int) -> None:
    if quantity > capacity:
        raise InvalidInput(
            f"quantity {quantity} exceeds the resource's capacity of {capacity}.",
            errors=[{"field": "quantity", "in": "body", "message": f"at most {capacity}"}],
        )


# Changes of a live row's terms alone: a hold is a promise of its range until it expires, so
# rules changed since bind new rows and new ranges, not these.
_KEEPS_RANGE = (Change.confirm, Change.approve, Change.extend)


def violations(gate: Gate, candidate: Candidate) -> list[Violation]:
    """The policy rules the candidate breaks (pure). Confirm and approve ask nothing here:
    a hold is a promise of its range until it expires, and policy changes bind new rows
    and changes of range, not the holds already given."""
    if gate.override or gate.change in _KEEPS_RANGE:
        return []
    current = candidate.current
    if gate.change is Change.edit and current is not None:
        return []  # same range: only the counts (booker limit) can object
    new_start = current is None or candidate.start != current.start
    target = candidate.resource
    return rules.check(
        target.policy,
        target.zone,
        start=candidate.start,
        end=candidate.end,
        now=gate.now,
        new_start=new_start,
    )


def screen(svc: Context, gate: Gate, candidate: Candidate) -> None:
    """The checks that need no database: length, quantity and the policy's rules. Raises
    the refusal a direct create would get."""
    if gate.change in (Change.create, Change.reschedule):
        check_length(svc, candidate.start, candidate.end)
        check_quantity(candidate.quantity, candidate.resource.capacity)
    if found := violations(gate, candidate):
        raise enforce.refuse(found)


def needs_approval(gate: Gate, candidates: Sequence[Candidate]) -> bool:
    """Whether an admin must approve what this request makes of the rows: the resource asks
    for approval and the caller is not an admin."""
    if gate.actor.role is Role.admin:
        return False
    return any(c.resource.policy.requires_approval for c in candidates)


def terms(gate: Gate, candidates: Sequence[Candidate]) -> Terms:
    """Held, pending or confirmed, with the expiry: the one place hold terms are decided.

    - create: `hold_seconds` makes a hold; an approval resource (non-admin caller) makes a
      pending hold for the shortest approval window; otherwise confirmed.
    - reschedule or edit by a non-admin on an approval resource: the row goes back to
      pending (an admin approved the old booking, not this one); a row already pending keeps
      its expiry. Otherwise the row keeps its status and expiry.
    - confirm: refused (409 approval-required) while an admin must decide; else confirmed.
    - approve: confirmed (admins only; the caller checks the row is pending).
    - extend: `extended`.
    """
    now = gate.now
    approval = needs_approval(gate, candidates)
    windows = [
        c.resource.policy.approval_window for c in candidates if c.resource.policy.requires_approval
    ]
    if gate.change is Change.create:
        if approval:
            return Terms(Status.held, now + min(windows), needs_approval=True)
        if gate.hold_seconds is not None:
            return Terms(Status.held, now + timedelta(seconds=gate.hold_seconds), False)
        return Terms(Status.confirmed, None, False)
    current = candidates[0].current
    assert current is not None
    zone = candidates[0].resource.zone  # where the times a refusal names are also said
    if gate.change is Change.approve:
        return Terms(Status.confirmed, None, False)
    if gate.change is Change.extend:
        return extended(gate, current, zone)
    if gate.change is Change.confirm:
        if current.needs_approval and gate.actor.role is not Role.admin:
            until = describe_instant(current.expires_at, zone) if current.expires_at else "then"
            raise ApprovalRequired(
                f"An admin must approve this booking; it keeps its range until {until}."
            )
        if approval:
            raise ApprovalRequired(
                "This resource now needs an admin's approval: an admin may confirm this hold"
                " (or cancel it and book again to ask for approval)."
            )
        return Terms(Status.confirmed, None, False)
    if approval and not current.needs_approval:
        return Terms(Status.held, now + min(windows), needs_approval=True)
    return Terms(Status(current.status), current.expires_at, current.needs_approval)


def extended(gate: Gate, current: Current, zone: str | None) -> Terms:
    """A live hold's terms after an extension: expiring `hold_seconds` from now, never
    earlier than it did, and refused (422) past `hold_max_life` from the hold's creation.
    A confirmed or pending row is no hold to extend (409 reservation-not-held), a cancelled
    or declined one is not live (409); the caller refuses an expired hold first."""
    if current.status not in (Status.held, Status.confirmed):
        raise ReservationNotLive(f"The reservation is {current.status}; make a new one.")
    if current.status != Status.held or current.needs_approval:
        state = "pending an admin's approval" if current.needs_approval else current.status
        raise ReservationNotHeld(f"The reservation is {state}; only a hold can be extended.")
    assert current.expires_at is not None  # a held row has an expiry
    assert gate.hold_seconds is not None  # an extension asks for one
    wanted = gate.now + timedelta(seconds=gate.hold_seconds)
    if wanted <= current.expires_at:
        return Terms(Status.held, current.expires_at, False)  # an extension never shortens
    life = gate.hold_max_life
    if life is not None and current.created_at is not None and wanted > current.created_at + life:
        latest = current.created_at + life
        most = max(0, int((latest - gate.now).total_seconds()))
        raise InvalidInput(
            f"A hold may live at most {int(life.total_seconds())} seconds from its creation"
            f" (RESERVATIONS_HOLD_MAX_LIFE_SECONDS): this one can expire at"
            f" {describe_instant(latest, zone)}"
            f" at the latest, so hold_seconds may be at most {most} now.",
            errors=[{"field": "hold_seconds", "in": "body", "message": f"at most {most}"}],
        )
    return Terms(Status.held, wanted, False)


def new_holds(candidates: Sequence[Candidate], terms_: Terms) -> int:
    """How many live holds the write adds (rows that were not holds before)."""
    if terms_.status is not Status.held:
        return 0
    return sum(1 for c in candidates if c.current is None or c.current.status != Status.held)


def reads_locked(gate: Gate, candidates: Sequence[Candidate]) -> bool:
    """Whether `admit` reads rows that only the resources' locks keep still (the booker's
    reservations, for a booker limit; an agent's holds, under its key's lock, which comes
    after the resources' locks): the caller then takes the locks before it."""
    if gate.actor.role is Role.agent and gate.change is Change.create:
        return True
    if gate.override or gate.change in _KEEPS_RANGE:
        return False
    return any(c.resource.policy.booker_limit is not None for c in candidates)


async def booker_refusals(
    conn: Conn, gate: Gate, candidates: Sequence[Candidate]
) -> dict[int, Violation]:
    """The candidates (by index) that the booker limit refuses, counted for each row's final
    key and customer against the live rows read under the resources' locks. Rows that move
    no longer count at their old start."""
    if gate.override or gate.change in _KEEPS_RANGE:
        return {}
    groups: dict[tuple[UUID, UUID, str | None], list[int]] = {}
    for i, c in enumerate(candidates):
        policy = c.resource.policy
        if policy.booker_limit is None:
            continue
        who = enforce.booker_of(policy, c.owner, c.customer)
        groups.setdefault((c.resource.id, c.owner, who), []).append(i)
    refused: dict[int, Violation] = {}
    for (_, owner, who), indexes in groups.items():
        first = candidates[indexes[0]]
        policy, zone = first.resource.policy, first.resource.zone
        starts = [candidates[i].start for i in indexes]
        existing = await booker_existing(
            conn,
            policy,
            zone,
            resource_id=first.resource.id,
            api_key_id=owner,
            customer=first.customer,
            starts=starts,
            now=gate.now,
        )
        for i in indexes:  # a row counted for this booker before no longer counts there
            current = candidates[i].current
            was = (
                enforce.booker_of(policy, owner, current.customer) if current is not None else None
            )
            if current is not None and was == who and current.start in existing:
                existing.remove(current.start)
        over = set(enforce.over_limit(policy, zone, existing, starts))
        for i in indexes:
            if candidates[i].start in over:
                refused[i] = enforce.limit_violation(policy)
    return refused


async def check_hold_cap(
    svc: Context,
    conn: Conn,
    actor: Principal,
    *,
    new: int,
    now: datetime,
    here: Database | None = None,
) -> None:
    """The per-tenant cap on live holds. Counted in the write's transaction without a
    tenant-wide lock (which would serialize all of a tenant's bookings): racing requests can
    pass the count together, so the cap is exact up to the number of concurrent holds. With
    shards, the other clusters' holds are counted too (`here`: the cluster of `conn`,
    default `svc.db`), outside this transaction: the cap is then exact up to the holds made
    meanwhile on other clusters."""
    if new <= 0:
        return
    if actor.role is Role.agent:
        await check_agent_cap(svc, conn, actor, new=new, now=now)
    limit = svc.settings.max_live_holds_per_tenant
    count, first = await repository.live_holds(conn, tenant_id=actor.tenant_id, now=now)
    if svc.shards.sharded:
        mine = (here or svc.db).name
        for db in svc.shards.databases():
            if db.name == mine:
                continue
            async with db.connection() as other:
                more, soonest = await repository.live_holds(
                    other, tenant_id=actor.tenant_id, now=now
                )
            count += more
            if soonest is not None and (first is None or soonest < first):
                first = soonest
    if count + new > limit:
        wait = max(1, int((first - now).total_seconds()) + 1) if first is not None else 1
        raise HoldLimitReached(limit=limit, retry_after=wait)


async def check_agent_cap(
    svc: Context, conn: Conn, actor: Principal, *, new: int, now: datetime
) -> None:
    """An agent key's cap on its live holds (RESERVATIONS_AGENT_MAX_LIVE_HOLDS). The key's
    transaction lock, taken after the resources' locks (the same order everywhere), makes
    the count exact on its cluster: two holds of one key on different resources wait for
    each other here, so racing holds cannot pass the cap together."""
    limit = svc.settings.agent_max_live_holds
    await lock_resource(conn, lock_key(actor.api_key_id))
    count, first = await repository.key_live_holds(conn, api_key_id=actor.api_key_id, now=now)
    if count + new > limit:
        wait = max(1, int((first - now).total_seconds()) + 1) if first is not None else 1
        refused = HoldLimitReached(limit=limit, retry_after=wait)
        refused.detail = (
            f"This agent key already has {count} live holds, the most allowed "
            f"(RESERVATIONS_AGENT_MAX_LIVE_HOLDS={limit}). Ask a person to confirm some, cancel "
            f"some, or retry after {wait} s when the next one expires."
        )
        refused.extra = {"max_live_holds": limit, "scope": "api-key"}
        raise refused


async def admit(
    svc: Context,
    conn: Conn,
    gate: Gate,
    candidates: Sequence[Candidate],
    *,
    here: Database | None = None,
) -> Terms:
    """The locked half of admission for rows written together, all or none: booker limits,
    hold terms, the tenant's hold cap. Call with the resources' locks held, after `screen`
    of each candidate (or the caller's own per-candidate report of the same checks)."""
    refused = await booker_refusals(conn, gate, candidates)
    if refused:
        raise enforce.refuse([refused[min(refused)]])
    return await settle(svc, conn, gate, candidates, here=here)


async def settle_each(
    svc: Context, conn: Conn, gate: Gate, candidates: Sequence[Candidate]
) -> list[Terms]:
    """The terms of changed rows, each from its own current state (a booking's move or
    confirm), and the hold cap the rows that become holds must fit."""
    settled = [terms(gate, [c]) for c in candidates]
    new = sum(new_holds([c], t) for c, t in zip(candidates, settled, strict=True))
    await check_hold_cap(svc, conn, gate.actor, new=new, now=gate.now)
    return settled


async def settle(
    svc: Context,
    conn: Conn,
    gate: Gate,
    candidates: Sequence[Candidate],
    *,
    here: Database | None = None,
) -> Terms:
    """The terms of rows written together, and the hold cap they must fit. For a booking,
    after its per-occurrence report of `violations` and `booker_refusals`."""
    settled = terms(gate, candidates)
    await check_hold_cap(
        svc, conn, gate.actor, new=new_holds(candidates, settled), now=gate.now, here=here
    )
    return settled


async def booker_existing(
    conn: Conn,
    policy: Policy,
    zone: str,
    *,
    resource_id: UUID,
    api_key_id: UUID,
    customer: str | None,
    starts: Sequence[datetime],
    now: datetime,
) -> list[datetime]:
    """Starts of the booker's live reservations in the periods the given starts fall in
    (policy/enforce.py `booker_window`): the data the booker limit is decided on."""
    window = enforce.booker_window(policy, zone, starts)
    if window is None:
        return []
    return await repository.booker_starts(
        conn,
        resource_id=resource_id,
        created_by=api_key_id,
        customer=enforce.booker_of(policy, api_key_id, customer),
        start=window[0],
        end=window[1],
        now=now,
    )
