"""HTTP for the waitlist."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response

from reservations.deps import Caller, IdemKey, Svc, Writer, idempotency, send
from reservations.kit.openapi import problems
from reservations.waitlist import service
from reservations.waitlist.schemas import WaitlistEntryRead, WaitlistJoin, WaitlistPage

router = APIRouter(prefix="/v1/waitlist", tags=["waitlist"])


@router.post(
    "",
    status_code=201,
    response_model=WaitlistEntryRead,
    responses=problems(401, 403, 404, 409, 413, 422),
)
async def join_waitlist(
    request: Request, body: WaitlistJoin, caller: Writer, svc: Svc, key: IdemKey
) -> Response:
    """Wait for a range of a resource. When it frees (a cancel, an expiry, a decline), the
    first waiting entry that fits gets a hold of `hold_seconds` (event `waitlist.promoted`);
    a hold not confirmed in time passes to the next. If the range is free already, the hold
    is made at once (`status: promoted`)."""
    idem = idempotency(request, caller, key, body.model_dump(mode="json"))
    return send(await service.join(svc, caller, body, idem))


@router.get("", response_model=WaitlistPage, responses=problems(401, 422))
async def list_waitlist(
    caller: Caller,
    svc: Svc,
    resource_id: UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> WaitlistPage:
    """Waitlist entries, oldest first; bookers see only their own."""
    return await service.list_page(svc, caller, resource_id=resource_id, cursor=cursor, limit=limit)


@router.get("/{entry_id}", response_model=WaitlistEntryRead, responses=problems(401, 404, 422))
async def get_waitlist_entry(entry_id: UUID, caller: Caller, svc: Svc) -> WaitlistEntryRead:
    """An entry with its `position` (1 = next in line) while it waits."""
    return await service.get(svc, caller, entry_id)


@router.delete(
    "/{entry_id}", response_model=WaitlistEntryRead, responses=problems(401, 403, 404, 422)
)
async def leave_waitlist(entry_id: UUID, caller: Writer, svc: Svc) -> WaitlistEntryRead:
    """Leave the list (status `left`); a promoted entry's hold stays."""
    return await service.leave(svc, caller, entry_id)
