from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reservations.kit.fields import JSON_INTEGER, JsonInt, Metadata, Name, Tag, TimeZoneName
from reservations.policy.model import Policy, stored

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
