"""The utilization report as clients read it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class GroupBy(StrEnum):
    resource = "resource"
    tag = "tag"
    day = "day"
    week = "week"


class UtilizationGroup(BaseModel):
    key: str = Field(
        description="The resource's id, the tag, the local date (`2026-12-07`) or the ISO week"
        " (`2026-W50`), by `group_by`; `total` for the totals."
    )
    name: str | None = Field(default=None, description="The resource's name (by resource).")
    resources: int = Field(description="Resources counted in this group.")
    open_seconds: float = Field(
        description="Open time (hours, date overrides, less blackouts) within the window, times"
        " each resource's capacity."
    )
    booked_seconds: float = Field(
        description="Confirmed time within the window, times each reservation's quantity."
    )
    utilization: float | None = Field(
        description="booked_seconds / open_seconds; null without open time. Above 1 when"
        " admins booked outside the hours (`override_rules`)."
    )
    reservations: int = Field(description="Confirmed reservations starting in the group.")
    cancellations: int = Field(description="Cancelled reservations starting in the group.")
    no_shows: int = Field(
        description="Reservations released as no-shows (policy `check_in.release_after`) that"
        " start in the group; their time is not booked."
    )


class UtilizationReport(BaseModel):
    start: datetime
    end: datetime
    group_by: GroupBy
    groups: list[UtilizationGroup]
    total: UtilizationGroup
