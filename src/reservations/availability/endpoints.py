"""HTTP for availability: one resource's slots and free time, and the search across
resources."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Response

from reservations.availability import service
from reservations.availability.schemas import AvailabilityRead, SearchPage, SearchRequest
from reservations.deps import Caller, ReadOnlyKey, Svc
from reservations.kit.fields import CustomerRef, Duration, Timestamp
from reservations.kit.openapi import problems

router = APIRouter(tags=["availability"])


@router.get(
    "/v1/resources/{resource_id}/availability",
    response_model=AvailabilityRead,
    responses=problems(401, 404, 422),
)
async def resource_availability(
    resource_id: UUID,
    caller: Caller,
    svc: Svc,
    from_: Annotated[Timestamp, Query(alias="from", description="Window start (RFC 3339).")],
    to: Annotated[Timestamp, Query(description="Window end (RFC 3339); at most 31 days on.")],
    duration: Annotated[
        Duration | None,
        Query(description="Slot length (ISO 8601, e.g. PT1H). Without it: free spans only."),
    ] = None,
    quantity: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    step: Annotated[
        int,
        Query(ge=1, le=1440, description="Slot grid in minutes when the policy sets none."),
    ] = 15,
    customer: Annotated[
        CustomerRef | None,
        Query(description="Apply the booker limit as this customer would meet it."),
    ] = None,
    explain: Annotated[bool, Query(description="Also list unavailable ranges and why.")] = False,
) -> Response:
    """Bookable slots of `duration` inside [from, to) and the free spans, after opening
    hours (local time), overrides, blackouts, buffers, notice, advance, capacity and your
    booker limit. Every slot offered can be booked at once with the same start and end."""
    result = await service.for_resource(
        svc,
        caller,
        resource_id,
        window_start=from_,
        window_end=to,
        duration=duration,
        quantity=quantity,
        step_minutes=step,
        customer=customer,
        explain=explain,
    )
    return Response(
        result.model_dump_json(by_alias=True, exclude_none=True), media_type="application/json"
    )


@router.post(
    "/v1/availability/search", response_model=SearchPage, responses=problems(401, 413, 422)
)
async def search_availability(
    body: SearchRequest, caller: Caller, svc: Svc, _key: ReadOnlyKey
) -> Response:
    """Resources (with all `tags`, at least `min_capacity`) that are free for the whole
    window, or, with `duration`, that have a slot in it; earliest first, then by id.
    Per-booker limits are not applied here; the resource's availability applies them.
    A POST only for its body: it reads, so an Idempotency-Key is accepted and nothing is
    kept under it (a retry gets a fresh answer)."""
    page = await service.search(svc, caller, body)
    return Response(page.model_dump_json(), media_type="application/json")
