"""Availability use cases: read-only, on one autocommit connection; the pure work is in
slots.compute, fed with the rows it needs."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from reservations.availability.schemas import (
    MAX_SEARCH_RESOURCES,
    MAX_WINDOW,
    AvailabilityRead,
    ResourceBrief,
    SearchHit,
    SearchPage,
    SearchRequest,
    SlotRead,
    SpanRead,
    UnavailableRead,
)
from reservations.availability.slots import Availability, compute
from reservations.catalog import repository as resources
from reservations.catalog.repository import ResourceRow
from reservations.context import Context
from reservations.errors import InvalidInput, NotFound
from reservations.history import repository as history
from reservations.kit.db import Conn
from reservations.kit.pagination import decode_instant_cursor, encode_cursor
from reservations.kit.spans import Span
from reservations.policy import enforce, rules
from reservations.policy.model import Policy
from reservations.policy.usage import Busy, Usage
from reservations.reservations import admission
from reservations.reservations import repository as reservations
from reservations.reservations.rows import RangeRow
from reservations.tenancy.service import Principal


def _window_errors(start: datetime, end: datetime) -> None:
    if end <= start:
        raise InvalidInput(
            "'to' must be after 'from'.",
            errors=[{"field": "to", "in": "query", "message": "must be after from"}],
        )
    if end - start > MAX_WINDOW:
        raise InvalidInput(
            f"The window may span at most {MAX_WINDOW.days} days; ask for several windows.",
            errors=[{"field": "to", "in": "query", "message": "window too long"}],
        )


def _bookable_length(svc: Context, duration: timedelta | None, where: str) -> None:
    """A slot longer than any reservation may be could never be booked: refuse the ask."""
    if duration is not None and duration > svc.settings.max_reservation:
        raise InvalidInput(
            f"duration may be at most {svc.settings.max_reservation}, the longest reservation.",
            errors=[{"field": "duration", "in": where, "message": "too long"}],
        )


def _busy(rows: list[RangeRow]) -> list[Busy]:
    return [Busy(r.during_start, r.during_end, r.quantity) for r in rows]


async def _booker_blocked(
    conn: Conn,
    policy: Policy,
    zone: str,
    *,
    resource_id: UUID,
    caller: Principal,
    customer: str | None,
    window: Span,
    now: datetime,
) -> list[Span]:
    limit = policy.booker_limit
    if limit is None:
        return []
    existing = await admission.booker_existing(
        conn,
        policy,
        zone,
        resource_id=resource_id,
        api_key_id=caller.api_key_id,
        customer=customer,
        starts=list(window),
        now=now,
    )
    if limit.period is None:
        return [window] if len(existing) >= limit.max_live else []
    return enforce.blocked_periods(policy, zone, existing)


async def for_resource(
    svc: Context,
    caller: Principal,
    resource_id: UUID,
    *,
    window_start: datetime,
    window_end: datetime,
    duration: timedelta | None,
    quantity: int,
    step_minutes: int,
    customer: str | None,
    explain: bool,
) -> AvailabilityRead:
    _ask_errors(svc, window_start, window_end, duration)
    now = svc.clock.now()

    async def read(
        conn: Conn,
    ) -> tuple[ResourceRow | None, list[RangeRow], list[Span], datetime | None]:
        return await _resource_rows(
            conn, caller, resource_id, window=(window_start, window_end), customer=customer, now=now
        )

    row, busy, blocked, history_before = await svc.at(resource_id).db.read(read)
    if row is None:
        raise NotFound(f"No resource {resource_id} in your tenant.")
    policy, zone = enforce.policy_of(row.policy), row.timezone
    if duration is not None and (v := rules.duration_violation(policy, duration)) is not None:
        raise enforce.refuse([v])
    result = compute(
        policy,
        zone,
        row.capacity,
        _busy(busy),
        window_start=window_start,
        window_end=window_end,
        duration=duration,
        quantity=quantity,
        now=now,
        step_minutes=step_minutes,
        booker_blocked=blocked,
        explain=explain,
        history_before=history_before,
    )
    return _read(row, result, window_start, window_end, duration, quantity, explain)


def _ask_errors(
    svc: Context, window_start: datetime, window_end: datetime, duration: timedelta | None
) -> None:
    """Whether one resource's availability may be asked for: the window, then the duration."""
    _window_errors(window_start, window_end)
    if duration is not None and duration <= timedelta(0):
        raise InvalidInput(
            "duration must be positive, such as PT1H.",
            errors=[{"field": "duration", "in": "query", "message": "must be positive"}],
        )
    _bookable_length(svc, duration, "query")


async def _resource_rows(
    conn: Conn,
    caller: Principal,
    resource_id: UUID,
    *,
    window: Span,
    customer: str | None,
    now: datetime,
) -> tuple[ResourceRow | None, list[RangeRow], list[Span], datetime | None]:
    """What one resource's availability is computed from: its row (None when the caller's
    tenant has no such resource), the live reservations around the window, the spans the
    booker may not start in, and the history horizon."""
    window_start, window_end = window
    row = await resources.get(conn, tenant_id=caller.tenant_id, resource_id=resource_id)
    if row is None:
        return None, [], [], None
    policy = enforce.policy_of(row.policy)
    lo, hi = policy.guarded(window_start, window_end)
    busy = await reservations.busy_between(
        conn, resource_ids=[resource_id], start=lo, end=hi, now=now
    )
    blocked = await _booker_blocked(
        conn,
        policy,
        row.timezone,
        resource_id=resource_id,
        caller=caller,
        customer=customer,
        window=window,
        now=now,
    )
    return row, busy, blocked, await history.horizon(conn)


def _read(
    row: ResourceRow,
    result: Availability,
    window_start: datetime,
    window_end: datetime,
    duration: timedelta | None,
    quantity: int,
    explain: bool,
) -> AvailabilityRead:
    return AvailabilityRead(
        resource_id=row.id,
        timezone=row.timezone,
        capacity=row.capacity,
        from_=window_start,
        to=window_end,
        duration=duration,
        quantity=quantity,
        slots=[SlotRead(start=s.start, end=s.end, remaining=s.remaining) for s in result.slots]
        if duration is not None
        else [],
        free=[SpanRead(start=a, end=b) for a, b in result.free],
        unavailable=[
            UnavailableRead(start=u.start, end=u.end, reason=u.reason, detail=u.detail)
            for u in result.unavailable
        ]
        if explain
        else None,
    )


def _earliest(
    row: ResourceRow,
    policy: Policy,
    busy: list[Busy],
    body: SearchRequest,
    now: datetime,
    history_before: datetime | None,
) -> SlotRead | None:
    zone = row.timezone
    if body.quantity > row.capacity:
        return None
    if body.duration is None:
        # Free for the whole window: the window itself must be a bookable range.
        if rules.check(policy, zone, start=body.from_, end=body.to, now=now):
            return None
        during = policy.guarded(body.from_, body.to)
        if history_before is not None and during[0] < history_before:
            return None
        peak = Usage(busy, *during).peak(*during)
        if peak + body.quantity > row.capacity:
            return None
        return SlotRead(start=body.from_, end=body.to, remaining=row.capacity - peak)
    if rules.duration_violation(policy, body.duration) is not None:
        return None
    found = compute(
        policy,
        zone,
        row.capacity,
        busy,
        window_start=body.from_,
        window_end=body.to,
        duration=body.duration,
        quantity=body.quantity,
        now=now,
        step_minutes=body.step_minutes,
        max_slots=1,
        history_before=history_before,
    )
    if not found.slots:
        return None
    s = found.slots[0]
    return SlotRead(start=s.start, end=s.end, remaining=s.remaining)


# One shard's part of a search: its candidate rows (the first MAX_SEARCH_RESOURCES by id), their
# policies, their live reservations, the shard's history horizon, and whether none were left out.
_Candidates = tuple[list[ResourceRow], dict[UUID, Policy], list[RangeRow], datetime | None, bool]


async def search(svc: Context, caller: Principal, body: SearchRequest) -> SearchPage:
    _bookable_length(svc, body.duration, "body")
    after: tuple[datetime, UUID] | None = None
    if body.cursor is not None:
        after = decode_instant_cursor(body.cursor)
    now = svc.clock.now()

    async def read(conn: Conn) -> _Candidates:
        return await _candidates(conn, caller, body, now)

    # Each shard's candidates, with its own history horizon; the first MAX_SEARCH_RESOURCES
    # by id across all of them, as on one database.
    shards = await svc.shards.gather(read)
    considered = sorted(r.id for part in shards for r in part[0])[:MAX_SEARCH_RESOURCES]
    complete = all(part[4] for part in shards) and sum(len(p[0]) for p in shards) <= len(considered)
    hits = _hits(shards, set(considered), body, now=now, after=after)
    hits.sort(key=lambda h: (h.earliest.start, h.resource.id))
    page = hits[: body.limit]
    next_cursor = (
        encode_cursor(page[-1].earliest.start, page[-1].resource.id)
        if len(hits) > body.limit
        else None
    )
    return SearchPage(items=page, next_cursor=next_cursor, complete=complete)


async def _candidates(
    conn: Conn, caller: Principal, body: SearchRequest, now: datetime
) -> _Candidates:
    """Which of one shard's resources a search considers, and the rows that decide their fit."""
    rows = await resources.candidates(
        conn,
        tenant_id=caller.tenant_id,
        tags=body.tags,
        min_capacity=max(body.min_capacity, body.quantity),
        limit=MAX_SEARCH_RESOURCES + 1,  # one more tells whether any were left out
    )
    complete = len(rows) <= MAX_SEARCH_RESOURCES
    rows = rows[:MAX_SEARCH_RESOURCES]
    policies = {r.id: enforce.policy_of(r.policy) for r in rows}
    if not rows:
        return rows, policies, [], None, complete
    zero = timedelta(0)
    busy_rows = await reservations.busy_between(
        conn,
        resource_ids=list(policies),
        start=body.from_ - max((p.buffer_before for p in policies.values()), default=zero),
        end=body.to + max((p.buffer_after for p in policies.values()), default=zero),
        now=now,
    )
    return rows, policies, busy_rows, await history.horizon(conn), complete


def _hits(
    shards: list[_Candidates],
    keep: set[UUID],
    body: SearchRequest,
    *,
    now: datetime,
    after: tuple[datetime, UUID] | None,
) -> list[SearchHit]:
    """Which kept candidates are hits: those that fit the ask, starting after the cursor."""
    hits: list[SearchHit] = []
    for rows, policies, busy_rows, history_before, _ in shards:
        by_resource: dict[UUID, list[Busy]] = {}
        for b in busy_rows:
            by_resource.setdefault(b.resource_id, []).append(
                Busy(b.during_start, b.during_end, b.quantity)
            )
        for row in rows:
            if row.id not in keep:
                continue
            busy = by_resource.get(row.id, [])
            earliest = _earliest(row, policies[row.id], busy, body, now, history_before)
            if earliest is not None and (after is None or (earliest.start, row.id) > after):
                hits.append(
                    SearchHit(
                        resource=ResourceBrief.model_validate(row, from_attributes=True),
                        earliest=earliest,
                    )
                )
    return hits
