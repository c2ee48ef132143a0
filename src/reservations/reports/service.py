"""The utilization report: open time from the same policy functions admission uses, booked time
summed in each shard's database, both cut at the local midnights of each resource's zone and
then rolled up by resource, tag, local day or ISO week."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from uuid import UUID

from reservations.catalog import repository as catalog
from reservations.catalog.repository import ResourceRow
from reservations.context import Context
from reservations.errors import Forbidden, InvalidInput
from reservations.kit.db import Conn
from reservations.kit.localtime import local_dates, wall_span_instants
from reservations.kit.spans import intersect
from reservations.policy import enforce, rules
from reservations.reports import repository
from reservations.reports.repository import DayTotal
from reservations.reports.schemas import GroupBy, UtilizationGroup, UtilizationReport
from reservations.tenancy.service import Principal

MAX_WINDOW = timedelta(days=366)
# Resource-days one report may compute (each is a day of opening hours and blackouts): a year
# of 100 resources, or a month of 1,200.
MAX_RESOURCE_DAYS = 36_600
MAX_RESOURCES = 1_000


@dataclass
class _Sum:
    resources: set[UUID] = field(default_factory=set)
    open_seconds: float = 0.0
    booked_seconds: float = 0.0
    reservations: int = 0
    cancellations: int = 0
    no_shows: int = 0

    def add(self, resource: UUID, open_s: float, day: DayTotal | None) -> None:
        self.resources.add(resource)
        self.open_seconds += open_s
        if day is not None:
            self.booked_seconds += day.booked_seconds
            self.reservations += day.reservations
            self.cancellations += day.cancellations
            self.no_shows += day.no_shows

    def read(self, key: str, name: str | None = None) -> UtilizationGroup:
        return UtilizationGroup(
            key=key,
            name=name,
            resources=len(self.resources),
            open_seconds=self.open_seconds,
            booked_seconds=self.booked_seconds,
            utilization=self.booked_seconds / self.open_seconds if self.open_seconds else None,
            reservations=self.reservations,
            cancellations=self.cancellations,
            no_shows=self.no_shows,
        )


def _check(caller: Principal, start: datetime, end: datetime) -> None:
    if not caller.sees_all():
        raise Forbidden("Reports count every booker's reservations: use a viewer or admin key.")
    if end <= start:
        raise InvalidInput(
            "'to' must be after 'from'.",
            errors=[{"field": "to", "in": "query", "message": "must be after from"}],
        )
    if end - start > MAX_WINDOW:
        raise InvalidInput(
            f"The window may span at most {MAX_WINDOW.days} days: ask for a shorter one.",
            errors=[{"field": "to", "in": "query", "message": "window too long"}],
        )


async def utilization(
    svc: Context,
    caller: Principal,
    *,
    start: datetime,
    end: datetime,
    group_by: GroupBy,
    tags: list[str],
    resource_ids: list[UUID],
) -> UtilizationReport:
    _check(caller, start, end)

    async def read(conn: Conn) -> tuple[list[ResourceRow], list[DayTotal]]:
        if resource_ids:
            rows = await catalog.get_many(
                conn, tenant_id=caller.tenant_id, resource_ids=resource_ids
            )
            rows = [r for r in rows if set(tags) <= set(r.tags)]
        else:
            rows = await catalog.candidates(
                conn,
                tenant_id=caller.tenant_id,
                tags=tags,
                min_capacity=1,
                limit=MAX_RESOURCES + 1,
            )
        if len(rows) > MAX_RESOURCES:
            return rows, []
        totals = await repository.day_totals(
            conn,
            tenant_id=caller.tenant_id,
            zones={r.id: r.timezone for r in rows},
            window_from=start,
            window_to=end,
        )
        return rows, totals

    parts = await svc.shards.gather(read)
    resources = [r for rows, _ in parts for r in rows]
    days = (end - start).days + 2
    if len(resources) > MAX_RESOURCES or len(resources) * days > MAX_RESOURCE_DAYS:
        raise InvalidInput(
            f"The report would cover {len(resources)} resources over {days} days; at most"
            f" {MAX_RESOURCE_DAYS} resource-days (and {MAX_RESOURCES} resources) fit in one."
            " Narrow it with `tag` or `resource_id`, or ask for a shorter window.",
            errors=[{"field": "from", "in": "query", "message": "report too large"}],
        )
    booked = {(t.resource_id, t.day): t for _, totals in parts for t in totals}
    groups: dict[str, _Sum] = defaultdict(_Sum)
    names: dict[str, str] = {}
    total = _Sum()
    for resource in sorted(resources, key=lambda r: r.id):
        names[str(resource.id)] = resource.name
        for day, open_s in _open_by_day(resource, start, end):
            row = booked.pop((resource.id, day), None)
            total.add(resource.id, open_s, row)
            for key in _keys(group_by, resource, day):
                groups[key].add(resource.id, open_s, row)
    return UtilizationReport(
        start=start,
        end=end,
        group_by=group_by,
        groups=[
            groups[k].read(k, names.get(k) if group_by is GroupBy.resource else None)
            for k in sorted(groups)
        ],
        total=total.read("total"),
    )


def _open_by_day(
    resource: ResourceRow, start: datetime, end: datetime
) -> Iterable[tuple[date, float]]:
    """Each local date of the window in the resource's zone, with its open seconds (times
    capacity): the policy's allowed spans (hours, overrides, less blackouts) cut at midnight."""
    policy = enforce.policy_of(resource.policy)
    allowed = rules.allowed_spans(policy, resource.timezone, start, end)
    for day in local_dates(resource.timezone, start, end):
        day_spans = wall_span_instants(resource.timezone, day, 0, 1440)
        seconds = sum((b - a).total_seconds() for a, b in intersect(allowed, day_spans))
        yield day, seconds * resource.capacity


def _keys(group_by: GroupBy, resource: ResourceRow, day: date) -> list[str]:
    if group_by is GroupBy.resource:
        return [str(resource.id)]
    if group_by is GroupBy.tag:
        return sorted(set(resource.tags))
    if group_by is GroupBy.day:
        return [day.isoformat()]
    year, week, _ = day.isocalendar()
    return [f"{year}-W{week:02d}"]
