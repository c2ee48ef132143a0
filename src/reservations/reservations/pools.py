"""Create a reservation on any free resource of a pool (docs/pools.md).

The pick and the booking are one request, and every resource is booked exactly as a direct
create books it (service.create: the availability map and the lock-free pre-check skip a
resource that is surely busy, then the resource's lock, admission and the exclusion
constraint decide). The resources are tried one after the other in the strategy's order
(pool_model.tried_order) until one takes the booking; a 409 `pool-exhausted` (or, when each
refused by its rules, the 422 a direct create gets) comes only once every one was tried, and
names why each refused.

An Idempotency-Key is claimed in each resource's transaction, as a direct create claims it
(so a retry finds the stored reply on the first resource it tries), but a resource's refusal
is not kept under it: it is not the request's outcome. When the pool spans database
clusters, a retry may start on another cluster (round_robin moves on), so the clusters are
asked for a stored reply first, and a guard lock on the catalog keeps two requests with the
same key apart for the whole request.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

import orjson

from reservations.catalog import repository as catalog
from reservations.catalog.repository import ResourceRow
from reservations.context import Context
from reservations.errors import (
    BookingRuleViolated,
    DomainError,
    IdempotencyKeyInUse,
    InvalidInput,
    NotFound,
    PoolExhausted,
    ReservationConflict,
)
from reservations.kit.db import Conn
from reservations.kit.idempotency import Idempotency, Reply
from reservations.reservations import admission, pool_repository, repository, service
from reservations.reservations.pool_model import (
    LEAST_BUSY_WINDOW,
    MAX_POOL,
    Pool,
    PoolPick,
    PoolStrategy,
    pool_key,
    tried_order,
)
from reservations.reservations.schemas import ReservationCreate
from reservations.tenancy.service import Principal

# What a resource's refusal may be; anything else (a quota, a key in use, a shard moving)
# is the request's and ends it at once.
REFUSALS = (ReservationConflict, BookingRuleViolated, NotFound)


async def create(
    svc: Context, caller: Principal, body: ReservationCreate, idem: Idempotency | None
) -> Reply:
    pool = body.pool
    assert pool is not None
    service.check_override(caller, body.override_rules)
    admission.check_length(svc, body.start, body.end)
    admission.check_hold_seconds(svc, body.hold_seconds)
    members = await resolve(svc, caller, pool, quantity=body.quantity)
    async with guarded(svc, idem, members) as replay:
        if replay is not None:
            return replay
        order = await ordered(svc, caller, pool, members, start=body.start, end=body.end)
        quiet = replace(idem, keep_refusals=False) if idem is not None else None
        refusals: list[tuple[ResourceRow, DomainError]] = []
        for resource in order:
            one = body.model_copy(update={"resource_id": resource.id, "pool": None})
            pick = PoolPick(strategy=pool.strategy, size=len(members), tried=len(refusals) + 1)
            try:
                return await service.create(svc, caller, one, quiet, shape=partial(_noted, pick))
            except REFUSALS as error:
                refusals.append((resource, error))
        raise exhausted(refusals, size=len(members))


async def resolve(
    svc: Context, caller: Principal, pool: Pool, *, quantity: int = 1
) -> list[ResourceRow]:
    """The pool's live resources on every cluster: 422 when none match, or more than
    MAX_POOL (the work a create may do is bounded by it)."""

    async def read(conn: Conn) -> list[ResourceRow]:
        return await catalog.members(
            conn,
            tenant_id=caller.tenant_id,
            tags=pool.tags,
            resource_ids=pool.resource_ids,
            min_capacity=max(pool.min_capacity, quantity),
            limit=MAX_POOL + 1,
        )

    members = [r for part in await svc.shards.gather(read) for r in part]
    if len(members) > MAX_POOL:
        raise InvalidInput(
            f"The pool matches more than {MAX_POOL} resources; narrow it with more tags, "
            "resource_ids or min_capacity.",
            errors=[{"field": "pool", "in": "body", "message": f"at most {MAX_POOL} resources"}],
        )
    if not members:
        raise InvalidInput(
            "No resource of your tenant is in this pool (with all its tags, among its "
            "resource_ids, with at least its min_capacity and the quantity asked).",
            errors=[{"field": "pool", "in": "body", "message": "matches no resource"}],
        )
    return members


async def ordered(
    svc: Context,
    caller: Principal,
    pool: Pool,
    members: Sequence[ResourceRow],
    *,
    start: datetime,
    end: datetime,
) -> list[ResourceRow]:
    """The order the pool's strategy tries `members` in; round_robin moves the pool's turn
    on (in the catalog, its own transaction), least_busy reads the booked time around the
    slot on each cluster."""
    if pool.strategy is PoolStrategy.round_robin:
        async with svc.shards.catalog.transaction() as conn:
            turn = await pool_repository.next_turn(
                conn, tenant_id=caller.tenant_id, pool_key=pool_key(pool), now=svc.clock.now()
            )
        return tried_order(pool, members, turn=turn)
    if pool.strategy is PoolStrategy.least_busy:
        busy = await booked_time(svc, members, start=start, end=end)
        return tried_order(pool, members, busy=busy)
    return tried_order(pool, members)


async def booked_time(
    svc: Context, members: Sequence[ResourceRow], *, start: datetime, end: datetime
) -> dict[UUID, timedelta]:
    """Live booked time of each resource within LEAST_BUSY_WINDOW either side of the slot."""
    lo, hi = start - LEAST_BUSY_WINDOW, end + LEAST_BUSY_WINDOW
    now = svc.clock.now()
    busy: dict[UUID, timedelta] = {}
    for ids in svc.shards.group(r.id for r in members).values():

        async def read(conn: Conn, ids: list[UUID] = ids) -> None:
            for row in await repository.busy_between(
                conn, resource_ids=ids, start=lo, end=hi, now=now
            ):
                span = min(row.end_at, hi) - max(row.start_at, lo)
                busy[row.resource_id] = busy.get(row.resource_id, timedelta(0)) + span

        await svc.at(ids[0]).db.read(read)
    return busy


def _noted(pick: PoolPick, reply: Reply) -> Reply:
    """The create's reply with the pool's note of its pick (stored so under the key)."""
    body = orjson.loads(reply.body)
    body["pool"] = pick.model_dump(mode="json")
    return replace(reply, body=orjson.dumps(body).decode())


def refusal_item(resource: ResourceRow, error: DomainError) -> dict[str, Any]:
    """One resource's refusal as a problem body lists it (`candidates`)."""
    item: dict[str, Any] = {
        "resource_id": str(resource.id),
        "status": error.status,
        "type": f"/problems/{error.slug}",
    }
    if error.detail:
        item["detail"] = error.detail
    for member in ("reason", "violations", "conflicts", "source"):
        if member in error.extra:
            item[member] = error.extra[member]
    return item


def exhausted(refusals: list[tuple[ResourceRow, DomainError]], *, size: int) -> DomainError:
    """The refusal once every resource was tried: the rules' 422 a direct create of the first
    gets when every one refused by its rules, else 409 pool-exhausted; `candidates` either way."""
    candidates = [refusal_item(r, e) for r, e in refusals]
    errors = [e for _, e in refusals]
    if errors and all(isinstance(e, BookingRuleViolated) for e in errors):
        first = errors[0]
        first.extra["candidates"] = candidates
        return first
    busy = sum(1 for e in errors if isinstance(e, ReservationConflict))
    return PoolExhausted(
        f"All {size} resources of the pool were tried: {busy} are booked in this range,"
        f" {len(errors) - busy} refused it by their rules (`candidates` says which and why)."
        " Choose another range or widen the pool.",
        candidates=candidates,
    )


@asynccontextmanager
async def guarded(
    svc: Context, idem: Idempotency | None, members: Sequence[ResourceRow]
) -> AsyncIterator[Reply | None]:
    """With a key, on a pool that spans clusters: the key's guard lock on the catalog for
    the whole request, and the reply a cluster of the pool has stored under the key, if
    any. Otherwise nothing to do: each resource's transaction claims the key on the one
    database that would hold its reply."""
    clusters = svc.shards.group(r.id for r in members)
    if idem is None or len(clusters) < 2:
        yield None
        return
    hi, lo = _guard_keys(idem)
    async with svc.shards.catalog.transaction() as guard:
        if not await pool_repository.try_guard(guard, hi=hi, lo=lo):
            raise IdempotencyKeyInUse(
                "Wait for the first request with this key to finish, then retry with the same "
                "key to receive its result."
            )
        yield await _stored(svc, idem, clusters)


async def _stored(svc: Context, idem: Idempotency, clusters: dict[str, list[UUID]]) -> Reply | None:
    now = svc.clock.now()
    quiet = replace(idem, keep_refusals=False)
    for name in clusters:
        async with svc.shards.by_name(name).transaction() as conn:
            stored = await quiet.claim(conn, now=now, ttl=svc.settings.idempotency_ttl)
        if stored is not None:
            return stored
    return None


def _guard_keys(idem: Idempotency) -> tuple[int, int]:
    digest = hashlib.blake2b(
        b"pool\0" + idem.api_key_id.bytes + idem.key.encode(), digest_size=8
    ).digest()
    return (
        int.from_bytes(digest[:4], "big", signed=True),
        int.from_bytes(digest[4:], "big", signed=True),
    )
