"""HTTP for calendar feeds: admins manage them under /v1/feeds; the feed itself is at
/feeds/{token}.ics (and a free/busy feed's JSON at /feeds/{token}.json), where the token is
the credential (no Authorization header)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Path, Query, Request, Response

from reservations.context import Context
from reservations.deps import Admin, IdemKey, Svc, idempotency, send
from reservations.feeds import service
from reservations.feeds.schemas import FeedCreate, FeedCreated, FeedPage, FreeBusyRead
from reservations.kit.openapi import problems

router = APIRouter(prefix="/v1/feeds", tags=["feeds"])
public = APIRouter(tags=["feeds"])

CALENDAR = "text/calendar; charset=utf-8"
# Calendar apps poll; a private cache may keep a copy for 5 minutes (so a revocation
# reaches an app within that), shared caches none: the URL is a secret.
CACHE_CONTROL = "private, max-age=300"


@router.post(
    "", status_code=201, response_model=FeedCreated, responses=problems(401, 403, 404, 409, 422)
)
async def create_feed(
    body: FeedCreate, caller: Admin, svc: Svc, request: Request, key: IdemKey
) -> Response:
    """Make a calendar feed (admin): the reservations of a resource or of everything one API
    key booked (`content: events`), or when a resource or a tag's resources cannot be booked
    (`content: freebusy`: VFREEBUSY, and JSON at `json_url`). The answer holds the feed's
    URL with its secret token, once: only a hash is kept (and, under an Idempotency-Key, the
    reply with the token sealed by your API key, so that a retry with the key gets the same
    token back)."""
    idem = idempotency(request, caller, key, body.model_dump(mode="json"))
    return send(await service.create(svc, caller, body, idem, base_url=str(request.base_url)))


@router.get("", response_model=FeedPage, responses=problems(401, 403, 422))
async def list_feeds(
    caller: Admin,
    svc: Svc,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> FeedPage:
    """Your tenant's feeds, revoked ones included, oldest first; never their tokens."""
    return await service.list_page(svc, caller, limit=limit, cursor=cursor)


@router.delete("/{feed_id}", status_code=204, responses=problems(401, 403, 404, 422))
async def revoke_feed(feed_id: UUID, caller: Admin, svc: Svc) -> Response:
    """Revoke a feed: its URL answers 404 from now on. Repeatable."""
    await service.revoke(svc, caller, feed_id)
    return Response(status_code=204)


@public.get(
    "/feeds/{token}.ics",
    response_class=Response,
    openapi_extra={"security": []},  # the token in the path is the credential
    responses={
        200: {"content": {"text/calendar": {}}, "description": "RFC 5545 iCalendar"},
        304: {"description": "Unchanged since the ETag in If-None-Match"},
        **problems(404, 422),
    },
)
async def read_feed(
    # No length limit here: every token that is not a live feed's gets the same 404.
    token: Annotated[str, Path()],
    svc: Svc,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match", max_length=1024)] = None,
) -> Response:
    """A feed's calendar. An events feed: live reservations from 30 days ago to a year ahead
    (at most 5,000), in the resource's time zone. A free/busy feed: one VFREEBUSY per
    resource, its busy periods (FBTYPE BUSY, BUSY-UNAVAILABLE) in UTC from the current
    5-minute step to 62 days ahead. The token in the URL is the credential."""
    return await _feed(svc, token, if_none_match)


# HEAD (calendar apps and link checkers ask it): GET's status and headers, no body. Not in the
# OpenAPI document, where it would be a second operation of the same path.
@public.head("/feeds/{token}.ics", include_in_schema=False, response_class=Response)
async def head_feed(
    token: Annotated[str, Path()],
    svc: Svc,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match", max_length=1024)] = None,
) -> Response:
    response = await _feed(svc, token, if_none_match)
    response.body = b""  # Content-Length stays the body's, as HEAD requires
    return response


@public.get(
    "/feeds/{token}.json",
    response_model=FreeBusyRead,
    openapi_extra={"security": []},  # the token in the path is the credential
    responses={
        304: {"description": "Unchanged since the ETag in If-None-Match"},
        **problems(404, 422),
    },
)
async def read_freebusy(
    token: Annotated[str, Path()],
    svc: Svc,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match", max_length=1024)] = None,
) -> Response:
    """A free/busy feed's periods as JSON: the same as its iCalendar (404 for an events
    feed). Every instant in [from, to) of a resource that is not in `busy` is free: an admin
    could book one unit covering it now without override_rules."""
    return await _feed(svc, token, if_none_match, read=service.freebusy_json, json=True)


@public.head("/feeds/{token}.json", include_in_schema=False, response_class=Response)
async def head_freebusy(
    token: Annotated[str, Path()],
    svc: Svc,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match", max_length=1024)] = None,
) -> Response:
    response = await _feed(svc, token, if_none_match, read=service.freebusy_json, json=True)
    response.body = b""
    return response


async def _feed(
    svc: Context,
    token: str,
    if_none_match: str | None,
    *,
    read: Callable[[Context, str], Awaitable[service.Calendar]] = service.calendar,
    json: bool = False,
) -> Response:
    cal = await read(svc, token)
    headers = {"ETag": cal.etag, "Cache-Control": CACHE_CONTROL, "X-Robots-Tag": "noindex"}
    if if_none_match is not None and cal.etag in _etags(if_none_match):
        return Response(status_code=304, headers=headers)
    if json:
        return Response(cal.body, media_type="application/json", headers=headers)
    return Response(
        cal.body,
        media_type=CALENDAR,
        headers={**headers, "Content-Disposition": 'inline; filename="calendar.ics"'},
    )


def _etags(header: str) -> set[str]:
    return {t.strip().removeprefix("W/") for t in header.split(",")}
