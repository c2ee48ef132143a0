"""Reservation use cases. Each public function owns one transaction (or, after a conflict,
one retry of it) and returns the reply the endpoint sends.

How a create is kept fast and correct (DESIGN.md, "The one invariant"):
1. a read-only pre-check of live overlaps refuses most conflicts without writing WAL;
2. the per-resource advisory lock serializes writers, so inserts into the exclusion
   constraint's index never deadlock;
3. holds past their expiry that overlap are expired in the same transaction;
4. the insert runs under the exclusion constraint, which alone decides; 23P01 becomes 409
   after one retry (the retry expires holds that went stale between the steps).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg import errors as pg_errors

from reservations.deps import Services
from reservations.errors import (
    HoldExpired,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    ReservationConflict,
    ReservationNotLive,
)
from reservations.kit import metrics
from reservations.kit.db import Conn, lock_resource
from reservations.kit.idempotency import Idempotency, Reply
from reservations.kit.ids import lock_key, uuid7
from reservations.kit.pagination import decode_cursor, encode_cursor, invalid_cursor
from reservations.reservations import repository
from reservations.reservations.schemas import (
    ConflictItem,
    ReservationCreate,
    ReservationPage,
    ReservationRead,
    ReservationUpdate,
    Status,
)
from reservations.tenancy.service import Principal


def etag(version: int) -> str:
    return f'"{version}"'


def _reply(row: dict[str, Any], now: datetime, status: int = 200) -> Reply:
    body = ReservationRead.from_row(row, now).model_dump_json()
    headers = {"ETag": etag(row["version"])}
    if status == 201:
        headers["Location"] = f"/v1/reservations/{row['id']}"
    return Reply(status=status, body=body, headers=headers)


def _is_stale_hold(overlap: dict[str, Any], now: datetime) -> bool:
    expires = overlap["expires_at"]
    if isinstance(expires, str):
        expires = datetime.fromisoformat(expires)
    return overlap["status"] == "held" and expires is not None and expires <= now


def _conflict(
    overlaps: Sequence[dict[str, Any]], caller: Principal, *, stage: str
) -> ReservationConflict:
    metrics.RESERVATIONS_CONFLICTED.labels(stage).inc()
    items = []
    for o in overlaps:
        visible = caller.sees_all() or str(o["created_by"]) == str(caller.api_key_id)
        items.append(
            ConflictItem(
                start=o["start_at"],
                end=o["end_at"],
                status=Status(o["status"]),
                id=o["id"] if visible else None,
            ).model_dump(mode="json", exclude_none=True)
        )
    ranges = "; ".join(f"{c['start']} to {c['end']}" for c in items)
    return ReservationConflict(
        f"The resource is already booked for {ranges}. Choose a range that does not overlap; "
        "ranges are half-open, so a booking may start exactly when another ends.",
        conflicts=items,
    )


def _check_duration(svc: Services, start: datetime, end: datetime) -> None:
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


async def create(
    svc: Services, caller: Principal, body: ReservationCreate, idem: Idempotency | None
) -> Reply:
    _check_duration(svc, body.start, body.end)
    if body.hold_seconds is not None and body.hold_seconds > svc.settings.max_hold_seconds:
        raise InvalidInput(
            f"hold_seconds may be at most {svc.settings.max_hold_seconds}.",
            errors=[{"field": "hold_seconds", "in": "body", "message": "too long"}],
        )
    for attempt in range(2):
        try:
            return await _create_once(svc, caller, body, idem, expire_first=attempt > 0)
        except pg_errors.ExclusionViolation:
            if attempt == 0:
                continue
            async with svc.db.connection() as conn:
                clashes = await repository.overlaps(
                    conn, resource_id=body.resource_id, start=body.start, end=body.end
                )
            raise _conflict(clashes, caller, stage="constraint") from None
    raise AssertionError("unreachable")


async def _create_once(
    svc: Services,
    caller: Principal,
    body: ReservationCreate,
    idem: Idempotency | None,
    *,
    expire_first: bool,
) -> Reply:
    now = svc.clock.now()
    async with svc.db.transaction() as conn:
        if idem is not None:
            replay = await idem.claim(conn, now=now, ttl=svc.settings.idempotency_ttl)
            if replay is not None:
                return replay
        found = await repository.resource_and_overlaps(
            conn,
            tenant_id=caller.tenant_id,
            resource_id=body.resource_id,
            start=body.start,
            end=body.end,
        )
        if found is None:
            raise NotFound(f"No resource {body.resource_id} in your tenant.")
        overlaps = found["overlaps"]
        blocking = [o for o in overlaps if not _is_stale_hold(o, now)]
        if blocking:
            for o in blocking:
                o["start_at"] = datetime.fromisoformat(o["start_at"])
                o["end_at"] = datetime.fromisoformat(o["end_at"])
            raise _conflict(blocking, caller, stage="precheck")

        await lock_resource(conn, lock_key(body.resource_id))
        if overlaps or expire_first:
            expired = await repository.expire_stale_holds(
                conn, resource_id=body.resource_id, start=body.start, end=body.end, now=now
            )
            metrics.RESERVATIONS_EXPIRED.labels("booking").inc(expired)
        hold = body.hold_seconds
        row = await repository.insert(
            conn,
            reservation_id=uuid7(),
            tenant_id=caller.tenant_id,
            resource_id=body.resource_id,
            start=body.start,
            end=body.end,
            status=Status.held if hold is not None else Status.confirmed,
            quantity=body.quantity,
            expires_at=now + timedelta(seconds=hold) if hold is not None else None,
            customer=body.customer,
            metadata=body.metadata,
            created_by=caller.api_key_id,
            now=now,
        )
        if row is None:
            raise NotFound(f"No resource {body.resource_id} in your tenant.")
        reply = _reply(row, now, status=201)
        if idem is not None:
            await idem.save(conn, reply, now=now)
    metrics.RESERVATIONS_CREATED.labels(row["status"]).inc()
    return reply


def _owner(caller: Principal) -> UUID | None:
    return None if caller.sees_all() else caller.api_key_id


def _not_found(reservation_id: UUID) -> NotFound:
    return NotFound(f"No reservation {reservation_id} that your key may see.")


async def get(svc: Services, caller: Principal, reservation_id: UUID) -> Reply:
    async with svc.db.connection() as conn:
        row = await repository.get(
            conn, tenant_id=caller.tenant_id, reservation_id=reservation_id, owner=_owner(caller)
        )
    if row is None:
        raise _not_found(reservation_id)
    return _reply(row, svc.clock.now())


async def list_page(
    svc: Services,
    caller: Principal,
    *,
    resource_id: UUID | None,
    window_from: datetime | None,
    window_to: datetime | None,
    statuses: list[Status],
    customer: str | None,
    limit: int,
    cursor: str | None,
) -> ReservationPage:
    if window_from is not None and window_to is not None and window_to <= window_from:
        raise InvalidInput(
            "'to' must be after 'from'.",
            errors=[{"field": "to", "in": "query", "message": "must be after from"}],
        )
    after = None
    if cursor is not None:
        raw_start, raw_id = decode_cursor(cursor, 2)
        try:
            after = (datetime.fromisoformat(raw_start), UUID(raw_id))
        except ValueError:
            raise invalid_cursor() from None
        if after[0].tzinfo is None:
            raise invalid_cursor()
    now = svc.clock.now()
    async with svc.db.connection() as conn:
        rows = await repository.page(
            conn,
            tenant_id=caller.tenant_id,
            owner=_owner(caller),
            resource_id=resource_id,
            window_from=window_from,
            window_to=window_to,
            statuses=sorted({s.value for s in statuses}),
            customer=customer,
            after=after,
            limit=limit + 1,
            now=now,
        )
    items = [ReservationRead.from_row(r, now) for r in rows[:limit]]
    next_cursor = (
        encode_cursor(rows[limit - 1]["start_at"], rows[limit - 1]["id"])
        if len(rows) > limit
        else None
    )
    return ReservationPage(items=items, next_cursor=next_cursor)


async def _locked(
    conn: Conn, caller: Principal, reservation_id: UUID, expected_version: int | None
) -> dict[str, Any]:
    row = await repository.get(
        conn,
        tenant_id=caller.tenant_id,
        reservation_id=reservation_id,
        owner=_owner(caller),
        lock=True,
    )
    if row is None:
        raise _not_found(reservation_id)
    if expected_version is not None and row["version"] != expected_version:
        raise PreconditionFailed(
            f"The reservation is at version {row['version']}; fetch it again and retry.",
            current_version=row["version"],
        )
    return row


def _live_or_raise(row: dict[str, Any], now: datetime) -> None:
    status = ReservationRead.from_row(row, now).status
    if status is Status.expired:
        raise HoldExpired(
            f"The hold expired at {row['expires_at'].isoformat()}; create a new reservation."
        )
    if status is Status.cancelled:
        raise ReservationNotLive("The reservation is cancelled; create a new one.")


async def confirm(
    svc: Services,
    caller: Principal,
    reservation_id: UUID,
    expected_version: int | None,
    idem: Idempotency | None,
) -> Reply:
    now = svc.clock.now()
    async with svc.db.transaction() as conn:
        if idem is not None and (
            replay := await idem.claim(conn, now=now, ttl=svc.settings.idempotency_ttl)
        ):
            return replay
        row = await _locked(conn, caller, reservation_id, expected_version)
        _live_or_raise(row, now)
        if row["status"] == Status.held:
            row = await repository.update(
                conn,
                reservation_id=reservation_id,
                changes={"status": Status.confirmed.value, "expires_at": None},
                now=now,
            )
        reply = _reply(row, now)
        if idem is not None:
            await idem.save(conn, reply, now=now)
    return reply


async def cancel(
    svc: Services,
    caller: Principal,
    reservation_id: UUID,
    expected_version: int | None,
    idem: Idempotency | None,
) -> Reply:
    """Cancel a live reservation; cancelling a cancelled one again is a no-op (200)."""
    now = svc.clock.now()
    async with svc.db.transaction() as conn:
        if idem is not None and (
            replay := await idem.claim(conn, now=now, ttl=svc.settings.idempotency_ttl)
        ):
            return replay
        row = await _locked(conn, caller, reservation_id, expected_version)
        if row["status"] != Status.cancelled:
            _live_or_raise(row, now)
            row = await repository.update(
                conn,
                reservation_id=reservation_id,
                changes={"status": Status.cancelled.value, "expires_at": None},
                now=now,
            )
        reply = _reply(row, now)
        if idem is not None:
            await idem.save(conn, reply, now=now)
    return reply


async def update(
    svc: Services,
    caller: Principal,
    reservation_id: UUID,
    body: ReservationUpdate,
    expected_version: int | None,
) -> Reply:
    """Reschedule and/or edit. A reschedule takes the resource lock before the row lock, the
    same order as every other writer, so the two kinds of lock never wait on each other in a
    cycle."""
    fields = body.model_fields_set
    for attempt in range(2):
        try:
            return await _update_once(
                svc,
                caller,
                reservation_id,
                body,
                fields,
                expected_version,
                expire_first=attempt > 0,
            )
        except pg_errors.ExclusionViolation:
            if attempt == 0:
                continue
            async with svc.db.connection() as conn:
                row = await repository.get(
                    conn,
                    tenant_id=caller.tenant_id,
                    reservation_id=reservation_id,
                    owner=_owner(caller),
                )
                assert row is not None
                clashes = await repository.overlaps(
                    conn,
                    resource_id=row["resource_id"],
                    start=body.start or row["start_at"],
                    end=body.end or row["end_at"],
                    exclude=reservation_id,
                )
            raise _conflict(clashes, caller, stage="constraint") from None
    raise AssertionError("unreachable")


async def _update_once(
    svc: Services,
    caller: Principal,
    reservation_id: UUID,
    body: ReservationUpdate,
    fields: set[str],
    expected_version: int | None,
    *,
    expire_first: bool,
) -> Reply:
    now = svc.clock.now()
    async with svc.db.transaction() as conn:
        current = await repository.get(
            conn, tenant_id=caller.tenant_id, reservation_id=reservation_id, owner=_owner(caller)
        )
        if current is None:
            raise _not_found(reservation_id)
        changes: dict[str, Any] = {}
        if "customer" in fields:
            changes["customer"] = body.customer
        if "metadata" in fields and body.metadata is not None:
            changes["metadata"] = body.metadata
        start = body.start if body.start is not None else current["start_at"]
        end = body.end if body.end is not None else current["end_at"]
        moving = (start, end) != (current["start_at"], current["end_at"])
        if moving:
            _check_duration(svc, start, end)
            resource_id = current["resource_id"]
            clashes = await repository.overlaps(
                conn, resource_id=resource_id, start=start, end=end, exclude=reservation_id
            )
            blocking = [c for c in clashes if not _is_stale_hold(c, now)]
            if blocking:
                raise _conflict(blocking, caller, stage="precheck")
            await lock_resource(conn, lock_key(resource_id))
        row = await _locked(conn, caller, reservation_id, expected_version)
        if moving:
            _live_or_raise(row, now)
            if clashes or expire_first:
                await repository.expire_stale_holds(
                    conn, resource_id=row["resource_id"], start=start, end=end, now=now
                )
            changes["start_at"], changes["end_at"] = start, end
        if not changes:
            return _reply(row, now)
        row = await repository.update(conn, reservation_id=reservation_id, changes=changes, now=now)
        return _reply(row, now)


async def sweep_expired(svc: Services, *, batch: int = 500) -> int:
    """Expire holds past their expiry, in batches, until none are due."""
    total = 0
    while True:
        async with svc.db.transaction() as conn:
            n = await repository.expire_due(conn, now=svc.clock.now(), batch=batch)
        total += n
        if n < batch:
            break
    if total:
        metrics.RESERVATIONS_EXPIRED.labels("sweeper").inc(total)
    return total
