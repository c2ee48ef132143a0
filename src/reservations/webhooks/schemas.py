"""What webhook endpoints and their delivery log look like on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from reservations.kit.fields import Text

# Every type the outbox writes (migrations 0004, 0005a, 0013, 0015; reminders/tasks.py); a
# family ("reservation.*", "resource.*", "waitlist.*", "hold.*") takes all of its types.
EVENT_TYPES = (
    "reservation.held",
    "reservation.pending",
    "reservation.created",
    "reservation.confirmed",
    "reservation.cancelled",
    "reservation.declined",
    "reservation.expired",
    "reservation.rescheduled",
    "reservation.updated",
    "reservation.checked_in",
    "reservation.no_show",
    "reservation.reminder",
    "hold.expiring",
    "reservation.flagged",
    "resource.created",
    "resource.updated",
    "resource.archived",
    "waitlist.promoted",
)
FAMILIES = ("reservation.*", "resource.*", "waitlist.*", "hold.*")
MAX_EVENT_TYPES = 32


def _known_type(value: str) -> str:
    if value not in EVENT_TYPES and value not in FAMILIES:
        raise ValueError(
            f"must be one of {', '.join(EVENT_TYPES + FAMILIES)} (leave the list empty for all)"
        )
    return value


def _unique(values: list[str] | None) -> list[str] | None:
    return None if values is None else list(dict.fromkeys(values))


# The enum is in the document too, so a client (or a fuzzer) knows the list up front.
EventType = Annotated[
    str,
    AfterValidator(_known_type),
    Field(json_schema_extra={"enum": list(EVENT_TYPES + FAMILIES)}),
]
EventTypes = Annotated[
    list[EventType],
    Field(
        max_length=MAX_EVENT_TYPES,
        description="Event types to deliver, e.g. `reservation.created` or "
        "`reservation.*`; an empty list delivers every type.",
    ),
    AfterValidator(_unique),
]
Url = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2048,
        pattern="^[Hh][Tt][Tt][Pp][Ss]?://",
        description="Where to POST. https on a public address (private and loopback "
        "addresses, and plain http, only when the server allows private receivers).",
    ),
]
Description = Annotated[Text, StringConstraints(max_length=500)]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url
    event_types: EventTypes = Field(default_factory=list)
    description: Description = ""


class WebhookUpdate(BaseModel):
    """Fields to change; omitted fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    url: Url | None = None
    event_types: EventTypes | None = None
    description: Description | None = None
    enabled: bool | None = Field(
        default=None,
        description="false pauses deliveries (events keep queueing); true resumes them, "
        "clears `disabled_reason` and retries what waits at once.",
    )


class WebhookRead(BaseModel):
    id: UUID
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None = Field(
        description="Why deliveries are paused: an admin's PATCH, or the failures that "
        "disabled the endpoint automatically."
    )
    disabled_at: datetime | None
    failing_since: datetime | None = Field(
        description="First failed attempt since the last success (null while healthy)."
    )
    consecutive_failures: int
    version: int
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookRead):
    secret: str = Field(
        description="The signing secret (`whsec_...`), shown only in this response. The "
        "server keeps it to sign deliveries; store it to verify them."
    )


class WebhookPage(BaseModel):
    items: list[WebhookRead]
    next_cursor: str | None


class AttemptRead(BaseModel):
    id: int = Field(description="The attempt's position in the log.")
    message_id: str = Field(description="The `webhook-id` header: the same on every retry.")
    event_id: str | None = Field(
        description="The event's id as in /v1/events (null for a test message)."
    )
    event_type: str
    resource_id: UUID | None
    resource_seq: int | None
    attempt: int = Field(description="1 for the first attempt of the message, then 2, 3...")
    outcome: Literal["delivered", "failed", "dead"] = Field(
        description="delivered (2xx), failed (will be retried at `next_attempt_at`), or dead "
        "(failed and given up)."
    )
    message_status: Literal["pending", "delivered", "dead"]
    status_code: int | None = Field(description="The receiver's HTTP status, if it answered.")
    latency_ms: int | None
    error: str | None
    attempted_at: datetime
    next_attempt_at: datetime | None


class AttemptPage(BaseModel):
    items: list[AttemptRead]
    next_cursor: str | None


class TestMessage(BaseModel):
    message_id: str
    status: Literal["pending", "delivered", "dead"]
    created_at: datetime
