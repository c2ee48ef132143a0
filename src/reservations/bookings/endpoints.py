"""HTTP for bookings: series and multi-resource groups made, read, confirmed, moved and
cancelled as one."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request, Response

from reservations.bookings import pools, service
from reservations.bookings.schemas import BookingCancel, BookingCreate, BookingMove, BookingRead
from reservations.deps import Caller, IdemKey, IfMatch, Svc, Writer, idempotency, send
from reservations.kit.openapi import link, problems
from reservations.reservations import refused
from reservations.reservations.schemas import HoldExtend

router = APIRouter(prefix="/v1/bookings", tags=["bookings"])

_THIS = {"booking_id": "$response.body#/id"}
_CURRENT = {**_THIS, "header.If-Match": "$response.header.ETag"}
LINKS = {
    "links": {
        "get": link("get_booking", "Read the booking.", parameters=_THIS),
        "move": link("move_booking", "Reschedule it.", parameters=_CURRENT),
        "confirm": link("confirm_booking", "Confirm its holds.", parameters=_CURRENT),
        "extend": link("extend_booking", "Extend its holds.", parameters=_CURRENT),
        "cancel": link("cancel_booking", "Cancel it.", parameters=_CURRENT),
        "first_reservation": link(
            "get_reservation",
            "Its first reservation.",
            parameters={"reservation_id": "$response.body#/reservations/0/id"},
        ),
    }
}


@router.post(
    "",
    status_code=201,
    response_model=BookingRead,
    responses={201: LINKS, **problems(401, 403, 404, 409, 413, 422)},
)
async def create_booking(
    request: Request, body: BookingCreate, caller: Writer, svc: Svc, key: IdemKey
) -> Response:
    """Book several resources for the same range, a recurring series (RRULE), or both, in
    one transaction. `all-or-nothing` (default) books every occurrence on every resource or
    nothing (409 / 422 listing each failing occurrence); `skip-conflicts` books what it can
    and reports the rest. With `hold_seconds` everything is held; confirm it as one.

    One item may name a `pool` instead of a `resource_id` (docs/pools.md): with
    `same_resource` every occurrence goes to the same resource of it, else each to the
    first resource in the pool's order that takes it. 409 `pool-exhausted` (with
    `candidates`) once every resource was tried."""
    pooled = any(u.pool is not None for u in body.resources)
    unused: dict[str, Any] = {"same_resource": True, "resources": {"__all__": {"pool"}}}
    idem = idempotency(
        request, caller, key, body.model_dump(mode="json", exclude=None if pooled else unused)
    )
    if pooled:
        return send(await pools.create(svc, caller, body, idem))
    refused.note(
        request.state,
        refused.Ask(
            caller=caller,
            resources=tuple((r.resource, r.quantity) for r in body.resources),
            start=body.start,
            end=body.end,
            customer=body.customer,
            override=body.override_rules,
            series=body.rrule is not None,
            idem=idem,
        ),
    )
    return send(await service.create(svc, caller, body, idem))


@router.get(
    "/{booking_id}",
    response_model=BookingRead,
    responses={200: LINKS, **problems(401, 404, 422)},
)
async def get_booking(booking_id: UUID, caller: Caller, svc: Svc) -> Response:
    return send(await service.get(svc, caller, booking_id))


@router.post(
    "/{booking_id}/confirm",
    response_model=BookingRead,
    responses=problems(401, 403, 404, 409, 412, 422),
)
async def confirm_booking(
    request: Request, booking_id: UUID, caller: Writer, svc: Svc, version: IfMatch, key: IdemKey
) -> Response:
    """Confirm all held reservations of the booking atomically; 409 hold-expired (and
    nothing confirmed) if any hold has expired."""
    idem = idempotency(request, caller, key, None)
    return send(await service.confirm(svc, caller, booking_id, version, idem))


@router.post(
    "/{booking_id}/extend",
    response_model=BookingRead,
    responses={200: LINKS, **problems(401, 403, 404, 409, 412, 413, 422)},
)
async def extend_booking(
    request: Request,
    booking_id: UUID,
    body: HoldExtend,
    caller: Writer,
    svc: Svc,
    version: IfMatch,
    key: IdemKey,
) -> Response:
    """Extend every live hold of the booking to `hold_seconds` from now (never shorter), all
    or none: 409 `hold-expired` (nothing extended) if any hold has expired, 422 past a hold's
    total life (RESERVATIONS_HOLD_MAX_LIFE_SECONDS), 409 `reservation-not-held` when nothing
    is held."""
    idem = idempotency(request, caller, key, body.model_dump(mode="json"))
    return send(await service.extend(svc, caller, booking_id, body.hold_seconds, version, idem))


@router.post(
    "/{booking_id}/cancel",
    response_model=BookingRead,
    responses=problems(401, 403, 404, 409, 412, 413, 422),
)
async def cancel_booking(
    request: Request,
    booking_id: UUID,
    caller: Writer,
    svc: Svc,
    version: IfMatch,
    key: IdemKey,
    body: BookingCancel | None = None,
) -> Response:
    """Cancel the whole booking (default), one occurrence, or one and the following
    (`scope`, `occurrence` = its start). Repeatable."""
    change = body or BookingCancel()
    idem = idempotency(request, caller, key, change.model_dump(mode="json"))
    return send(await service.cancel(svc, caller, booking_id, change, version, idem))


@router.patch(
    "/{booking_id}",
    response_model=BookingRead,
    responses=problems(401, 403, 404, 409, 412, 413, 422),
)
async def move_booking(
    request: Request,
    booking_id: UUID,
    body: BookingMove,
    caller: Writer,
    svc: Svc,
    version: IfMatch,
) -> Response:
    """Reschedule the whole booking, one occurrence, or one and the following: `shift`
    moves each start in local wall time, `duration` sets each length. All or nothing."""
    refused.note(
        request.state,
        refused.Ask(
            caller=caller,
            booking_id=booking_id,
            shift=body.shift,
            duration=body.duration,
            override=body.override_rules,
        ),
    )
    return send(await service.move(svc, caller, booking_id, body, version))
