from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reservations.kit.fields import Metadata, Name, Tag, TimeZoneName

MAX_TAGS = 32


def _unique_tags(tags: list[str] | None) -> list[str] | None:
    if tags is None:
        return None
    return list(dict.fromkeys(tags))


class ResourceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    capacity: int = Field(
        default=1,
        ge=1,
        le=1_000_000,
        description="How many reservations may overlap. Only 1 is supported in this version.",
    )
    timezone: TimeZoneName = Field(default="UTC", description="IANA time zone of the resource.")
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    metadata: Metadata = Field(default_factory=dict)

    _tags = field_validator("tags")(_unique_tags)


class ResourceUpdate(BaseModel):
    """Fields to change; omitted fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    capacity: int | None = Field(default=None, ge=1, le=1_000_000)
    timezone: TimeZoneName | None = None
    tags: list[Tag] | None = Field(default=None, max_length=MAX_TAGS)
    metadata: Metadata | None = None

    _tags = field_validator("tags")(_unique_tags)


class ResourceRead(BaseModel):
    id: UUID
    name: str
    capacity: int
    timezone: str
    tags: list[str]
    metadata: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime


class ResourcePage(BaseModel):
    items: list[ResourceRead]
    next_cursor: str | None
