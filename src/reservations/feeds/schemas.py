"""Calendar feeds on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reservations.kit.fields import Label, Tag

Content = Literal["events", "freebusy"]


class FeedCreate(BaseModel):
    """Exactly one target: `resource_id` (that resource), `api_key_prefix` (everything that
    key booked, on any resource; events only) or `tag` (the live resources with that tag;
    free/busy only). `content`: `events` (the reservations) or `freebusy` (when the target
    cannot be booked: reservations, buffers, closed hours, blackouts; docs/feeds.md)."""

    model_config = ConfigDict(extra="forbid")

    content: Content = "events"
    resource_id: UUID | None = None
    api_key_prefix: str | None = Field(
        default=None,
        pattern=r"^[0-9A-Za-z]{12}$",
        description="The 12 characters after `rsv_` of a key of your tenant.",
    )
    tag: Tag | None = Field(default=None, description="Free/busy of every live resource with it.")
    label: Label = Field(default="", description="Becomes the calendar's name if given.")

    @model_validator(mode="after")
    def _one_target(self) -> FeedCreate:
        given = [self.resource_id, self.api_key_prefix, self.tag]
        if sum(t is not None for t in given) != 1:
            raise ValueError("give exactly one of resource_id, api_key_prefix and tag")
        if self.api_key_prefix is not None and self.content != "events":
            raise ValueError("a key's feed shows its reservations: content must be events")
        if self.tag is not None and self.content != "freebusy":
            raise ValueError("a tag's feed is a free/busy feed: send content freebusy")
        return self


class FeedRead(BaseModel):
    id: UUID
    kind: Literal["resource", "booker", "tag"]
    content: Content
    resource_id: UUID | None
    api_key_prefix: str | None
    tag: str | None
    label: str
    created_at: datetime
    revoked_at: datetime | None


class FeedCreated(FeedRead):
    token: str = Field(description="The feed's secret; shown once, only its hash is kept.")
    url: str = Field(description="Subscribe to this in a calendar app; anyone with it can read.")
    json_url: str | None = Field(
        description="A free/busy feed's same periods as JSON (null for an events feed)."
    )


class FeedPage(BaseModel):
    items: list[FeedRead]
    next_cursor: str | None


class BusyPeriod(BaseModel):
    start: datetime
    end: datetime
    type: Literal["busy", "busy-unavailable"] = Field(
        description="busy: a reservation or the turnover buffers around one; busy-unavailable: "
        "anything else no booking may cover (closed, blackout, notice, advance, a gap too short)."
    )


class ResourceFreeBusy(BaseModel):
    resource_id: UUID
    name: str
    timezone: str
    from_: datetime = Field(alias="from")
    to: datetime = Field(
        description="The end of what is described: the feed's, or earlier when the periods were "
        "cut at the limit (every instant in [from, to) not in `busy` is free)."
    )
    busy: list[BusyPeriod] = Field(description="In order; they neither touch nor overlap.")

    model_config = ConfigDict(populate_by_name=True)


class FreeBusyRead(BaseModel):
    """When the feed's resources cannot be booked (the same periods as its iCalendar's
    VFREEBUSY components). Free means an admin could book one unit covering the instant now,
    without override_rules (docs/feeds.md)."""

    computed_at: datetime = Field(description="The 5-minute step it holds for (the DTSTAMP).")
    from_: datetime = Field(alias="from")
    to: datetime
    resources: list[ResourceFreeBusy] = Field(description="By resource id.")
    complete: bool = Field(
        description="false when a tag has more resources than a feed shows: the first ones by id "
        "are shown."
    )

    model_config = ConfigDict(populate_by_name=True)
