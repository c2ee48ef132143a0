"""HTTP for resources: parse, authorize, call the service, shape the reply."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response

from reservations.deps import Admin, Caller, IdemKey, IfMatch, Svc, idempotency, send
from reservations.kit.fields import Tag
from reservations.kit.openapi import link, problems
from reservations.resources import service
from reservations.resources.schemas import (
    Affected,
    PolicyPreview,
    ResourceChanged,
    ResourceCreate,
    ResourcePage,
    ResourceRead,
    ResourceUpdate,
)

router = APIRouter(prefix="/v1/resources", tags=["resources"])

_THIS = {"resource_id": "$response.body#/id"}
_CURRENT = {**_THIS, "header.If-Match": "$response.header.ETag"}
LINKS = {
    "links": {
        "get": link("get_resource", "Read the resource.", parameters=_THIS),
        "update": link("update_resource", "Change it.", parameters=_CURRENT),
        "archive": link("delete_resource", "Archive it.", parameters=_THIS),
        "availability": link("resource_availability", "Its free slots.", parameters=_THIS),
    }
}


def _etag(resource: ResourceRead) -> dict[str, str]:
    return {"ETag": f'"{resource.version}"'}


@router.post(
    "",
    status_code=201,
    response_model=ResourceRead,
    responses={201: LINKS, **problems(401, 403, 404, 409, 413, 422)},
)
async def create_resource(
    request: Request, body: ResourceCreate, caller: Admin, svc: Svc, key: IdemKey
) -> Response:
    """Create a resource (admin)."""
    idem = idempotency(request, caller, key, body.model_dump(mode="json"))
    return send(await service.create_reply(svc, caller, body, idem))


@router.get("", response_model=ResourcePage, responses=problems(401, 422))
async def list_resources(
    caller: Caller,
    svc: Svc,
    tag: Annotated[
        list[Tag], Query(max_length=32, description="Only resources with all these tags.")
    ] = [],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """List live resources in creation order."""
    page = await service.list_page(svc, caller, tags=tag, limit=limit, cursor=cursor)
    return Response(page.model_dump_json(), media_type="application/json")


@router.get(
    "/{resource_id}",
    response_model=ResourceRead,
    responses={200: LINKS, **problems(401, 404, 422)},
)
async def get_resource(resource_id: UUID, caller: Caller, svc: Svc) -> Response:
    resource = await service.get(svc, caller, resource_id)
    return Response(
        resource.model_dump_json(), media_type="application/json", headers=_etag(resource)
    )


@router.patch(
    "/{resource_id}",
    response_model=ResourceChanged | PolicyPreview,
    responses=problems(401, 403, 404, 409, 412, 413, 422),
)
async def update_resource(
    resource_id: UUID,
    body: ResourceUpdate,
    caller: Admin,
    svc: Svc,
    version: IfMatch,
    dry_run: Annotated[
        bool,
        Query(
            description="Change nothing: answer the resource as the change would leave it and "
            "the future live reservations its rules would refuse (`PolicyPreview`)."
        ),
    ] = False,
    affected: Annotated[
        Affected,
        Query(
            description="What to do with the future live reservations the changed rules "
            "refuse (opening hours, date overrides, blackouts, grid, duration): `keep` them "
            "(nothing is examined), `flag` them (`flagged` on the reservation, event "
            "`reservation.flagged`), or flag and `cancel` them (at most 1,000), in the "
            "change's transaction."
        ),
    ] = Affected.keep,
    limit: Annotated[
        int, Query(ge=1, le=500, description="At most this many affected reservations listed.")
    ] = 50,
    cursor: Annotated[
        str | None,
        Query(
            max_length=512,
            description="List the affected reservations after this one (`next_cursor`).",
        ),
    ] = None,
) -> Response:
    """Change fields of a resource (admin). Send If-Match to avoid overwriting a change you
    have not seen. Lowering `capacity` below what live reservations use at once is 409
    `capacity-in-use`. `dry_run=true` previews a change of the policy (or time zone): which
    future live reservations (held, pending, confirmed) its rules would refuse, with the
    reasons a create of each would get; `affected=flag|cancel` applies it to them (the
    answer's `affected` says what was done). Blackouts are part of the policy: the same
    holds for blackouts added over existing bookings."""
    if dry_run:
        preview = await service.preview(
            svc, caller, resource_id, body, version, action=affected, limit=limit, cursor=cursor
        )
        return Response(preview.model_dump_json(), media_type="application/json")
    resource = await service.update(
        svc, caller, resource_id, body, version, action=affected, limit=limit, cursor=cursor
    )
    exclude = {"affected"} if resource.affected is None else None
    return Response(
        resource.model_dump_json(exclude=exclude),
        media_type="application/json",
        headers=_etag(resource),
    )


@router.delete("/{resource_id}", status_code=204, responses=problems(401, 403, 404, 409, 422))
async def delete_resource(
    resource_id: UUID,
    caller: Admin,
    svc: Svc,
    cancel_reservations: Annotated[
        bool,
        Query(description="Also cancel the live reservations that end after now."),
    ] = False,
) -> Response:
    """Archive a resource (admin). It disappears from lists and cannot be booked; its past
    reservations stay readable. If live reservations end after now, the archive is refused
    (409) unless `cancel_reservations=true`, which cancels them in the same transaction."""
    await service.archive(svc, caller, resource_id, cancel_reservations=cancel_reservations)
    return Response(status_code=204)
