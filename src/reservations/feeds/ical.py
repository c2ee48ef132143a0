"""iCalendar (RFC 5545) for a feed, pure: reservation rows in, the VCALENDAR's bytes out.

- One VEVENT per reservation: UID `<reservation id>@reservations` (stable, host-free),
  SEQUENCE = version - 1 (0 when made), STATUS TENTATIVE (held) or CONFIRMED, DTSTAMP and
  LAST-MODIFIED = the reservation's last change (so the same reservations give the same
  bytes, and the ETag only changes when they do), CREATED.
- Times are wall times in the resource's IANA zone (`DTSTART;TZID=Europe/Berlin:...`) with
  a VTIMEZONE for every zone used, except a wall time that occurs twice (the repeated hour
  when clocks go back): RFC 5545 reads an ambiguous local time as its first occurrence,
  which would put a reservation in the second one an hour early, so those are written in
  UTC (`...Z`), which no client can misread. UTC resources are written in UTC.

The VTIMEZONEs come from the icalendar library (computed from the tz database, cached as
bytes). The rest is a handful of fixed properties, written here directly: icalendar's
generic serializer costs about a millisecond per event, too much for a busy resource's feed
that every subscriber fetches every few minutes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from icalendar import Timezone

from reservations.feeds.repository import FeedEventRow

if TYPE_CHECKING:
    from reservations.feeds.busy import ResourceBusy

PRODID = "-//reservations//Reservations API//EN"
UID_DOMAIN = "reservations"
# How often clients should fetch the feed again (RFC 7986 REFRESH-INTERVAL, and the older
# X-PUBLISHED-TTL some clients read instead).
REFRESH = "PT15M"
_UTC_ZONES = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "Etc/Zulu", "Zulu", "UCT", "Universal"})
_LINE_OCTETS = 75


def wall_time(instant: datetime, zone: str) -> datetime:
    """`instant` as DTSTART/DTEND carry it: local time in `zone` (TZID form), or UTC where
    that local time is ambiguous, or the zone is UTC."""
    if zone in _UTC_ZONES:
        return instant.astimezone(UTC)
    local = instant.astimezone(ZoneInfo(zone))
    if local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset():
        return instant.astimezone(UTC)
    return local


def fold(line: str) -> bytes:
    """One content line, folded after at most 75 octets (never inside a UTF-8 character),
    with its CRLF."""
    data = line.encode("utf-8")
    parts, start, limit = [], 0, _LINE_OCTETS
    while len(data) - start > limit:
        end = start + limit
        while data[end] & 0xC0 == 0x80:  # a continuation byte: back up to the character
            end -= 1
        parts.append(data[start:end])
        start, limit = end, _LINE_OCTETS - 1  # the continuation's leading space counts
    parts.append(data[start:])
    return b"\r\n ".join(parts) + b"\r\n"


def text(value: str) -> str:
    """A TEXT value, escaped (RFC 5545 3.3.11)."""
    return (
        value.replace("\\", "\\\\")
        .replace(";", "\\;")
        .replace(",", "\\,")
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
        .replace("\r", "\\n")
    )


def _utc(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _time_property(name: str, instant: datetime, zone: str) -> str:
    at = wall_time(instant, zone)
    if at.tzinfo is UTC:
        return f"{name}:{_utc(at)}"
    return f"{name};TZID={zone}:{at.strftime('%Y%m%dT%H%M%S')}"


@functools.lru_cache(maxsize=256)
def vtimezone(zone: str, first_year: int, last_year: int) -> bytes:
    """The zone's VTIMEZONE with its transitions from `first_year` through `last_year`."""
    component = Timezone.from_tzid(
        zone, first_date=date(first_year, 1, 1), last_date=date(last_year + 1, 1, 1)
    )
    return bytes(component.to_ical())


def _event(row: FeedEventRow, *, personal: bool) -> Iterable[str]:
    summary = row.resource_name
    if row.quantity > 1:
        summary += f" ({row.quantity} units)"
    yield "BEGIN:VEVENT"
    yield f"UID:{row.id}@{UID_DOMAIN}"
    yield f"DTSTAMP:{_utc(row.updated_at)}"
    yield _time_property("DTSTART", row.start_at, row.timezone)
    yield _time_property("DTEND", row.end_at, row.timezone)
    yield f"SUMMARY:{text(summary)}"
    yield "STATUS:" + ("TENTATIVE" if row.status == "held" else "CONFIRMED")
    yield "TRANSP:OPAQUE"
    yield f"SEQUENCE:{row.version - 1}"
    yield f"CREATED:{_utc(row.created_at)}"
    yield f"LAST-MODIFIED:{_utc(row.updated_at)}"
    if personal:
        yield f"LOCATION:{text(row.resource_name)}"
        if row.customer:
            yield f"DESCRIPTION:{text('Customer: ' + row.customer)}"
    yield "END:VEVENT"


def _head(name: str, zone: str | None) -> list[str]:
    head = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{PRODID}",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        f"X-WR-CALNAME:{text(name)}",
    ]
    if zone is not None:
        head.append(f"X-WR-TIMEZONE:{zone}")
    head += [f"REFRESH-INTERVAL;VALUE=DURATION:{REFRESH}", f"X-PUBLISHED-TTL:{REFRESH}"]
    return head


def render(*, name: str, zone: str | None, rows: Sequence[FeedEventRow], personal: bool) -> bytes:
    """The feed. `zone`: the calendar's own zone (a resource's), if it has one. `personal`:
    a feed of one key's reservations, which may show their customer; a resource's feed
    shows when it is taken, never by whom."""
    out = [fold(line) for line in _head(name, zone)]
    zones = sorted({r.timezone for r in rows} - _UTC_ZONES)
    if zones:
        first = min(r.start_at for r in rows).year - 1
        last = max(r.end_at for r in rows).year + 1
        out += [vtimezone(z, first, last) for z in zones]
    for row in rows:
        out += [fold(line) for line in _event(row, personal=personal)]
    out.append(fold("END:VCALENDAR"))
    return b"".join(out)


def _vfreebusy(item: ResourceBusy, stamp: datetime) -> Iterable[str]:
    yield "BEGIN:VFREEBUSY"
    yield f"UID:freebusy-{item.id}@{UID_DOMAIN}"
    yield f"DTSTAMP:{_utc(stamp)}"
    yield f"DTSTART:{_utc(item.start)}"
    yield f"DTEND:{_utc(item.end)}"
    yield f"COMMENT:{text(item.name)}"
    for p in item.periods:
        yield f"FREEBUSY;FBTYPE={p.type.value}:{_utc(p.start)}/{_utc(p.end)}"
    yield "END:VFREEBUSY"


def render_freebusy(
    *, name: str, zone: str | None, stamp: datetime, items: Sequence[ResourceBusy]
) -> bytes:
    """A free/busy feed: one VFREEBUSY per resource (RFC 5545 3.6.4, published busy time),
    UID `freebusy-<resource id>@reservations`, DTSTAMP the step it was computed for,
    DTSTART/DTEND what it describes, COMMENT the resource's name, and one FREEBUSY line per
    busy period (FBTYPE BUSY or BUSY-UNAVAILABLE), in UTC as RFC 5545 requires, in order.
    Time not in a period is free. Nothing about who booked."""
    out = [fold(line) for line in _head(name, zone)]
    for item in items:
        out += [fold(line) for line in _vfreebusy(item, stamp)]
    out.append(fold("END:VCALENDAR"))
    return b"".join(out)
