"""A resource's booking policy: opening hours in its local time, date overrides, blackouts,
buffers, duration limits, a slot grid, notice, advance and a per-booker cap.

Stored as jsonb on the resource (`model_dump(mode="json")`), versioned with it; `stored`
reads it back."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from reservations.kit.fields import (
    JSON_INTEGER,
    CalendarDate,
    Duration,
    JsonInt,
    Text,
    Timestamp,
)

MAX_BUFFER = timedelta(days=1)
MAX_INTERVALS_PER_DAY = 12
MAX_OVERRIDES = 400
MAX_BLACKOUTS = 500

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")


def _hhmm(value: str) -> str:
    if not _HHMM.match(value):
        raise ValueError("must be a local wall time 'HH:MM' between 00:00 and 24:00")
    return value


WallTime = Annotated[
    str,
    AfterValidator(_hhmm),
    WithJsonSchema({"type": "string", "pattern": "^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"}),
]


def minutes(value: str) -> int:
    hours, mins = value.split(":")
    return int(hours) * 60 + int(mins)


class Weekday(StrEnum):
    mon = "mon"
    tue = "tue"
    wed = "wed"
    thu = "thu"
    fri = "fri"
    sat = "sat"
    sun = "sun"


WEEKDAYS = list(Weekday)  # index = date.weekday()


class OpeningInterval(BaseModel):
    """Open from `start` to `end` local wall time; `end` may be "24:00"."""

    model_config = ConfigDict(extra="forbid")

    start: WallTime
    end: WallTime

    @model_validator(mode="after")
    def _ordered(self) -> OpeningInterval:
        if minutes(self.end) <= minutes(self.start):
            raise ValueError(
                "end must be after start; split hours that cross midnight into "
                "'22:00'-'24:00' and the next day's '00:00'-'02:00'"
            )
        return self


def _no_overlaps(intervals: list[OpeningInterval]) -> list[OpeningInterval]:
    ordered = sorted(intervals, key=lambda i: minutes(i.start))
    for a, b in pairwise(ordered):
        if minutes(b.start) < minutes(a.end):
            raise ValueError(f"intervals {a.start}-{a.end} and {b.start}-{b.end} overlap")
    return ordered


DayHours = Annotated[
    list[OpeningInterval],
    Field(max_length=MAX_INTERVALS_PER_DAY),
    AfterValidator(_no_overlaps),
]


class DateOverride(BaseModel):
    """Special hours on one local date; an empty `hours` list closes the day."""

    model_config = ConfigDict(extra="forbid")

    date: CalendarDate
    hours: DayHours = Field(default_factory=list)


class Blackout(BaseModel):
    """An absolute range in which nothing may be booked."""

    model_config = ConfigDict(extra="forbid")

    start: Timestamp
    end: Timestamp
    reason: Annotated[Text, StringConstraints(max_length=200)] = ""

    @model_validator(mode="after")
    def _ordered(self) -> Blackout:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class BookerLimit(BaseModel):
    """At most `max_live` live reservations of this resource per booker, counted per local
    calendar `period` of their start (or over all reservations not yet ended, if no period).
    The booker is the API key (`per: api_key`) or the reservation's `customer`
    (`per: customer`; requests without a customer count against the key)."""

    model_config = ConfigDict(extra="forbid")

    max_live: JsonInt = Field(ge=1, le=10_000)
    period: Literal["day", "week", "month"] | None = None
    per: Literal["api_key", "customer"] = "api_key"


MAX_CHECK_IN = timedelta(days=1)
MAX_REMINDERS = 5
MAX_REMINDER = timedelta(days=7)


class CheckIn(BaseModel):
    """When a booker may check in (POST /v1/reservations/{id}/check-in), and when a confirmed
    reservation nobody checked in to is released as a no-show."""

    model_config = ConfigDict(extra="forbid")

    opens_before: Duration = Field(
        default=timedelta(minutes=15),
        description="Check-in opens this long before the start (PT0S to P1D).",
    )
    release_after: Duration | None = Field(
        default=None,
        description="A confirmed reservation not checked in this long after its start becomes "
        "`no_show` and the rest of its range is free again (PT1M to P1D). Omit to never release.",
    )

    @field_validator("opens_before")
    @classmethod
    def _opens(cls, value: timedelta) -> timedelta:
        if value > MAX_CHECK_IN:
            raise ValueError("must be at most one day (P1D)")
        return value

    @field_validator("release_after")
    @classmethod
    def _release(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and not timedelta(minutes=1) <= value <= MAX_CHECK_IN:
            raise ValueError("must be between PT1M and P1D")
        return value


class Policy(BaseModel):
    """Every field is optional; an empty policy books around the clock with no limits."""

    model_config = ConfigDict(extra="forbid")

    weekly_hours: dict[Weekday, DayHours] | None = Field(
        default=None,
        description="Opening hours per weekday in the resource's time zone; a weekday left "
        "out is closed. Omit (null) to be open around the clock.",
    )
    date_overrides: list[DateOverride] = Field(default_factory=list, max_length=MAX_OVERRIDES)
    blackouts: list[Blackout] = Field(default_factory=list, max_length=MAX_BLACKOUTS)
    buffer_before: Duration = Field(
        default=timedelta(0), description="Turnover time kept free before each booking."
    )
    buffer_after: Duration = Field(
        default=timedelta(0), description="Turnover time kept free after each booking."
    )
    min_duration: Duration | None = None
    max_duration: Duration | None = None
    slot_grid_minutes: Annotated[int, Field(ge=1, le=1440), JSON_INTEGER] | None = Field(
        default=None,
        description="Starts must be a multiple of this many minutes after local midnight.",
    )
    min_notice: Duration | None = Field(default=None, description="Book at least this early.")
    max_advance: Duration | None = Field(
        default=None, description="Book at most this far ahead (measured to the start)."
    )
    booker_limit: BookerLimit | None = None
    requires_approval: bool = Field(
        default=False,
        strict=True,
        description="Bookings by booker keys are `pending` (a hold that keeps the range) "
        "until an admin approves or declines them; admins' own bookings are not.",
    )
    approval_window: Duration = Field(
        default=timedelta(days=1),
        description="How long a pending booking keeps its range before it expires.",
    )
    reminders: list[Duration] = Field(
        default_factory=list,
        max_length=MAX_REMINDERS,
        description="`reservation.reminder` events this long before each confirmed "
        "reservation's start (e.g. P1D and PT1H; PT1M to P7D, at most five, each once).",
        json_schema_extra={"uniqueItems": True},
    )
    check_in: CheckIn | None = Field(
        default=None,
        description="Check-in and no-show release. Without it, check-in opens 15 minutes "
        "before the start and nothing is released.",
    )

    @field_validator("approval_window")
    @classmethod
    def _approval_window(cls, value: timedelta) -> timedelta:
        if not timedelta(minutes=1) <= value <= timedelta(days=7):
            raise ValueError("must be between PT1M and P7D")
        return value

    @field_validator("reminders")
    @classmethod
    def _reminders(cls, value: list[timedelta]) -> list[timedelta]:
        for lead in value:
            if not timedelta(minutes=1) <= lead <= MAX_REMINDER:
                raise ValueError("each must be between PT1M and P7D")
        if len(set(value)) != len(value):
            raise ValueError("each lead time may appear once")
        return value  # as sent: an accepted policy reads back as it was sent

    @field_validator("buffer_before", "buffer_after")
    @classmethod
    def _small_buffer(cls, value: timedelta) -> timedelta:
        if value > MAX_BUFFER:
            raise ValueError("must be at most one day (P1D)")
        return value

    @field_validator("date_overrides")
    @classmethod
    def _unique_dates(cls, value: list[DateOverride]) -> list[DateOverride]:
        seen = set()
        for item in value:
            if item.date in seen:
                raise ValueError(f"date {item.date} appears twice")
            seen.add(item.date)
        return sorted(value, key=lambda o: o.date)

    @model_validator(mode="after")
    def _durations(self) -> Policy:
        lo, hi = self.min_duration, self.max_duration
        if lo is not None and lo <= timedelta(0):
            raise ValueError("min_duration must be positive")
        if hi is not None and hi <= timedelta(0):
            raise ValueError("max_duration must be positive")
        if lo is not None and hi is not None and hi < lo:
            raise ValueError("max_duration must not be shorter than min_duration")
        return self

    def guarded(self, start: datetime, end: datetime) -> tuple[datetime, datetime]:
        """The range the guards see for a booking of [start, end): widened by the buffers."""
        return start - self.buffer_before, end + self.buffer_after

    def hours_on(self, day: date) -> list[tuple[int, int]] | None:
        """Opening intervals of a local date in minutes, or None for around the clock."""
        for override in self.date_overrides:
            if override.date == day:
                return [(minutes(i.start), minutes(i.end)) for i in override.hours]
        if self.weekly_hours is None:
            return None
        intervals = self.weekly_hours.get(WEEKDAYS[day.weekday()], [])
        return [(minutes(i.start), minutes(i.end)) for i in intervals]


DURATION_FIELDS = (
    "buffer_before",
    "buffer_after",
    "min_duration",
    "max_duration",
    "min_notice",
    "max_advance",
    "approval_window",
)
_YEARS = re.compile(r"^P([0-9]+)Y(?:([0-9]+)D)?(T[0-9HMS]+)?$")


def stored(raw: dict[str, Any]) -> dict[str, Any]:
    """A stored policy as `Policy` reads it. Durations of 365 days and more used to be
    written with pydantic's 365-day year ("P1Y", "P1Y1D"), which the reader refuses; a row
    written then reads as the days it meant."""
    legacy = {}
    for name in DURATION_FIELDS:
        value = raw.get(name)
        if isinstance(value, str) and (years := _YEARS.match(value)):
            count, days, clock = years.groups()
            legacy[name] = f"P{int(count) * 365 + int(days or 0)}D{clock or ''}"
    return {**raw, **legacy} if legacy else raw
