"""A pool: "any free resource with these tags" instead of one resource id. The request's
shape, the reply's note of the pick, and the pure part of the pick: the order in which
a pool's resources are tried (docs/pools.md). The use case is reservations/pools.py."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import timedelta
from enum import StrEnum
from uuid import UUID

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from reservations.catalog.repository import ResourceRow
from reservations.kit.fields import JsonInt, Tag

# The most resources one pool may hold: each is a transaction in the worst case (all busy).
MAX_POOL = 50
# least_busy counts the booked time of each resource this far on either side of the slot.
LEAST_BUSY_WINDOW = timedelta(hours=24)


class PoolStrategy(StrEnum):
    first_free = "first_free"
    least_busy = "least_busy"
    round_robin = "round_robin"


class Pool(BaseModel):
    """Which resources may take the booking, and in which order they are tried."""

    model_config = ConfigDict(extra="forbid")

    tags: list[Tag] = Field(
        default_factory=list,
        max_length=32,
        description="The resource must carry every one of these tags.",
    )
    resource_ids: list[UUID] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_POOL,
        description="Only these resources (and, with `tags`, only those of them with the "
        "tags); their order is the pool's order.",
    )
    min_capacity: JsonInt = Field(
        default=1, ge=1, le=1_000_000, description="Only resources with at least this capacity."
    )
    strategy: PoolStrategy = Field(
        default=PoolStrategy.first_free,
        description="first_free: in pool order (the order of `resource_ids`, else by name, "
        "then id). least_busy: the resource with the fewest booked hours within 24 hours "
        "either side of the slot first. round_robin: each create from this pool starts one "
        "resource further along the pool order (the turn is kept in the database).",
    )

    @field_validator("tags")
    @classmethod
    def _unique_tags(cls, tags: list[str]) -> list[str]:
        return sorted(set(tags))

    @field_validator("resource_ids")
    @classmethod
    def _distinct(cls, ids: list[UUID] | None) -> list[UUID] | None:
        if ids is not None and len(set(ids)) != len(ids):
            raise ValueError("each resource may appear once")
        return ids

    @model_validator(mode="after")
    def _says_which(self) -> Pool:
        if not self.tags and not self.resource_ids:
            raise ValueError("a pool needs `tags` or `resource_ids`")
        return self


class PoolPick(BaseModel):
    """How a create from a pool chose its resource (the reservation's `resource_id`)."""

    strategy: PoolStrategy
    size: int = Field(description="Resources in the pool.")
    tried: int = Field(
        description="Resources tried, this one included; the ones before it were busy or "
        "refused the booking."
    )


def pool_key(pool: Pool) -> str:
    """The pool's identity for its round-robin turn: its definition, not its strategy."""
    definition = {
        "tags": sorted(pool.tags),
        "resource_ids": sorted(str(r) for r in pool.resource_ids or ()),
        "min_capacity": pool.min_capacity,
    }
    return hashlib.sha256(orjson.dumps(definition, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def pool_order(pool: Pool, members: Sequence[ResourceRow]) -> list[ResourceRow]:
    """The pool order: as `resource_ids` lists them, else by name, then id."""
    if pool.resource_ids:
        place = {rid: i for i, rid in enumerate(pool.resource_ids)}
        return sorted(members, key=lambda r: place.get(r.id, len(place)))
    return sorted(members, key=lambda r: (r.name, str(r.id)))


def tried_order(
    pool: Pool,
    members: Sequence[ResourceRow],
    *,
    turn: int = 0,
    busy: Mapping[UUID, timedelta] | None = None,
) -> list[ResourceRow]:
    """The order the strategy tries the members in (pure). `turn`: round_robin's counter
    (the member at `turn` modulo the size comes first, then the rest in pool order around);
    `busy`: least_busy's booked time per member (ties in pool order)."""
    ordered = pool_order(pool, members)
    if not ordered:
        return ordered
    if pool.strategy is PoolStrategy.round_robin:
        at = turn % len(ordered)
        return ordered[at:] + ordered[:at]
    if pool.strategy is PoolStrategy.least_busy:
        booked = busy or {}
        place = {r.id: i for i, r in enumerate(ordered)}
        return sorted(ordered, key=lambda r: (booked.get(r.id, timedelta(0)), place[r.id]))
    return ordered
