from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reservations.kit.fields import Duration, JsonInt, Tag, Timestamp, WrittenDuration
from reservations.policy.rules import Reason

MAX_WINDOW = timedelta(days=31)
MAX_SEARCH_RESOURCES = 2_000


class SlotRead(BaseModel):
    start: datetime
    end: datetime
    remaining: int = Field(description="Units still free over the slot (its buffers included).")


class SpanRead(BaseModel):
    start: datetime
    end: datetime


class UnavailableRead(BaseModel):
    start: datetime
    end: datetime
    reason: Reason
    detail: str = ""


class AvailabilityRead(BaseModel):
    resource_id: UUID
    timezone: str
    capacity: int
    from_: datetime = Field(alias="from")
    to: datetime
    duration: WrittenDuration | None = Field(default=None, description="Absent without `duration`.")
    quantity: int
    slots: list[SlotRead] = Field(
        description="Bookable ranges of `duration`, starts on the grid, earliest first."
    )
    free: list[SpanRead] = Field(
        description="Where a booking of `quantity` fits: open, outside blackouts and "
        "turnover buffers, from the earliest allowed start (minimum notice) on."
    )
    unavailable: list[UnavailableRead] | None = Field(
        default=None, description="With explain=true: every other range, and why."
    )

    model_config = ConfigDict(populate_by_name=True)


class SearchRequest(BaseModel):
    """Which resources are free: for all of [from, to) (no `duration`), or for a slot of
    `duration` somewhere in it (earliest slot first)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: Timestamp = Field(alias="from")
    to: Timestamp
    duration: Duration | None = None
    quantity: JsonInt = Field(default=1, ge=1, le=1_000_000)
    tags: list[Tag] = Field(default_factory=list, max_length=32)
    min_capacity: JsonInt = Field(default=1, ge=1, le=1_000_000)
    step_minutes: JsonInt = Field(default=15, ge=1, le=1440)
    limit: JsonInt = Field(default=20, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=512)

    @field_validator("to")
    @classmethod
    def _window(cls, to: datetime, info: object) -> datetime:
        data = getattr(info, "data", {})
        start = data.get("from_")
        if start is not None:
            if to <= start:
                raise ValueError("must be after from")
            if to - start > MAX_WINDOW:
                raise ValueError(f"the window may span at most {MAX_WINDOW.days} days")
        return to


class ResourceBrief(BaseModel):
    id: UUID
    name: str
    capacity: int
    timezone: str
    tags: list[str]


class SearchHit(BaseModel):
    resource: ResourceBrief
    earliest: SlotRead


class SearchPage(BaseModel):
    items: list[SearchHit]
    next_cursor: str | None
    complete: bool = Field(
        description=f"false when more than {MAX_SEARCH_RESOURCES} resources match the filters: "
        f"only the first {MAX_SEARCH_RESOURCES} (by id) were searched, so a better fit may "
        "exist; narrow the search with tags or min_capacity."
    )
