from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from reservations.kit.fields import JSON_INTEGER, CustomerRef, JsonInt, Metadata, Timestamp
from reservations.kit.openapi import absent_when_unused
from reservations.reservations.pool_model import Pool, PoolPick
from reservations.reservations.rows import RangeRow, ReservationRow


class Status(StrEnum):
    held = "held"
    pending = "pending"  # a hold awaiting an admin's approval (stored as held)
    confirmed = "confirmed"
    cancelled = "cancelled"
    declined = "declined"
    expired = "expired"
    no_show = "no_show"  # confirmed, not checked in by the policy's `release_after`


def one_target(resource_id: UUID | None, info: ValidationInfo) -> UUID | None:
    """A create names its resource or a pool (validated before it), one of the two."""
    pool = info.data.get("pool")
    if resource_id is None and pool is None:
        raise ValueError("required: send `resource_id`, or a `pool` instead")
    if resource_id is not None and pool is not None:
        raise ValueError("send `resource_id` or a `pool`, not both")
    return resource_id


class ReservationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # `pool` is validated first: `resource_id`'s check sees it.
    pool: Pool | None = Field(
        default=None,
        description="Book any free resource of a pool instead of `resource_id` "
        "(docs/pools.md); the reply's `resource_id` is the one chosen, `pool` says how.",
    )
    resource_id: UUID | None = Field(
        default=None,
        validate_default=True,
        description="The resource to book; or send `pool` instead.",
    )
    start: Timestamp = Field(description="RFC 3339 with an offset; inclusive.")
    end: Timestamp = Field(description="RFC 3339 with an offset; exclusive. Must be after start.")
    quantity: JsonInt = Field(
        default=1,
        ge=1,
        le=1_000_000,
        description="Units to book; at most the capacity.",
    )
    hold_seconds: Annotated[int, Field(ge=1), JSON_INTEGER] | None = Field(
        default=None,
        description="Create a hold that expires after this many seconds (at most the "
        "configured RESERVATIONS_MAX_HOLD_SECONDS) instead of a confirmed reservation.",
    )
    customer: CustomerRef | None = Field(
        default=None, description="Your reference for the customer (an id or an e-mail)."
    )
    metadata: Metadata = Field(default_factory=dict)
    override_rules: bool = Field(
        default=False,
        strict=True,
        description="Admin keys only: book even if the resource's policy forbids it "
        "(hours, grid, notice, limits). Never overrides overlap or capacity.",
    )

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("start")
        if start is not None and end <= start:
            raise ValueError("must be after start")
        return end

    _one_target = field_validator("resource_id")(one_target)


class ReservationUpdate(BaseModel):
    """Reschedule (start and/or end) or edit customer and metadata."""

    model_config = ConfigDict(extra="forbid")

    start: Timestamp | None = None
    end: Timestamp | None = None
    customer: CustomerRef | None = None
    metadata: Metadata | None = None
    override_rules: bool = Field(
        default=False,
        strict=True,
        description="Admin keys only: move even if the policy forbids it.",
    )


class HoldExtend(BaseModel):
    """A held reservation's (or booking's holds') new expiry."""

    model_config = ConfigDict(extra="forbid")

    hold_seconds: Annotated[int, Field(ge=1), JSON_INTEGER] = Field(
        description="The hold expires this many seconds from now (at most the configured "
        "RESERVATIONS_MAX_HOLD_SECONDS), never earlier than it already does, and at most "
        "RESERVATIONS_HOLD_MAX_LIFE_SECONDS after it was made.",
    )


class RuleBroken(BaseModel):
    reason: str
    detail: str


class Flagged(BaseModel):
    """Why a policy change marked the reservation (`PATCH /v1/resources/{id}?affected=flag`)."""

    at: datetime
    reason: str = Field(description="The first violation's reason, as a create's 422 says it.")
    violations: list[RuleBroken] = Field(
        description="Each rule the booking breaks under the resource's policy of then: "
        "`reason` and `detail`, as a refused create lists them."
    )


def _never_null(schema: dict[str, Any]) -> None:
    """A member left out of a reply when unused, never sent as null (its schema says so)."""
    branches = schema.pop("anyOf", [])
    schema.pop("default", None)
    schema.update(next(b for b in branches if b != {"type": "null"}))


class ReservationRead(BaseModel):
    id: UUID
    resource_id: UUID
    booking_id: UUID | None = Field(
        default=None, description="The booking (series or group) this belongs to, if any."
    )
    start: datetime
    end: datetime
    status: Status
    quantity: int
    expires_at: datetime | None
    customer: str | None
    metadata: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime
    checked_in_at: datetime | None = Field(
        default=None, description="When the booker checked in (POST .../check-in); null until then."
    )
    flagged: Flagged | None = Field(
        default=None,
        description="Set when a policy change found that its rules refuse this booking "
        "(opening hours, blackouts, grid, duration); cleared when it moves.",
    )
    pool: PoolPick | None = Field(
        default=None,
        exclude_if=lambda pick: pick is None,
        json_schema_extra=_never_null,
        description="Only in the reply to a create from a pool: how its resource was chosen.",
    )

    @classmethod
    def from_row(cls, row: ReservationRow, now: datetime) -> ReservationRead:
        status = Status(row.status)
        if is_stale_hold(row, now):
            status = Status.expired  # the sweeper has not got to it yet; it blocks no one
        elif status is Status.held and row.needs_approval:
            status = Status.pending
        return cls(
            id=row.id,
            resource_id=row.resource_id,
            booking_id=row.booking_id,
            start=row.start_at,
            end=row.end_at,
            status=status,
            quantity=row.quantity,
            expires_at=row.expires_at,
            customer=row.customer,
            metadata=row.metadata,
            version=row.version,
            created_at=row.created_at,
            updated_at=row.updated_at,
            checked_in_at=row.checked_in_at,
            flagged=_flagged(row),
        )


def _flagged(row: ReservationRow) -> Flagged | None:
    if row.flagged_at is None or not row.flagged_violations:
        return None
    violations = [RuleBroken.model_validate(v) for v in row.flagged_violations]
    return Flagged(at=row.flagged_at, reason=violations[0].reason, violations=violations)


def is_stale_hold(row: RangeRow, now: datetime) -> bool:
    """A hold past its expiry: dead, whether or not the sweeper has marked it yet. The one
    Python twin of repository.STALE_HOLD (the availability map's `Detail.stale` keeps its
    own, a layer below)."""
    expires = row.expires_at
    return row.status == "held" and expires is not None and expires <= now


class ReservationPage(BaseModel):
    items: list[ReservationRead]
    next_cursor: str | None


class ConflictItem(BaseModel):
    # Sent with exclude_none: `id` and `resource_id` are absent, never null.
    model_config = ConfigDict(json_schema_extra=absent_when_unused)

    start: datetime
    end: datetime
    status: Status
    id: UUID | None = Field(default=None, description="Present when you may see it.")
    resource_id: UUID | None = Field(
        default=None, description="The resource it is on, in answers about several resources."
    )
