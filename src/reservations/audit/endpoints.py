"""HTTP for the audit log (admin keys)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from reservations.audit import service
from reservations.audit.schemas import AuditPage
from reservations.deps import Admin, Svc
from reservations.kit.openapi import problems

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", response_model=AuditPage, responses=problems(401, 403, 422))
async def list_audit(
    caller: Admin,
    svc: Svc,
    object_id: Annotated[
        UUID | None, Query(description="Only changes of this resource, reservation, ...")
    ] = None,
    actor: Annotated[
        str | None,
        Query(
            max_length=64,
            pattern=r"^[A-Za-z0-9:._-]+$",
            description="Only changes by this API key id (or `system:sweeper`, ...).",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> AuditPage:
    """Who changed what in your tenant, newest first, with the row before and after, and
    its position in the hash chain once sealed. Admin keys."""
    return await service.page(
        svc, caller, object_id=object_id, actor=actor, limit=limit, cursor=cursor
    )
