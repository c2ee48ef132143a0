"""HTTP for the event stream."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from reservations.deps import Caller, Svc
from reservations.events import service
from reservations.events.schemas import EventPage
from reservations.kit.openapi import problems

router = APIRouter(prefix="/v1/events", tags=["events"])


@router.get("", response_model=EventPage, responses=problems(401, 403, 422))
async def list_events(
    caller: Caller,
    svc: Svc,
    after: Annotated[str | None, Query(max_length=4096)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> EventPage:
    """The tenant's events (every change of its reservations and resources), oldest first,
    after `after`. Booker keys see reservation events without owner or details (where and
    when something changed: `start`, `end`, `status`)."""
    return await service.page(svc, caller, after=after, limit=limit)


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
        **problems(401, 403, 422),
    },
)
async def stream_events(
    caller: Caller,
    svc: Svc,
    after: Annotated[str | None, Query(max_length=4096)] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=4096)] = None,
) -> StreamingResponse:
    """The tenant's events as Server-Sent Events, live. Resume with the `Last-Event-ID`
    header (browsers send it when they reconnect) or `after`; `after=now` skips the history
    and starts with the events committed from now on. Booker keys see reservation events
    without owner or details (`start`, `end`, `status`)."""
    start = last_event_id or after
    service.check_cursor(svc, start)  # a bad cursor is a 422 before the stream
    return StreamingResponse(
        service.stream(svc, caller, after=start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
