"""The `alternatives` member of a refusal's problem body."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field

# At most this many of each kind (docs/api.md "Alternatives").
LIMIT = 5


class ResourceChoice(BaseModel):
    """A resource an alternative books, as every key of the tenant may see it."""

    resource_id: UUID
    name: str
    quantity: int = Field(description="Units to book, as the refused request asked.")


class Alternative(BaseModel):
    """A range that admission accepted when the refusal was answered: send the refused
    request again with these `start`, `end` and resources (same Idempotency-Key if you like)."""

    start: datetime
    end: datetime
    resources: list[ResourceChoice] = Field(
        description="Every resource of the request, in its order (one for a reservation)."
    )


class Alternatives(BaseModel):
    """Bookable alternatives to a refused range; each list nearest first, at most LIMIT."""

    same_resources: list[Alternative] = Field(
        description="The same resource(s), the same length, at the next free starts after the"
        " refused one (or, when none is left before the search's end, the latest before it)."
    )
    other_resources: list[Alternative] = Field(
        description="The refused range on other resources that carry all the tags of the one"
        " refused (for a booking of several: that one replaced, the others kept)."
    )
    searched_from: datetime = Field(description="The earliest start the search considered.")
    searched_to: datetime = Field(description="The latest start the search considered.")
