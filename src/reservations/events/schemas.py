"""What the outbox looks like on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field


class EventRead(BaseModel):
    id: str = Field(
        description="Opaque position in the tenant's stream: pass it as `after` (or as the "
        "SSE `Last-Event-ID`) to continue after this event."
    )
    type: str = Field(description="e.g. reservation.created, reservation.cancelled.")
    resource_id: UUID
    resource_seq: int = Field(description="1, 2, 3... per resource, in commit order.")
    subject_id: UUID | None = Field(
        default=None,
        description="The reservation or resource the event is about (absent for booker keys "
        "on events about reservations and waitlist entries).",
    )
    data: dict[str, Any] = Field(
        description="The object after the change. Booker keys see events about reservations "
        "and waitlist entries with `start`, `end` and `status` only."
    )
    created_at: datetime


class EventPage(BaseModel):
    items: list[EventRead]
    next_cursor: str | None = Field(
        description="Pass as `after` for the events that follow; the last item's id (or your "
        "own `after` when there was nothing new)."
    )
