"""HTTP for reservations: parse, authorize, call the service, shape the reply."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from reservations.deps import Admin, Caller, IdemKey, IfMatch, Svc, Writer, idempotency, send
from reservations.kit.fields import CustomerRef, Timestamp
from reservations.kit.openapi import link, problems
from reservations.reservations import export, pools, refused, service, status
from reservations.reservations.schemas import (
    HoldExtend,
    ReservationCreate,
    ReservationPage,
    ReservationRead,
    ReservationUpdate,
    Status,
)

router = APIRouter(prefix="/v1/reservations", tags=["reservations"])

_THIS = {"reservation_id": "$response.body#/id"}
_CURRENT = {**_THIS, "header.If-Match": "$response.header.ETag"}
LINKS = {
    "links": {
        "get": link("get_reservation", "Read the reservation.", parameters=_THIS),
        "update": link("update_reservation", "Reschedule or edit it.", parameters=_CURRENT),
        "confirm": link("confirm_reservation", "Confirm the hold.", parameters=_CURRENT),
        "extend": link("extend_reservation", "Extend the hold.", parameters=_CURRENT),
        "cancel": link("cancel_reservation", "Cancel it.", parameters=_CURRENT),
        "resource": link(
            "get_resource",
            "The resource it books.",
            parameters={"resource_id": "$response.body#/resource_id"},
        ),
    }
}


@router.post(
    "",
    status_code=201,
    response_model=ReservationRead,
    responses={201: LINKS, **problems(401, 403, 404, 409, 413, 422)},
)
async def create_reservation(
    request: Request, body: ReservationCreate, caller: Writer, svc: Svc, key: IdemKey
) -> Response:
    """Book a resource for [start, end). With `hold_seconds` the reservation is `held` until
    `expires_at` (confirm it before then); without, it is `confirmed` at once. 409 when the
    range overlaps a live reservation: `conflicts` lists the clashing ranges.

    With `pool` instead of `resource_id`, any free resource of the pool is booked (tried in
    the strategy's order, each as a direct create); the reply's `pool` says how it was
    chosen. 409 `pool-exhausted` once every one was tried, `candidates` saying why each
    refused (the 422 `booking-rule-violated` of the first when each broke its rules)."""
    payload = body.model_dump(mode="json", exclude={"pool"} if body.pool is None else None)
    idem = idempotency(request, caller, key, payload)
    if body.pool is not None:
        return send(await pools.create(svc, caller, body, idem))
    assert body.resource_id is not None  # the schema's check: one or the other
    refused.note(
        request.state,
        refused.Ask(
            caller=caller,
            resources=((body.resource_id, body.quantity),),
            start=body.start,
            end=body.end,
            customer=body.customer,
            override=body.override_rules,
            idem=idem,
        ),
    )
    return send(await service.create(svc, caller, body, idem))


_CSV: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "text/csv": {
                "schema": {"type": "string"},
                "example": "id,resource_id,resource_name,status,start_utc,end_utc,timezone,...",
            }
        },
        "description": "JSON by default; CSV (RFC 4180, UTF-8) with `Accept: text/csv`.",
    }
}


@router.get("", response_model=ReservationPage, responses={**_CSV, **problems(401, 422)})
async def list_reservations(
    request: Request,
    caller: Caller,
    svc: Svc,
    resource_id: UUID | None = None,
    booking_id: UUID | None = None,
    from_: Annotated[
        Timestamp | None, Query(alias="from", description="Overlap window start (RFC 3339).")
    ] = None,
    to: Annotated[Timestamp | None, Query(description="Overlap window end (RFC 3339).")] = None,
    status: Annotated[list[Status], Query(description="Any of these statuses.")] = [],  # noqa: B006
    customer: CustomerRef | None = None,
    flagged: Annotated[
        bool | None,
        Query(
            description="true: only reservations a policy change flagged (`flagged` set); "
            "false: only unflagged ones."
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """Reservations ordered by start, then id; bookers see only their own. With
    `Accept: text/csv`: every matching reservation from `cursor` on (`limit` is ignored),
    streamed as CSV with UTC and local times and the resource's name and zone."""
    filters: export.Filters = {
        "resource_id": resource_id,
        "booking_id": booking_id,
        "window_from": from_,
        "window_to": to,
        "statuses": status,
        "customer": customer,
        "flagged": flagged,
    }
    as_csv = export.wants_csv(request.headers.get("accept"))
    size = export.PAGE if as_csv else limit
    page = await service.list_page(svc, caller, **filters, limit=size, cursor=cursor)
    if as_csv:
        return StreamingResponse(
            export.csv_stream(svc, caller, page, filters),
            media_type="text/csv; charset=utf-8; header=present",
            headers={"Content-Disposition": 'attachment; filename="reservations.csv"'},
        )
    return Response(page.model_dump_json(), media_type="application/json")


@router.get(
    "/{reservation_id}",
    response_model=ReservationRead,
    responses={200: LINKS, **problems(401, 404, 422)},
)
async def get_reservation(reservation_id: UUID, caller: Caller, svc: Svc) -> Response:
    return send(await service.get(svc, caller, reservation_id))


@router.patch(
    "/{reservation_id}",
    response_model=ReservationRead,
    responses=problems(401, 403, 404, 409, 412, 413, 422),
)
async def update_reservation(
    request: Request,
    reservation_id: UUID,
    body: ReservationUpdate,
    caller: Writer,
    svc: Svc,
    version: IfMatch,
) -> Response:
    """Reschedule (`start`, `end`) or edit `customer` / `metadata`. Send If-Match with the
    ETag you hold to get 412 instead of overwriting a change you have not seen."""
    customer = body.customer if "customer" in body.model_fields_set else None
    refused.note(
        request.state,
        refused.Ask(
            caller=caller,
            reservation_id=reservation_id,
            start=body.start,
            end=body.end,
            customer=customer,
            override=body.override_rules,
        ),
    )
    return send(await service.update(svc, caller, reservation_id, body, version))


@router.post(
    "/{reservation_id}/confirm",
    response_model=ReservationRead,
    responses=problems(401, 403, 404, 409, 412, 422),
)
async def confirm_reservation(
    request: Request,
    reservation_id: UUID,
    caller: Writer,
    svc: Svc,
    version: IfMatch,
    key: IdemKey,
    confirm_token: Annotated[
        str | None,
        Query(
            max_length=200,
            description="A confirm link's token (the `confirm` parameter of the link an agent "
            "key's hold carries): lets a booker key confirm that hold though the agent's key "
            "made it. 403 when it is not this reservation's or has expired.",
        ),
    ] = None,
) -> Response:
    """Turn a hold into a confirmed reservation. 409 `hold-expired` when it is too late;
    confirming a confirmed reservation changes nothing. Agent keys may not (403)."""
    idem = idempotency(request, caller, key, None)
    return send(await status.confirm(svc, caller, reservation_id, version, idem, confirm_token))


@router.post(
    "/{reservation_id}/extend",
    response_model=ReservationRead,
    responses={200: LINKS, **problems(401, 403, 404, 409, 412, 413, 422)},
)
async def extend_reservation(
    request: Request,
    reservation_id: UUID,
    body: HoldExtend,
    caller: Writer,
    svc: Svc,
    version: IfMatch,
    key: IdemKey,
) -> Response:
    """Extend a live hold: it expires `hold_seconds` from now, never earlier than it already
    does (a shorter ask changes nothing). 422 `invalid-input` past the hold's total life
    (RESERVATIONS_HOLD_MAX_LIFE_SECONDS from its creation; the message gives the latest
    expiry); 409 `hold-expired` when it has run out, `reservation-not-held` when it is
    confirmed or pending, `reservation-not-live` when cancelled."""
    idem = idempotency(request, caller, key, body.model_dump(mode="json"))
    return send(await status.extend(svc, caller, reservation_id, body.hold_seconds, version, idem))


@router.post(
    "/{reservation_id}/check-in",
    response_model=ReservationRead,
    responses=problems(401, 403, 404, 409, 412, 422),
)
async def check_in_reservation(
    request: Request,
    reservation_id: UUID,
    caller: Writer,
    svc: Svc,
    version: IfMatch,
    key: IdemKey,
) -> Response:
    """Check in to a confirmed reservation: `checked_in_at` is set, and a resource that
    releases no-shows (policy `check_in.release_after`) keeps it. Open from
    `check_in.opens_before` (default 15 minutes) before the start until the end, or until
    `release_after` past the start; 409 `check-in-refused` outside that or for a hold;
    repeatable."""
    idem = idempotency(request, caller, key, None)
    return send(await status.check_in(svc, caller, reservation_id, version, idem))


@router.post(
    "/{reservation_id}/approve",
    response_model=ReservationRead,
    responses=problems(401, 403, 404, 409, 412, 422),
)
async def approve_reservation(
    request: Request, reservation_id: UUID, caller: Admin, svc: Svc, version: IfMatch, key: IdemKey
) -> Response:
    """Approve a `pending` booking (on a resource whose policy has `requires_approval`): it
    is confirmed. 409 `reservation-not-pending` otherwise. Admin keys."""
    idem = idempotency(request, caller, key, None)
    return send(await status.approve(svc, caller, reservation_id, version, idem))


@router.post(
    "/{reservation_id}/decline",
    response_model=ReservationRead,
    responses=problems(401, 403, 404, 409, 412, 422),
)
async def decline_reservation(
    request: Request, reservation_id: UUID, caller: Admin, svc: Svc, version: IfMatch, key: IdemKey
) -> Response:
    """Decline a `pending` booking: it becomes `declined` and its range is free again (the
    first waitlist entry that fits is offered it). Admin keys."""
    idem = idempotency(request, caller, key, None)
    return send(await status.decline(svc, caller, reservation_id, version, idem))


@router.post(
    "/{reservation_id}/cancel",
    response_model=ReservationRead,
    responses=problems(401, 403, 404, 409, 412, 422),
)
async def cancel_reservation(
    request: Request,
    reservation_id: UUID,
    caller: Writer,
    svc: Svc,
    version: IfMatch,
    key: IdemKey,
) -> Response:
    """Cancel a held or confirmed reservation and free its range. Repeatable."""
    idem = idempotency(request, caller, key, None)
    return send(await status.cancel(svc, caller, reservation_id, version, idem))
