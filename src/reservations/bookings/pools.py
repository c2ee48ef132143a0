"""A booking whose item names a pool (docs/pools.md): a series or a group in which one item is
"any free resource of these".

- `same_resource: true`, or a single occurrence: the pool's resources are tried one after
  the other in the strategy's order, each as a booking of that resource (service.create:
  its locks, admission and the constraint, all or nothing); the first that takes the whole
  booking wins, and the 409 comes once every one was tried, naming why each refused.
- `same_resource: false` with several occurrences: each occurrence may land on another
  resource. One transaction locks the item's fixed resources and the whole pool (in lock
  order, as any booking), evaluates every occurrence on every resource of the pool
  (evaluation.evaluate: rules, overlaps, booker limits), gives each occurrence the first
  resource in the strategy's order that takes it, and books them as one booking; `mode`
  decides what happens to an occurrence no resource takes. Its resources must live on one
  database cluster.
"""

from __future__ import annotations

from dataclasses import replace
from uuid import UUID

from reservations.availability_map import store as availability_map
from reservations.bookings import records, service
from reservations.bookings.evaluation import Evaluation, Series, booked, evaluate, occurrences_of
from reservations.bookings.reply import booking_reply
from reservations.bookings.schemas import BookingCreate, Mode, ResourceUnits
from reservations.catalog import repository as resource_repo
from reservations.catalog.repository import ResourceRow
from reservations.context import Context
from reservations.errors import DomainError, InvalidInput
from reservations.kit.idempotency import Idempotency, Reply, claim, record
from reservations.kit.ids import uuid7_beside
from reservations.reservations import admission, metrics
from reservations.reservations import pools as reservation_pools
from reservations.reservations.pools import REFUSALS
from reservations.reservations.service import check_override
from reservations.tenancy.service import Principal


async def create(
    svc: Context, caller: Principal, body: BookingCreate, idem: Idempotency | None
) -> Reply:
    index, units = next((i, u) for i, u in enumerate(body.resources) if u.pool is not None)
    assert units.pool is not None
    check_override(caller, body.override_rules)
    admission.check_length(svc, body.start, body.end)
    admission.check_hold_seconds(svc, body.hold_seconds)
    fixed = {u.resource for u in body.resources if u.pool is None}
    members = [
        m
        for m in await reservation_pools.resolve(svc, caller, units.pool, quantity=units.quantity)
        if m.id not in fixed
    ]
    if not members:
        raise InvalidInput(
            "The pool's resources are all named by other items of the booking.",
            errors=[{"field": f"resources.{index}.pool", "in": "body", "message": "empty"}],
        )
    order = await reservation_pools.ordered(
        svc, caller, units.pool, members, start=body.start, end=body.end
    )
    zone = body.timezone or order[0].timezone
    occurrences = await occurrences_of(body, zone)
    if not body.same_resource and len(occurrences) > 1:
        return await _spread(svc, caller, body, idem, index, order, Series(zone, occurrences))
    async with reservation_pools.guarded(svc, idem, members) as replay:
        if replay is not None:
            return replay
        quiet = replace(idem, keep_refusals=False) if idem is not None else None
        refusals: list[tuple[ResourceRow, DomainError]] = []
        for resource in order:
            try:
                return await service.create(svc, caller, _on(body, index, resource.id), quiet)
            except REFUSALS as error:
                refusals.append((resource, error))
        raise reservation_pools.exhausted(refusals, size=len(members))


def _on(body: BookingCreate, index: int, resource_id: UUID) -> BookingCreate:
    """The booking with its pool item on one resource."""
    units = body.resources[index]
    chosen = ResourceUnits(resource_id=resource_id, quantity=units.quantity)
    resources = [chosen if i == index else u for i, u in enumerate(body.resources)]
    return body.model_copy(update={"resources": resources})


async def _spread(
    svc: Context,
    caller: Principal,
    body: BookingCreate,
    idem: Idempotency | None,
    index: int,
    order: list[ResourceRow],
    series: Series,
) -> Reply:
    """Each occurrence on the first resource of the pool (in `order`) that takes it."""
    fixed = [u.resource for u in body.resources if u.pool is None]
    pool_ids = [r.id for r in order]
    if len(svc.shards.group([*fixed, *pool_ids])) > 1:
        raise InvalidInput(
            "This pool's resources live on several database clusters: send "
            "same_resource=true to book every occurrence on one of them.",
            errors=[{"field": "same_resource", "in": "body", "message": "needs true here"}],
        )
    occurrences = series.occurrences
    now = svc.clock.now()
    svc = svc.at(pool_ids[0], caller)
    async with svc.db.unit() as unit:
        conn = unit.conn
        if replay := await claim(idem, conn, now=now, ttl=svc.settings.idempotency_ttl):
            return replay
        await service.lock_all(conn, [*fixed, *pool_ids])
        found = {
            r.id: r
            for r in await resource_repo.get_many(
                conn, tenant_id=caller.tenant_id, resource_ids=[*fixed, *pool_ids]
            )
        }
        gate = records.create_gate(caller, body, now)
        merged = Evaluation(occurrences)
        placed: dict[int, list[admission.Candidate]] = {}
        for rid in pool_ids:
            if rid not in found:
                continue  # archived meanwhile
            one = _on(body, index, rid)
            targets = records.targets_of(found, one, occurrences)
            evaluation = await evaluate(conn, gate, one, targets, occurrences)
            merged.expired += evaluation.expired
            for i in evaluation.ok():
                if i not in placed:
                    placed[i] = booked(gate, one, targets, occurrences, [i])
            for i, reasons in enumerate(evaluation.reasons):
                for reason in reasons:
                    merged.add(i, reason)
        for i in placed:
            merged.reasons[i] = []
        ok = sorted(placed)
        if not ok or (len(ok) < len(occurrences) and body.mode is Mode.all_or_nothing):
            raise merged.refusal()
        candidates = [c for i in ok for c in placed[i]]
        terms = await admission.settle(svc, conn, gate, candidates)
        booking = await records.insert_booking(
            conn, caller, body, booking_id=uuid7_beside(pool_ids[0]), zone=series.zone, now=now
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
        reply = booking_reply(booking, rows, now, status=201, report=merged.report())
        await record(idem, conn, reply, now=now)
        svc.map_after_commit(
            unit,
            availability_map.changes(rows, live=True)
            + availability_map.changes(merged.expired, live=False),
        )
    metrics.RESERVATIONS_CREATED.labels(rows[0].status).inc(len(rows))
    return reply
