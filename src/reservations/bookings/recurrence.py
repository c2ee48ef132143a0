"""RFC 5545 recurrence expansion in a zone's local wall time (pure, no I/O).

Occurrences are computed as local wall times (so a 09:00 meeting stays at 09:00 across DST)
and then placed on the time line the way RFC 5545 (3.3.5) says: a wall time that occurs twice
means its first occurrence, and one that falls in a gap is read with the offset before the
gap (02:30 on a spring-forward day in Berlin becomes 03:30 CEST). The first occurrence is
`start` itself, whichever instant of a fold it names. Occurrences that land on the same
instant count once.

dateutil does the expansion; this module first checks the rule strictly (known parts, each
once, values in RFC 5545's ranges, combinations that can match at all), because dateutil
accepts some nonsense and walks day by day to the year 9999 looking for a match that can
never come."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

from dateutil.rrule import rrule, rrulestr

MAX_OCCURRENCES = 366
HORIZON = timedelta(days=5 * 366)

_INT = re.compile(r"^[+-]?[0-9]{1,4}$")
_WEEKDAY = re.compile(r"^([+-]?[0-9]{1,2})?(MO|TU|WE|TH|FR|SA|SU)$")
_UNTIL = re.compile(r"^([0-9]{8})(T([0-9]{6})(Z?))?$")
_FREQS = {"SECONDLY", "MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY"}
# part -> (low, high, zero allowed) for the integer lists RFC 5545 defines
_RANGES = {
    "BYSECOND": (0, 60, True),
    "BYMINUTE": (0, 59, True),
    "BYHOUR": (0, 23, True),
    "BYMONTHDAY": (-31, 31, False),
    "BYYEARDAY": (-366, 366, False),
    "BYWEEKNO": (-53, 53, False),
    "BYMONTH": (1, 12, False),
    "BYSETPOS": (-366, 366, False),
}


class RecurrenceError(ValueError):
    """The rule cannot be expanded; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class Occurrence:
    start: datetime  # UTC
    end: datetime


def _ints(part: str, value: str) -> list[int]:
    low, high, zero = _RANGES[part]
    out = []
    for item in value.split(","):
        if not _INT.match(item) or not (low <= int(item) <= high) or (int(item) == 0 and not zero):
            raise RecurrenceError(f"{part} values must be integers from {low} to {high}")
        out.append(int(item))
    return out


def _check_parts(text: str) -> dict[str, str]:
    if not text.isascii() or not text:
        raise RecurrenceError("rrule must be plain ASCII, such as 'FREQ=WEEKLY;BYDAY=MO,WE'")
    parts: dict[str, str] = {}
    for item in text.upper().split(";"):
        name, sep, value = item.partition("=")
        if not sep or not value:
            raise RecurrenceError(f"'{item}' is not NAME=VALUE")
        if name in parts:
            raise RecurrenceError(f"{name} appears twice")
        parts[name] = value
    unknown = set(parts) - _FREQS_PARTS
    if unknown:
        raise RecurrenceError(f"unknown rule part(s): {', '.join(sorted(unknown))}")
    if parts.get("FREQ") not in _FREQS:
        raise RecurrenceError(f"FREQ must be one of {', '.join(sorted(_FREQS))}")
    for name in ("COUNT", "INTERVAL"):
        if name in parts and (not parts[name].isdigit() or not 1 <= int(parts[name]) <= 9999):
            raise RecurrenceError(f"{name} must be a whole number from 1 to 9999")
    if "COUNT" in parts and "UNTIL" in parts:
        raise RecurrenceError("use COUNT or UNTIL, not both")
    for name in _RANGES:
        if name in parts:
            _ints(name, parts[name])
    if "BYDAY" in parts:
        _check_weekdays(parts)
    if "WKST" in parts and parts["WKST"] not in {"MO", "TU", "WE", "TH", "FR", "SA", "SU"}:
        raise RecurrenceError("WKST must be a weekday such as MO")
    if "UNTIL" in parts and not _UNTIL.match(parts["UNTIL"]):
        raise RecurrenceError("UNTIL must look like 20300601T170000Z (UTC) or 20300601")
    _check_possible(parts)
    return parts


def _check_weekdays(parts: dict[str, str]) -> None:
    """Weekdays, with an ordinal from 1 to 53 (the nth in the year), or 5 where they count
    within a month: past that, dateutil indexes beyond its month tables (IndexError)."""
    in_month = parts["FREQ"] == "MONTHLY" or (parts["FREQ"] == "YEARLY" and "BYMONTH" in parts)
    most = 5 if in_month else 53
    for item in parts["BYDAY"].split(","):
        m = _WEEKDAY.match(item)
        if not m:
            raise RecurrenceError("BYDAY takes weekdays such as MO,WE or 1MO,-1FR")
        if m.group(1) is not None and not 1 <= abs(int(m.group(1))) <= most:
            raise RecurrenceError(f"BYDAY's ordinals run from 1 to {most} here (or -1 to -{most})")


_FREQS_PARTS = {"FREQ", "UNTIL", "COUNT", "INTERVAL", "WKST", "BYDAY", *_RANGES}


def _check_possible(parts: dict[str, str]) -> None:
    """Refuse the combinations that can never match (dateutil would search to year 9999)."""
    if "BYWEEKNO" in parts and {"BYMONTH", "BYMONTHDAY", "BYYEARDAY"} & set(parts):
        raise RecurrenceError("BYWEEKNO cannot be combined with BYMONTH, BYMONTHDAY or BYYEARDAY")
    if "BYYEARDAY" in parts and "BYMONTHDAY" in parts:
        raise RecurrenceError("use BYYEARDAY or BYMONTHDAY, not both")
    months = _ints("BYMONTH", parts["BYMONTH"]) if "BYMONTH" in parts else list(range(1, 13))
    if "BYMONTHDAY" in parts:
        longest = max(calendar.monthrange(2024, m)[1] for m in months)  # 2024: leap year
        if all(abs(d) > longest for d in _ints("BYMONTHDAY", parts["BYMONTHDAY"])):
            raise RecurrenceError("BYMONTHDAY never falls in the given BYMONTH")
    if "BYYEARDAY" in parts and "BYMONTH" in parts:
        days: set[int] = set()
        for m in months:
            first = date(2024, m, 1).timetuple().tm_yday
            last = first + calendar.monthrange(2024, m)[1] - 1
            days.update(range(first, last + 1))
            days.update(range(first - 367, last - 365))  # negative forms, leap and not
        if not any(d in days for d in _ints("BYYEARDAY", parts["BYYEARDAY"])):
            raise RecurrenceError("BYYEARDAY never falls in the given BYMONTH")


def _local_until(value: str, zone: str) -> str:
    """RFC 5545 wants UNTIL in UTC when DTSTART has a zone; dateutil, given our local wall
    DTSTART, wants it local. A bare date means the end of that local day."""
    m = _UNTIL.match(value)
    assert m is not None
    day, clock, utc = m.group(1), m.group(3), m.group(4)
    if clock is None:
        return day + "T235959"
    if not utc:
        return day + "T" + clock
    try:
        instant = datetime.strptime(day + clock, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        return instant.astimezone(ZoneInfo(zone)).strftime("%Y%m%dT%H%M%S")
    except (ValueError, OverflowError):
        raise RecurrenceError("UNTIL is not a valid date and time in the rule's zone") from None


def parse(rule: str, first_local: datetime, zone: str = "UTC") -> rrule:
    text = rule.strip()
    if text.upper().startswith("RRULE:"):
        text = text[6:]
    parts = _check_parts(text)
    if "UNTIL" in parts:
        parts["UNTIL"] = _local_until(parts["UNTIL"], zone)
    try:
        parsed = rrulestr(
            "RRULE:" + ";".join(f"{k}={v}" for k, v in parts.items()), dtstart=first_local
        )
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise RecurrenceError(f"rrule is not a valid RFC 5545 RRULE: {exc}") from None
    if not isinstance(parsed, rrule):
        raise RecurrenceError("rrule must be a single RRULE")
    return parsed


def expand(
    rule: str,
    *,
    zone: str,
    start: datetime,
    end: datetime,
    exdates: list[datetime | date] | None = None,
    limit: int = MAX_OCCURRENCES,
) -> list[Occurrence]:
    """Occurrences of [start, end) under `rule`, in `zone`'s wall time. The first is
    `start` itself when the rule matches it (RFC 5545: DTSTART is the first instance).
    `exdates` drop occurrences starting at an instant, or on a local date."""
    tz = ZoneInfo(zone)
    local_start = start.astimezone(tz)
    first_local = local_start.replace(tzinfo=None, fold=0)
    duration = end - start
    parsed = parse(rule, first_local, zone)
    horizon = first_local + HORIZON
    walls = []
    try:
        for wall in islice(parsed, limit + 1):
            if wall > horizon:
                raise RecurrenceError(
                    "the rule runs more than five years ahead; end it sooner with COUNT or UNTIL"
                )
            walls.append(wall)
    except (ValueError, OverflowError) as exc:
        if isinstance(exc, RecurrenceError):
            raise
        raise RecurrenceError(f"rrule cannot be expanded: {exc}") from None
    if len(walls) > limit:
        raise RecurrenceError(
            f"the rule yields more than {limit} occurrences; limit it with COUNT or UNTIL"
        )
    skip_instants = {d.astimezone(UTC) for d in exdates or [] if isinstance(d, datetime)}
    skip_dates = {d for d in exdates or [] if not isinstance(d, datetime)}
    out: list[Occurrence] = []
    seen: set[datetime] = set()
    for wall in walls:
        if wall.date() in skip_dates:
            continue
        # `start` names its own instant (it may be the second pass of a fold).
        instant = start if wall == first_local else wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if instant in skip_instants or instant in seen:
            continue
        seen.add(instant)
        out.append(Occurrence(instant, instant + duration))
    if not out:
        raise RecurrenceError("the rule and exdates leave no occurrence")
    return out
