"""The reservations list as CSV (RFC 4180, UTF-8): every page of the same query the JSON list
runs, with the same filters and the same authorization, streamed a page at a time so memory
stays flat however many rows match. Times come twice: in UTC and as wall time in the
resource's zone, with the zone in its own column, in the `YYYY-MM-DD HH:MM:SS` form that
spreadsheets read as a date and time."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypedDict
from uuid import UUID
from zoneinfo import ZoneInfo

from reservations.catalog import repository as catalog
from reservations.catalog.repository import ResourceLabel
from reservations.context import Context
from reservations.reservations import service
from reservations.reservations.schemas import ReservationPage, ReservationRead, Status
from reservations.tenancy.service import Principal

PAGE = 500


class Filters(TypedDict):
    """The list's filters, as `service.list_page` takes them."""

    resource_id: UUID | None
    booking_id: UUID | None
    window_from: datetime | None
    window_to: datetime | None
    statuses: list[Status]
    customer: str | None
    flagged: bool | None


HEADER = (
    "id",
    "resource_id",
    "resource_name",
    "status",
    "start_utc",
    "end_utc",
    "timezone",
    "start_local",
    "end_local",
    "quantity",
    "customer",
    "booking_id",
    "expires_at_utc",
    "created_at_utc",
    "updated_at_utc",
)
# A spreadsheet runs a cell that begins with one of these as a formula ("CSV injection"):
# text cells that do are written with a leading apostrophe, which spreadsheets hide.
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


async def csv_stream(
    svc: Context, caller: Principal, first: ReservationPage, filters: Filters
) -> AsyncIterator[bytes]:
    """The header, `first` (fetched before the response starts, so a bad filter or cursor is
    still a 4xx problem), then every later page."""
    labels: dict[UUID, ResourceLabel] = {}
    yield ("\ufeff" + _lines([HEADER])).encode()  # the BOM: spreadsheets then read UTF-8
    page = first
    while True:
        await _learn(svc, caller, labels, page.items)
        yield _lines(_cells(r, labels.get(r.resource_id)) for r in page.items).encode()
        if page.next_cursor is None:
            return
        page = await service.list_page(svc, caller, **filters, limit=PAGE, cursor=page.next_cursor)


async def _learn(
    svc: Context,
    caller: Principal,
    labels: dict[UUID, ResourceLabel],
    rows: Sequence[ReservationRead],
) -> None:
    missing = sorted({r.resource_id for r in rows} - labels.keys())
    if not missing:
        return
    # A resource's row lives on its shard: ask every shard for all of them at once.
    found = await svc.shards.gather(
        lambda conn: catalog.labels(conn, tenant_id=caller.tenant_id, resource_ids=missing)
    )
    labels.update((label.id, label) for part in found for label in part)


def _lines(rows: Any) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue()


def _cells(r: ReservationRead, label: ResourceLabel | None) -> tuple[str, ...]:
    zone = ZoneInfo(label.timezone) if label is not None else None
    return (
        str(r.id),
        str(r.resource_id),
        _text(label.name if label is not None else ""),
        r.status.value,
        _utc(r.start),
        _utc(r.end),
        label.timezone if label is not None else "",
        _wall(r.start.astimezone(zone)) if zone is not None else "",
        _wall(r.end.astimezone(zone)) if zone is not None else "",
        str(r.quantity),
        _text(r.customer or ""),
        str(r.booking_id) if r.booking_id is not None else "",
        _utc(r.expires_at) if r.expires_at is not None else "",
        _utc(r.created_at),
        _utc(r.updated_at),
    )


def _utc(at: datetime) -> str:
    return _wall(at.astimezone(UTC))


def _wall(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S") + (f".{at.microsecond:06d}" if at.microsecond else "")


def _text(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA) else value


def wants_csv(accept: str | None) -> bool:
    """Whether an Accept header prefers `text/csv` to JSON: its quality is higher, or equal
    and listed first. Without the header, or with only `*/*`, the answer is JSON."""
    if not accept:
        return False
    csv_q = json_q = 0.0
    csv_at = json_at = len(accept)
    for at, part in enumerate(accept.split(",")):
        kind, *params = (p.strip().lower() for p in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = max(0.0, min(1.0, float(value)))
                except ValueError:
                    q = 0.0
        if kind == "text/csv" and q > csv_q:
            csv_q, csv_at = q, at
        if kind in ("application/json", "application/*", "*/*") and q > json_q:
            json_q, json_at = q, at
    return csv_q > 0 and (csv_q > json_q or (csv_q == json_q and csv_at < json_at))
