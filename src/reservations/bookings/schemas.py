from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from reservations.bookings.recurrence import MAX_EXDATES, MAX_OCCURRENCES
from reservations.kit.fields import (
    JSON_INTEGER,
    CalendarDate,
    CustomerRef,
    Duration,
    JsonInt,
    Metadata,
    SignedDuration,
    Text,
    Timestamp,
    TimeZoneName,
)
from reservations.reservations.pool_model import Pool
from reservations.reservations.schemas import ReservationRead, one_target

MAX_RESOURCES = 10


class Mode(StrEnum):
    all_or_nothing = "all-or-nothing"
    skip_conflicts = "skip-conflicts"


class Scope(StrEnum):
    all = "all"
    occurrence = "occurrence"
    following = "following"


class ResourceUnits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # `pool` is validated first: `resource_id`'s check sees it.
    pool: Pool | None = Field(
        default=None,
        description="Any free resource of a pool instead of `resource_id` (one item of a "
        "booking may name a pool; docs/pools.md).",
    )
    resource_id: UUID | None = Field(
        default=None, validate_default=True, description="The resource; or `pool`."
    )
    quantity: JsonInt = Field(default=1, ge=1, le=1_000_000)

    _one_target = field_validator("resource_id")(one_target)

    @property
    def resource(self) -> UUID:
        """The resource booked: `resource_id`, or the one bookings/pools.py chose."""
        assert self.resource_id is not None, "a pool is resolved by bookings/pools.py first"
        return self.resource_id


class BookingCreate(BaseModel):
    """Several reservations made as one: the same range on several resources (a room and
    a projector), a recurring series on one resource, or both."""

    model_config = ConfigDict(extra="forbid")

    resources: list[ResourceUnits] = Field(min_length=1, max_length=MAX_RESOURCES)
    start: Timestamp = Field(description="Start of the (first) occurrence.")
    end: Timestamp = Field(description="End of the (first) occurrence.")
    rrule: Annotated[Text, StringConstraints(max_length=500)] | None = Field(
        default=None,
        description="RFC 5545 RRULE, e.g. FREQ=WEEKLY;BYDAY=MO,WE;COUNT=20, expanded in "
        f"`timezone`'s wall time; at most {MAX_OCCURRENCES} occurrences.",
    )
    exdates: list[Timestamp | CalendarDate] = Field(
        default_factory=list,
        max_length=MAX_EXDATES,
        description="Occurrences to leave out: by start instant, or by local date.",
    )
    timezone: TimeZoneName | None = Field(
        default=None,
        description="Zone the rule is expanded in; default: the first resource's zone.",
    )
    mode: Mode = Field(
        default=Mode.all_or_nothing,
        description="all-or-nothing: book every occurrence or none (409/422 naming each "
        "failure). skip-conflicts: book what can be booked and report the rest.",
    )
    hold_seconds: Annotated[int, Field(ge=1), JSON_INTEGER] | None = Field(
        default=None,
        description="Hold everything for this many seconds (at most the "
        "configured RESERVATIONS_MAX_HOLD_SECONDS) instead of confirming it at once.",
    )
    customer: CustomerRef | None = None
    metadata: Metadata = Field(default_factory=dict)
    override_rules: bool = Field(default=False, strict=True, description="Admin keys only.")
    same_resource: bool = Field(
        default=False,
        strict=True,
        description="With a pool: every occurrence on the same resource of it (all of them "
        "on one, or none). Without, each occurrence may land on any resource of the pool.",
    )

    @field_validator("resources")
    @classmethod
    def _distinct(cls, value: list[ResourceUnits]) -> list[ResourceUnits]:
        ids = [r.resource_id for r in value if r.resource_id is not None]
        if len(set(ids)) != len(ids):
            raise ValueError("each resource may appear once; use quantity for several units")
        if sum(1 for r in value if r.pool is not None) > 1:
            raise ValueError("one item of a booking may name a pool")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> BookingCreate:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.exdates and self.rrule is None:
            raise ValueError("exdates need an rrule")
        return self


class BookingChange(BaseModel):
    """Which occurrences a cancel or reschedule acts on."""

    model_config = ConfigDict(extra="forbid")

    scope: Scope = Field(
        default=Scope.all,
        description="all occurrences, one `occurrence`, or that one and the following.",
    )
    occurrence: Timestamp | None = Field(
        default=None, description="Start of the occurrence (for occurrence / following)."
    )

    @model_validator(mode="after")
    def _needs_occurrence(self) -> BookingChange:
        if self.scope is not Scope.all and self.occurrence is None:
            raise ValueError(f"scope '{self.scope.value}' needs `occurrence` (its start)")
        return self


class BookingCancel(BookingChange):
    pass


class BookingMove(BookingChange):
    shift: SignedDuration = Field(
        default=timedelta(0),
        description="Move each start by this much local wall time (PT1H: 09:00 becomes "
        "10:00 on every date, across DST); may be negative (-PT30M).",
    )
    duration: Duration | None = Field(
        default=None, description="New length of each occurrence; default: unchanged."
    )
    override_rules: bool = Field(default=False, strict=True, description="Admin keys only.")

    @model_validator(mode="after")
    def _changes_something(self) -> BookingMove:
        if not self.shift and self.duration is None:
            raise ValueError("send a non-zero shift and/or a duration")
        if self.duration is not None and self.duration <= timedelta(0):
            raise ValueError("duration must be positive")
        return self


class Outcome(StrEnum):
    booked = "booked"
    skipped = "skipped"


class OccurrenceReport(BaseModel):
    start: datetime
    end: datetime
    outcome: Outcome
    reasons: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Why it was not booked: rule reasons, or `booked` with the conflicts.",
    )


class BookingRead(BaseModel):
    id: UUID
    status: str = Field(
        description="pending (awaiting approval), held, confirmed, or cancelled when nothing"
        " is live."
    )
    rrule: str | None
    exdates: list[Any]
    timezone: str
    mode: Mode
    customer: str | None
    metadata: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime
    reservations: list[ReservationRead]
    report: list[OccurrenceReport] | None = Field(
        default=None, description="On create: what happened to each occurrence."
    )
