"""RFC 5545 recurrence expansion in a zone's local wall time (pure, no I/O).

Occurrences are computed as local wall times (so a 09:00 meeting stays at 09:00 across DST)
and then placed on the time line the way RFC 5545 (3.3.5) says: a wall time that occurs twice
means its first occurrence, and one that falls in a gap is read with the offset before the
gap (02:30 on a spring-forward day in Berlin becomes 03:30 CEST). The first occurrence is
`start` itself, whichever instant of a fold it names. Occurrences that land on the same
instant count once.

dateutil does the expansion; this module first checks the rule strictly (known parts, each
once, values in RFC 5545's ranges, combinations that can match at all), because dateutil
accepts some nonsense.

Limits. A series has at most MAX_OCCURRENCES (1,000) occurrences, none starting more than
HORIZON (5 x 366 days) after the first, each ending before 9000-01-01 (kit/fields.py LATEST).
COUNT may not exceed MAX_OCCURRENCES; a UNTIL later than the horizon is searched only up to the
horizon, and refused if the rule has not ended by then.

The expansion is bounded by work, not by a clock. dateutil itself stops only at COUNT, at the
first candidate past UNTIL, or after the year 9999, so a rule whose matches are rare or
impossible (FREQ=HOURLY;BYSETPOS=2; FREQ=SECONDLY;BYHOUR=23 on leap days that are Mondays)
searches for decades or forever without returning control. Here its loop runs metered
(walk.py): no period that begins after UNTIL or the horizon is searched, and dateutil may
take at most WORK_BUDGET (150,000) steps, a step being about a quarter of a microsecond of
work (a day checked against the BY parts, a time of day built, a candidate compared, a step
of the search for the next valid hour, minute or second), each period paid for before it
runs. The worst rules found cost 20-60 ms of CPU before they are refused. Honest series need
far less: 500 daily occurrences about 15,000 steps, 1,000 about 30,000, weekdays over two
years or the last Friday of every month for five years about 6,000. The most expensive honest
shape found is a fine FREQ with BYHOUR (1,000 quarter-hours on weekday office hours with
FREQ=MINUTELY: about 100,000; the same as FREQ=DAILY;BYHOUR=...;BYMINUTE=0,15,30,45 needs
6,000). A refused rule is told how to fix it: a coarser FREQ, fewer BY values, COUNT or an
earlier UNTIL.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from dateutil.rrule import rrule, rrulestr

from reservations.bookings.walk import Meter, WindowEnd, WorkExceeded, times_of_day, walk
from reservations.kit.fields import LATEST
from reservations.kit.localtime import describe_instant

MAX_OCCURRENCES = 1_000
MAX_EXDATES = 366
HORIZON = timedelta(days=5 * 366)
WORK_BUDGET = 150_000

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


# dateutil's date parser (which rrulestr uses for UNTIL) builds its tables on first use, some
# 40 ms; pay that at import rather than in the first request that sends an UNTIL.
rrulestr("RRULE:FREQ=DAILY;UNTIL=20000102", dtstart=datetime(2000, 1, 1))


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


_TIME_PARTS = ("BYHOUR", "BYMINUTE", "BYSECOND")
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


def _wall(text: str) -> datetime:
    """YYYYMMDDTHHMMSS as a naive datetime (not strptime: its first call costs ~15 ms)."""
    year, month, day = int(text[0:4]), int(text[4:6]), int(text[6:8])
    try:
        return datetime(year, month, day, int(text[9:11]), int(text[11:13]), int(text[13:15]))
    except ValueError:
        raise RecurrenceError(f"UNTIL {text} is not a valid date and time") from None


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
        instant = _wall(f"{day}T{clock}").replace(tzinfo=UTC).astimezone(ZoneInfo(zone))
        return f"{instant:%Y%m%dT%H%M%S}"
    except (ValueError, OverflowError):
        raise RecurrenceError("UNTIL is not a valid date and time in the rule's zone") from None


def _parts(rule: str, zone: str) -> dict[str, str]:
    """The rule's parts, checked; UNTIL in the zone's local wall time."""
    text = rule.strip()
    if text.upper().startswith("RRULE:"):
        text = text[6:]
    parts = _check_parts(text)
    if "UNTIL" in parts:
        parts["UNTIL"] = _local_until(parts["UNTIL"], zone)
    return parts


def _build(parts: dict[str, str], first_local: datetime) -> rrule:
    try:
        parsed = rrulestr(
            "RRULE:" + ";".join(f"{k}={v}" for k, v in parts.items()), dtstart=first_local
        )
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise RecurrenceError(f"rrule is not a valid RFC 5545 RRULE: {exc}") from None
    if not isinstance(parsed, rrule):
        raise RecurrenceError("rrule must be a single RRULE")
    return parsed


def _times_of_day(parts: dict[str, str]) -> int:
    """Times of day dateutil tabulates when it builds a DAILY-or-coarser rule."""
    if parts["FREQ"] not in {"DAILY", "WEEKLY", "MONTHLY", "YEARLY"}:
        return 0
    sizes = [len(set(_ints(p, parts[p]))) if p in parts else 1 for p in _TIME_PARTS]
    return times_of_day(*sizes)


def _walls(
    rule: str, *, zone: str, first_local: datetime, limit: int, budget: int | None
) -> list[datetime]:
    """The rule's local wall times from `first_local`, searched within the horizon and the
    work budget (module docstring)."""
    parts = _parts(rule, zone)
    count = int(parts["COUNT"]) if "COUNT" in parts else None
    if count is not None and count > limit:
        raise RecurrenceError(f"COUNT may be at most {limit}; split the series")
    horizon = first_local + HORIZON
    until = _wall(parts["UNTIL"]) if "UNTIL" in parts else None
    ends_by_until = until is not None and until <= horizon
    meter = Meter(budget=budget, stop=(until if until and ends_by_until else horizon).date())
    wanted = limit + 1 if count is None else count
    walls: list[datetime] = []
    try:
        meter.charge(_times_of_day(parts))
        instants = walk(_build(parts, first_local), meter)
        while len(walls) < wanted:
            wall = next(instants, None)
            if wall is None:
                break
            if wall > horizon:
                raise RecurrenceError(
                    "the rule runs more than five years ahead; end it sooner with COUNT or UNTIL"
                )
            walls.append(wall)
    except WorkExceeded:
        raise RecurrenceError(
            f"the rule needs more than {budget} steps to expand (a fine FREQ such as "
            "SECONDLY or MINUTELY with sparse BY parts, many BYSETPOS values, or days that "
            "rarely match); use a coarser FREQ (DAILY with BYHOUR/BYMINUTE), fewer BY "
            "values, or an earlier UNTIL or smaller COUNT"
        ) from None
    except WindowEnd:
        if not ends_by_until:
            raise RecurrenceError(
                "the rule does not end within five years of its start (too few occurrences "
                "before then for its COUNT, or UNTIL later than that); end it sooner with "
                "COUNT or an UNTIL at most five years after the start"
            ) from None
    except (ValueError, OverflowError) as exc:
        if isinstance(exc, RecurrenceError):
            raise
        raise RecurrenceError(f"rrule cannot be expanded: {exc}") from None
    if len(walls) > limit:
        raise RecurrenceError(
            f"the rule yields more than {limit} occurrences; limit it with COUNT or UNTIL"
        )
    return walls


def expand(
    rule: str,
    *,
    zone: str,
    start: datetime,
    end: datetime,
    exdates: list[datetime | date] | None = None,
    limit: int = MAX_OCCURRENCES,
    budget: int | None = WORK_BUDGET,
) -> list[Occurrence]:
    """Occurrences of [start, end) under `rule`, in `zone`'s wall time. The first is
    `start` itself when the rule matches it (RFC 5545: DTSTART is the first instance).
    `exdates` drop occurrences starting at an instant, or on a local date. `budget` None
    lifts the work bound (for tests' control runs only)."""
    tz = ZoneInfo(zone)
    local_start = start.astimezone(tz)
    first_local = local_start.replace(tzinfo=None, fold=0)
    duration = end - start
    walls = _walls(rule, zone=zone, first_local=first_local, limit=limit, budget=budget)
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
        if instant + duration >= LATEST:
            raise RecurrenceError(
                f"the occurrence starting {describe_instant(instant, zone)} would end on or after "
                f"{LATEST.date().isoformat()}, the end of the range the API accepts; end the "
                "series sooner with COUNT or UNTIL"
            )
        seen.add(instant)
        out.append(Occurrence(instant, instant + duration))
    if not out:
        raise RecurrenceError("the rule and exdates leave no occurrence")
    return out
