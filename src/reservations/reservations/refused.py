"""What a write asked for, noted by its route before the use case runs, so that a refusal
(409 `reservation-conflict`, 422 `booking-rule-violated`) can be answered with bookable
alternatives after the fact (reservations/alternatives: the search; its HTTP hook reads the
note from the request's state). Plain data: no I/O, nothing here decides anything."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from reservations.kit.idempotency import Idempotency
from reservations.tenancy.service import Principal

# The request-state attribute the note is kept under.
STATE = "refused_ask"


@dataclass(frozen=True, slots=True)
class Ask:
    """One write, as its alternatives need it.

    - a create or a booking: `resources` (id, units) for [start, end); `series` when an RRULE
      made several occurrences (no alternatives are searched for a series: docs/api.md);
    - a PATCH of a reservation: `reservation_id`, and the new `start` / `end` if sent;
    - a PATCH of a booking: `booking_id`, its `shift` and `duration`."""

    caller: Principal
    resources: tuple[tuple[UUID, int], ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    customer: str | None = None
    override: bool = False
    series: bool = False
    reservation_id: UUID | None = None
    booking_id: UUID | None = None
    shift: timedelta = timedelta(0)
    duration: timedelta | None = None
    # The request's Idempotency-Key: its kept refusal gets the alternatives too, so that a
    # replay is the response first sent.
    idem: Idempotency | None = None


def note(state: Any, ask: Ask) -> None:
    """Keep `ask` on a request's state (starlette's `request.state`)."""
    setattr(state, STATE, ask)


def noted(state: Any) -> Ask | None:
    found = getattr(state, STATE, None)
    return found if isinstance(found, Ask) else None
