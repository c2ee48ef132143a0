from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reservations.kit.fields import JSON_INTEGER, JsonInt, Metadata, Name, Tag, TimeZoneName
from reservations.kit.openapi import absent_when_unused
from reservations.policy.model import Policy, stored
from reservations.reservations.schemas import RuleBroken, Status

MAX_TAGS = 32


def _unique_tags(tags: list[str] | None) -> list[str] | None:
    if tags is None:
        return None
    return list(dict.fromkeys(tags))


class ResourceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    capacity: JsonInt = Field(
        default=1,
        ge=1,
        le=1_000_000,
        description="Units that may be in use at once: at every instant the quantities of "
        "live reservations sum to at most this.",
    )
    timezone: TimeZoneName = Field(
        default="UTC", description="IANA time zone; opening hours and slot grids use it."
    )
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    metadata: Metadata = Field(default_factory=dict)
    policy: Policy = Field(default_factory=Policy, description="Booking rules.")
    near: UUID | None = Field(
        default=None,
        description="Another of your resources this one is usually booked together with: "
        "the new one is placed on the same shard, so bookings of both never span database "
        "clusters (no effect without shards).",
    )

    _tags = field_validator("tags")(_unique_tags)


class ResourceUpdate(BaseModel):
    """Fields to change; omitted fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    capacity: Annotated[int, Field(ge=1, le=1_000_000), JSON_INTEGER] | None = None
    timezone: TimeZoneName | None = None
    tags: list[Tag] | None = Field(default=None, max_length=MAX_TAGS)
    metadata: Metadata | None = None
    policy: Policy | None = Field(
        default=None,
        description="Replaces the whole policy. Buffers apply to bookings made or moved "
        "afterwards; existing reservations keep the turnover they were booked with.",
    )

    _tags = field_validator("tags")(_unique_tags)


class ResourceRead(BaseModel):
    id: UUID
    name: str
    capacity: int
    timezone: str
    tags: list[str]
    metadata: dict[str, Any]
    policy: Policy
    version: int
    created_at: datetime
    updated_at: datetime

    @field_validator("policy", mode="before")
    @classmethod
    def _stored_policy(cls, value: Any) -> Any:
        return stored(value) if isinstance(value, dict) else value


class ResourcePage(BaseModel):
    items: list[ResourceRead]
    next_cursor: str | None


class Affected(StrEnum):
    """What a change does to the future live reservations its policy refuses."""

    keep = "keep"
    flag = "flag"
    cancel = "cancel"


class AffectedReservation(BaseModel):
    """A future live reservation the resource's rules (as changed) refuse."""

    id: UUID
    booking_id: UUID | None
    start: datetime
    end: datetime
    status: Status = Field(description="Before the change: held, pending or confirmed.")
    customer: str | None
    reason: str = Field(description="The first violation's reason, as a create's 422 says it.")
    violations: list[RuleBroken] = Field(
        description="Every rule the booking breaks, worded as a refused create's `violations`."
    )


class AffectedReport(BaseModel):
    action: Affected = Field(
        description="What was done to them: `keep` (nothing; always so for a dry run), "
        "`flag` or `cancel`."
    )
    total: int = Field(description="How many of the examined reservations are refused.")
    examined: int = Field(description="How many future live reservations were examined.")
    complete: bool = Field(
        description="false when more live reservations lie within the horizon than one change "
        "examines (2,000): then only those starting by `horizon` were."
    )
    horizon: datetime = Field(
        description="Reservations starting after now and by this instant were examined "
        "(at most 366 days ahead)."
    )
    items: list[AffectedReservation] = Field(
        description="The refused ones in (start, id) order, at most `limit` of them."
    )
    next_cursor: str | None = Field(
        default=None,
        description="More are listed after the last one: send this back as `cursor` (with "
        "`dry_run=true`, the same change) for the next page.",
    )


class ResourceChanged(ResourceRead):
    """The resource after a change; with `affected=flag` or `cancel`, what was done."""

    model_config = ConfigDict(json_schema_extra=absent_when_unused)

    affected: AffectedReport | None = Field(
        default=None, description="Present when `affected` was flag or cancel."
    )


class PolicyPreview(BaseModel):
    """A dry run: the resource as the change would leave it (its `version` is still the
    current one, to send as If-Match with the change), and the future live reservations
    its rules would refuse."""

    dry_run: Literal[True] = True
    resource: ResourceRead
    affected: AffectedReport
