"""HTTP for reports (viewer and admin keys)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from reservations.deps import Caller, Svc
from reservations.kit.fields import Tag, Timestamp
from reservations.kit.openapi import problems
from reservations.reports import service
from reservations.reports.schemas import GroupBy, UtilizationReport

router = APIRouter(prefix="/v1/reports", tags=["reports"])


@router.get("/utilization", response_model=UtilizationReport, responses=problems(401, 403, 422))
async def utilization_report(
    caller: Caller,
    svc: Svc,
    from_: Annotated[Timestamp, Query(alias="from", description="Window start (RFC 3339).")],
    to: Annotated[Timestamp, Query(description="Window end (RFC 3339); at most 366 days on.")],
    group_by: Annotated[
        GroupBy, Query(description="One group per resource, tag, local day or ISO week.")
    ] = GroupBy.resource,
    tag: Annotated[
        list[Tag], Query(max_length=32, description="Only resources with all these tags.")
    ] = [],  # noqa: B006
    resource_id: Annotated[
        list[UUID], Query(max_length=1_000, description="Only these resources.")
    ] = [],  # noqa: B006
) -> UtilizationReport:
    """Booked time over open time in [from, to): confirmed time (times quantity) against the
    opening hours, date overrides and blackouts (times capacity), with the confirmed and
    cancelled reservations that start in each group. Days and weeks are each resource's local
    dates. Viewer and admin keys (a report counts every booker's reservations)."""
    return await service.utilization(
        svc,
        caller,
        start=from_,
        end=to,
        group_by=group_by,
        tags=tag,
        resource_ids=resource_id,
    )
