"""The rows reservations' SQL (repository.py) returns, as frozen dataclasses whose fields are
the statements' columns (kit/db.py `fetch_one`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True, slots=True)
class RangeRow:
    """A reservation's guarded range and who holds it (CHANGED): what the availability map
    records of a change, and what the pre-checks, availability and the 409 read of the
    reservations in a range's way."""

    id: UUID
    resource_id: UUID
    version: int
    pooled: bool
    status: str
    start_at: datetime
    end_at: datetime
    expires_at: datetime | None
    created_by: UUID
    quantity: int
    during_start: datetime
    during_end: datetime

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RangeRow:
        """A row that came through json_agg (`resource_and_overlaps`): ids and timestamps
        arrive as strings."""
        expires = obj["expires_at"]
        return cls(
            id=UUID(obj["id"]),
            resource_id=UUID(obj["resource_id"]),
            version=obj["version"],
            pooled=obj["pooled"],
            status=obj["status"],
            start_at=datetime.fromisoformat(obj["start_at"]),
            end_at=datetime.fromisoformat(obj["end_at"]),
            expires_at=datetime.fromisoformat(expires) if expires is not None else None,
            created_by=UUID(obj["created_by"]),
            quantity=obj["quantity"],
            during_start=datetime.fromisoformat(obj["during_start"]),
            during_end=datetime.fromisoformat(obj["during_end"]),
        )


@dataclass(frozen=True, slots=True)
class ReservationRow(RangeRow):
    """A reservation as every read of one returns it (COLUMNS)."""

    booking_id: UUID | None
    customer: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    needs_approval: bool
    checked_in_at: datetime | None
    flagged_at: datetime | None  # a policy change refused it (migration 0015)
    flagged_violations: list[dict[str, str]] | None


@dataclass(frozen=True, slots=True)
class FoundRow(ReservationRow):
    """`get`: the reservation, and whether it is in the history (read-only)."""

    in_history: bool


@dataclass(frozen=True, slots=True)
class DueRow:
    """A hold the sweeper expires (`expire_due`)."""

    id: UUID
    resource_id: UUID


@dataclass(frozen=True, slots=True)
class HoldsRow:
    """`live_holds`: how many unexpired holds, and the first expiry among them."""

    n: int
    first: datetime | None
