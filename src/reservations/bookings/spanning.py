"""A booking whose resources live on several shard clusters: the one place no single
exclusion constraint reaches (DESIGN.md, "Sharding").

1. Redlock over all its resources (sorted) keeps cross-cluster contenders apart, and gives a
   fencing token per resource.
2. One transaction per cluster (sharding.twophase): the shard guard and the fencing token
   first (a cluster refuses a token older than the newest it saw for that resource), then
   the resources' advisory locks, the same evaluation as on one database, the booking row
   (same id, `spanning`) and that cluster's reservations. Each cluster's exclusion constraint
   still checks every row it gets.
3. PREPARE everywhere, the decision in the catalog, COMMIT PREPARED everywhere: whole or
   absent, also when the coordinator dies (the recovery job finishes it).

The Idempotency-Key's record lives on the cluster of the first resource, inside the same
two-phase transaction, so a retry finds it exactly when the booking exists.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from uuid import UUID

import psycopg

from reservations.availability_map import store as availability_map
from reservations.bookings import records, repository
from reservations.bookings.evaluation import Evaluation, Series, booked, evaluate
from reservations.bookings.reply import booking_reply
from reservations.bookings.repository import BookingRow
from reservations.bookings.schemas import BookingCreate, Mode
from reservations.catalog import repository as resource_repo
from reservations.catalog.repository import ResourceRow
from reservations.context import Context
from reservations.errors import BookingContended, NotFound, PreconditionFailed
from reservations.kit.db import Conn, lock_resource
from reservations.kit.idempotency import Idempotency, Reply, claim, record
from reservations.kit.ids import lock_key, uuid7_beside
from reservations.reservations import admission
from reservations.reservations.rows import RangeRow, ReservationRow
from reservations.sharding import repository as shard_repo
from reservations.sharding.router import STALE_TOKEN, sqlstate
from reservations.sharding.twophase import TwoPhase, fault_point
from reservations.tenancy.service import Principal


async def create(
    svc: Context,
    caller: Principal,
    body: BookingCreate,
    idem: Idempotency | None,
    groups: dict[str, list[UUID]],
    series: Series,
) -> tuple[Reply, list[ReservationRow]]:
    """Book across clusters; returns the reply and the rows made (the availability map is
    told of them, and of the holds expired, once every cluster has committed)."""
    assert svc.redlock is not None  # Context requires it when there are several clusters
    ids = [r.resource for r in body.resources]
    lease = await svc.redlock.acquire([str(i) for i in ids])
    if lease is None:
        raise BookingContended(
            "Another booking of some of these resources is being made across database clusters."
        )
    try:
        for name in groups:
            await svc.shards.mirror(svc.shards.by_name(name), caller.api_key_id)
        booking_id = uuid7_beside(ids[0])
        async with TwoPhase(svc.shards, str(booking_id), list(groups)) as tx:
            home = tx.conns[svc.shards.cluster_name(ids[0])]
            now = svc.clock.now()
            if replay := await claim(idem, home, now=now, ttl=svc.settings.idempotency_ttl):
                return replay, []
            fault_point("before-fence")
            for name, rids in groups.items():
                conn = tx.conns[name]
                for rid in sorted(rids, key=str):
                    await svc.shards.guard(conn, rid)
                    if not svc.settings.fault_skip_fencing:
                        await shard_repo.fence(conn, resource_id=rid, token=lease.tokens[str(rid)])
                for key in sorted({lock_key(r) for r in rids}):
                    await lock_resource(conn, key)
            reply, rows, expired = await _book(
                svc, caller, body, tx.conns, groups, booking_id, series
            )
            await record(idem, home, reply, now=now)
            svc.map_after_commit(
                tx,
                availability_map.changes(rows, live=True)
                + availability_map.changes(expired, live=False),
            )
            await tx.commit()
        return reply, rows
    except psycopg.Error as exc:
        if sqlstate(exc) == STALE_TOKEN:
            raise BookingContended(
                "This booking's lock expired before it reached every database cluster, and "
                "another booking of the same resources has been made since."
            ) from None
        raise
    finally:
        await lease.release()


async def _book(
    svc: Context,
    caller: Principal,
    body: BookingCreate,
    conns: dict[str, Conn],
    groups: dict[str, list[UUID]],
    booking_id: UUID,
    series: Series,
) -> tuple[Reply, list[ReservationRow], list[RangeRow]]:
    now = svc.clock.now()
    ids = [r.resource for r in body.resources]
    found: dict[UUID, ResourceRow] = {}
    for name, rids in groups.items():
        for row in await resource_repo.get_many(
            conns[name], tenant_id=caller.tenant_id, resource_ids=rids
        ):
            found[row.id] = row
    targets = records.targets_of(found, body, series.occurrences)
    gate = records.create_gate(caller, body, now)
    evaluation = await _evaluate(conns, groups, gate, body, targets, series)
    # Terms for the whole booking; live holds counted once, over every cluster.
    home = svc.shards.cluster_name(ids[0])
    candidates = booked(gate, body, targets, series.occurrences, evaluation.ok())
    terms = await admission.settle(
        svc, conns[home], gate, candidates, here=svc.shards.by_name(home)
    )
    booking: BookingRow | None = None
    rows: list[ReservationRow] = []
    for name, rids in groups.items():
        conn = conns[name]
        booking = await records.insert_booking(
            conn, caller, body, booking_id=booking_id, zone=series.zone, now=now, spanning=True
        )
        rows += await records.insert_reservations(
            conn,
            caller,
            body,
            booking_id=booking_id,
            candidates=[c for c in candidates if c.resource.id in rids],
            terms=terms,
            now=now,
        )
    rows.sort(key=lambda r: (r.start_at, str(r.resource_id)))
    assert booking is not None  # every cluster of `groups` got the booking's row
    reply = booking_reply(booking, rows, now, status=201, report=evaluation.report())
    return reply, rows, evaluation.expired


async def _evaluate(
    conns: dict[str, Conn],
    groups: dict[str, list[UUID]],
    gate: admission.Gate,
    body: BookingCreate,
    targets: dict[UUID, admission.Target],
    series: Series,
) -> Evaluation:
    """Each occurrence against the rules on every cluster, for that cluster's resources;
    refused as the booking's mode says."""
    occurrences = series.occurrences
    evaluation = Evaluation(occurrences)
    for name, rids in groups.items():
        part = await evaluate(
            conns[name],
            gate,
            body.model_copy(
                update={"resources": [u for u in body.resources if u.resource in rids]}
            ),
            {i: targets[i] for i in rids},
            occurrences,
        )
        for i, reasons in enumerate(part.reasons):
            evaluation.reasons[i] += reasons
        evaluation.expired += part.expired
    ok = evaluation.ok()
    if not ok or (len(ok) < len(occurrences) and body.mode is Mode.all_or_nothing):
        raise evaluation.refusal()
    return evaluation


# What a confirm, extend or cancel changes: `pick` chooses the rows (refusing if it must,
# with the times it names in the booking's zone too, its third argument), `admit` gives
# admission's word on the chosen rows of one cluster (a confirm's), `write` changes them on
# one cluster and returns them as changed.
Pick = Callable[[list[ReservationRow], datetime, str], list[ReservationRow]]
Admit = Callable[[Conn, list[ReservationRow], datetime], Awaitable[None]]
Write = Callable[[Conn, list[ReservationRow], datetime], Awaitable[list[RangeRow]]]


def status_write(status: str) -> Write:
    """The chosen rows get `status` (a confirm, a cancel)."""

    async def write(conn: Conn, rows: list[ReservationRow], now: datetime) -> list[RangeRow]:
        ids = [r.id for r in rows]
        return await repository.set_status(conn, reservation_ids=ids, status=status, now=now)

    return write


def map_changes(changed: list[RangeRow]) -> list[availability_map.Change]:
    """The availability map's marks for changed rows: live ones marked (with their new
    detail), the others cleared."""
    live = [r for r in changed if r.status in ("held", "confirmed")]
    gone = [r for r in changed if r.status not in ("held", "confirmed")]
    return availability_map.changes(live, live=True) + availability_map.changes(gone, live=False)


async def change(
    svc: Context,
    caller: Principal,
    booking_id: UUID,
    expected_version: int | None,
    idem: Idempotency | None,
    *,
    pick: Pick,
    write: Write,
    admit: Admit | None = None,
) -> Reply:
    """Confirm, extend or cancel (`write`) the reservations `pick` chooses from all of a
    spanning booking's reservations, on every cluster that holds some, all or none
    (two-phase). `admit`: admission's word on the chosen rows of each cluster (a confirm's)."""
    held_on = []
    for name, db in svc.shards.clusters.items():
        async with db.connection() as conn:
            if await repository.exists(conn, booking_id=booking_id):
                held_on.append(name)
    home_name = svc.shards.cluster_name(booking_id)
    if home_name not in held_on:
        raise NotFound(f"No booking {booking_id} that your key may see.")
    for name in held_on:
        await svc.shards.mirror(svc.shards.by_name(name), caller.api_key_id)
    async with TwoPhase(svc.shards, f"{booking_id}:{uuid7_beside(booking_id)}", held_on) as tx:
        home = tx.conns[home_name]
        now = svc.clock.now()
        if replay := await claim(idem, home, now=now, ttl=svc.settings.idempotency_ttl):
            return replay
        bookings, rows = await _locked_everywhere(svc, tx.conns, caller, booking_id)
        booking = bookings[home_name]
        if booking is None:
            raise NotFound(f"No booking {booking_id} that your key may see.")
        if expected_version is not None and booking.version != expected_version:
            raise PreconditionFailed(
                f"The booking is at version {booking.version}; fetch it again and retry.",
                current_version=booking.version,
            )
        now = svc.clock.now()  # after the locks
        every = [r for part in rows.values() for r in part]
        chosen = {r.id for r in pick(every, now, booking.timezone)}
        if admit is not None:  # admission, on each cluster for its rows
            for name, conn in tx.conns.items():
                if mine := [r for r in rows[name] if r.id in chosen]:
                    await admit(conn, mine, now)
        changed = await _write(tx.conns, bookings, rows, chosen, write, booking_id, now)
        merged = sorted(
            (r for part in rows.values() for r in part),
            key=lambda r: (r.start_at, str(r.resource_id)),
        )
        reply = booking_reply(bookings[home_name] or booking, merged, now)
        await record(idem, home, reply, now=now)
        svc.map_after_commit(tx, map_changes(changed))
        await tx.commit()
    return reply


async def _locked_everywhere(
    svc: Context, conns: dict[str, Conn], caller: Principal, booking_id: UUID
) -> tuple[dict[str, BookingRow | None], dict[str, list[ReservationRow]]]:
    """The booking's row and reservations on every cluster, locked, each cluster's shard
    guards taken (a move of one of its logical shards is waited out)."""
    bookings: dict[str, BookingRow | None] = {}
    rows: dict[str, list[ReservationRow]] = {}
    for name, conn in conns.items():
        bookings[name] = await repository.get(
            conn, tenant_id=caller.tenant_id, booking_id=booking_id, owner=caller.owner(), lock=True
        )
        rows[name] = await repository.reservations(conn, booking_id=booking_id, lock=True)
        shards_here = {svc.shards.logical(r.resource_id): r.resource_id for r in rows[name]}
        for resource_id in shards_here.values():
            await svc.shards.guard(conn, resource_id)
    return bookings, rows


async def _write(
    conns: dict[str, Conn],
    bookings: dict[str, BookingRow | None],
    rows: dict[str, list[ReservationRow]],
    chosen: set[UUID],
    write: Write,
    booking_id: UUID,
    now: datetime,
) -> list[RangeRow]:
    """`write` on the chosen reservations, cluster by cluster; `bookings` and `rows` are
    brought up to date. Returns the changed rows."""
    changed: list[RangeRow] = []
    if not chosen:
        return changed
    for name, conn in conns.items():
        if mine := [r for r in rows[name] if r.id in chosen]:
            changed += await write(conn, mine, now)
        bookings[name] = await repository.touch(conn, booking_id=booking_id, now=now)
        rows[name] = await repository.reservations(conn, booking_id=booking_id)
    return changed
