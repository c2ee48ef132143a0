"""Which live reservations stand in a new range's way, and the 409 that names them.

Used by the lock-free pre-checks; the database guards (exclusion constraint for unit
resources, capacity trigger for pooled ones) still decide every race."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeAlias, TypeVar

from reservations.availability_map.store import Detail
from reservations.errors import ReservationConflict
from reservations.kit.localtime import describe_range
from reservations.kit.spans import Span
from reservations.policy.usage import Busy, Usage
from reservations.reservations import metrics
from reservations.reservations.rows import RangeRow
from reservations.reservations.schemas import ConflictItem, Status, is_stale_hold
from reservations.tenancy.service import Principal

R = TypeVar("R", bound=RangeRow)

# What a 409 names: rows read from the database, or the availability map's details.
InWay: TypeAlias = RangeRow | Detail


def blocking(
    rows: Sequence[R],
    *,
    now: datetime,
    capacity: int,
    quantity: int,
    during: Span,
) -> list[R]:
    """The live rows that make [during) unbookable for `quantity` units: for a unit
    resource any overlap; for a pooled one, all overlapping rows when the peak of their
    quantities leaves less than `quantity` free. Rows must overlap `during` already."""
    live = [r for r in rows if not is_stale_hold(r, now)]
    if not live or capacity == 1:
        return live
    usage = Usage([Busy(r.during_start, r.during_end, r.quantity) for r in live], *during)
    return live if usage.peak(*during) + quantity > capacity else []


def items(
    overlaps: Sequence[InWay], caller: Principal, *, with_resource: bool = False
) -> list[dict[str, Any]]:
    """The conflicting ranges as the caller may see them: ids only of their own (or all,
    for admin and viewer keys of the tenant); `with_resource` names the resource of each
    (for a booking of several resources, which the caller knows)."""
    return [
        ConflictItem(
            start=o.start_at,
            end=o.end_at,
            status=Status(o.status),
            id=o.id if caller.sees_all() or str(o.created_by) == str(caller.api_key_id) else None,
            resource_id=o.resource_id if with_resource else None,
        ).model_dump(mode="json", exclude_none=True)
        for o in overlaps
    ]


def conflict(
    overlaps: Sequence[InWay],
    caller: Principal,
    *,
    stage: str,
    zone: str | None,
    capacity: int = 1,
) -> ReservationConflict:
    """The 409; its detail gives each range in UTC and in the resource's zone (`zone`)."""
    metrics.RESERVATIONS_CONFLICTED.labels(stage).inc()
    found = items(overlaps, caller)
    ranges = "; ".join(describe_range(o.start_at, o.end_at, zone) for o in overlaps)
    if capacity > 1:
        detail = (
            f"All {capacity} units are taken at some point of this range (booked: {ranges}). "
            "Choose another range or a smaller quantity."
        )
    else:
        detail = (
            f"The resource is already booked for {ranges}. Choose a range that does not "
            "overlap (with the resource's turnover buffers); ranges are half-open, so a "
            "booking may start exactly when another ends."
        )
    return ReservationConflict(detail, conflicts=found)
