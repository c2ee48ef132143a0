"""The waitlist on the wire."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from reservations.kit.fields import CustomerRef, JsonInt, Timestamp
from reservations.waitlist.repository import EntryRow


class EntryStatus(StrEnum):
    waiting = "waiting"
    promoted = "promoted"  # a hold was made for it: see reservation_id
    left = "left"
    lapsed = "lapsed"  # its range began (or the resource went) before it could be promoted


class WaitlistJoin(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resource_id: UUID
    start: Timestamp
    end: Timestamp
    quantity: JsonInt = Field(default=1, ge=1, le=1_000_000)
    customer: CustomerRef | None = None
    hold_seconds: JsonInt = Field(
        default=900,
        ge=1,
        description="How long the hold made on promotion lasts; confirm it before then or it "
        "passes to the next in line.",
    )


class WaitlistEntryRead(BaseModel):
    id: UUID
    resource_id: UUID
    start: datetime
    end: datetime
    quantity: int
    customer: str | None
    hold_seconds: int
    status: EntryStatus
    position: int | None = Field(description="1 = next in line; null unless waiting.")
    reservation_id: UUID | None = Field(description="The hold made on promotion.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: EntryRow, position: int | None) -> WaitlistEntryRead:
        return cls(
            id=row.id,
            resource_id=row.resource_id,
            start=row.start_at,
            end=row.end_at,
            quantity=row.quantity,
            customer=row.customer,
            hold_seconds=row.hold_seconds,
            status=EntryStatus(row.status),
            position=position,
            reservation_id=row.reservation_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class WaitlistPage(BaseModel):
    items: list[WaitlistEntryRead]
    next_cursor: str | None
