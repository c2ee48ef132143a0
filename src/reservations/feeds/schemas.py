"""Calendar feeds on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reservations.kit.fields import Label


class FeedCreate(BaseModel):
    """Exactly one of `resource_id` (everything booked on that resource) and
    `api_key_prefix` (everything that key booked, on any resource)."""

    model_config = ConfigDict(extra="forbid")

    resource_id: UUID | None = None
    api_key_prefix: str | None = Field(
        default=None,
        pattern=r"^[0-9A-Za-z]{12}$",
        description="The 12 characters after `rsv_` of a key of your tenant.",
    )
    label: Label = Field(default="", description="Becomes the calendar's name if given.")

    @model_validator(mode="after")
    def _one_target(self) -> FeedCreate:
        if (self.resource_id is None) == (self.api_key_prefix is None):
            raise ValueError("give exactly one of resource_id and api_key_prefix")
        return self


class FeedRead(BaseModel):
    id: UUID
    kind: Literal["resource", "booker"]
    resource_id: UUID | None
    api_key_prefix: str | None
    label: str
    created_at: datetime
    revoked_at: datetime | None


class FeedCreated(FeedRead):
    token: str = Field(description="The feed's secret; shown once, only its hash is kept.")
    url: str = Field(description="Subscribe to this in a calendar app; anyone with it can read.")


class FeedPage(BaseModel):
    items: list[FeedRead]
    next_cursor: str | None
